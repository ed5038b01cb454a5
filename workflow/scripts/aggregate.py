import _bootstrap  # noqa: F401
from whisperquant.jobs import setup_logging
from whisperquant.report.aggregate import write_report

setup_logging(snakemake.log[0])
report = snakemake.params.report
write_report(
    snakemake.params.cells,
    snakemake.params.unsupported,
    snakemake.output.csv,
    snakemake.output.md,
    snakemake.output.plots,
    n_resamples=report["bootstrap_resamples"],
    seed=report["seed"],
    clean=report.get("clean_corpus"),
    noisy=report.get("noisy_corpus"),
    out_study=snakemake.output.study,
    pareto_max_wer=report.get("pareto_max_wer", 0.5),
    models=snakemake.params.models,
    corpora=snakemake.params.corpora,
)

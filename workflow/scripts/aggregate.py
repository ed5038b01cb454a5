import _bootstrap  # noqa: F401
from whisperquant.jobs import setup_logging
from whisperquant.report.aggregate import speaker_files, write_report

setup_logging(snakemake.log[0])
report = snakemake.params.report
speakers = None
if report.get("bootstrap_unit") == "speaker":  # the cluster bootstrap needs each corpus' speakers.tsv
    manifests = dict(zip(snakemake.params.corpus_names, snakemake.input.corpora, strict=True))
    speakers = speaker_files(manifests, snakemake.params.corpora)
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
    speakers=speakers,
)

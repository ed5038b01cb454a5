from pathlib import Path

import _bootstrap  # noqa: F401
from whisperquant.jobs import setup_logging
from whisperquant.report.aggregate import write_report

setup_logging(snakemake.log[0])
report = snakemake.params.report
speakers = None
if report.get("bootstrap_unit") == "speaker":  # the cluster bootstrap needs each corpus' speakers.tsv
    speakers = {}
    for corpus, manifest in zip(snakemake.params.corpus_names, snakemake.input.corpora, strict=True):
        path = Path(manifest).parent / "speakers.tsv"
        if not path.exists():
            source = snakemake.params.corpora[corpus]["source"]
            raise ValueError(f"report.bootstrap_unit: speaker, but corpus {corpus!r} (source {source}) lists no "
                             f"speakers ({path} does not exist); use bootstrap_unit: utterance")
        speakers[corpus] = path
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

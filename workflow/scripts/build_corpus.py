import _bootstrap  # noqa: F401
from whisperquant.config import downloads_dir
from whisperquant.jobs import build_corpus_job, setup_logging

setup_logging(snakemake.log[0])
build_corpus_job(
    snakemake.wildcards.corpus,
    snakemake.params.spec,
    snakemake.output[0],
    downloads_dir(snakemake.config),
    snakemake.input.source[0] if "from" in snakemake.params.spec else None,  # a derived corpus
)

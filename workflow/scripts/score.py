import _bootstrap  # noqa: F401
from whisperquant.jobs import score_job, setup_logging

setup_logging(snakemake.log[0])
score_job(
    snakemake.input.transcript,
    snakemake.input.timing,
    snakemake.input.corpus,
    snakemake.output.score,
    snakemake.output.utts,
)

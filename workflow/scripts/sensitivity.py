import _bootstrap  # noqa: F401
from whisperquant.jobs import sensitivity_job, set_threads, setup_logging

setup_logging(snakemake.log[0])
set_threads(snakemake.threads)
sensitivity_job(
    snakemake.wildcards.model,
    snakemake.input.model,
    snakemake.wildcards.scheme,
    snakemake.params.scheme,
    snakemake.input.calibration,
    snakemake.params.calibration,
    snakemake.output.csv,
    snakemake.output.json,
    snakemake.output.png,
)

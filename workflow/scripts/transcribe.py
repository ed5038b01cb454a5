import os

import _bootstrap  # noqa: F401
from whisperquant.jobs import setup_logging, transcribe_job

# the cores this process may run on (all of the machine's where affinity is unknown, e.g. macOS)
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

setup_logging(snakemake.log[0])
transcribe_job(
    snakemake.wildcards.model,
    snakemake.input.model,
    snakemake.wildcards.scheme,
    snakemake.params.scheme,
    snakemake.input.artifact,
    snakemake.wildcards.device,
    snakemake.input.corpus,
    snakemake.output.transcript,
    snakemake.output.timing,
    snakemake.params.transcription,
    snakemake.params.transcription["threads"],
    snakemake.log[0],
    # every core this process may use was claimed for it: no other job shares them
    exclusive=snakemake.threads >= CORES,
    code=snakemake.params.code,
)

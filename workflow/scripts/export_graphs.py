import _bootstrap  # noqa: F401
from whisperquant.jobs import export_graphs_job, set_threads, setup_logging

setup_logging(snakemake.log[0])
set_threads(snakemake.threads)
export_graphs_job(snakemake.input.model, snakemake.output.graphs)

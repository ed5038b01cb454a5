import _bootstrap  # noqa: F401
from whisperquant.jobs import quantize_job, set_threads, setup_logging

setup_logging(snakemake.log[0])
set_threads(snakemake.threads)
quantize_job(
    snakemake.wildcards.model,
    snakemake.input.model,
    snakemake.wildcards.scheme,
    snakemake.params.scheme,
    snakemake.output.artifact,  # its record: snakemake.output.record, beside it (quantize.artifact.record_path)
    snakemake.input.calibration[0] if snakemake.input.calibration else None,
    snakemake.params.calibration,
    snakemake.log[0],
    snakemake.input.sensitivity[0] if snakemake.input.sensitivity else None,
    declared_mem_mb=snakemake.resources.get("mem_mb"),
    graphs_dir=snakemake.input.graphs[0] if snakemake.input.graphs else None,
)

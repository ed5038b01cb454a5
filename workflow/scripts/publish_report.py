import _bootstrap  # noqa: F401
from whisperquant.jobs import setup_logging
from whisperquant.report.publish import publish

setup_logging(snakemake.log[0])
publish([(getattr(snakemake.input, k), getattr(snakemake.output, k)) for k in ("csv", "md", "study", "plots")])

import _bootstrap  # noqa: F401
from whisperquant.config import downloads_dir
from whisperquant.jobs import import_model_job, setup_logging

setup_logging(snakemake.log[0])
import_model_job(snakemake.wildcards.model, snakemake.params.spec, snakemake.output[0],
                 downloads_dir(snakemake.config))

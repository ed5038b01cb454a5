import _bootstrap  # noqa: F401
from whisperquant.evaluate.threads import available_cores, bind_openmp_threads

THREADS = snakemake.params.transcription["threads"]
# every core this process may use was claimed for it: no other job shares them
EXCLUSIVE = snakemake.threads >= available_cores()
# before torch loads its OpenMP runtime: one thread per core where the job holds its cores
BINDING = bind_openmp_threads(THREADS, EXCLUSIVE)

from whisperquant.jobs import setup_logging, transcribe_job  # noqa: E402

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
    THREADS,
    snakemake.log[0],
    exclusive=EXCLUSIVE,
    code=snakemake.params.code,
    thread_binding=BINDING,
)

# Validation, the grid of cells and input functions shared by every stage.

import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from whisperquant.config import (  # noqa: E402
    ConfigError,
    cells,
    check_config,
    downloads_dir,
    grid_corpora,
    job_mem_mb,
    model_params,
    quantize_mem_factor,
    transcription_params,
    validate_schema,
)
from whisperquant.provenance import code_digest  # noqa: E402

# whisperquant's own schema validation (the same JSON schema snakemake.utils.validate
# would use, defaults filled in the same way), because its messages name the key path
# where validate() dumps the schema and the config.
try:
    validate_schema(config)
    SCHEMES = check_config(config)
except ConfigError as e:
    raise WorkflowError(f"invalid configuration: {e}") from None

RESULTS = config["results"]
RESOURCES = config["resources"]
DOWNLOADS = downloads_dir(config)
LOGS = f"{RESULTS}/logs"
CELLS, UNSUPPORTED = cells(config, SCHEMES)
CALIBRATION = config["calibration"]
TRANSCRIPTION = config["transcription"]


wildcard_constraints:
    model="|".join(re.escape(m) for m in config["models"]),
    scheme="|".join(re.escape(s) for s in config["schemes"]),
    corpus="|".join(re.escape(c) for c in config["corpora"]),
    device="cpu|cuda",


def scheme_params(wildcards):
    return SCHEMES[wildcards.scheme]


def needs_calibration(scheme):
    from whisperquant.quantize import get_backend

    params = {k: v for k, v in SCHEMES[scheme].items() if k != "library"}
    return get_backend(SCHEMES[scheme]["library"]).needs_calibration(params)


def calibration_input(wildcards):
    # Lists, so the script always sees a list-like input (a bare string would index by character).
    if needs_calibration(wildcards.scheme):
        return [f"{RESOURCES}/corpora/{CALIBRATION['corpus']}/manifest.tsv"]
    return []


def calibration_params(wildcards):
    # What a calibrated cell's passes follow (recorded in its quantize record); None for the rest, so
    # changing the calibration settings re-runs only the calibrated cells.
    if not needs_calibration(wildcards.scheme):
        return None
    return {
        "utterances": CALIBRATION["utterances"],
        "max_new_tokens": CALIBRATION["max_new_tokens"],
        "language": TRANSCRIPTION.get("language", "en"),
    }


def graphs_input(wildcards):
    # The model's exported fp32 graphs, for the libraries that build from them (ONNX Runtime, OpenVINO):
    # exported once per model, not once per scheme.
    from whisperquant.quantize import get_backend

    if get_backend(SCHEMES[wildcards.scheme]["library"]).uses_graphs:
        return [f"{RESULTS}/graphs/{wildcards.model}"]
    return []


def mixed_sensitivity_input(wildcards):
    # A mixed-precision scheme is planned from the sensitivity table of its `mixed.sensitivity` scheme
    # (and, for a budget, the facts beside it: the width the layers were measured at).
    mixed = SCHEMES[wildcards.scheme].get("mixed")
    if mixed:
        table = f"{RESULTS}/report/sensitivity/{wildcards.model}/{mixed['sensitivity']}"
        return [f"{table}.csv"] + ([f"{table}.json"] if "budget_mb" in mixed else [])
    return []


def artifact_output(path):
    """A quantised artifact (or exported graphs) directory: kept, or with `artifacts: temp` deleted once
    no job needs it."""
    return temp(directory(path)) if config["artifacts"] == "temp" else directory(path)


def model_source_input(wildcards):
    """A local checkpoint's files, so that replacing them re-imports the model (remote sources: none)."""
    spec = config["models"][wildcards.model]
    folder = Path(spec.get("path", ""))
    if spec["source"] == "local":
        return [str(folder / "config.json")] + sorted(str(p) for p in folder.glob("*.safetensors"))
    if spec["source"] == "local_ct2":
        return [str(folder / f) for f in ("model.bin", "config.json", "tokenizer.json")]
    if spec["source"] == "random" and spec.get("tokenizer_from") in config["models"]:
        return [f"{RESOURCES}/models/{spec['tokenizer_from']}"]  # its tokenizer and generation config
    return []


def corpus_source_input(wildcards):
    spec = config["corpora"][wildcards.corpus]
    if "from" in spec:  # a derived corpus (e.g. noisy) needs the manifest of its source
        return [f"{RESOURCES}/corpora/{spec['from']}/manifest.tsv"]
    if spec["source"] == "manifest":  # the user's listing: editing it rebuilds the corpus
        return [spec["path"]]
    if spec["source"] == "kaldi":
        listing = ["wav.scp", "text"] + [f for f in ("segments", "utt2spk") if Path(spec["path"], f).exists()]
        return [str(Path(spec["path"], f)) for f in listing]
    return []


def transcribe_threads(wildcards):
    """Cores a transcription job claims: all of a local run's when `exclusive`, so timed work shares none."""
    threads = TRANSCRIPTION["threads"]
    cores = getattr(workflow, "_cores", None)
    if TRANSCRIPTION["exclusive"] and workflow.local_exec and isinstance(cores, int):
        return max(threads, cores)
    return threads


def model_mem_mb(model, factor=1.0):
    """Memory request of a job on ``model``: its ``mem_mb`` (or the default) times ``factor``."""
    return job_mem_mb(config["models"][model], factor)


def cell_records():
    return [
        {
            "model": c.model,
            "scheme": c.scheme,
            "device": c.device,
            "corpus": c.corpus,
            "quant": f"{RESULTS}/quantized/{c.model}/{c.scheme}.json",
            "timing": f"{RESULTS}/transcripts/{c.model}/{c.scheme}/{c.device}/{c.corpus}.timing.json",
            "score": f"{RESULTS}/scores/{c.model}/{c.scheme}/{c.device}/{c.corpus}.json",
            "utts": f"{RESULTS}/scores/{c.model}/{c.scheme}/{c.device}/{c.corpus}.utts.tsv",
            "transcript": f"{RESULTS}/transcripts/{c.model}/{c.scheme}/{c.device}/{c.corpus}.jsonl",
        }
        for c in CELLS
    ]


def unsupported_records():
    from whisperquant.quantize import get_backend

    rows = []
    for c, reason in UNSUPPORTED.items():
        spec = SCHEMES[c.scheme]
        params = {k: v for k, v in spec.items() if k != "library"}
        backend = get_backend(spec["library"])
        rows.append(
            {
                "model": c.model,
                "scheme": c.scheme,
                "device": c.device,
                "corpus": c.corpus,
                "library": spec["library"],
                "bits": backend.bits(params),
                "method": backend.method(params),
                "reason": reason,
            }
        )
    return rows

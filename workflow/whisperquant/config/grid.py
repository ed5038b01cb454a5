"""The grid of cells, and what each rule's params hold.

A *cell* is one (model, scheme, device, corpus).  Cells a backend cannot run
on a device are decided here, before any job runs, and reported as
``unsupported`` rows instead of being scheduled.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

#: A model's ``mem_mb`` when its config gives none.
DEFAULT_MODEL_MEM_MB = 4000
#: What a calibrated quantize job declares (``resources.mem_mb``, what SLURM holds it to), in multiples
#: of its model's ``mem_mb``.  Measured on base (``mem_mb`` 2,500, a 2-core AVX2 EPYC, config/kinds.yaml
#: and config/lowbit.yaml): the calibrated jobs peaked at 1,514 MB (torch.ao static, fused observers) to
#: 3,569 MB (ONNX Runtime static) and 3,797 MB (NNCF GPTQ + scale estimation), so 5,000 MB declared
#: leaves 32 % over the highest; a library whose calibration keeps more per utterance is checked
#: against it (:meth:`~whisperquant.quantize.base.Backend.calibration_kept_mb`).
QUANTIZE_MEM_FACTOR = 2.0
#: ... and an uncalibrated one: the same runs peaked at 721 MB (fp32) to 1,765 MB (ONNX Runtime int8,
#: which loads the exported graphs beside the checkpoint), so 2,500 MB declared leaves 42 % over it.
UNCALIBRATED_QUANTIZE_MEM_FACTOR = 1.0


def quantize_mem_factor(calibrated: bool) -> float:
    """What a quantize job declares, in multiples of its model's ``mem_mb`` (measured, above)."""
    return QUANTIZE_MEM_FACTOR if calibrated else UNCALIBRATED_QUANTIZE_MEM_FACTOR


def job_mem_mb(model_spec: dict, factor: float = 1.0) -> int:
    """Memory request of a job on a model (``models.<name>``): its ``mem_mb`` times ``factor``."""
    return int(model_spec.get("mem_mb", DEFAULT_MODEL_MEM_MB) * factor)


@dataclass(frozen=True)
class Cell:
    model: str
    scheme: str
    device: str
    corpus: str

    @property
    def key(self) -> str:
        return f"{self.model}/{self.scheme}/{self.device}/{self.corpus}"


def library_params(resolved: dict) -> dict:
    """A resolved scheme's parameters as its backend takes them: without ``library``."""
    return {k: v for k, v in resolved.items() if k != "library"}


# What each stage's outputs depend on: Snakemake reruns a job when one of its params
# changes, so a rule's params hold exactly these and nothing operational (cache
# locations, cluster memory, settings of another device).


def downloads_dir(config: dict) -> str:
    """Cache of pinned registry artifacts; where it lives never changes an output (not a param)."""
    return config.get("downloads") or f"{config['resources']}/downloads"


def model_params(spec: dict) -> dict:
    """A model's spec as far as its import depends on it (``mem_mb`` is a cluster resource)."""
    return {k: v for k, v in spec.items() if k != "mem_mb"}


def transcription_params(config: dict, device: str) -> dict:
    """Transcription settings a cell on ``device`` depends on (``cuda_*`` only matter on CUDA)."""
    t = config["transcription"]
    return {k: v for k, v in t.items() if device == "cuda" or not k.startswith("cuda_")}


def grid_blocks(config: dict) -> list[tuple[str, dict]]:
    """The grid as (key path, block) pairs: ``grid`` is one block or a list of blocks.

    Each block is a full product models x schemes x devices x corpora; a list lets a
    config run every scheme on one model and a few on another.
    """
    g = config["grid"]
    return [("grid", g)] if isinstance(g, dict) else [(f"grid[{i}]", b) for i, b in enumerate(g)]


def block_schemes(config: dict, block: dict) -> list[str]:
    """The schemes a grid block runs (``all``: every scheme of the config)."""
    s = block.get("schemes", "all")
    return list(config["schemes"]) if s == "all" else list(s)


def _union(items) -> list:
    return list(dict.fromkeys(items))


def scheme_names(config: dict) -> list[str]:
    """Every scheme some grid block runs, in first-seen order."""
    return _union(s for _, b in grid_blocks(config) for s in block_schemes(config, b))


def grid_models(config: dict) -> list[str]:
    return _union(m for _, b in grid_blocks(config) for m in b["models"])


def grid_corpora(config: dict) -> list[str]:
    return _union(c for _, b in grid_blocks(config) for c in b["corpora"])


def device_unavailable(config: dict, device: str) -> str | None:
    """Why cells on ``device`` are not planned, or None when they are.

    ``devices.cuda.available``: ``auto`` plans cuda cells only where the planning
    machine has an NVIDIA GPU (read from the driver, torch-free); ``true`` always
    (a CPU login node submitting to GPU nodes: a job that lands without a GPU ends
    as an ``unsupported`` row); ``false`` never.
    """
    if device != "cuda":
        return None
    setting = str(config.get("devices", {}).get("cuda", {}).get("available", "auto")).lower()
    if setting == "true":
        return None
    if setting == "false":
        return "CUDA cells are switched off (devices.cuda.available: false)"
    from ..quantize.base import cuda_present

    if cuda_present():
        return None
    return ("CUDA is not available on this machine (devices.cuda.available: auto; set it to true to plan "
            "cuda cells here and run them on GPU nodes)")


def cells(config: dict, schemes: dict[str, dict]) -> tuple[list[Cell], dict[Cell, str]]:
    """(runnable cells, unsupported cells with their reason), decided before any work runs.

    A cell is unsupported when its library cannot run on the device at all, or
    when the config does not plan that device (:func:`device_unavailable`).
    """
    from ..quantize import get_backend

    runnable, unsupported = [], {}
    seen = set()
    for _, b in grid_blocks(config):
        for m, s, d, c in itertools.product(b["models"], block_schemes(config, b), b.get("devices", ["cpu"]),
                                            b["corpora"]):
            cell = Cell(m, s, d, c)
            if cell in seen:
                continue
            seen.add(cell)
            reason = (get_backend(schemes[s]["library"]).unsupported_reason(library_params(schemes[s]), d)
                      or device_unavailable(config, d))
            if reason:
                unsupported[cell] = reason
            else:
                runnable.append(cell)
    return runnable, unsupported

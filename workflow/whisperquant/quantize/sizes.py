"""Honest size accounting of a saved artifact.

Three figures, because "model size" is ambiguous:

``artifact_bytes``
    bytes on disk of everything needed to reload the model (weights file(s) and
    quantisation metadata JSON; tokenizer/feature-extractor files excluded,
    they are the same for every scheme).  This is what "57 % smaller" refers
    to when compared with the fp32 artifact.
``param_bytes``
    bytes of all tensors (parameters, packed weights, scales, zero points,
    quantisation state): what the weights occupy in memory.
``float_param_bytes``
    the part of ``param_bytes`` in tensors outside the quantised modules
    (embeddings, positional tables, convolutions, layer norms, and ``proj_out``
    when untied), which no scheme here shrinks.  The token embedding alone is
    about half of Whisper tiny.en, which caps its compression.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}
_WEIGHT_FILES = re.compile(r".*\.safetensors$")
_META_FILES = ("quantization.json", "config.json", "generation_config.json")


def safetensors_index(path: str | Path) -> dict[str, int]:
    """Tensor name -> byte size, read from a safetensors header (no tensor is loaded)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return {k: v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items() if k != "__metadata__"}


def artifact_sizes(artifact_dir: str | Path, quantized_modules: list[str]) -> dict[str, int]:
    """The three figures above for an artifact directory."""
    artifact_dir = Path(artifact_dir)
    files = [
        p for p in artifact_dir.iterdir() if p.is_file() and (_WEIGHT_FILES.match(p.name) or p.name in _META_FILES)
    ]
    tensors: dict[str, int] = {}
    for p in files:
        if p.suffix == ".safetensors":
            tensors.update(safetensors_index(p))
    prefixes = tuple(m + "." for m in quantized_modules)
    in_targets = sum(b for k, b in tensors.items() if k.startswith(prefixes))
    total = sum(tensors.values())
    return {
        "artifact_bytes": sum(p.stat().st_size for p in files),
        "param_bytes": total,
        "quantized_module_bytes": in_targets,
        "float_param_bytes": total - in_targets,
    }

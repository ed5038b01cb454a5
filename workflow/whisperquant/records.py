"""What each stage writes, and the one atomic writer every stage uses.

Records are plain JSON objects (sorted keys, NaN allowed) so a person can read
them and any tool can join them; the ``TypedDict`` classes below document
their keys.  Every output goes through :func:`write_text` (a temporary file in
the same directory, then ``os.replace``), so a killed job never leaves a torn
file that a rerun would mistake for a finished one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, TypedDict

Status = Literal["ok", "failed", "unsupported"]


class QuantRecord(TypedDict, total=False):
    """``results/quantized/<model>/<scheme>.json`` (beside the artifact directory ``<scheme>/``):
    one quantised artifact, its sizes and the sha256 of each of its files."""

    model: str
    scheme: str
    library: str
    params: dict[str, Any]
    bits: float
    method: str
    status: Status
    reason: str
    log: str
    quantize_s: float
    calibration_utterances: list[str]
    calibration_tokens: int  # greedy tokens per calibration batch (the evaluation's prompt)
    quantized_modules: int
    artifact_bytes: int
    param_bytes: int
    quantized_module_bytes: int
    float_param_bytes: int
    file_sha256: dict[str, str]  # artifact file (relative path) -> sha256 hex (whisperquant.quantize.artifact)


class TimingRecord(TypedDict, total=False):
    """``results/transcripts/…/<corpus>.timing.json``: how one cell was transcribed and how fast."""

    model: str
    scheme: str
    device: str
    library: str
    corpus_manifest: str
    status: Status
    reason: str
    log: str
    utterances: int
    batches: int
    resumed_batches: int
    wall_s: float
    audio_s: float
    rtf: float
    rtfx: float
    peak_rss_mb: float
    peak_gpu_mb: float
    batch_size: int
    threads: int
    load_s: float


class ScoreRecord(TypedDict, total=False):
    """``results/scores/…/<corpus>.json``: corpus word errors of one cell."""

    status: Status
    reason: str
    log: str
    n_utts: int
    ref_words: int
    substitutions: int
    deletions: int
    insertions: int
    hits: int
    errors: int
    wer: float


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8, ``\\n`` line ends) atomically: temp file in the same directory + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(path: str | Path, obj: dict) -> Path:
    """Atomic JSON write, keys sorted (a record diffs cleanly between runs)."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))

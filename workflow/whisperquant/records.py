"""What each stage writes, and the one atomic writer every stage uses.

Records are plain JSON objects (sorted keys, NaN allowed) so a person can read
them and any tool can join them; the ``TypedDict`` classes below list every
key a job writes, and the jobs write through :func:`write_record`, which
refuses a key its type does not list.  Every output goes through :func:`write_text` (a temporary file in
the same directory, then ``os.replace``), so a killed job never leaves a torn
file that a rerun would mistake for a finished one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypedDict

Status = Literal["ok", "failed", "unsupported"]


class QuantRecord(TypedDict, total=False):
    """``results/quantized/<model>/<scheme>.json`` (beside the artifact directory ``<scheme>/``):
    one quantised artifact, its sizes and the sha256 of each of its files (:func:`whisperquant.jobs.quantize_job`)."""

    model: str
    scheme: str
    library: str
    params: dict[str, Any]  # the scheme's parameters as configured (backend defaults filled)
    bits: float
    method: str
    compute_dtype: str
    host: dict[str, Any]  # whisperquant.evaluate.host.host_record of the quantising machine
    status: Status
    reason: str
    log: str
    quantize_s: float  # building the artifact (for ONNX Runtime and OpenVINO, from graphs exported before)
    graphs: str  # the exported fp32 graphs the artifact was built from (rule export_graphs), where used
    peak_rss_mb: float  # the quantize job's peak resident memory (model, calibration, build, save)
    declared_mem_mb: int  # what the rule declared (resources.mem_mb: what SLURM enforces)
    calibration_utterances: list[str]
    calibration_tokens: int  # greedy tokens per calibration batch (the evaluation's prompt)
    mixed: dict[str, Any]  # a mixed scheme's plan: sensitivity, widths, mean_bits, plan, attempts[, estimated_bytes]
    resolved_params: dict[str, Any]  # the library's own parameters the plan became (what loading uses)
    quantized_modules: int
    artifact_bytes: int
    param_bytes: int
    quantized_module_bytes: int
    float_param_bytes: int
    file_sha256: dict[str, str]  # artifact file (relative path) -> sha256 hex (whisperquant.quantize.artifact)


class SensitivityRecord(TypedDict, total=False):
    """``results/report/sensitivity/<model>/<scheme>.json``: the facts of one layer-sensitivity analysis
    (:func:`whisperquant.jobs.sensitivity_job`; the table is the ``.csv`` beside it)."""

    model: str
    scheme: str
    library: str
    params: dict[str, Any]
    bits: float  # the width the layers were measured at (a mixed budget plans from it)
    layers: int
    batches: int
    scored_positions: int
    reference_s: float
    total_s: float
    max_new_tokens: int
    calibration_utterances: list[str]
    top5_by_kl: list[dict[str, Any]]


class TranscriptionTiming(TypedDict, total=False):
    """What the accuracy pass reports (:func:`whisperquant.evaluate.transcribe.transcribe_corpus`)."""

    utterances: int
    batches: int
    resumed_batches: int
    audio_s: float
    wall_s: float
    peak_rss_mb: float
    peak_gpu_mb: float
    batch_size: int
    device: str


class PairedTiming(TypedDict, total=False):
    """What the paired timing against fp32 reports (:func:`whisperquant.evaluate.speed.paired_timing`,
    completed by :func:`whisperquant.jobs.time_against_fp32`)."""

    timing_protocol: str
    timing_settings: dict[str, Any]
    pairs: int
    pair_ratios: list[float]  # the pairs the estimate used
    voided_pairs: list[dict[str, Any]]  # pairs with a stalled decode: {"pair": k, "ratio": r}, not used
    cell_walls: list[float]  # every timed decode of the cell (pairs + voided pairs + 1), seconds
    ref_walls: list[float]  # every timed decode of fp32 (pairs + voided pairs), seconds
    cell_cpu_s: list[float]  # the process CPU seconds of each of cell_walls' decodes
    ref_cpu_s: list[float]  # ... and of ref_walls'
    timing_stop: str
    timing_s: float
    speedup_vs_fp32: float
    speedup_low: float
    speedup_high: float
    self_ratio: float  # the fp32 cell only: its median against itself
    rtfx: float
    rtfx_low: float
    rtfx_high: float
    fp32_rtfx: float
    fp32_rtfx_low: float
    fp32_rtfx_high: float
    rtf: float
    timed_wall_s: float
    timed_audio_s: float
    core_s_per_audio_h: float
    gpu_s_per_audio_h: float  # instead of core_s_per_audio_h on CUDA
    cpu_s_per_audio_h: float
    cores: int
    energy_j_per_audio_h: float | None
    energy_source: str
    energy_reason: str
    timing_priority: dict[str, Any]
    load_1m_before: float | None
    load_1m_after: float | None
    timing_units: list[str]


class TimingRecord(TranscriptionTiming, PairedTiming, total=False):
    """``results/transcripts/…/<corpus>.timing.json``: how one cell was transcribed and how fast
    (:func:`whisperquant.jobs.transcribe_job`)."""

    model: str
    scheme: str
    library: str
    corpus_manifest: str
    compute_dtype: str
    status: Status
    reason: str
    log: str
    host: dict[str, Any]  # whisperquant.evaluate.host.host_record of the transcribing machine
    load_s: float
    threads: int
    exclusive: bool
    thread_binding: dict[str, Any]  # whisperquant.evaluate.threads.bind_openmp_threads: OpenMP threads pinned or not
    allocator: dict[str, Any]  # whisperquant.evaluate.memory.hold_freed_heap: glibc's thresholds fixed or not
    model_mem_mb: float


class ScoreRecord(TypedDict, total=False):
    """``results/scores/…/<corpus>.json``: corpus word errors of one cell (:func:`whisperquant.jobs.score_job`)."""

    status: Status
    reason: str | None
    log: str | None
    n_utts: int
    ref_words: int
    substitutions: int
    deletions: int
    insertions: int
    hits: int
    errors: int
    wer: float
    empty_hyps: int
    looping_hyps: int


def undeclared_keys(kind: type, record: Mapping[str, Any]) -> list[str]:
    """The keys of ``record`` that the record type ``kind`` (one of the ``TypedDict`` classes above) does not list."""
    return sorted(set(record) - set(kind.__required_keys__ | kind.__optional_keys__))


def write_record(path: str | Path, kind: type, record: Mapping[str, Any]) -> Path:
    """:func:`write_json` of a stage's record, refused if it holds a key its type ``kind`` does not list.

    The record types are the one description of what each stage writes (the report, the
    tests and a reader of ``results/`` go by them), so a key added to a job without its type
    is a bug caught where it is written, naming the key and the type to add it to.
    """
    extra = undeclared_keys(kind, record)
    if extra:
        raise TypeError(f"{path}: the record has key(s) {extra} that {kind.__name__} "
                        f"(whisperquant/records.py) does not list; declare them there")
    return write_json(path, dict(record))


@contextmanager
def written_dir(path: str | Path) -> Iterator[Path]:
    """A folder written whole or not at all: the block fills an empty sibling (``.<name>.tmp``), which
    replaces ``path`` when the block ends and is removed when it raises."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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

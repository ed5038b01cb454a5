"""Batched greedy transcription of a corpus, resumable, with honest timing.

One JSON line per utterance (id, reference, raw hypothesis, audio seconds);
hypotheses are kept exactly as decoded (normalisation happens when scoring).
Utterances are sorted by length so a batch holds similar durations, decoded
greedily (``num_beams=1``, no sampling) under ``torch.no_grad()``.

Crash safety: each finished batch is appended to ``<output>.partial`` and
fsync'd.  A rerun of the same cell (same fingerprint) skips the utterances
already there, so a killed job resumes where it stopped; the transcription job
keeps the partial file until its timing is written too, so a job that fails
or is killed while timing redoes only the timing.  The final output is
written atomically, sorted by id, only when every utterance is done, so a
partial transcript can never be scored.

Speed is not measured here: the accuracy pass decodes each batch once, and its
wall times (``wall_s``) are kept only as a record of what the pass cost.  A cell's
speed comes from the paired timing that follows it in the same job
(:mod:`whisperquant.evaluate.speed`), against fp32 on a fixed workload, because
a cell's own batches timed minutes apart from its reference's cannot be compared
on a drifting host.  Peak RSS is the process' high-water mark at the end of this
pass, before any reference model is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..data.audio import load_audio
from ..data.manifest import read_manifest
from ..models.decoding import generate_kwargs_for, is_multilingual  # noqa: F401  (the evaluation's rule, re-exported)
from .memory import peak_rss_mb


@dataclass(frozen=True)
class Utterance:
    id: str
    audio_path: Path
    duration: float
    reference: str


def load_corpus(manifest: str | Path) -> list[Utterance]:
    manifest = Path(manifest)
    root = manifest.parent
    return [Utterance(r.id, root / r.audio, float(r.duration), r.reference) for r in read_manifest(manifest)]


def length_sorted_batches(utts: list[Utterance], batch_size: int) -> list[list[Utterance]]:
    """Longest first (the first batch shows the worst-case memory at once), ties by id."""
    ordered = sorted(utts, key=lambda u: (-u.duration, u.id))
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


def fingerprint(**parts) -> str:
    """Identifies what a partial transcript was produced by, so a resume never mixes cells."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def partial_path(output: str | Path) -> Path:
    """Where the batches of ``output`` are kept while it is made (``<output>.partial``)."""
    output = Path(output)
    return output.with_name(output.name + ".partial")


def _read_partial(path: Path, fp: str) -> tuple[dict[str, dict], list[dict]]:
    """The batches a killed run finished (an empty state if there is no usable partial file).

    A partial file written for another fingerprint, or whose header line is torn,
    is discarded.  A torn or corrupt batch line (the job was killed mid-write)
    ends what is trusted: the file is cut back to the last complete line
    (atomically), so the batches appended by this run start on a fresh line and a
    second kill still finds every batch finished before it.
    """
    done: dict[str, dict] = {}
    batches: list[dict] = []
    if not path.exists():
        return done, batches
    # split on "\n" only: a hypothesis may hold other line separators (U+2028...)
    *lines, tail = path.read_text(encoding="utf-8").split("\n")  # tail: "" or a torn last line
    try:
        header = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("fingerprint") != fp:
        path.unlink()  # produced by other settings, or torn: start over
        return done, batches
    good = 1
    for line in lines[1:]:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            break  # a corrupt line: it and everything after it are redone
        if not isinstance(rec, dict) or rec.get("kind") != "batch":
            break
        batches.append(rec)
        for u in rec["utterances"]:
            done[u["id"]] = u
        good += 1
    if good < len(lines) or tail:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in lines[:good]), encoding="utf-8")
        os.replace(tmp, path)
    return done, batches


def decode_batch(model, processor, batch: list[Utterance], generate_kwargs: dict, device: str = "cpu",
                 dtype=None) -> tuple[list, float, float]:
    """Decode one batch greedily: (token sequences, wall seconds, process CPU seconds).

    The timed span is what a deployment pays per batch: feature extraction and
    ``generate`` (audio reading excluded; CUDA synchronised on both sides).
    """
    import torch

    audio = [load_audio(u.audio_path, u.id) for u in batch]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    c0, t0 = time.process_time(), time.perf_counter()
    feats = processor.feature_extractor(audio, sampling_rate=16000, return_tensors="pt").input_features
    feats = feats.to(device=device, dtype=dtype) if dtype is not None else feats.to(device)
    with torch.no_grad():
        tokens = model.generate(feats, **generate_kwargs)
    sync()
    return tokens, time.perf_counter() - t0, time.process_time() - c0


def transcribe_corpus(
    model,
    processor,
    utts: list[Utterance],
    output: str | Path,
    *,
    batch_size: int,
    generate_kwargs: dict,
    device: str = "cpu",
    dtype=None,
    fp: str = "",
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
    keep_partial: bool = False,
) -> dict:
    """Transcribe ``utts`` into ``output`` (JSONL); returns what the pass did (see the module docstring).

    ``keep_partial``: leave ``<output>.partial`` in place for the caller to remove once the
    rest of its job has succeeded.  A transcription job times the cell after this pass; if
    that fails or is killed, Snakemake deletes the job's outputs, this transcript included,
    and the rerun resumes every batch from the partial file instead of decoding them again.
    """
    import torch
    from tqdm import tqdm

    output = Path(output)
    partial = partial_path(output)
    done, batches_done = _read_partial(partial, fp)
    todo = [u for u in utts if u.id not in done]
    if not partial.exists():
        partial.write_text(json.dumps({"fingerprint": fp}) + "\n", encoding="utf-8")
    batches = length_sorted_batches(todo, batch_size)
    bar = tqdm(total=len(utts), initial=len(utts) - len(todo), unit="utt", disable=not progress,
               desc=output.stem, file=sys.stderr)

    def decode(batch: list[Utterance]) -> tuple[list[str], float]:
        tokens, wall, _ = decode_batch(model, processor, batch, generate_kwargs, device, dtype)
        return processor.tokenizer.batch_decode(tokens, skip_special_tokens=True), wall

    with open(partial, "a", encoding="utf-8") as sink:
        for i, batch in enumerate(batches):
            texts, wall = decode(batch)
            rec = {"kind": "batch", "wall_s": wall, "audio_s": round(sum(u.duration for u in batch), 3),
                   "utterances": [{"id": u.id, "reference": u.reference, "hypothesis": t,
                                   "audio_s": round(u.duration, 3)} for u, t in zip(batch, texts, strict=True)]}
            sink.write(json.dumps(rec, ensure_ascii=False) + "\n")
            sink.flush()
            os.fsync(sink.fileno())
            batches_done.append(rec)
            for u in rec["utterances"]:
                done[u["id"]] = u
            bar.update(len(batch))
            if on_batch:
                on_batch(i)
        bar.close()
    missing = [u.id for u in utts if u.id not in done]
    if missing:
        raise RuntimeError(f"transcription incomplete: {len(missing)} utterances missing, e.g. {missing[0]}")
    rows = [done[u.id] for u in sorted(utts, key=lambda u: u.id)]
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, output)
    audio_s = float(sum(r["audio_s"] for r in rows))
    timing = {
        "utterances": len(rows),
        "batches": len(batches_done),
        "resumed_batches": len(batches_done) - len(batches),
        "audio_s": round(audio_s, 3),
        "wall_s": round(float(sum(b["wall_s"] for b in batches_done)), 4),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "batch_size": batch_size,
        "device": device,
    }
    if device == "cuda":
        timing["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    if not keep_partial:
        partial.unlink()
    return timing

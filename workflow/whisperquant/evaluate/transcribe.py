"""Batched greedy transcription of a corpus, resumable, with honest timing.

One JSON line per utterance (id, reference, raw hypothesis, audio seconds);
hypotheses are kept exactly as decoded (normalisation happens when scoring).
Utterances are sorted by length so a batch holds similar durations, decoded
greedily (``num_beams=1``, no sampling) under ``torch.no_grad()``.

Crash safety: each finished batch is appended to ``<output>.partial`` and
fsync'd.  A rerun of the same cell (same fingerprint) skips the utterances
already there, so a killed job resumes where it stopped.  The final output is
written atomically, sorted by id, only when every utterance is done, so a
partial transcript can never be scored.

Timing protocol (one pass serves accuracy and speed): the first
``warmup_batches`` batches a process runs are untimed warm-up (their
hypotheses are kept: greedy decoding gives the same tokens warm or cold);
every later batch is timed.  If the timed batches add up to less than
``min_timed_s`` or fewer than ``min_timed_batches``, batches are decoded
again (same inputs, outputs discarded) until both hold.  A timed batch covers
feature extraction + ``generate`` (model load excluded; CUDA synchronised);
the cell's ``rtfx`` is the median over timed batches of audio seconds per
wall second, with the lowest and highest as ``rtfx_low``/``rtfx_high``.  That
the job's cores are not shared with another job is the workflow's business
(``transcription.exclusive``); the record says which it was.  Peak RSS is the
process' high-water mark.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..data.audio import load_audio
from ..data.manifest import read_manifest
from ..models.decoding import generate_kwargs_for, is_multilingual  # noqa: F401  (the evaluation's rule, re-exported)


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


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


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
    warmup_batches: int = 1,
    min_timed_s: float = 0.0,
    min_timed_batches: int = 1,
) -> dict:
    """Transcribe ``utts`` into ``output`` (JSONL); returns the timing record (see the module docstring)."""
    import torch
    from tqdm import tqdm

    output = Path(output)
    partial = output.with_name(output.name + ".partial")
    done, batches_done = _read_partial(partial, fp)
    todo = [u for u in utts if u.id not in done]
    if not partial.exists():
        partial.write_text(json.dumps({"fingerprint": fp}) + "\n", encoding="utf-8")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    batches = length_sorted_batches(todo, batch_size)
    bar = tqdm(total=len(utts), initial=len(utts) - len(todo), unit="utt", disable=not progress,
               desc=output.stem, file=sys.stderr)

    def decode(batch: list[Utterance]) -> tuple[list[str], float]:
        audio = [load_audio(u.audio_path, u.id) for u in batch]
        sync()
        t0 = time.perf_counter()
        feats = processor.feature_extractor(audio, sampling_rate=16000, return_tensors="pt").input_features
        feats = feats.to(device=device, dtype=dtype) if dtype is not None else feats.to(device)
        tokens = model.generate(feats, **generate_kwargs)
        sync()
        wall = time.perf_counter() - t0
        return processor.tokenizer.batch_decode(tokens, skip_special_tokens=True), wall

    ran = 0  # batches decoded by this process: the first `warmup_batches` are warm-up
    with open(partial, "a", encoding="utf-8") as sink, torch.no_grad():
        for i, batch in enumerate(batches):
            texts, wall = decode(batch)
            rec = {"kind": "batch", "wall_s": wall, "timed": ran >= warmup_batches,
                   "audio_s": round(sum(u.duration for u in batch), 3), "utterances": [
                {"id": u.id, "reference": u.reference, "hypothesis": t, "audio_s": round(u.duration, 3)}
                for u, t in zip(batch, texts, strict=True)]}
            sink.write(json.dumps(rec, ensure_ascii=False) + "\n")
            sink.flush()
            os.fsync(sink.fileno())
            batches_done.append(rec)
            for u in rec["utterances"]:
                done[u["id"]] = u
            ran += 1
            bar.update(len(batch))
            if on_batch:
                on_batch(i)
        bar.close()
        # Enough timed work: decode batches again (outputs discarded) until both minimums hold.
        timed = [(b["audio_s"], b["wall_s"]) for b in batches_done if b.get("timed")]
        repeats = 0
        cycle = length_sorted_batches(utts, batch_size)
        while cycle and (len(timed) < min_timed_batches or sum(w for _, w in timed) < min_timed_s):
            batch = cycle[(ran + repeats) % len(cycle)]
            _, wall = decode(batch)
            if ran + repeats >= warmup_batches:
                timed.append((round(sum(u.duration for u in batch), 3), wall))
            repeats += 1
    missing = [u.id for u in utts if u.id not in done]
    if missing:
        raise RuntimeError(f"transcription incomplete: {len(missing)} utterances missing, e.g. {missing[0]}")
    rows = [done[u.id] for u in sorted(utts, key=lambda u: u.id)]
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, output)
    audio_s = float(sum(r["audio_s"] for r in rows))
    speeds = sorted(a / w for a, w in timed if w > 0)
    timed_wall = float(sum(w for _, w in timed))
    timed_audio = float(sum(a for a, _ in timed))
    timing = {
        "utterances": len(rows),
        "batches": len(batches_done),
        "resumed_batches": len(batches_done) - len(batches),
        "audio_s": round(audio_s, 3),
        "wall_s": round(float(sum(b["wall_s"] for b in batches_done)), 4),
        "timed_batches": len(timed),
        "timing_repeats": repeats,
        "timed_wall_s": round(timed_wall, 4),
        "rtf": round(timed_wall / timed_audio, 5) if timed_audio else float("nan"),
        "rtfx": round(statistics.median(speeds), 3) if speeds else float("nan"),
        "rtfx_low": round(speeds[0], 3) if speeds else float("nan"),
        "rtfx_high": round(speeds[-1], 3) if speeds else float("nan"),
        # the protocol, not its outcome (timed_batches and timing_repeats say how it went)
        "timing_pass": (f"accuracy pass, {warmup_batches} untimed warm-up batch(es) per process, then every "
                        f"batch timed, batches repeated until at least {min_timed_batches} timed batches "
                        f"and {min_timed_s:g} s"),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "batch_size": batch_size,
        "device": device,
    }
    if device == "cuda":
        timing["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    partial.unlink()
    return timing

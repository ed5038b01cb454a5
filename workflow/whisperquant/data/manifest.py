"""Corpus manifests: ``manifest.tsv`` + one 16 kHz mono 16-bit WAV per utterance.

Every corpus, whatever its source (embedded registry artifacts, LibriSpeech from
the Hub or openslr, a noisy derivative), is materialised in the same form::

    <corpus>/manifest.tsv   id  audio  duration  reference  sha256   (sorted by id)
    <corpus>/wav/<id>.wav

``reference`` is the source's transcript, unnormalised; ``sha256`` is that of
the WAV file, so a reader can verify the audio it scores.  Writes are atomic:
a failed build leaves the previous corpus (or nothing) in place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..records import write_text
from .audio import SAMPLE_RATE, AudioError, write_wav
from .fetch import sha256_file

MANIFEST = "manifest.tsv"
MANIFEST_COLUMNS = ("id", "audio", "duration", "reference", "sha256")
#: Beside the manifest, where the source knows them: ``id<TAB>speaker`` per utterance.
SPEAKERS = "speakers.tsv"

@dataclass(frozen=True)
class Row:
    id: str
    audio: str
    duration: str
    reference: str
    sha256: str


def _check_text(value: str, what: str) -> None:
    if any(c in value for c in "\t\r\n"):
        raise ValueError(f"{what} {value!r} contains a tab or newline and cannot go into a TSV manifest")


def write_manifest(out_dir: str | Path, rows: Iterable[Row]) -> Path:
    """Write ``out_dir/manifest.tsv`` atomically (temp file + os.replace), rows sorted by id."""
    out_dir = Path(out_dir)
    rows = sorted(rows, key=lambda r: r.id)
    lines = ["\t".join(MANIFEST_COLUMNS)]
    for r in rows:
        for field in (r.id, r.audio, r.reference):
            _check_text(field, f"utterance {r.id}:")
        lines.append("\t".join((r.id, r.audio, r.duration, r.reference, r.sha256)))
    target = out_dir / MANIFEST
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".manifest-", suffix=".tsv")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target


def read_manifest(path: str | Path) -> list[Row]:
    """Read a manifest written by :func:`write_manifest` (a directory or the .tsv itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or tuple(lines[0].split("\t")) != MANIFEST_COLUMNS:
        raise ValueError(f"{path}: header is not {' '.join(MANIFEST_COLUMNS)}")
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(MANIFEST_COLUMNS):
            raise ValueError(f"{path}:{n}: expected {len(MANIFEST_COLUMNS)} fields, got {len(fields)}")
        rows.append(Row(*fields))
    return rows


def _read_wav_pcm(path: Path) -> np.ndarray:
    import soundfile as sf

    pcm, rate = sf.read(str(path), dtype="int16", always_2d=True)
    if rate != SAMPLE_RATE or pcm.shape[1] != 1:
        raise AudioError(f"{path}: expected 16 kHz mono, got {rate} Hz x {pcm.shape[1]} channels")
    return pcm[:, 0]


def compare_manifests(a: str | Path, b: str | Path, *, check_audio: bool = True) -> list[str]:
    """Differences between two corpora (ids, references, durations, audio samples); [] if none.

    ``a`` and ``b`` are corpus directories or manifest paths.  Audio is compared by the
    decoded 16-bit samples of each WAV, not by file bytes.
    """
    pa, pb = Path(a), Path(b)
    da = pa if pa.is_dir() else pa.parent
    db = pb if pb.is_dir() else pb.parent
    ra = {r.id: r for r in read_manifest(pa)}
    rb = {r.id: r for r in read_manifest(pb)}
    diffs = []
    if only := sorted(set(ra) - set(rb)):
        diffs.append(f"ids only in {pa}: {', '.join(only)}")
    if only := sorted(set(rb) - set(ra)):
        diffs.append(f"ids only in {pb}: {', '.join(only)}")
    for uid in sorted(set(ra) & set(rb)):
        x, y = ra[uid], rb[uid]
        if x.reference != y.reference:
            diffs.append(f"utterance {uid}: references differ: {x.reference!r} vs {y.reference!r}")
        if x.duration != y.duration:
            diffs.append(f"utterance {uid}: durations differ: {x.duration} vs {y.duration}")
        if check_audio:
            sa, sb = _read_wav_pcm(da / x.audio), _read_wav_pcm(db / y.audio)
            if sa.shape != sb.shape:
                diffs.append(f"utterance {uid}: {sa.size} vs {sb.size} samples")
            elif not np.array_equal(sa, sb):
                n = int(np.count_nonzero(sa != sb))
                diffs.append(f"utterance {uid}: {n} of {sa.size} samples differ")
    return diffs


def materialize(utts: Iterable[tuple[str, str, Callable[[], np.ndarray]]], out_dir: str | Path) -> Path:
    """Write each (id, reference, load_samples) as a WAV, then the manifest.

    ``load_samples`` returns 16 kHz mono float samples.  The WAVs are staged and moved into
    place as a whole, and the manifest is written last, so a failure (e.g. an unreadable
    utterance, named in the error) leaves no partial corpus behind.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".build-"))
    try:
        (staging / "wav").mkdir()
        rows = []
        for utt_id, reference, load in utts:
            _check_text(reference, f"utterance {utt_id}: reference")
            samples = load()
            rel = f"wav/{utt_id}.wav"
            write_wav(staging / rel, samples)
            duration = f"{samples.shape[0] / SAMPLE_RATE:.3f}"
            rows.append(Row(utt_id, rel, duration, reference, sha256_file(staging / rel)))
        wav_dir = out_dir / "wav"
        if wav_dir.exists():
            shutil.rmtree(wav_dir)
        os.replace(staging / "wav", wav_dir)
        return write_manifest(out_dir, rows)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_speakers(out_dir: str | Path, pairs: Iterable[tuple[str, str | None]]) -> None:
    """``speakers.tsv`` from (utterance id, speaker) pairs; none with a speaker removes a stale one."""
    speakers = sorted((i, s) for i, s in pairs if s)
    target = Path(out_dir) / SPEAKERS
    if speakers:
        write_text(target, "id\tspeaker\n" + "".join(f"{i}\t{s}\n" for i, s in speakers))
    elif target.exists():
        target.unlink()


def read_speakers(path: str | Path) -> dict[str, str]:
    """``speakers.tsv`` (``id``, ``speaker``) of a corpus as {utterance id: speaker}."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if not lines or lines[0] != "id\tspeaker":
        raise ValueError(f"{path}: header is not 'id<TAB>speaker'")
    out = {}
    for n, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != 2 or not all(fields):
            raise ValueError(f"{path}:{n}: expected an id and a speaker")
        out[fields[0]] = fields[1]
    return out

"""Corpus source ``kaldi``: a Kaldi-style data directory (``wav.scp`` + ``text``, optional ``segments``, ``utt2spk``).

* ``wav.scp``: ``<recording-id> <audio path>`` per line (relative paths are
  resolved against the data directory).  Piped entries (``<command> |``) would
  run arbitrary commands and are refused with the line that has one.
* ``text``: ``<utterance-id> <transcript ...>``.
* ``segments`` (optional): ``<utterance-id> <recording-id> <start s> <end s>``;
  without it every recording is one utterance whose id is the recording id.
* ``utt2spk`` (optional): ``<utterance-id> <speaker>``, kept in ``speakers.tsv``.

Every problem (a missing file, a malformed line, an utterance without a
transcript or a recording, an empty transcript, a duplicate id) is reported
before any audio is converted, naming the file and line; a segment that ends
after its recording, or unreadable audio, stops the build naming the utterance,
and leaves no partial corpus behind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..audio import SAMPLE_RATE, AudioError, load_audio
from ..manifest import materialize, write_speakers
from .manifest import ID_PATTERN, CorpusInputError, Listed


def _table(path: Path, min_fields: int, *, required: bool = True) -> dict[str, tuple[list[str], str]] | None:
    """``{first field: (the other fields, "file:line")}``; duplicate keys and short lines are errors."""
    if not path.is_file():
        if required:
            raise CorpusInputError(f"{path}: required file of a Kaldi data directory does not exist")
        return None
    out: dict[str, tuple[list[str], str]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        where = f"{path}:{n}"
        if len(fields) < min_fields:
            raise CorpusInputError(f"{where}: expected at least {min_fields} fields, got {len(fields)}")
        key = fields[0]
        if key in out:
            raise CorpusInputError(f"{where}: duplicate id {key!r} (first at {out[key][1]})")
        if not ID_PATTERN.match(key):
            raise CorpusInputError(f"{where}: id {key!r} is not a safe file name (letters, digits, '.', '_', '-')")
        out[key] = (fields[1:], where)
    return out


def read_data_dir(data_dir: str | Path) -> tuple[list[Listed], dict[str, tuple[float, float]]]:
    """Check a Kaldi data directory; returns the utterances and, per segmented utterance, (start, end) s."""
    d = Path(data_dir)
    if not d.is_dir():
        raise CorpusInputError(f"{d}: Kaldi data directory does not exist")
    wav = _table(d / "wav.scp", 2)
    text = _table(d / "text", 1)
    segments = _table(d / "segments", 4, required=False)
    utt2spk = _table(d / "utt2spk", 2, required=False)
    recordings: dict[str, Path] = {}
    for rec_id, (rest, where) in wav.items():
        if rest[-1].endswith("|") or (len(rest) > 1 and rest[-1] == "|"):
            raise CorpusInputError(f"{where}: piped wav.scp entries (a command ending in '|') are not supported; "
                                   "give the audio file's path")
        if len(rest) != 1:
            raise CorpusInputError(f"{where}: expected '<recording-id> <path>' (paths with spaces are not "
                                   "supported), got {len(rest) + 1} fields")
        p = Path(rest[0])
        recordings[rec_id] = p if p.is_absolute() else d / p
    spans: dict[str, tuple[float, float]] = {}
    if segments is None:
        utt_rec = {u: u for u in text}
    else:
        utt_rec = {}
        for utt, (rest, where) in segments.items():
            if len(rest) != 3:
                raise CorpusInputError(f"{where}: expected '<utterance-id> <recording-id> <start> <end>'")
            try:
                start, end = float(rest[1]), float(rest[2])
            except ValueError:
                raise CorpusInputError(f"{where}: start and end must be seconds, got {rest[1]!r} {rest[2]!r}") from None
            if not 0 <= start < end:
                raise CorpusInputError(f"{where}: segment {utt} must have 0 <= start < end, got {start} {end}")
            utt_rec[utt] = rest[0]
            spans[utt] = (start, end)
    listed = []
    for utt, (words, where) in text.items():
        transcript = " ".join(words)
        if not transcript:
            raise CorpusInputError(f"{where}: utterance {utt}: empty transcript")
        if utt not in utt_rec:
            raise CorpusInputError(f"{where}: utterance {utt} has a transcript but no entry in "
                                   f"{d / 'segments'}")
        rec = utt_rec[utt]
        if rec not in recordings:
            src = segments[utt][1] if segments is not None else where
            raise CorpusInputError(f"{src}: recording {rec!r} of utterance {utt} is not in {d / 'wav.scp'}")
        if not recordings[rec].is_file():
            raise CorpusInputError(f"{wav[rec][1]}: audio file {recordings[rec]} does not exist")
        speaker = utt2spk[utt][0][0] if utt2spk and utt in utt2spk else None
        listed.append(Listed(utt, recordings[rec], transcript, speaker, where))
    if segments is not None:
        for utt, (_, where) in segments.items():
            if utt not in text:
                raise CorpusInputError(f"{where}: segment {utt} has no transcript in {d / 'text'}")
    if not listed:
        raise CorpusInputError(f"{d / 'text'}: lists no utterances")
    return listed, spans


def build(name: str, spec: dict, out_dir: Path, cache_dir: Path, upstream: Path | None = None) -> Path:
    """The corpus of the Kaldi data directory ``spec['path']``."""
    listed, spans = read_data_dir(spec["path"])
    if spec.get("limit"):
        listed = listed[: spec["limit"]]
    cache: dict[Path, np.ndarray] = {}

    def loader(u: Listed):
        def load() -> np.ndarray:
            if u.audio not in cache:
                cache.clear()  # segments are read recording by recording (sorted below): keep one
                cache[u.audio] = load_audio(u.audio, u.id)
            samples = cache[u.audio]
            if u.id not in spans:
                return samples
            start, end = spans[u.id]
            a, b = round(start * SAMPLE_RATE), round(end * SAMPLE_RATE)
            if b > samples.shape[0] + SAMPLE_RATE // 100:  # 10 ms of rounding slack
                raise AudioError(f"utterance {u.id}: segment ends at {end} s, after its recording "
                                 f"({samples.shape[0] / SAMPLE_RATE:.3f} s, {u.audio})")
            return samples[a:b]
        return load

    ordered = sorted(listed, key=lambda u: (str(u.audio), spans.get(u.id, (0.0, 0.0)), u.id))
    manifest = materialize(((u.id, u.text, loader(u)) for u in ordered), out_dir)
    write_speakers(out_dir, ((u.id, u.speaker) for u in listed))
    return manifest

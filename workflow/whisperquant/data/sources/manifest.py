"""Corpus source ``manifest``: the user's own recordings, listed in a TSV, CSV or JSONL file.

Each line (row, JSON object) names an audio file and its transcript; columns
(keys) are configurable and default to ``audio`` and ``text``, with an optional
``id`` (default: the audio file's name without extension) and ``speaker``.
Relative audio paths are resolved against the manifest file's folder.  Audio in
any format soundfile reads (WAV, FLAC, OGG, ...) at any rate or channel count is
converted to 16 kHz mono, as for every other source.

Every problem is reported before any audio is written, naming the file and line
(or the utterance id): a missing column, an empty transcript, a duplicate id, a
missing or unreadable audio file.  The speaker of each utterance, where given,
is kept next to the manifest in ``speakers.tsv``.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..audio import AudioError, load_audio
from ..manifest import materialize, write_speakers

#: What an utterance id may look like: it becomes a file name (``wav/<id>.wav``).
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}


class CorpusInputError(ValueError):
    """Bad input in a user's corpus description; the message names the file and line."""


@dataclass(frozen=True)
class Listed:
    """One utterance as a user's file lists it, with where it is listed (``file:line``)."""

    id: str
    audio: Path
    text: str
    speaker: str | None
    where: str


def _records(path: Path, fmt: str):
    """(line number, {column: value}) of every non-empty record of the file."""
    text = path.read_text(encoding="utf-8-sig")
    if fmt == "jsonl":
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusInputError(f"{path}:{n}: not a JSON object ({e.msg})") from None
            if not isinstance(obj, dict):
                raise CorpusInputError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
            yield n, obj
        return
    # TSV fields are taken literally (a transcript may hold a quote); CSV follows the usual quoting
    reader = (csv.reader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE) if fmt == "tsv"
              else csv.reader(text.splitlines()))
    header = None
    for n, fields in enumerate(reader, start=1):
        if not any(f.strip() for f in fields):
            continue
        if header is None:
            header = [h.strip() for h in fields]
            continue
        if len(fields) != len(header):
            raise CorpusInputError(f"{path}:{n}: {len(fields)} fields, the header has {len(header)}")
        yield n, dict(zip(header, fields, strict=True))


def read_listing(path: str | Path, *, audio_column: str = "audio", text_column: str = "text",
                 id_column: str = "id", speaker_column: str = "speaker") -> list[Listed]:
    """Parse and check a user's manifest file; raises :class:`CorpusInputError` naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise CorpusInputError(f"{path}: manifest file does not exist")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise CorpusInputError(f"{path}: unknown manifest format {path.suffix!r}; valid: "
                               f"{', '.join(sorted(FORMATS))}")
    listed, seen = [], {}
    for n, rec in _records(path, fmt):
        where = f"{path}:{n}"
        for column in (audio_column, text_column):
            if column not in rec:
                raise CorpusInputError(f"{where}: no column {column!r}; the file has: {', '.join(map(str, rec))}")
        audio = str(rec[audio_column] or "").strip()
        if not audio:
            raise CorpusInputError(f"{where}: empty audio path")
        text = " ".join(str(rec[text_column] or "").split())
        audio_path = Path(audio) if Path(audio).is_absolute() else path.parent / audio
        utt_id = str(rec.get(id_column) or "").strip() or Path(audio).stem
        if not text:
            raise CorpusInputError(f"{where}: utterance {utt_id}: empty transcript")
        if not ID_PATTERN.match(utt_id):
            raise CorpusInputError(f"{where}: utterance id {utt_id!r} is not a safe file name "
                                   "(letters, digits, '.', '_', '-'; not starting with a punctuation mark)")
        if utt_id in seen:
            raise CorpusInputError(f"{where}: duplicate utterance id {utt_id!r} (first at line {seen[utt_id]})")
        seen[utt_id] = n
        if not audio_path.is_file():
            raise CorpusInputError(f"{where}: utterance {utt_id}: audio file {audio_path} does not exist")
        speaker = str(rec.get(speaker_column) or "").strip() or None
        listed.append(Listed(utt_id, audio_path, text, speaker, where))
    if not listed:
        raise CorpusInputError(f"{path}: lists no utterances")
    return listed


def materialize_listed(listed: list[Listed], out_dir: Path) -> Path:
    """Convert every listed utterance to the canonical WAV and write the manifest (and speakers)."""

    def loader(item: Listed):
        def load():
            try:
                return load_audio(item.audio, item.id)
            except AudioError as e:
                raise AudioError(f"{item.where}: {e}") from None
        return load

    manifest = materialize(((u.id, u.text, loader(u)) for u in listed), out_dir)
    write_speakers(out_dir, ((u.id, u.speaker) for u in listed))
    return manifest


def build(name: str, spec: dict, out_dir: Path, cache_dir: Path, upstream: Path | None = None) -> Path:
    """The corpus listed in ``spec['path']`` (its column names from ``spec['columns']``)."""
    columns = spec.get("columns", {})
    listed = read_listing(spec["path"], audio_column=columns.get("audio", "audio"),
                          text_column=columns.get("text", "text"), id_column=columns.get("id", "id"),
                          speaker_column=columns.get("speaker", "speaker"))
    if spec.get("limit"):
        listed = listed[: spec["limit"]]
    return materialize_listed(listed, out_dir)

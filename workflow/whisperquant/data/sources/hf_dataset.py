"""Corpus source ``hf_dataset``: any Hugging Face speech dataset by id, config, split and pinned revision.

Only the files of the wanted split are downloaded: the dataset's data-file
patterns are resolved at the pinned revision (metadata only), as for
LibriSpeech (:mod:`.librispeech`), and read with the dataset's own packaged
loader (parquet for almost every speech dataset on the Hub).  Audio stays
undecoded (``Audio(decode=False)``) and its bytes are decoded with soundfile,
then converted to 16 kHz mono.  ``data_files`` (local files in the Hub
dataset's schema) reads the same way without the Hub, which is how this is
proven offline.

A branch name instead of a commit is refused unless ``allow_unpinned: true``;
then the commit it resolves to is what is read, and ``SOURCE.json`` beside the
manifest records it (copy it into the config to pin the corpus).

Columns are named in the config (``audio_column``, ``text_column``, optional
``id_column``; without it ids are ``<split>-<row number>``).  ``filter`` keeps
rows whose column equals a value (or is one of a list); ``limit`` keeps the
first rows after that, in id order.  A missing column, an empty transcript (or,
with ``drop_empty_text``, none: such rows are skipped, as the Open ASR
Leaderboard's scripts skip them), a duplicate id and unreadable audio are
errors that name the row's id.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from ...records import write_json
from ..audio import AudioError, decode_bytes, to_mono_16k
from ..fetch import from_hub
from ..manifest import materialize, write_speakers
from .manifest import ID_PATTERN, CorpusInputError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
COMMIT = re.compile(r"^[0-9a-f]{40}$")


def resolve_revision(dataset: str, revision: str) -> str:
    """The commit a branch or tag of a Hub dataset points to now (a commit hash is returned as is)."""
    if COMMIT.match(revision):
        return revision
    from huggingface_hub import HfApi

    return HfApi().dataset_info(dataset, revision=revision).sha


def safe_id(raw: str) -> str:
    """A dataset's id as a file name: unsafe characters become ``_`` (``a/b c`` -> ``a_b_c``)."""
    out = _UNSAFE.sub("_", str(raw).strip()).lstrip("._-")
    return out


def _load(spec: dict, cache_dir: Path):
    """(the split as a ``datasets.Dataset`` with undecoded audio, a description of where it came from)."""
    from datasets import Audio, load_dataset, load_dataset_builder

    split = spec["split"]
    files = spec.get("data_files")
    if files is not None:
        files = [files] if isinstance(files, str | os.PathLike) else list(files)
        for f in files:
            if not Path(f).is_file():
                raise CorpusInputError(f"data_files: {f} does not exist")
        fmt = spec.get("format", "parquet")
        source = f"{fmt} {', '.join(map(str, files))}"
    else:
        revision = spec.get("revision") or ""
        if not COMMIT.match(revision) and not spec.get("allow_unpinned"):
            raise CorpusInputError(f"{spec['dataset']}: a Hub dataset needs a pinned revision (a 40-hex commit "
                                   f"hash, got {revision!r}), so that every run reads the same data; "
                                   "allow_unpinned: true reads a branch and records the commit it resolved to")
        with from_hub(f"dataset {spec['dataset']}@{revision or 'main'}"):
            revision = resolve_revision(spec["dataset"], revision or "main")
            builder = load_dataset_builder(spec["dataset"], spec.get("config"), revision=revision,
                                           cache_dir=str(cache_dir))
        data_files = builder.config.data_files or {}
        if split not in data_files:
            raise CorpusInputError(f"{spec['dataset']}@{revision}: config {spec.get('config')!r} has no "
                                   f"split {split!r} (splits: {', '.join(sorted(data_files)) or 'none'})")
        files = [str(f) for f in data_files[split]]
        fmt = type(builder).__module__.rsplit(".", 1)[-1]  # the packaged loader: parquet, json, csv, ...
        source = f"{spec['dataset']}@{revision} ({spec.get('config') or 'default'}/{split})"
    with from_hub(source) if spec.get("data_files") is None else contextlib.nullcontext():
        ds = load_dataset(fmt, data_files={split: files}, split=split, cache_dir=str(cache_dir))
    audio_col = spec.get("audio_column", "audio")
    needed = [audio_col, spec.get("text_column", "text")]
    needed += [spec[k] for k in ("id_column", "speaker_column") if spec.get(k)]
    needed += list(spec.get("filter") or {})
    if missing := [c for c in needed if c not in ds.column_names]:
        raise CorpusInputError(f"{source}: no column {missing[0]!r}; the dataset has: {', '.join(ds.column_names)}")
    return ds.cast_column(audio_col, Audio(decode=False)), source


def build(name: str, spec: dict, out_dir: Path, cache_dir: Path, upstream: Path | None = None) -> Path:
    """The corpus of ``spec`` (see the module docstring)."""
    ds, source = _load(spec, Path(cache_dir) / "hf")
    text_col, audio_col, id_col = spec.get("text_column", "text"), spec.get("audio_column", "audio"), \
        spec.get("id_column")
    for column, wanted in (spec.get("filter") or {}).items():
        allowed = set(wanted) if isinstance(wanted, list) else {wanted}
        keep = [i for i, v in enumerate(ds[column]) if v in allowed]
        ds = ds.select(keep)
    ids, texts, index = [], {}, {}
    for i, (raw_id, text) in enumerate(zip(ds[id_col] if id_col else range(len(ds)), ds[text_col], strict=True)):
        uid = safe_id(raw_id) if id_col else f"{spec['split']}-{i:06d}"
        if not ID_PATTERN.match(uid):
            raise CorpusInputError(f"{source}: row {i}: id {raw_id!r} cannot be made a file name")
        if uid in index:
            raise CorpusInputError(f"{source}: duplicate utterance id {uid!r} (rows {index[uid]} and {i})")
        text = " ".join(str(text or "").split())
        if not text:
            if spec.get("drop_empty_text"):
                continue
            raise CorpusInputError(f"{source}: utterance {uid}: empty transcript (set drop_empty_text: true "
                                   "to skip such rows)")
        index[uid] = i
        texts[uid] = text
        ids.append(uid)
    if not ids:
        raise CorpusInputError(f"{source}: no utterances left after the filter")
    chosen = sorted(ids)[: spec["limit"]] if spec.get("limit") else sorted(ids)

    def loader(uid: str):
        def load():
            audio = ds[index[uid]][audio_col] or {}
            data = audio.get("bytes")
            if data is None and audio.get("path") and Path(audio["path"]).is_file():
                data = Path(audio["path"]).read_bytes()
            if not data:
                raise AudioError(f"utterance {uid}: {source} holds no audio bytes for it")
            samples, rate = decode_bytes(bytes(data), utt_id=uid)
            return to_mono_16k(samples, rate, uid)
        return load

    manifest = materialize(((uid, texts[uid], loader(uid)) for uid in chosen), out_dir)
    if spec.get("speaker_column"):
        spk = ds[spec["speaker_column"]]
        write_speakers(out_dir, ((u, str(spk[index[u]])) for u in chosen))
    write_json(Path(out_dir) / "SOURCE.json", {"source": source, "utterances": len(chosen),
                                               **{k: spec.get(k) for k in ("dataset", "config", "split", "filter")}})
    return manifest

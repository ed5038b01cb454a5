"""LibriSpeech corpora from its two real sources, materialised as identical manifests.

Sources
-------
* ``hf``: the Hugging Face dataset ``openslr/librispeech_asr`` (config ``all``; splits
  ``test.clean``, ``test.other``, ``validation.clean``, ``validation.other``), pinned by
  ``revision``.  Audio stays undecoded (``Audio(decode=False)``: torchcodec does not load
  next to a CPU torch) and its FLAC bytes are decoded with soundfile.  The same code reads
  local parquet files in the Hub's schema (``data_files=``), which is how it is proven
  offline.
* ``openslr``: the tarballs of https://www.openslr.org/12 (``<split>.tar.gz``), downloaded
  with HTTP Range resume and checked against the MD5 values openslr publishes
  (``resources/12/md5sum.txt``), then read straight from the tarball or from an extracted
  tree ``LibriSpeech/<split>/<speaker>/<chapter>/``.

Both produce the same corpus directory for the same utterances::

    out_dir/manifest.tsv   id  audio  duration  reference  sha256   (sorted by id)
    out_dir/wav/<id>.wav   16 kHz mono 16-bit PCM, written with audio.write_wav

``reference`` is the transcript exactly as the source gives it (LibriSpeech: upper case, no
punctuation), unnormalised.  LibriSpeech audio is 16 kHz mono 16-bit FLAC; its samples are
written to the WAV unchanged (see :func:`_decode_flac`).

Calibration data must come from a dev split, never from the test sets:
:func:`check_calibration_split` enforces that.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio import AudioError, decode_bytes, to_mono_16k
from ..fetch import FetchError, download, from_hub
from ..manifest import (  # noqa: F401  (re-exported for callers of this module)
    MANIFEST,
    MANIFEST_COLUMNS,
    Row,
    compare_manifests,
    materialize,
    read_manifest,
    write_manifest,
    write_speakers,
)

# --------------------------------------------------------------------------- splits

HF_DATASET = "openslr/librispeech_asr"
HF_CONFIG = "all"
#: our split names (openslr's) -> split names of the Hub dataset's ``all`` config
HF_SPLITS = {
    "test-clean": "test.clean",
    "test-other": "test.other",
    "dev-clean": "validation.clean",
    "dev-other": "validation.other",
}
SPLITS = tuple(HF_SPLITS)
TEST_SPLITS = ("test-clean", "test-other")
CALIBRATION_SPLITS = ("dev-clean", "dev-other")

OPENSLR_BASE_URL = "https://www.openslr.org/resources/12"
#: MD5 of the tarballs as published in https://www.openslr.org/resources/12/md5sum.txt
OPENSLR_MD5 = {
    "test-clean": "32fa31d27d2e1cad72775fee3f4849a9",
    "test-other": "fb5a50374b501bb3bac4815ee91d3135",
    "dev-clean": "42e2234ba48799c1f50f24a7926300a1",
    "dev-other": "c8d0bcc9cca99d4f8b62fcc847357931",
}
#: sizes of those tarballs in bytes (informative; the download checks Content-Length)
OPENSLR_BYTES = {
    "test-clean": 346_663_984,
    "test-other": 328_757_843,
    "dev-clean": 337_926_286,
    "dev-other": 314_305_928,
}

_UTT_ID = re.compile(r"^(\d+)-(\d+)-(\d+)$")


def normalize_split(split: str) -> str:
    """``test-clean`` / ``test.clean`` / ``validation.clean`` -> ``test-clean`` / ``dev-clean``."""
    if split in HF_SPLITS:
        return split
    for ours, hub in HF_SPLITS.items():
        if split == hub:
            return ours
    raise ValueError(f"unknown LibriSpeech split {split!r}; valid: {', '.join(SPLITS)}")


def check_calibration_split(split: str) -> str:
    """Return ``split`` (normalised) if calibration may use it; raise ``ValueError`` otherwise.

    Calibration utterances come from a dev split: calibrating on a test set would leak the
    evaluation data into the quantised model.  The config check
    (:func:`whisperquant.config.check_config`) applies this to the corpus ``calibration.corpus``
    names, before anything is built; a dev split may also be an evaluation corpus.
    """
    s = normalize_split(split)
    if s in TEST_SPLITS:
        raise ValueError(
            f"calibration data must not come from the test split {split!r}: the quantised models "
            f"are evaluated on it. Use {' or '.join(CALIBRATION_SPLITS)} for calibration."
        )
    if s not in CALIBRATION_SPLITS:
        raise ValueError(f"split {split!r} is not a calibration split; use {' or '.join(CALIBRATION_SPLITS)}")
    return s


def calibration_split(split: str = "dev-clean") -> str:
    """The split calibration utterances come from (``dev-clean``); test splits are refused."""
    return check_calibration_split(split)


# --------------------------------------------------------------------------- building


def _decode_flac(data: bytes | None, utt_id: str) -> np.ndarray:
    """FLAC bytes -> 16 kHz mono float samples.

    soundfile decodes 16-bit PCM as ``v / 32768`` and ``write_wav`` scales by 32768, so
    16 kHz mono 16-bit sources (all of LibriSpeech) reach the WAV sample-exact.
    """
    if data is None:
        raise AudioError(f"utterance {utt_id}: audio is missing (no bytes)")
    samples, rate = decode_bytes(bytes(data), utt_id=utt_id)
    return to_mono_16k(samples, rate, utt_id)  # validates: non-empty, finite


@dataclass
class _Utt:
    id: str
    reference: str
    audio: Callable[[], bytes | None]  # loads the FLAC bytes on demand


def _select(available: Iterable[str], ids: Iterable[str] | None, limit: int | None, source: str) -> list[str]:
    """Sorted ids to build: the ``ids`` subset (all if None), then the first ``limit``."""
    avail = sorted(set(available))
    if ids is not None:
        wanted = sorted(set(ids))
        if missing := sorted(set(wanted) - set(avail)):
            shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise ValueError(f"{source}: {len(missing)} requested utterance id(s) not found: {shown}")
        avail = wanted
    if limit is not None:
        if int(limit) < 1:
            raise ValueError(f"limit must be a positive number of utterances, got {limit!r}")
        avail = avail[: int(limit)]
    return avail


def _materialize(utts: Iterable[_Utt], out_dir: str | Path) -> Path:
    """The corpus, and ``speakers.tsv``: a LibriSpeech id is ``<speaker>-<chapter>-<utterance>``."""
    utts = list(utts)
    manifest = materialize(((u.id, u.reference, lambda u=u: _decode_flac(u.audio(), u.id)) for u in utts), out_dir)
    write_speakers(out_dir, ((u.id, u.id.split("-")[0]) for u in utts))
    return manifest


# ---- Hugging Face


def _hub_split_files(hub_split: str, revision: str, cache_dir) -> list[str]:
    """The Hub's parquet files of one split of ``openslr/librispeech_asr`` at ``revision``.

    ``load_dataset(HF_DATASET, "all", split=...)`` would download and prepare every split of
    the config (about 60 GB with the training sets) before returning the one asked for.  The
    config's own data-file patterns, resolved at the pinned revision (metadata only), name
    the few files of the wanted split; only those are then loaded.
    """
    from datasets import load_dataset_builder

    with from_hub(f"dataset {HF_DATASET}@{revision}"):
        builder = load_dataset_builder(HF_DATASET, HF_CONFIG, revision=revision, cache_dir=cache_dir)
    data_files = builder.config.data_files or {}
    files = data_files.get(hub_split)
    if not files:
        raise ValueError(
            f"{HF_DATASET}@{revision}: config {HF_CONFIG!r} has no split {hub_split!r} "
            f"(splits: {', '.join(sorted(data_files)) or 'none'})"
        )
    return [str(f) for f in files]


def _hf_load(split: str, *, revision: str | None, data_files, cache_dir):
    from datasets import Audio, load_dataset

    hub_split = HF_SPLITS[split]
    if data_files is not None:
        files = [data_files] if isinstance(data_files, str | os.PathLike) else list(data_files)
        files = [str(Path(f)) for f in files]
        if not files:
            raise ValueError("data_files is empty")
        for f in files:
            if not Path(f).is_file():
                raise FileNotFoundError(f"parquet file {f} does not exist")
        source = f"parquet {', '.join(files)}"
    else:
        if not revision:
            raise ValueError(
                f"loading {HF_DATASET} from the Hub needs a pinned revision (a commit hash of the "
                "dataset repository), so that every run reads the same data"
            )
        files = _hub_split_files(hub_split, revision, cache_dir)
        source = f"{HF_DATASET}@{revision} ({HF_CONFIG}/{hub_split})"
    # the same call for the Hub's files and for local copies of them
    with from_hub(source) if data_files is None else contextlib.nullcontext():
        ds = load_dataset("parquet", data_files={hub_split: files}, split=hub_split, cache_dir=cache_dir)
    needed = {"id", "text", "audio"}
    if missing := needed - set(ds.column_names):
        raise ValueError(f"{source}: missing column(s) {sorted(missing)}; has {ds.column_names}")
    return ds.cast_column("audio", Audio(decode=False)), source


def build_from_hf(
    split: str,
    out_dir: str | Path,
    *,
    revision: str | None,
    data_files: str | os.PathLike | Iterable[str | os.PathLike] | None = None,
    cache_dir: str | Path | None = None,
    limit: int | None = None,
    ids: Iterable[str] | None = None,
) -> Path:
    """Materialise a LibriSpeech split from ``openslr/librispeech_asr``; returns the manifest path.

    ``split`` is ``test-clean``, ``test-other``, ``dev-clean`` or ``dev-other`` (the Hub's
    names are accepted too).  With ``data_files`` (one or more local parquet files in the Hub
    dataset's schema) nothing is downloaded and ``revision`` is not used.
    """
    split = normalize_split(split)
    ds, source = _hf_load(split, revision=revision, data_files=data_files, cache_dir=cache_dir)
    all_ids = [str(i) for i in ds["id"]]
    seen: set[str] = set()
    for uid in all_ids:
        if uid in seen:
            raise ValueError(f"{source}: utterance id {uid} occurs more than once")
        seen.add(uid)
    chosen = _select(all_ids, ids, limit, source)
    index = {uid: i for i, uid in enumerate(all_ids)}
    sub = ds.select([index[uid] for uid in chosen])

    def utts() -> Iterator[_Utt]:
        for row in sub:
            audio = row["audio"] or {}
            data = audio.get("bytes")
            if data is None and audio.get("path") and Path(audio["path"]).is_file():
                data = Path(audio["path"]).read_bytes()
            yield _Utt(str(row["id"]), row["text"], lambda data=data: data)

    return _materialize(utts(), out_dir)


# ---- openslr tarballs


def _check_member(m: tarfile.TarInfo, archive: str | Path) -> None:
    """Refuse members that could write outside the destination or are not plain files/dirs."""
    name = m.name
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or os.path.isabs(name):
        raise FetchError(f"{Path(archive).name}: refusing member {name!r} with an absolute path")
    if ".." in parts:
        raise FetchError(f"{Path(archive).name}: refusing member {name!r} with a '..' component")
    if not (m.isfile() or m.isdir()):
        kind = "link" if (m.issym() or m.islnk()) else "special file"
        raise FetchError(f"{Path(archive).name}: refusing member {name!r}: a {kind}, not a file or directory")


_TAR_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)


@contextlib.contextmanager
def _open_tar(tarball: str | Path) -> Iterator[tarfile.TarFile]:
    try:
        with tarfile.open(tarball, mode="r:*") as tf:
            yield tf
    except FetchError:
        raise
    except _TAR_ERRORS as e:
        raise FetchError(
            f"{Path(tarball).name}: cannot read the archive ({type(e).__name__}: {e}); it is truncated "
            "or corrupt -- delete it and download it again"
        ) from e


def extract_openslr(tarball: str | Path, dest_dir: str | Path) -> Path:
    """Extract an openslr tarball into ``dest_dir`` (replaced as a whole); returns ``dest_dir``.

    Only regular files and directories with relative paths inside the archive are allowed:
    absolute paths, ``..`` components, links and special files are refused before anything
    is written.  Extraction goes to a temporary sibling directory that is renamed into place.
    """
    tarball, dest_dir = Path(tarball), Path(dest_dir)
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest_dir.parent, prefix=f".{dest_dir.name}-extract-"))
    try:
        with _open_tar(tarball) as tf:
            members = tf.getmembers()
            for m in members:
                _check_member(m, tarball)
            root = tmp.resolve()
            for m in members:
                target = (tmp / m.name).resolve()
                if root not in target.parents and target != root:
                    raise FetchError(f"{tarball.name}: refusing member {m.name!r} outside the destination")
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(m)
                with open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
        if dest_dir.exists():
            shutil.rmtree(dest_dir)
        os.replace(tmp, dest_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest_dir


def _parse_transcript(text: str, where: str, speaker: str | None, chapter: str | None) -> dict[str, str]:
    refs: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        uid, sep, ref = line.partition(" ")
        m = _UTT_ID.match(uid)
        if not sep or not m:
            raise ValueError(f"{where}:{n}: expected 'ID TEXT', got {line!r}")
        if speaker is not None and (m.group(1), m.group(2)) != (speaker, chapter):
            raise ValueError(f"{where}:{n}: utterance {uid} does not belong to {speaker}-{chapter}")
        if uid in refs:
            raise ValueError(f"{where}:{n}: utterance {uid} is listed twice")
        refs[uid] = ref
    return refs


def _trans_key(path: str) -> tuple[str, str] | None:
    """``.../<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`` -> (speaker, chapter)."""
    parts = path.split("/")
    if len(parts) < 3 or not parts[-1].endswith(".trans.txt"):
        return None
    speaker, chapter = parts[-3], parts[-2]
    if parts[-1] != f"{speaker}-{chapter}.trans.txt":
        raise ValueError(f"{path}: transcript name does not match its directory {speaker}/{chapter}")
    return speaker, chapter


def _flac_id(path: str) -> str | None:
    name = path.rsplit("/", 1)[-1]
    return name[: -len(".flac")] if name.endswith(".flac") else None


def _collect(refs: dict[str, str], flacs: set[str], where: str) -> None:
    if orphans := sorted(flacs - set(refs)):
        raise ValueError(f"{where}: audio without a transcript line: {', '.join(orphans[:10])}")


def _openslr_from_dir(split: str, root: Path) -> tuple[dict[str, str], dict[str, Path], str]:
    candidates = [root / "LibriSpeech" / split, root / split, root]
    base = next((c for c in candidates if c.is_dir() and c.name == split), None)
    if base is None:
        raise FileNotFoundError(f"{root}: no LibriSpeech/{split}/ directory (extract {split}.tar.gz first)")
    refs: dict[str, str] = {}
    paths: dict[str, Path] = {}
    for speaker_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        for chapter_dir in sorted(p for p in speaker_dir.iterdir() if p.is_dir()):
            speaker, chapter = speaker_dir.name, chapter_dir.name
            trans = chapter_dir / f"{speaker}-{chapter}.trans.txt"
            flacs = {p.name[: -len(".flac")]: p for p in chapter_dir.glob("*.flac")}
            if not trans.is_file():
                if flacs:
                    raise FileNotFoundError(
                        f"{trans} is missing but {chapter_dir} holds {len(flacs)} FLAC files"
                    )
                continue
            chapter_refs = _parse_transcript(trans.read_text(encoding="utf-8"), str(trans), speaker, chapter)
            _collect(chapter_refs, set(flacs), str(chapter_dir))
            for uid in chapter_refs:
                if uid in refs:
                    raise ValueError(f"{trans}: utterance {uid} appears in two transcript files")
                paths[uid] = chapter_dir / f"{uid}.flac"
            refs.update(chapter_refs)
    if not refs:
        raise ValueError(f"{base}: no transcripts found")
    return refs, paths, str(base)


def _openslr_tar_index(split: str, tarball: Path) -> tuple[dict[str, str], dict[str, str]]:
    """One pass over the tarball: transcripts and the member name of every FLAC of ``split``."""
    prefix = f"LibriSpeech/{split}/"
    refs: dict[str, str] = {}
    members: dict[str, str] = {}
    chapters: dict[tuple[str, str], set[str]] = {}
    with _open_tar(tarball) as tf:
        for m in tf:
            _check_member(m, tarball)
            name = m.name.removeprefix("./")
            if not m.isfile() or not name.startswith(prefix):
                continue
            if (uid := _flac_id(name)) is not None:
                members[uid] = m.name
                chapters.setdefault(tuple(name.split("/")[-3:-1]), set()).add(uid)
            elif (key := _trans_key(name)) is not None:
                text = tf.extractfile(m).read().decode("utf-8")
                chapter_refs = _parse_transcript(text, f"{tarball.name}:{name}", *key)
                if dup := set(chapter_refs) & set(refs):
                    raise ValueError(f"{tarball.name}:{name}: utterance(s) {sorted(dup)} listed twice")
                refs.update(chapter_refs)
    if not refs:
        raise ValueError(f"{tarball.name}: no transcripts under {prefix} (is this the {split} tarball?)")
    _collect(refs, set(members), tarball.name)
    return refs, members


def build_from_openslr(
    split: str,
    root_or_tarball: str | Path,
    out_dir: str | Path,
    *,
    limit: int | None = None,
    ids: Iterable[str] | None = None,
) -> Path:
    """Materialise a LibriSpeech split from an openslr tarball or its extracted tree.

    ``root_or_tarball`` is ``<split>.tar.gz`` itself (read in place, nothing is extracted) or a
    directory holding ``LibriSpeech/<split>/`` (or that directory itself).  Returns the
    manifest path.
    """
    split = normalize_split(split)
    src = Path(root_or_tarball)
    if src.is_dir():
        refs, paths, where = _openslr_from_dir(split, src)
        chosen = _select(refs, ids, limit, where)

        def load_file(uid: str) -> bytes | None:
            p = paths[uid]
            if not p.is_file():
                raise AudioError(f"utterance {uid}: audio file {p} does not exist")
            return p.read_bytes()

        return _materialize((_Utt(u, refs[u], lambda u=u: load_file(u)) for u in chosen), out_dir)

    if not src.is_file():
        raise FileNotFoundError(f"{src} is neither a LibriSpeech tarball nor a directory")
    refs, members = _openslr_tar_index(split, src)
    missing = sorted(set(refs) - set(members))
    chosen = _select(refs, ids, limit, src.name)
    if bad := [u for u in chosen if u in missing]:
        raise AudioError(
            f"utterance {bad[0]}: its transcript line has no audio file {bad[0]}.flac in {src.name}"
            + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
        )
    wanted = {members[u]: u for u in chosen}

    def utts() -> Iterator[_Utt]:  # second pass: only the chosen FLAC files, one at a time
        found = set()
        with _open_tar(src) as tf:
            for m in tf:
                if m.name in wanted and m.isfile():
                    uid = wanted[m.name]
                    data = tf.extractfile(m).read()
                    found.add(uid)
                    yield _Utt(uid, refs[uid], lambda data=data: data)
        if lost := sorted(set(chosen) - found):
            raise AudioError(f"utterance {lost[0]}: its audio could not be read from {src.name}")

    return _materialize(utts(), out_dir)


# ---- download


def _archive_reads(path: Path) -> str | None:
    """None if the gzip/tar archive reads to the end, else the error."""
    try:
        with tarfile.open(path, mode="r:*") as tf:
            for m in tf:
                if m.isfile():
                    f = tf.extractfile(m)
                    while f.read(1 << 20):
                        pass
    except _TAR_ERRORS as e:
        return f"{type(e).__name__}: {e}"
    return None


def download_openslr(
    split: str,
    dest_dir: str | Path,
    *,
    base_url: str = OPENSLR_BASE_URL,
    md5: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``<split>.tar.gz`` from openslr into ``dest_dir`` and verify its published MD5.

    The shared resumable downloader (:func:`whisperquant.data.fetch.download`) does the
    work; a mismatch is diagnosed as truncation when the gzip/tar archive does not read
    to the end.
    """
    split = normalize_split(split)
    expected = (md5 or OPENSLR_MD5[split]).lower()
    if not re.fullmatch(r"[0-9a-f]{32}", expected):
        raise ValueError(f"md5 must be 32 hexadecimal digits, got {md5!r}")
    name = f"{split}.tar.gz"

    def diagnose(part: Path) -> str | None:
        err = _archive_reads(part)
        return f"the gzip/tar archive does not read to the end ({err})" if err else None

    return download(
        f"{base_url.rstrip('/')}/{name}", Path(dest_dir) / name, algo="md5", expected=expected, timeout=timeout,
        diagnose=diagnose,
        mismatch_hint="run again, or use another mirror (base_url) or correct the pinned checksum if openslr's "
        "md5sum.txt says otherwise.",
    )


# --------------------------------------------------------------------------- config entry


def build(name: str, spec: dict, out_dir: Path, cache_dir: Path, upstream: Path | None = None) -> Path:
    """Corpus source ``librispeech``: a split from the Hub's parquet files or openslr's tarballs."""
    # Whether this corpus calibrates is the config's knowledge (calibration.corpus), checked there
    # with check_calibration_split before any job runs; a dev split may be evaluated too.
    return build_corpus(spec, out_dir, download_dir=Path(cache_dir) / "librispeech",
                        hf_cache_dir=Path(cache_dir) / "hf")


def build_corpus(
    entry: dict,
    out_dir: str | Path,
    *,
    download_dir: str | Path | None = None,
    hf_cache_dir: str | Path | None = None,
    calibration: bool = False,
) -> Path:
    """Build a corpus from a config entry ``{source: librispeech, loader: hf|openslr, split, ...}``.

    Keys: ``split`` (required), ``loader`` (``hf`` or ``openslr``), ``revision`` (hf, required
    unless ``data_files`` is given), ``data_files`` (hf, local parquet), ``tarball`` (openslr,
    a local tarball or extracted tree instead of downloading), ``base_url`` and ``md5``
    (openslr), ``limit``, ``ids``.  ``calibration=True`` refuses test splits.
    """
    if entry.get("source", "librispeech") != "librispeech":
        raise ValueError(f"not a LibriSpeech entry: source={entry.get('source')!r}")
    split = normalize_split(entry["split"])
    if calibration:
        check_calibration_split(split)
    loader = entry.get("loader", "hf")
    limit, ids = entry.get("limit"), entry.get("ids")
    if loader == "hf":
        return build_from_hf(
            split,
            out_dir,
            revision=entry.get("revision"),
            data_files=entry.get("data_files"),
            cache_dir=hf_cache_dir,
            limit=limit,
            ids=ids,
        )
    if loader == "openslr":
        src = entry.get("tarball")
        if src is None:
            if download_dir is None:
                raise ValueError("the openslr loader needs download_dir (or a local 'tarball' in the entry)")
            src = download_openslr(
                split, download_dir, base_url=entry.get("base_url", OPENSLR_BASE_URL), md5=entry.get("md5")
            )
        return build_from_openslr(split, src, out_dir, limit=limit, ids=ids)
    raise ValueError(f"unknown LibriSpeech loader {loader!r}; valid: hf, openslr")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Materialise a LibriSpeech split as a whisperquant corpus.")
    ap.add_argument("--loader", choices=("hf", "openslr"), required=True)
    ap.add_argument("--split", required=True, choices=SPLITS)
    ap.add_argument("--out", required=True, type=Path, help="corpus directory (manifest.tsv + wav/)")
    ap.add_argument("--revision", help="hf: dataset commit to pin")
    ap.add_argument("--data-files", nargs="+", help="hf: local parquet files in the Hub's schema")
    ap.add_argument("--hf-cache-dir", type=Path)
    ap.add_argument("--tarball", type=Path, help="openslr: local tarball or extracted tree")
    ap.add_argument("--download-dir", type=Path, help="openslr: where to download the tarball")
    ap.add_argument("--base-url", default=OPENSLR_BASE_URL)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--calibration", action="store_true", help="refuse test splits")
    args = ap.parse_args(argv)
    entry = {
        "source": "librispeech",
        "loader": args.loader,
        "split": args.split,
        "revision": args.revision,
        "data_files": args.data_files,
        "tarball": args.tarball,
        "base_url": args.base_url,
        "limit": args.limit,
    }
    try:
        path = build_corpus(
            entry,
            args.out,
            download_dir=args.download_dir,
            hf_cache_dir=args.hf_cache_dir,
            calibration=args.calibration,
        )
    except (FetchError, AudioError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

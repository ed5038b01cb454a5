"""The download paths a user with internet goes through, against a real Hub (olah) and openslr on loopback.

``tests/hub_mirror.py`` builds stand-in repositories and tarballs and serves them; every test here
calls the project's own download code in a fresh process whose only link to the mirror is
``HF_ENDPOINT`` (and, for openslr, the ``base_url`` a config would give), and checks what the user
would see: the data on success; on failure a message naming the source and what to do, and nothing
half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import hub_mirror as hm
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mirror(tmp_path_factory, download_cache) -> hm.Mirror:
    return hm.build_mirror(tmp_path_factory.mktemp("hub-mirror") / "mirror", download_cache)


@pytest.fixture(scope="module")
def servers(mirror, download_cache):
    with hm.serve(mirror, cache_dir=download_cache) as s:
        yield s


def run_py(code: str, *, endpoint: str, cwd: Path, token: str | None = None) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter (huggingface_hub reads HF_ENDPOINT at import), INFO logging to stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(cwd / "hf-home"), PYTHONPATH=str(REPO / "workflow"))
    if token:
        env["HF_TOKEN"] = token
    prelude = "import logging, sys\nlogging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
    return subprocess.run([sys.executable, "-c", prelude + code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def import_hub_model(repo: str, revision: str, out: Path) -> str:
    return (f"from whisperquant.models.importers import import_model\n"
            f"import_model('stand-in', {{'source': 'hub', 'repo_id': {repo!r}, 'revision': {revision!r}}}, "
            f"{str(out)!r}, {str(out.parent / 'downloads')!r})\n")


def user_error(proc: subprocess.CompletedProcess) -> str:
    """The last line of the traceback: the error as the user reads it."""
    assert proc.returncode != 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("whisperquant.data.fetch.FetchError")]
    assert lines, proc.stderr[-3000:]
    return lines[-1].removeprefix("whisperquant.data.fetch.FetchError: ")


def nothing_left(out: Path) -> None:
    """Neither the output nor a temporary sibling of it survives a failure."""
    assert not out.exists()
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_hub_model_at_its_revision_imports_and_records_no_token(mirror, servers, tmp_path):
    out = tmp_path / "models" / "stand-in"
    proc = run_py(import_hub_model(hm.MODEL_REPO, mirror.revisions[hm.MODEL_REPO], out), endpoint=servers.hub_url,
                  cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    source = json.loads((out / "SOURCE.json").read_text())
    assert source["repo_id"] == hm.MODEL_REPO and source["revision"] == mirror.revisions[hm.MODEL_REPO]
    assert source["found"]["d_model"] == 384 and source["found"]["multilingual"] is False
    log = servers.hub_log.read_text()
    assert f"GET /{hm.MODEL_REPO}/resolve/{mirror.revisions[hm.MODEL_REPO]}/model.safetensors 200" in log


def test_endpoint_down_says_which_endpoint_and_what_to_do(mirror, tmp_path):
    dead = f"http://127.0.0.1:{hm.free_port()}"
    out = tmp_path / "models" / "stand-in"
    msg = user_error(run_py(import_hub_model(hm.MODEL_REPO, mirror.revisions[hm.MODEL_REPO], out), endpoint=dead,
                            cwd=tmp_path))
    print("\nendpoint down:", msg)
    assert f"models.stand-in: model {hm.MODEL_REPO}@{mirror.revisions[hm.MODEL_REPO]}" in msg
    assert f"cannot download from the Hugging Face Hub at {dead}" in msg and f"HF_ENDPOINT={dead}" in msg
    nothing_left(out)


def test_unknown_revision_names_the_pin(servers, tmp_path):
    out = tmp_path / "models" / "stand-in"
    bad = "0123456789abcdef0123456789abcdef01234567"
    msg = user_error(run_py(import_hub_model(hm.MODEL_REPO, bad, out), endpoint=servers.hub_url, cwd=tmp_path))
    print("\nunknown revision:", msg)
    assert f"{hm.MODEL_REPO}@{bad}: the revision does not exist" in msg and "pinned revision in the config" in msg
    nothing_left(out)


def test_unknown_dataset_revision_names_the_pin(servers, tmp_path):
    bad = "0123456789abcdef0123456789abcdef01234567"
    code = ("from whisperquant.data.sources.librispeech import build_corpus\n"
            f"build_corpus({{'source': 'librispeech', 'loader': 'hf', 'split': 'test-clean', 'revision': {bad!r}}}, "
            f"{str(tmp_path / 'corpus')!r}, hf_cache_dir={str(tmp_path / 'hf')!r})\n")
    msg = user_error(run_py(code, endpoint=servers.hub_url, cwd=tmp_path))
    print("\nunknown dataset revision:", msg)
    assert f"dataset {hm.LIBRISPEECH_REPO}@{bad}: the revision does not exist" in msg
    nothing_left(tmp_path / "corpus")


def test_file_missing_from_the_repo(mirror, servers, tmp_path):
    out = tmp_path / "models" / "stand-in"
    rev = mirror.broken_revisions["model-without-preprocessor"]
    msg = user_error(run_py(import_hub_model(hm.MODEL_REPO, rev, out), endpoint=servers.hub_url, cwd=tmp_path))
    print("\nfile missing:", msg)
    assert f"{hm.MODEL_REPO}@{rev}: preprocessor_config.json missing from the repository" in msg
    assert "Pin another revision" in msg
    nothing_left(out)


def test_gated_repo_asks_for_a_token_and_never_writes_it(mirror, servers, tmp_path):
    rev = mirror.revisions[hm.GATED_MODEL_REPO]
    out = tmp_path / "models" / "stand-in"
    msg = user_error(run_py(import_hub_model(hm.GATED_MODEL_REPO, rev, out), endpoint=servers.hub_url, cwd=tmp_path))
    print("\ngated, no token:", msg)
    assert f"{hm.GATED_MODEL_REPO}@{rev}" in msg and "gated or private" in msg and "hf auth login" in msg
    assert "HF_TOKEN" in msg
    nothing_left(out)

    wrong = run_py(import_hub_model(hm.GATED_MODEL_REPO, rev, out), endpoint=servers.hub_url, cwd=tmp_path,
                   token="hf_notTheRightOne0000000000000000")
    print("gated, wrong token:", user_error(wrong))
    assert "HTTP 403" in user_error(wrong) and "hf_notTheRightOne" not in wrong.stderr
    nothing_left(out)

    ok = run_py(import_hub_model(hm.GATED_MODEL_REPO, rev, out), endpoint=servers.hub_url, cwd=tmp_path,
                token=hm.TEST_TOKEN)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert hm.TEST_TOKEN not in ok.stdout + ok.stderr
    for f in out.rglob("*"):
        if f.is_file():
            assert hm.TEST_TOKEN.encode() not in f.read_bytes(), f
    assert hm.TEST_TOKEN not in servers.hub_log.read_text()


def test_both_librispeech_loaders_give_the_same_corpus(mirror, servers, tmp_path):
    """hf (parquet at the pinned revision through the Hub) and openslr (tarball over HTTP, MD5) agree."""
    for split in ("test-clean", "test-other", "dev-clean"):
        code = ("from whisperquant.data.sources.librispeech import build_corpus, compare_manifests\n"
                f"a = build_corpus({{'source': 'librispeech', 'loader': 'hf', 'split': {split!r}, "
                f"'revision': {mirror.revisions[hm.LIBRISPEECH_REPO]!r}}}, {str(tmp_path / split / 'hf')!r}, "
                f"hf_cache_dir={str(tmp_path / 'hf')!r})\n"
                f"b = build_corpus({{'source': 'librispeech', 'loader': 'openslr', 'split': {split!r}, "
                f"'base_url': {servers.openslr_base_url!r}, 'md5': {mirror.md5[split]!r}}}, "
                f"{str(tmp_path / split / 'openslr')!r}, download_dir={str(tmp_path / 'dl')!r})\n"
                "print(compare_manifests(a.parent, b.parent))\n")
        proc = run_py(code, endpoint=servers.hub_url, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        a = (tmp_path / split / "hf" / "manifest.tsv").read_text()
        assert a == (tmp_path / split / "openslr" / "manifest.tsv").read_text()
        assert len(a.splitlines()) == 3  # header + 2 utterances


def _download(servers, mirror, split: str, dest: Path, md5: str | None = None) -> subprocess.CompletedProcess:
    code = ("from whisperquant.data.sources.librispeech import download_openslr\n"
            f"print(download_openslr({split!r}, {str(dest)!r}, base_url={servers.openslr_base_url!r}, "
            f"md5={md5 or mirror.md5[split]!r}))\n")
    return run_py(code, endpoint=servers.hub_url, cwd=dest.parent)


def test_tarball_md5_mismatch_deletes_the_download(mirror, servers, tmp_path):
    dest = tmp_path / "dl"
    msg = user_error(_download(servers, mirror, "test-clean", dest, md5="0" * 32))
    print("\nMD5 mismatch:", msg)
    assert msg.startswith(f"MD5 mismatch for test-clean.tar.gz from {servers.openslr_base_url}/test-clean.tar.gz")
    assert f"got {mirror.md5['test-clean']}" in msg and "The file was deleted" in msg
    assert not [p for p in dest.iterdir() if p.suffix != ".lock"]  # the (empty) per-file download lock stays


def test_cut_transfer_resumes_byte_identical(mirror, download_cache, tmp_path):
    cut = 100_000
    with hm.serve(mirror, cut_after=cut, cache_dir=download_cache) as servers:
        dest = tmp_path / "dl"
        msg = user_error(_download(servers, mirror, "test-other", dest))
        print("\ncut mid-way:", msg)
        total = mirror.sizes["test-other.tar.gz"]
        assert f"got {cut} of {total} bytes" in msg and "run again to resume" in msg
        assert (dest / "test-other.tar.gz.part").stat().st_size == cut
        assert not (dest / "test-other.tar.gz").exists()
        again = _download(servers, mirror, "test-other", dest)
        assert again.returncode == 0, again.stderr[-3000:]
        log = servers.files_log.read_text()
    got = (dest / "test-other.tar.gz").read_bytes()
    assert got == (mirror.files / "resources" / "12" / "test-other.tar.gz").read_bytes()
    assert hashlib.md5(got).hexdigest() == mirror.md5["test-other"]
    assert not (dest / "test-other.tar.gz.part").exists()
    assert re.search(rf"GET /resources/12/test-other.tar.gz 206 range=bytes={cut}- bytes={total - cut}", log), log

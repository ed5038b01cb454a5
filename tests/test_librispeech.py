"""LibriSpeech from both real sources, offline, on fixtures holding a real utterance.

The fixtures (tests/fixtures/librispeech/, made by tests/make_librispeech_fixtures.py) hold
LibriSpeech test-clean 61-70968-0000 with its original FLAC bytes, once as a miniature
openslr tarball and once as a parquet file in the schema of ``openslr/librispeech_asr``.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from whisperquant.data.audio import AudioError
from whisperquant.data.fetch import FetchError
from whisperquant.data.sources import librispeech as ls

FIX = Path(__file__).parent / "fixtures" / "librispeech"
TARBALL = FIX / "test-clean.tar.gz"
PARQUET = FIX / "test.clean-00000-of-00001.parquet"
UTT = "61-70968-0000"
REF = "HE BEGAN A CONFUSED COMPLAINT AGAINST THE WIZARD WHO HAD VANISHED BEHIND THE CURTAIN ON THE LEFT"
FLAC_MEMBER = f"LibriSpeech/test-clean/61/70968/{UTT}.flac"
TRANS_MEMBER = "LibriSpeech/test-clean/61/70968/61-70968.trans.txt"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _original_flac() -> bytes:
    with tarfile.open(TARBALL) as tf:
        return tf.extractfile(FLAC_MEMBER).read()


def _tar_gz(members: list[tuple[str, bytes]], extra: list[tarfile.TarInfo] = ()) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        for ti in extra:
            tf.addfile(ti)
    return raw.getvalue()


def _multi_tarball(path: Path, trans_extra: str = "", drop_flac: bool = False) -> Path:
    """A test-clean tarball with 3 utterances: the real one plus 2 copies under other ids."""
    flac = _original_flac()
    ids = [UTT, "61-70968-0001", "61-70968-0002"]
    members = [] if drop_flac else [(f"LibriSpeech/test-clean/61/70968/{u}.flac", flac) for u in ids]
    trans = "".join(f"{u} {REF if u == UTT else 'COPY ' + u[-1]}\n" for u in ids) + trans_extra
    members.append((TRANS_MEMBER, trans.encode()))
    path.write_bytes(_tar_gz(members))
    return path


# --------------------------------------------------------------------------- fixtures are real


def test_fixtures_are_the_documented_real_utterance():
    sources = json.loads((FIX / "SOURCES.json").read_text())
    flac = _original_flac()
    assert hashlib.sha256(flac).hexdigest() == sources["source"]["member_sha256"]
    for name, meta in sources["files"].items():
        assert hashlib.sha256((FIX / name).read_bytes()).hexdigest() == meta["sha256"], name
    with tarfile.open(TARBALL) as tf:
        assert tf.extractfile(TRANS_MEMBER).read().decode() == f"{UTT} {REF}\n"
    info = sf.info(io.BytesIO(flac))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")


def test_parquet_fixture_has_the_hub_schema():
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(PARQUET)
    assert schema.names == ["file", "audio", "text", "speaker_id", "chapter_id", "id"]
    assert schema.field("audio").type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    assert schema.field("speaker_id").type == pa.int64()
    meta = json.loads(schema.metadata[b"huggingface"])
    assert meta["info"]["features"]["audio"] == {"sampling_rate": 16000, "_type": "Audio"}
    row = pq.read_table(PARQUET).to_pylist()[0]
    assert row["audio"]["bytes"] == _original_flac()
    assert (row["id"], row["text"], row["speaker_id"], row["chapter_id"]) == (UTT, REF, 61, 70968)


# --------------------------------------------------------------------------- both loaders agree


def test_hf_and_openslr_give_identical_manifests(tmp_path):
    hf = tmp_path / "hf"
    ls.build_from_hf("test-clean", hf, revision=None, data_files=PARQUET, cache_dir=tmp_path / "hfcache")
    tar = tmp_path / "tar"
    ls.build_from_openslr("test-clean", TARBALL, tar)
    tree = ls.extract_openslr(TARBALL, tmp_path / "extracted")
    ext = tmp_path / "ext"
    ls.build_from_openslr("test-clean", tree, ext)

    assert ls.compare_manifests(hf, tar) == []
    assert ls.compare_manifests(tar, ext) == []
    manifest = (hf / "manifest.tsv").read_bytes()
    assert manifest == (tar / "manifest.tsv").read_bytes() == (ext / "manifest.tsv").read_bytes()
    assert (hf / "wav" / f"{UTT}.wav").read_bytes() == (tar / "wav" / f"{UTT}.wav").read_bytes()

    rows = ls.read_manifest(hf)
    assert [(r.id, r.audio, r.reference) for r in rows] == [(UTT, f"wav/{UTT}.wav", REF)]
    assert manifest.decode().splitlines()[0] == "id\taudio\tduration\treference\tsha256"
    wav = hf / rows[0].audio
    assert rows[0].sha256 == hashlib.sha256(wav.read_bytes()).hexdigest()
    info = sf.info(str(wav))
    assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
    # the WAV holds the FLAC's samples unchanged, and the duration is theirs
    original, _ = sf.read(io.BytesIO(_original_flac()), dtype="int16")
    written, _ = sf.read(str(wav), dtype="int16")
    assert np.array_equal(original, written)
    assert rows[0].duration == f"{original.size / 16000:.3f}" == "4.905"


def test_compare_manifests_reports_differences(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    ls.build_from_openslr("test-clean", TARBALL, a)
    ls.build_from_openslr("test-clean", TARBALL, b)
    wav = b / "wav" / f"{UTT}.wav"
    pcm, _ = sf.read(str(wav), dtype="int16")
    pcm[1000] += 1
    sf.write(str(wav), pcm, 16000, subtype="PCM_16")
    (b / "manifest.tsv").write_text((b / "manifest.tsv").read_text().replace("LEFT", "RIGHT"))
    diffs = ls.compare_manifests(a, b)
    assert any("references differ" in d for d in diffs)
    assert any("1 of" in d and "samples differ" in d for d in diffs)


def test_rebuild_is_identical_and_replaces_stale_files(tmp_path):
    src = _multi_tarball(tmp_path / "test-clean.tar.gz")
    out = tmp_path / "out"
    ls.build_from_openslr("test-clean", src, out)
    first = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    ls.build_from_openslr("test-clean", src, out, limit=1)
    assert sorted(p.name for p in (out / "wav").iterdir()) == [f"{UTT}.wav"]
    ls.build_from_openslr("test-clean", src, out)
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == first
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_limit_and_ids_select_the_same_utterances_from_both_sources(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = _multi_tarball(tmp_path / "test-clean.tar.gz")
    table = pq.read_table(PARQUET)
    rows = table.to_pylist()[0]
    extra = []
    for u in ("61-70968-0002", "61-70968-0001"):  # deliberately not in id order
        extra.append(dict(rows, id=u, text=f"COPY {u[-1]}", file=f"{u}.flac"))
    multi = pa.Table.from_pylist([rows, *extra], schema=table.schema)
    parquet = tmp_path / "test.clean-00000-of-00001.parquet"
    pq.write_table(multi, parquet)

    for kw, expect in (
        ({"limit": 2}, [UTT, "61-70968-0001"]),
        ({"ids": ["61-70968-0002"]}, ["61-70968-0002"]),
        ({"ids": ["61-70968-0002", "61-70968-0001"], "limit": 1}, ["61-70968-0001"]),
        ({}, [UTT, "61-70968-0001", "61-70968-0002"]),
    ):
        key = "-".join(map(str, kw.values())).replace("[", "").replace("]", "").replace("'", "") or "all"
        h, o = tmp_path / f"h-{key}", tmp_path / f"o-{key}"
        ls.build_from_hf("test-clean", h, revision=None, data_files=[parquet], cache_dir=tmp_path / "c", **kw)
        ls.build_from_openslr("test-clean", src, o, **kw)
        assert [r.id for r in ls.read_manifest(h)] == expect
        assert ls.compare_manifests(h, o) == []

    with pytest.raises(ValueError, match="61-70968-0099"):
        ls.build_from_openslr("test-clean", src, tmp_path / "x", ids=["61-70968-0099"])
    with pytest.raises(ValueError, match="61-70968-0099"):
        ls.build_from_hf(
            "test-clean",
            tmp_path / "y",
            revision=None,
            data_files=parquet,
            cache_dir=tmp_path / "c",
            ids=["61-70968-0099"],
        )


def test_hub_path_loads_only_the_split_files_at_the_pinned_revision(tmp_path, monkeypatch):
    """The Hub call itself, with the Hub's file listing answered by the parquet fixture."""
    from types import SimpleNamespace

    import datasets

    calls = []

    def fake_builder(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        other = str(tmp_path / "never-read.parquet")  # other splits must not be loaded
        files = {"test.clean": [str(PARQUET)], "validation.clean": [other], "train.clean.100": [other]}
        return SimpleNamespace(config=SimpleNamespace(data_files=files))

    monkeypatch.setattr(datasets, "load_dataset_builder", fake_builder)
    out = tmp_path / "hub"
    ls.build_from_hf("test-clean", out, revision="0123abc", cache_dir=tmp_path / "c")
    assert calls == [("openslr/librispeech_asr", "all", {"revision": "0123abc", "cache_dir": tmp_path / "c"})]
    assert ls.compare_manifests(out, _openslr_corpus(tmp_path)) == []
    assert ls.HF_SPLITS["dev-clean"] == "validation.clean" and ls.HF_SPLITS["test-other"] == "test.other"
    with pytest.raises(ValueError, match=r"no split 'test\.other'"):
        ls.build_from_hf("test-other", tmp_path / "x", revision="0123abc", cache_dir=tmp_path / "c")


def test_hub_code_path_on_a_local_copy_of_the_repo_layout(tmp_path, monkeypatch):
    """No mocks: datasets resolves the 'all' config's split files from the dataset card."""
    repo = tmp_path / "librispeech_asr"
    for split in ("test.clean", "validation.clean"):
        (repo / "all" / split).mkdir(parents=True)
        (repo / "all" / split / "0000.parquet").write_bytes(PARQUET.read_bytes())
    card = ["---", "configs:", "- config_name: all", "  data_files:"]
    for split in ("test.clean", "validation.clean"):
        card += [f"  - split: {split}", f"    path: all/{split}/*"]
    (repo / "README.md").write_text("\n".join([*card, "---", ""]))
    monkeypatch.setattr(ls, "HF_DATASET", str(repo))
    out = tmp_path / "out"
    ls.build_from_hf("test-clean", out, revision="main", cache_dir=tmp_path / "c")
    assert ls.compare_manifests(out, _openslr_corpus(tmp_path)) == []


def _openslr_corpus(tmp_path: Path) -> Path:
    out = tmp_path / "openslr-ref"
    if not (out / "manifest.tsv").exists():
        ls.build_from_openslr("test-clean", TARBALL, out)
    return out


def test_hub_needs_a_pinned_revision(tmp_path):
    with pytest.raises(ValueError, match="revision"):
        ls.build_from_hf("test-clean", tmp_path / "x", revision=None)


# --------------------------------------------------------------------------- bad inputs


def test_transcript_line_without_flac_names_the_utterance(tmp_path):
    src = _multi_tarball(tmp_path / "test-clean.tar.gz", trans_extra="61-70968-0003 NO AUDIO HERE\n")
    with pytest.raises(AudioError, match="61-70968-0003"):
        ls.build_from_openslr("test-clean", src, tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.tsv").exists()
    # the other utterances can still be built on their own
    ls.build_from_openslr("test-clean", src, tmp_path / "ok", ids=[UTT])
    tree = ls.extract_openslr(src, tmp_path / "tree")
    with pytest.raises(AudioError, match="61-70968-0003"):
        ls.build_from_openslr("test-clean", tree, tmp_path / "out2")


@pytest.mark.parametrize("payload", ["garbage", "cut", "empty"])
def test_corrupt_flac_names_the_utterance(tmp_path, payload):
    flac = {"garbage": b"not a flac at all", "cut": _original_flac()[:200], "empty": b""}[payload]
    src = tmp_path / "test-clean.tar.gz"
    src.write_bytes(_tar_gz([(FLAC_MEMBER, flac), (TRANS_MEMBER, f"{UTT} {REF}\n".encode())]))
    with pytest.raises(AudioError, match=UTT):
        ls.build_from_openslr("test-clean", src, tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.tsv").exists()


def test_parquet_row_without_audio_names_the_utterance(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(PARQUET)
    row = dict(table.to_pylist()[0], audio={"bytes": None, "path": None})
    parquet = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([row], schema=table.schema), parquet)
    with pytest.raises(AudioError, match=UTT):
        ls.build_from_hf(
            "test-clean", tmp_path / "h", revision=None, data_files=parquet, cache_dir=tmp_path / "c"
        )


@pytest.mark.parametrize(
    "member",
    [
        "../evil.txt",
        "LibriSpeech/../../evil.txt",
        "/tmp/whisperquant-evil-absolute.txt",
        "symlink",
        "hardlink",
    ],
)
def test_unsafe_tar_members_are_refused(tmp_path, member):
    extra = []
    if member in ("symlink", "hardlink"):
        ti = tarfile.TarInfo("LibriSpeech/test-clean/link")
        ti.type = tarfile.SYMTYPE if member == "symlink" else tarfile.LNKTYPE
        ti.linkname = "/etc/passwd"
        extra.append(ti)
        members = [(TRANS_MEMBER, f"{UTT} {REF}\n".encode())]
    else:
        members = [(TRANS_MEMBER, f"{UTT} {REF}\n".encode()), (member, b"owned\n")]
    src = tmp_path / "sub" / "test-clean.tar.gz"
    src.parent.mkdir()
    src.write_bytes(_tar_gz(members, extra))
    dest = tmp_path / "sub" / "dest"
    with pytest.raises(FetchError, match="refusing member"):
        ls.extract_openslr(src, dest)
    assert not dest.exists()
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "sub" / "evil.txt").exists()
    assert not Path("/tmp/whisperquant-evil-absolute.txt").exists()
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["test-clean.tar.gz"]
    with pytest.raises(FetchError, match="refusing member"):
        ls.build_from_openslr("test-clean", src, tmp_path / "out")


def test_truncated_tarball_is_reported(tmp_path):
    src = tmp_path / "test-clean.tar.gz"
    src.write_bytes(TARBALL.read_bytes()[:50_000])
    with pytest.raises(FetchError, match="truncated or corrupt"):
        ls.build_from_openslr("test-clean", src, tmp_path / "out")
    with pytest.raises(FetchError, match="truncated or corrupt"):
        ls.extract_openslr(src, tmp_path / "dest")


# --------------------------------------------------------------------------- calibration guard


@pytest.mark.parametrize("split", ["test-clean", "test-other", "test.clean", "test.other"])
def test_calibration_refuses_test_splits(tmp_path, split):
    with pytest.raises(ValueError, match="test split"):
        ls.check_calibration_split(split)
    with pytest.raises(ValueError, match="test split"):
        ls.build_corpus(
            {"source": "librispeech", "loader": "openslr", "split": split, "tarball": TARBALL},
            tmp_path / "c",
            calibration=True,
        )
    assert not (tmp_path / "c").exists()


def test_calibration_uses_dev_clean():
    assert ls.calibration_split() == "dev-clean"
    assert ls.check_calibration_split("validation.clean") == "dev-clean"
    assert ls.check_calibration_split("validation.other") == "dev-other"
    with pytest.raises(ValueError):
        ls.check_calibration_split("train-clean-100")


def test_a_dev_split_builds_as_an_evaluation_corpus(tmp_path):
    """dev-other (and dev-clean) are evaluation corpora too: the source no longer treats every dev split
    as a calibration set (whose guard allowed dev-clean only, so dev-other crashed)."""
    from whisperquant.data.sources import librispeech

    for split in ("dev-other", "dev-clean"):
        manifest = librispeech.build(split, {"source": "librispeech", "split": split, "loader": "hf", "limit": 1,
                                             "data_files": [str(PARQUET)]}, tmp_path / split, tmp_path / "cache")
        assert len(manifest.read_text().splitlines()) == 2


def test_build_corpus_from_config_entry(tmp_path):
    common = {"source": "librispeech", "split": "test-clean", "limit": 1}
    a = ls.build_corpus({**common, "loader": "openslr", "tarball": str(TARBALL)}, tmp_path / "a")
    b = ls.build_corpus(
        {**common, "loader": "hf", "data_files": [str(PARQUET)]}, tmp_path / "b", hf_cache_dir=tmp_path / "c"
    )
    assert a.name == b.name == "manifest.tsv"
    assert ls.compare_manifests(a, b) == []


# --------------------------------------------------------------------------- download


class _Served:
    def __init__(self, data: bytes):
        self.data = data
        self.mode = "normal"  # normal | ignore-range | truncate | truncate-nolength
        self.ranges: list[str | None] = []


@pytest.fixture
def server():
    served = _Served(TARBALL.read_bytes())

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path != "/resources/12/test-clean.tar.gz":
                self.send_error(404)
                return
            data, rng = served.data, self.headers.get("Range")
            served.ranges.append(rng)
            start = 0
            if rng and served.mode != "ignore-range":
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            if served.mode != "truncate-nolength":
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if served.mode.startswith("truncate"):
                body = body[: len(body) // 2]  # then close the connection early
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    served.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/resources/12"
    try:
        yield served
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_download_full(tmp_path, server):
    md5 = _md5(server.data)
    path = ls.download_openslr("test-clean", tmp_path, base_url=server.base_url, md5=md5)
    assert path == tmp_path / "test-clean.tar.gz" and path.read_bytes() == server.data
    assert server.ranges == [None] and not (tmp_path / "test-clean.tar.gz.part").exists()
    # a verified file is reused without asking the server again
    assert ls.download_openslr("test-clean", tmp_path, base_url=server.base_url, md5=md5) == path
    assert server.ranges == [None]
    # and the downloaded archive builds the corpus
    ls.build_from_openslr("test-clean", path, tmp_path / "corpus")
    assert ls.compare_manifests(tmp_path / "corpus", _openslr_corpus(tmp_path)) == []


def test_download_resumes_a_partial_file(tmp_path, server):
    cut = 30_000
    (tmp_path / "test-clean.tar.gz.part").write_bytes(server.data[:cut])
    path = ls.download_openslr("test-clean", tmp_path, base_url=server.base_url, md5=_md5(server.data))
    assert server.ranges == [f"bytes={cut}-"]
    assert path.read_bytes() == server.data


def test_download_resume_after_a_dropped_connection(tmp_path, server):
    server.mode = "truncate"
    with pytest.raises(FetchError, match=r"truncated download .*got \d+ of \d+ bytes"):
        ls.download_openslr("test-clean", tmp_path, base_url=server.base_url, md5=_md5(server.data))
    part = tmp_path / "test-clean.tar.gz.part"
    have = part.stat().st_size
    assert 0 < have < len(server.data) and not (tmp_path / "test-clean.tar.gz").exists()
    server.mode = "normal"
    path = ls.download_openslr("test-clean", tmp_path, base_url=server.base_url, md5=_md5(server.data))
    assert server.ranges == [None, f"bytes={have}-"]
    assert path.read_bytes() == server.data and not part.exists()


def test_download_restarts_when_server_ignores_range(tmp_path, server):
    server.mode = "ignore-range"
    (tmp_path / "test-clean.tar.gz.part").write_bytes(b"garbage from an older attempt")
    path = ls.download_openslr("test-clean", tmp_path, base_url=server.base_url, md5=_md5(server.data))
    assert path.read_bytes() == server.data


def test_download_complete_part_is_verified(tmp_path, server):
    (tmp_path / "test-clean.tar.gz.part").write_bytes(server.data)
    path = ls.download_openslr("test-clean", tmp_path, base_url=server.base_url, md5=_md5(server.data))
    assert path.read_bytes() == server.data and server.ranges == [f"bytes={len(server.data)}-"]


def test_download_md5_mismatch_names_file_and_both_checksums(tmp_path, server):
    got = _md5(server.data)
    # the fixture is not the real 346 MB test-clean.tar.gz: the pinned openslr MD5 must reject it
    with pytest.raises(FetchError) as e:
        ls.download_openslr("test-clean", tmp_path, base_url=server.base_url)
    msg = str(e.value)
    assert "test-clean.tar.gz" in msg and ls.OPENSLR_MD5["test-clean"] in msg and got in msg
    assert "MD5 mismatch" in msg
    assert not (tmp_path / "test-clean.tar.gz").exists()
    assert not (tmp_path / "test-clean.tar.gz.part").exists()


def test_download_truncated_without_content_length(tmp_path, server):
    server.mode = "truncate-nolength"
    with pytest.raises(FetchError, match=r"truncated or corrupt.*gzip/tar") as e:
        ls.download_openslr("test-clean", tmp_path, base_url=server.base_url, md5=_md5(server.data))
    assert "test-clean.tar.gz" in str(e.value) and _md5(server.data) in str(e.value)
    assert not (tmp_path / "test-clean.tar.gz").exists()


def test_download_unreachable_server_is_a_fetch_error(tmp_path, server):
    with pytest.raises(FetchError, match="cannot download"):
        ls.download_openslr("test-clean", tmp_path, base_url=server.base_url + "/missing", md5="0" * 32)


def test_pinned_md5_values():
    assert ls.OPENSLR_MD5 == {
        "test-clean": "32fa31d27d2e1cad72775fee3f4849a9",
        "test-other": "fb5a50374b501bb3bac4815ee91d3135",
        "dev-clean": "42e2234ba48799c1f50f24a7926300a1",
        "dev-other": "c8d0bcc9cca99d4f8b62fcc847357931",
    }


def test_two_processes_sharing_a_cache_download_once(tmp_path, server):
    """Two workflows (or test workers) pointing at one download cache: the second waits for the first's
    lock and finds the file verified, instead of appending to the same ``.part``."""
    code = ("import sys; sys.path.insert(0, {pkg!r}); from whisperquant.data.sources import librispeech as ls; "
            "print(ls.download_openslr('test-clean', {dest!r}, base_url={url!r}, md5={md5!r}))")
    src = code.format(pkg=str(Path(__file__).resolve().parents[1] / "workflow"), dest=str(tmp_path),
                      url=server.base_url, md5=_md5(server.data))
    procs = [subprocess.Popen([sys.executable, "-c", src], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert (tmp_path / "test-clean.tar.gz").read_bytes() == server.data
    assert server.ranges == [None]  # one transfer: the second process found the file verified

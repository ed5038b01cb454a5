"""Corpus source ``hf_dataset``, proven offline on parquet in the Hub's schema (struct audio {bytes, path}).

The rows hold real speech: the LibriSpeech utterance of the Hub fixture and the
two embedded clips (their WAV bytes), laid out the way the Open ASR
Leaderboard's ``esb-datasets-test-only-sorted`` configs are (a ``dataset``
column, ids, an empty transcript).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from whisperquant.data import sources
from whisperquant.data.audio import load_audio
from whisperquant.data.manifest import read_manifest
from whisperquant.data.sources.manifest import CorpusInputError
from workflow_utils import REPO, TWO_CLIPS

HUB_PARQUET = REPO / "tests" / "fixtures" / "librispeech" / "test.clean-00000-of-00001.parquet"


@pytest.fixture(scope="module")
def parquet(two_clip_corpus, tmp_path_factory) -> Path:
    hub = pq.read_table(HUB_PARQUET).to_pylist()[0]
    rows = {r.id: r for r in read_manifest(two_clip_corpus)}
    audio = [hub["audio"]] + [{"bytes": (two_clip_corpus.parent / rows[u].audio).read_bytes(), "path": f"{u}.wav"}
                              for u in TWO_CLIPS]
    table = pa.table({
        "dataset": ["librispeech", "librispeech", "librivox", "librivox"],
        "audio": [*audio, audio[2]],
        "text": [hub["text"], rows[TWO_CLIPS[0]].reference, rows[TWO_CLIPS[1]].reference, ""],
        "id": ["61-70968-0000", "ls/sdist clip", "lv 0930", "lv-empty"],
    })
    out = tmp_path_factory.mktemp("hf") / "test-00000-of-00001.parquet"
    pq.write_table(table, out)
    return out


def _build(spec: dict, out: Path):
    sources.build("hf", {"source": "hf_dataset", "dataset": "hf-audio/esb-datasets-test-only-sorted",
                         "split": "test", **spec}, out, out / "cache")
    return read_manifest(out)


def test_filtered_rows_with_their_ids_and_real_audio(parquet, tmp_path, two_clip_corpus):
    rows = _build({"data_files": str(parquet), "id_column": "id", "filter": {"dataset": "librispeech"}},
                  tmp_path / "c")
    assert [r.id for r in rows] == ["61-70968-0000", "ls_sdist_clip"]  # unsafe characters made file-safe
    got = load_audio(tmp_path / "c" / rows[1].audio)
    want = load_audio(two_clip_corpus.parent / next(r for r in read_manifest(two_clip_corpus)
                                             if r.id == TWO_CLIPS[0]).audio)
    assert np.array_equal(got, want)


def test_an_empty_transcript_is_an_error_naming_the_utterance_unless_dropped(parquet, tmp_path):
    with pytest.raises(CorpusInputError, match=r"utterance lv-empty: empty transcript"):
        _build({"data_files": str(parquet), "id_column": "id"}, tmp_path / "a")
    rows = _build({"data_files": str(parquet), "id_column": "id", "drop_empty_text": True, "limit": 3},
                  tmp_path / "b")
    assert [r.id for r in rows] == ["61-70968-0000", "ls_sdist_clip", "lv_0930"]


def test_without_an_id_column_rows_are_numbered(parquet, tmp_path):
    rows = _build({"data_files": str(parquet), "filter": {"dataset": ["librivox"]}, "drop_empty_text": True},
                  tmp_path / "c")
    assert [r.id for r in rows] == ["test-000000"]


@pytest.mark.parametrize("spec, message", [
    ({"text_column": "sentence"}, r"no column 'sentence'; the dataset has: dataset, audio, text, id"),
    ({"filter": {"source": "x"}}, r"no column 'source'"),
    ({"filter": {"dataset": "nothing"}}, r"no utterances left after the filter"),
])
def test_bad_columns_and_filters_are_named(parquet, tmp_path, spec, message):
    with pytest.raises(CorpusInputError, match=message):
        _build({"data_files": str(parquet), "id_column": "id", **spec}, tmp_path / "c")


def test_duplicate_ids_are_named(parquet, tmp_path):
    dup = tmp_path / "dup.parquet"
    t = pq.read_table(parquet)
    pq.write_table(t.set_column(3, "id", pa.array(["a", "b", "a", "c"])), dup)
    with pytest.raises(CorpusInputError, match=r"duplicate utterance id 'a' \(rows 0 and 2\)"):
        _build({"data_files": str(dup), "id_column": "id"}, tmp_path / "c")


def test_the_hub_needs_a_pinned_revision(tmp_path):
    with pytest.raises(CorpusInputError, match="needs a pinned revision"):
        _build({}, tmp_path / "c")

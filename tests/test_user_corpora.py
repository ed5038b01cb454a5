"""The user's own speech: a manifest file (TSV, CSV, JSONL) or a Kaldi data directory.

The audio is the real speech of the two-clip embedded corpus, re-encoded the
way users' files come (FLAC at 44.1 kHz stereo, WAV at 8 kHz); every bad input
must stop the build with the file and line, or the utterance id, in the message.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from whisperquant.data import sources
from whisperquant.data.audio import AudioError, load_audio
from whisperquant.data.manifest import read_manifest
from whisperquant.data.sources.manifest import CorpusInputError
from whisperquant.quantize.base import cuda_present
from workflow_utils import TWO_CLIPS, copy_run, planned_jobs, small_config, snakemake, write_config


@pytest.fixture(scope="module")
def recordings(two_clip_corpus, tmp_path_factory) -> tuple[Path, dict[str, str], dict[str, np.ndarray]]:
    """The two clips as a user would have them: one 44.1 kHz stereo FLAC, one 16 kHz WAV, under audio/."""
    import soxr

    root = tmp_path_factory.mktemp("user-speech")
    (root / "audio").mkdir()
    rows = {r.id: r for r in read_manifest(two_clip_corpus)}
    texts, samples = {}, {}
    for i, uid in enumerate(TWO_CLIPS):
        x = load_audio(two_clip_corpus.parent / rows[uid].audio, uid)
        samples[uid] = x
        texts[uid] = rows[uid].reference
        if i == 0:
            up = soxr.resample(x, 16000, 44100, quality="HQ")
            sf.write(root / "audio" / f"{uid}.flac", np.stack([up, up], axis=1), 44100)
        else:
            sf.write(root / "audio" / f"{uid}.wav", x, 16000, subtype="PCM_16")
    return root, texts, samples


def _audio_name(root: Path, uid: str) -> str:
    return next(p.name for p in (root / "audio").iterdir() if p.stem == uid)


def _write_tsv(root: Path, texts: dict[str, str], name="list.tsv", extra=None) -> Path:
    lines = ["audio\ttext\tspeaker"] + [f"audio/{_audio_name(root, u)}\t{t}\tspk{i}" for i, (u, t) in
                                        enumerate(texts.items())]
    lines += extra or []
    p = root / name
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def _build(spec: dict, out: Path) -> list:
    sources.build("mine", spec, out, out / "cache")
    return read_manifest(out)


@pytest.mark.parametrize("fmt", ["tsv", "csv", "jsonl"])
def test_a_manifest_file_in_each_format_builds_the_same_corpus(recordings, tmp_path, fmt):
    root, texts, samples = recordings
    if fmt == "tsv":
        path = _write_tsv(root, texts, "list-fmt.tsv")
    elif fmt == "csv":
        path = root / "list.csv"
        path.write_text("wav,transcript\n" + "".join(f"audio/{_audio_name(root, u)},\"{t}\"\n"
                                                     for u, t in texts.items()))
    else:
        path = root / "list.jsonl"
        path.write_text("".join(json.dumps({"path": f"audio/{_audio_name(root, u)}", "sentence": t,
                                            "id": f"u{i}"}) + "\n" for i, (u, t) in enumerate(texts.items())))
    columns = {"tsv": {}, "csv": {"audio": "wav", "text": "transcript"},
               "jsonl": {"audio": "path", "text": "sentence"}}[fmt]
    rows = _build({"source": "manifest", "path": str(path), "columns": columns}, tmp_path / "corpus")
    ids = ["u0", "u1"] if fmt == "jsonl" else list(TWO_CLIPS)
    assert [r.id for r in rows] == sorted(ids)
    by_id = {r.id: r for r in rows}
    for uid, orig in zip(ids, TWO_CLIPS, strict=True):
        assert by_id[uid].reference == texts[orig]
        got = load_audio(tmp_path / "corpus" / by_id[uid].audio)
        # 16 kHz mono again: the WAV clip is exact, the 44.1 kHz stereo FLAC round trip is close
        assert abs(got.shape[0] - samples[orig].shape[0]) <= 2
        n = min(got.shape[0], samples[orig].shape[0])
        assert np.max(np.abs(got[:n] - samples[orig][:n])) < (1e-4 if orig == TWO_CLIPS[1] else 0.05)
    if fmt == "tsv":
        speakers = (tmp_path / "corpus" / "speakers.tsv").read_text().splitlines()
        assert speakers == ["id\tspeaker", f"{TWO_CLIPS[0]}\tspk0", f"{TWO_CLIPS[1]}\tspk1"]


@pytest.mark.parametrize("extra, message", [
    (["audio/missing.wav\thello\tspk9"],
     r"list-bad\.tsv:4: utterance missing: audio file .*missing\.wav does not exist"),
    (["audio/other.wav\t   \tspk9"], r"list-bad\.tsv:4: utterance other: empty transcript"),
    (["audio/{dup}\tagain\tspk9"], r"list-bad\.tsv:4: duplicate utterance id '.+' \(first at line 2\)"),
    (["audio/x.wav\tonly two"], r"list-bad\.tsv:4: 2 fields, the header has 3"),
])
def test_bad_manifest_lines_are_named_by_file_and_line(recordings, tmp_path, extra, message):
    root, texts, _ = recordings
    extra = [e.replace("{dup}", _audio_name(root, TWO_CLIPS[0])) for e in extra]
    path = _write_tsv(root, texts, "list-bad.tsv", extra)
    with pytest.raises(CorpusInputError, match=message):
        _build({"source": "manifest", "path": str(path)}, tmp_path / "corpus")
    assert not (tmp_path / "corpus" / "manifest.tsv").exists()  # nothing half-built


def test_a_column_that_does_not_exist_is_named(recordings, tmp_path):
    root, texts, _ = recordings
    path = _write_tsv(root, texts, "list-cols.tsv")
    with pytest.raises(CorpusInputError, match=r"list-cols\.tsv:2: no column 'sentence'; the file has: audio, text"):
        _build({"source": "manifest", "path": str(path), "columns": {"text": "sentence"}}, tmp_path / "c")


def test_unreadable_audio_names_the_line_and_leaves_no_corpus(recordings, tmp_path):
    root, texts, _ = recordings
    (root / "audio" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    path = _write_tsv(root, texts, "list-broken.tsv", ["audio/broken.wav\tsome words\tspk9"])
    with pytest.raises(AudioError, match=r"list-broken\.tsv:4: utterance broken: cannot decode audio"):
        _build({"source": "manifest", "path": str(path)}, tmp_path / "corpus")
    assert not (tmp_path / "corpus" / "manifest.tsv").exists()
    assert not (tmp_path / "corpus" / "wav").exists()


def _kaldi_dir(root: Path, texts: dict[str, str], segments: bool) -> Path:
    """A data directory over the two recordings; with segments, the first is cut in two halves."""
    d = root / ("kaldi-seg" if segments else "kaldi")
    d.mkdir(exist_ok=True)
    recs = {u: f"../audio/{_audio_name(root, u)}" for u in texts}
    (d / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p in recs.items()))
    if segments:
        first, second = TWO_CLIPS
        words = texts[first].split()
        half = len(words) // 2
        (d / "segments").write_text(f"{first}-a {first} 0.00 2.00\n{first}-b {first} 2.00 4.00\n"
                                    f"{second} {second} 0.0 1.5\n")
        (d / "text").write_text(f"{first}-a {' '.join(words[:half])}\n{first}-b {' '.join(words[half:])}\n"
                                f"{second} {texts[second]}\n")
    else:
        (d / "text").write_text("".join(f"{u} {t}\n" for u, t in texts.items()))
    utts = [line.split()[0] for line in (d / "text").read_text().splitlines()]
    (d / "utt2spk").write_text("".join(f"{u} reader-{u.split('-')[0]}\n" for u in utts))
    return d


def test_a_kaldi_data_directory_with_segments(recordings, tmp_path):
    root, texts, samples = recordings
    d = _kaldi_dir(root, texts, segments=True)
    rows = _build({"source": "kaldi", "path": str(d)}, tmp_path / "corpus")
    first, second = TWO_CLIPS
    assert [r.id for r in rows] == sorted([f"{first}-a", f"{first}-b", second])
    by_id = {r.id: r for r in rows}
    assert [by_id[f"{first}-a"].duration, by_id[f"{first}-b"].duration, by_id[second].duration] == \
        ["2.000", "2.000", "1.500"]
    got = load_audio(tmp_path / "corpus" / by_id[second].audio)
    assert np.max(np.abs(got - samples[second][:24000])) < 1e-4  # the 16 kHz WAV, cut exactly
    speakers = (tmp_path / "corpus" / "speakers.tsv").read_text().splitlines()
    assert speakers[0] == "id\tspeaker" and f"{first}-a\treader-librispeech" in speakers


def test_a_kaldi_data_directory_without_segments(recordings, tmp_path):
    root, texts, _ = recordings
    rows = _build({"source": "kaldi", "path": str(_kaldi_dir(root, texts, segments=False))}, tmp_path / "c")
    assert {r.id: r.reference for r in rows} == texts


def _one_recording_dir(recordings, tmp_path) -> tuple[Path, str]:
    """A Kaldi directory of the first clip alone (wav.scp and text)."""
    root, texts, _ = recordings
    d = tmp_path / "kaldi"
    d.mkdir()
    first = TWO_CLIPS[0]
    (d / "wav.scp").write_text(f"{first} {root / 'audio' / _audio_name(root, first)}\n")
    (d / "text").write_text(f"{first} {texts[first]}\n")
    return d, first


@pytest.mark.parametrize("file, content, message", [
    ("wav.scp", "r1 sox in.wav -t wav - |\n", r"wav\.scp:1: piped wav\.scp entries"),
    ("text", "{first} hello\n{first} again\n", r"text:2: duplicate id '.+' \(first at .*text:1\)"),
    ("text", "{first}\n", r"text:1: utterance .+: empty transcript"),
    ("text", "nowhere hello\n", r"text:1: utterance nowhere has a transcript but no entry"),
    ("segments", "{first} {first} 3.0 1.0\n", r"segments:1: segment .+ must have 0 <= start < end"),
])
def test_bad_kaldi_input_is_named_by_file_and_line(recordings, tmp_path, file, content, message):
    d, first = _one_recording_dir(recordings, tmp_path)
    (d / file).write_text(content.replace("{first}", first))
    if file == "text" and "nowhere" in content:
        (d / "segments").write_text(f"{first} {first} 0 1\n")
    with pytest.raises(CorpusInputError, match=message):
        _build({"source": "kaldi", "path": str(d)}, tmp_path / "corpus")


def test_a_segment_past_the_end_of_its_recording_names_the_utterance(recordings, tmp_path):
    d, first = _one_recording_dir(recordings, tmp_path)
    (d / "segments").write_text(f"late {first} 1.0 999.0\n")
    (d / "text").write_text("late some words\n")
    with pytest.raises(AudioError, match=r"utterance late: segment ends at 999.0 s, after its recording"):
        _build({"source": "kaldi", "path": str(d)}, tmp_path / "corpus")


def _hub_parquet(corpus_dir: Path, out: Path) -> Path:
    """The corpus' clips as one parquet file in the Hub's schema (struct audio {bytes, path}, text, id)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = read_manifest(corpus_dir)
    pq.write_table(pa.table({
        "audio": [{"bytes": (corpus_dir / r.audio).read_bytes(), "path": Path(r.audio).name} for r in rows],
        "text": [r.reference for r in rows], "id": [r.id for r in rows]}), out)
    return out


@pytest.mark.slow
def test_own_model_and_speech_run_through_the_workflow(recordings, tmp_path_factory, finished_run, default_config,
                                                       download_cache):
    """Each new source end to end in one Snakemake run, beside the finished small run.

    A TSV listing (FLAC 44.1 kHz stereo + WAV), a Kaldi directory and a Hub-schema
    parquet of the same clips, and a local checkpoint saved with ``save_pretrained``
    from the imported tiny.en: where the audio (or the model) is the same, so are
    the transcripts.  The checkpoint's cuda cell, declared available, is planned on
    this CPU-only machine and ends as an ``unsupported`` row.  Editing the listing
    rebuilds that corpus and reruns its cell only.  (The CSV and JSONL listings are the
    same source module as the TSV one: the format test above builds each of them.)
    """
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    root, texts, _ = recordings
    base = small_config(default_config, download_cache)
    work = copy_run(finished_run, tmp_path_factory.mktemp("own") / "run")
    clean = work / "resources" / "corpora" / "clean"
    listing = work / "my_speech.tsv"
    lines = ["audio\ttext"] + [f"{root / 'audio' / _audio_name(root, u)}\t{t}" for u, t in texts.items()]
    listing.write_text("\n".join(lines) + "\n")
    kaldi = work / "kaldi"
    kaldi.mkdir()
    rows = read_manifest(clean)
    (kaldi / "wav.scp").write_text("".join(f"{r.id} {clean / r.audio}\n" for r in rows))
    (kaldi / "text").write_text("".join(f"{r.id} {r.reference}\n" for r in rows))
    parquet = _hub_parquet(clean, work / "test-00000-of-00001.parquet")
    tuned = work / "tuned-checkpoint"
    WhisperForConditionalGeneration.from_pretrained(work / "resources" / "models" / "tiny.en").save_pretrained(tuned)
    WhisperProcessor.from_pretrained(work / "resources" / "models" / "tiny.en").save_pretrained(tuned)

    cfg = copy.deepcopy(base)
    cfg["models"]["tuned"] = {"source": "local", "path": str(tuned), "mem_mb": 1500}
    cfg["corpora"].update({
        "mine": {"source": "manifest", "path": "my_speech.tsv"},
        "kaldi": {"source": "kaldi", "path": "kaldi"},
        "hub": {"source": "hf_dataset", "dataset": "local/parquet", "split": "test", "data_files": str(parquet),
                "id_column": "id"},
    })
    # the user's model also on cuda, declared available on this CPU-only machine
    cfg["devices"] = {"cuda": {"available": True}}
    cfg["grid"] = [base["grid"],
                   {"models": ["tiny.en"], "schemes": ["fp32"], "devices": ["cpu"],
                    "corpora": ["mine", "kaldi", "hub"]},
                   {"models": ["tuned"], "schemes": ["fp32"], "devices": ["cpu", "cuda"], "corpora": ["clean"]}]
    write_config(work, cfg)
    assert planned_jobs(work) == {"build_corpus": 3, "import_model": 1, "quantize": 1, "transcribe": 5, "score": 5,
                                  "aggregate": 1, "publish_report": 1, "all": 1}
    snakemake(work, "--cores", "2")
    summary = pd.read_csv(work / "results" / "report" / "summary.csv")
    cuda = summary[summary.device == "cuda"]
    assert (summary[summary.device == "cpu"].status == "ok").all() and len(summary) == 7
    if not cuda_present():  # the cuda job ran here, found no GPU: a row with the reason, not a crash or a CPU run
        assert cuda.status.tolist() == ["unsupported"] and pd.isna(cuda.wer.iloc[0])
        assert "no CUDA device where this job ran" in cuda.reason.iloc[0]

    def hyps(model, corpus):
        path = work / "results" / "transcripts" / model / "fp32" / "cpu" / f"{corpus}.jsonl"
        return {json.loads(line)["id"]: json.loads(line)["hypothesis"] for line in path.read_text().splitlines()}

    reference = hyps("tiny.en", "clean")
    assert hyps("tuned", "clean") == reference          # the user's checkpoint is the same model
    assert hyps("tiny.en", "kaldi") == reference        # the same WAVs through a Kaldi directory
    assert hyps("tiny.en", "hub") == reference          # the same bytes through the Hub's parquet schema
    assert hyps("tiny.en", "mine")[TWO_CLIPS[1]] == reference[TWO_CLIPS[1]]  # the 16 kHz WAV of the listing
    found = json.loads((work / "resources" / "models" / "tuned" / "SOURCE.json").read_text())["found"]
    assert found["d_model"] == 384 and found["multilingual"] is False

    # an edited listing (one transcript corrected) rebuilds that corpus and reruns its one cell
    listing.write_text(listing.read_text().replace(texts[TWO_CLIPS[1]], texts[TWO_CLIPS[1]] + " amen"))
    assert planned_jobs(work) == {"build_corpus": 1, "transcribe": 1, "score": 1, "aggregate": 1,
                                  "publish_report": 1, "all": 1}
    # a replaced checkpoint file (new bytes: Snakemake ignores a bare touch) re-imports the local model
    cfg_json = tuned / "config.json"
    cfg_json.write_text(json.dumps(json.loads(cfg_json.read_text()), indent=1))
    assert planned_jobs(work)["import_model"] == 1

"""Crash safety of transcription: finished batches survive a kill, a rerun resumes, partial output is never scored.

The slow test kills a real Snakemake run (SIGKILL to its process group) while
it transcribes, reruns it with ``--rerun-incomplete`` and compares the result
with an uninterrupted transcription.  The fast tests drive
:func:`transcribe_corpus` with a stand-in model over synthetic audio to cover
torn lines, torn headers, other fingerprints and a second crash.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from whisperquant.data.audio import write_wav
from whisperquant.evaluate.transcribe import Utterance, transcribe_corpus
from workflow_utils import REPO, copy_run, planned_jobs, small_config, snakemake, write_config

CLIPS = ["librispeech-61-70968-0000", "librivox-0880", "librivox-0930"]  # 4.9 s, 3.0 s, 3.3 s
TARGET = "results/transcripts/tiny.en/fp32/cpu/clean.jsonl"


# --------------------------------------------------------------------------- a stand-in model


class Crash(Exception):
    """Stands for a kill right after a batch was persisted."""


class FakeModel:
    """``generate`` returns each clip's sample count; the decoder turns it into text."""

    def __init__(self) -> None:
        self.batches: list[int] = []  # sizes of the batches decoded

    def generate(self, feats, **kwargs):
        self.batches.append(len(feats))
        return feats


def _processor():
    import torch

    def extract(audio, sampling_rate, return_tensors):
        assert sampling_rate == 16000 and return_tensors == "pt"
        return SimpleNamespace(input_features=torch.tensor([[float(len(a))] for a in audio]))

    def decode(tokens, skip_special_tokens):
        return [f"hyp {int(t[0])}" for t in tokens]

    return SimpleNamespace(feature_extractor=extract, tokenizer=SimpleNamespace(batch_decode=decode))


@pytest.fixture
def utts(tmp_path) -> list[Utterance]:
    out = []
    for i, seconds in enumerate([0.5, 0.4, 0.3, 0.2, 0.1]):
        path = tmp_path / f"u{i}.wav"
        t = np.arange(int(16000 * seconds)) / 16000
        write_wav(path, 0.1 * np.sin(2 * np.pi * 220 * t))
        out.append(Utterance(f"u{i}", path, seconds, f"reference {i}"))
    return out


def _run(utts, output, *, crash_after=None, fp="fp-1", model=None):
    def on_batch(i):
        if crash_after is not None and i == crash_after:
            raise Crash

    # every decode counted here is a batch of the output (the accuracy pass decodes each batch once)
    return transcribe_corpus(model or FakeModel(), _processor(), utts, output, batch_size=2,
                             generate_kwargs={}, fp=fp, progress=False, on_batch=on_batch)


def _partial(output: Path) -> Path:
    return output.with_name(output.name + ".partial")


def _batch_lines(output: Path) -> list[dict]:
    lines = _partial(output).read_text().split("\n")
    return [json.loads(x) for x in lines[1:] if x]


@pytest.fixture
def reference(utts, tmp_path) -> bytes:
    out = tmp_path / "ref" / "t.jsonl"
    out.parent.mkdir()
    timing = _run(utts, out)
    assert timing["resumed_batches"] == 0 and timing["batches"] == 3
    assert not _partial(out).exists()
    return out.read_bytes()


def test_crash_then_resume_skips_finished_batches(utts, tmp_path, reference):
    out = tmp_path / "t.jsonl"
    with pytest.raises(Crash):
        _run(utts, out, crash_after=0)
    assert not out.exists() and len(_batch_lines(out)) == 1
    model = FakeModel()
    timing = _run(utts, out, model=model)
    assert model.batches == [2, 1]  # the 4 utterances left, not all 5
    assert timing["resumed_batches"] == 1 and timing["batches"] == 3 and timing["utterances"] == 5
    assert out.read_bytes() == reference
    assert not _partial(out).exists()


def test_a_kept_partial_lets_a_job_that_failed_after_the_pass_resume_every_batch(utts, tmp_path, reference):
    # a transcription job keeps the partial file until its timing is written: if the timing fails (or the job
    # is killed there), Snakemake deletes the finished transcript, and the rerun decodes nothing again
    out = tmp_path / "t.jsonl"
    first = transcribe_corpus(FakeModel(), _processor(), utts, out, batch_size=2, generate_kwargs={}, fp="fp-1",
                              progress=False, keep_partial=True)
    assert first["resumed_batches"] == 0 and out.read_bytes() == reference and len(_batch_lines(out)) == 3
    out.unlink()  # what Snakemake does with a failed job's outputs
    model = FakeModel()
    again = transcribe_corpus(model, _processor(), utts, out, batch_size=2, generate_kwargs={}, fp="fp-1",
                              progress=False, keep_partial=True)
    assert model.batches == [] and again["resumed_batches"] == again["batches"] == 3
    assert out.read_bytes() == reference and _partial(out).exists()


def test_torn_line_is_cut_back_so_a_second_crash_keeps_every_finished_batch(utts, tmp_path, reference):
    out = tmp_path / "t.jsonl"
    with pytest.raises(Crash):
        _run(utts, out, crash_after=0)
    with open(_partial(out), "a") as f:  # killed in the middle of writing batch 2
        f.write('{"kind": "batch", "wall_s": 0.1, "utterances": [{"id": "u2", "hyp')
    with pytest.raises(Crash):
        _run(utts, out, crash_after=0)  # resumes batch 1, writes batch 2, crashes again
    assert [len(b["utterances"]) for b in _batch_lines(out)] == [2, 2]
    model = FakeModel()
    timing = _run(utts, out, model=model)
    assert model.batches == [1]
    assert timing["resumed_batches"] == 2
    assert out.read_bytes() == reference


@pytest.mark.parametrize("header", ['{"fingerprint": "fp-1', '{"fingerprint": "other"}\n', "[1]\n", ""])
def test_unusable_partial_starts_over(utts, tmp_path, reference, header):
    """A torn header, another cell's fingerprint or junk: nothing of it is trusted."""
    out = tmp_path / "t.jsonl"
    batch = {"kind": "batch", "wall_s": 0.1, "utterances": [
        {"id": "u0", "reference": "reference 0", "hypothesis": "WRONG", "audio_s": 0.5}]}
    _partial(out).write_text(header + (json.dumps(batch) + "\n" if header.endswith("\n") else ""))
    model = FakeModel()
    timing = _run(utts, out, model=model)
    assert timing["resumed_batches"] == 0 and sum(model.batches) == 5
    assert out.read_bytes() == reference


def test_score_refuses_a_partial_transcript(tmp_path):
    from whisperquant.data.manifest import Row, write_manifest
    from whisperquant.jobs import score_job

    rows = [Row(f"u{i}", f"wav/u{i}.wav", "1.000", f"word {i}", "0" * 64) for i in range(3)]
    manifest = write_manifest(tmp_path, rows)
    transcript = tmp_path / "cell.jsonl"
    transcript.write_text("".join(
        json.dumps({"id": r.id, "reference": r.reference, "hypothesis": r.reference, "audio_s": 1.0}) + "\n"
        for r in rows[:2]))
    timing = tmp_path / "cell.timing.json"
    timing.write_text(json.dumps({"status": "ok"}))
    score, utt = tmp_path / "score.json", tmp_path / "utts.tsv"
    with pytest.raises(ValueError, match="does not cover the corpus") as err:
        score_job(transcript, timing, manifest, score, utt)
    assert str(transcript) in str(err.value) and "u2" in str(err.value)
    assert not score.exists() and not utt.exists()


# --------------------------------------------------------------------------- a real kill of a real run


def _group_alive(pgid: int) -> bool:
    """Whether a non-zombie process of the group ``pgid`` is left."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _complete_batches(partial: Path) -> int:
    if not partial.exists():
        return 0
    *lines, _tail = partial.read_text().split("\n")
    return max(0, len(lines) - 1)


@pytest.mark.slow
def test_killed_transcription_resumes_without_redoing_batches(tmp_path_factory, finished_run, default_config,
                                                              download_cache):
    from whisperquant.config import check_config, validate_schema
    from whisperquant.jobs import transcribe_job
    from whisperquant.provenance import code_digest

    base = small_config(default_config, download_cache)
    work = copy_run(finished_run, tmp_path_factory.mktemp("resume") / "run")
    cfg = copy.deepcopy(base)
    cfg["corpora"]["clean"]["ids"] = CLIPS
    cfg["transcription"]["batch_size"] = 1
    write_config(work, cfg)  # a new corpus and batch size: the fp32 artifact is reused

    out, partial = work / TARGET, work / (TARGET + ".partial")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work),
           "--configfile", str(work / "config" / "config.yaml"), "--cores", "2", TARGET]
    with open(work / "killed-run.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 600
        while _complete_batches(partial) < 1:
            assert proc.poll() is None, f"finished before it could be killed:\n{(work / 'killed-run.log').read_text()}"
            assert time.monotonic() < deadline, "no batch finished in time"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 30
    while _group_alive(proc.pid):  # the transcription script itself, too
        assert time.monotonic() < deadline, "the killed job's processes are still running"
        time.sleep(0.1)

    done = _complete_batches(partial)
    assert 1 <= done < len(CLIPS), done  # killed midway
    finished = [json.loads(x) for x in partial.read_text().split("\n")[1 : 1 + done]]
    assert not out.exists()  # no final transcript: nothing could score a partial one

    snakemake(work, "--unlock")  # a SIGKILL'ed Snakemake leaves its lock behind
    assert planned_jobs(work, "--rerun-incomplete", TARGET) == {"transcribe": 1}
    snakemake(work, "--cores", "2", "--rerun-incomplete", TARGET)

    timing = json.loads((work / TARGET.replace(".jsonl", ".timing.json")).read_text())
    assert timing["status"] == "ok" and timing["utterances"] == len(CLIPS)
    assert timing["batches"] == len(CLIPS) and timing["resumed_batches"] == done
    assert not partial.exists()
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    for batch in finished:  # what the killed run finished is what the transcript holds
        for u in batch["utterances"]:
            assert rows[u["id"]] == u

    # the same cell, uninterrupted, in another directory (the job's own code, in-process)
    ref_cfg = copy.deepcopy(cfg)
    validate_schema(ref_cfg)
    scheme = check_config(ref_cfg)["fp32"]
    ref = tmp_path_factory.mktemp("resume-reference")
    transcribe_job("tiny.en", work / "resources/models/tiny.en", "fp32", scheme,
                   work / "results/quantized/tiny.en/fp32", "cpu", work / "resources/corpora/clean/manifest.tsv",
                   ref / "clean.jsonl", ref / "clean.timing.json", ref_cfg["transcription"], 2, ref / "clean.log",
                   code=code_digest("transcribe", "fp32"))
    assert json.loads((ref / "clean.timing.json").read_text())["resumed_batches"] == 0
    assert out.read_bytes() == (ref / "clean.jsonl").read_bytes()

    # a job that fails after its accuracy pass (here in its timing: a workload of no units) keeps the pass's
    # batches, and its rerun decodes none of them again
    again = tmp_path_factory.mktemp("resume-after-timing")
    broken = copy.deepcopy(ref_cfg["transcription"])
    broken["timing"] = {**broken["timing"], "units": 0}
    args = ("tiny.en", work / "resources/models/tiny.en", "fp32", scheme, work / "results/quantized/tiny.en/fp32",
            "cpu", work / "resources/corpora/clean/manifest.tsv", again / "clean.jsonl", again / "clean.timing.json")
    with pytest.raises(ValueError, match=r"transcription\.timing\.units"):
        transcribe_job(*args, broken, 2, again / "clean.log", code=code_digest("transcribe", "fp32"))
    assert (again / "clean.jsonl.partial").exists() and not (again / "clean.timing.json").exists()
    (again / "clean.jsonl").unlink()  # what Snakemake does with a failed job's outputs
    transcribe_job(*args, ref_cfg["transcription"], 2, again / "clean.log", code=code_digest("transcribe", "fp32"))
    resumed = json.loads((again / "clean.timing.json").read_text())
    assert resumed["resumed_batches"] == resumed["batches"] == len(CLIPS) and resumed["status"] == "ok"
    assert (again / "clean.jsonl").read_bytes() == out.read_bytes() and not (again / "clean.jsonl.partial").exists()

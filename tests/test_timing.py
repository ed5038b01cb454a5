"""The speed protocol: warm-up excluded, timed batches repeated to a minimum, median RTFx with low/high.

Real tiny.en on two real clips (one clip per batch): the first batch a process
decodes is an untimed warm-up, every later one is timed, and batches are
decoded again until ``min_timed_batches`` and ``min_timed_s`` hold.
"""

from __future__ import annotations

import json

import pytest
from whisperquant.evaluate.transcribe import generate_kwargs_for, load_corpus, transcribe_corpus


@pytest.fixture(scope="module")
def engine(tiny_en):
    from transformers import WhisperProcessor
    from whisperquant.quantize.base import load_fp32

    model = load_fp32(tiny_en)
    return model, WhisperProcessor.from_pretrained(str(tiny_en)), generate_kwargs_for(model, "en", 64)


def _run(engine, corpus, out, **timing):
    model, processor, gen = engine
    return transcribe_corpus(model, processor, load_corpus(corpus), out, batch_size=1, generate_kwargs=gen,
                             progress=False, **timing)


def test_warmup_is_not_timed_and_batches_repeat_to_the_minimum(engine, two_clip_corpus, tmp_path):
    t = _run(engine, two_clip_corpus, tmp_path / "a.jsonl", warmup_batches=1, min_timed_s=0, min_timed_batches=4)
    # two batches: the first is warm-up, the second timed; three repeats make four timed batches
    assert (t["batches"], t["timed_batches"], t["timing_repeats"]) == (2, 4, 3)
    assert t["rtfx_low"] <= t["rtfx"] <= t["rtfx_high"]
    assert t["rtfx"] > 0 and "1 untimed warm-up" in t["timing_pass"]
    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["hypothesis"].strip() for r in rows)  # repeats never touch the output


def test_minimum_timed_seconds_is_honoured(engine, two_clip_corpus, tmp_path):
    t = _run(engine, two_clip_corpus, tmp_path / "b.jsonl", warmup_batches=1, min_timed_s=2.0, min_timed_batches=1)
    assert t["timed_wall_s"] >= 2.0
    assert t["timed_batches"] == 1 + t["timing_repeats"]


def test_no_warmup_times_every_batch(engine, two_clip_corpus, tmp_path):
    t = _run(engine, two_clip_corpus, tmp_path / "c.jsonl", warmup_batches=0, min_timed_s=0, min_timed_batches=1)
    assert (t["timed_batches"], t["timing_repeats"]) == (2, 0)

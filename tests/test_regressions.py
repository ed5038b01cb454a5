"""Hallucination flags (empty and looping hypotheses) and their totals in the score records."""

from __future__ import annotations

import json

import pytest
from whisperquant.evaluate.regressions import is_empty, is_looping, regression_flags, repeated_ngrams


@pytest.mark.parametrize(
    ("reference", "hypothesis", "empty"),
    [
        ("hello world", "", True),
        ("hello world", "   ", True),
        ("", "", False),  # nothing to say, nothing said
        ("", "hello", False),
        ("hello world", "hello", False),
    ],
)
def test_empty(reference, hypothesis, empty):
    assert is_empty(reference, hypothesis) is empty


def test_repeated_ngrams():
    assert repeated_ngrams("gym gym gym gym") == {("gym",)}
    assert repeated_ngrams("gym gym gym") == set()  # three is not a run
    assert repeated_ngrams("and of the of the of the of the end") == {("of", "the")}
    # "a a" is a repetition of "a": the run is reported once, by its shortest unit
    assert repeated_ngrams("a a a a a a a a") == {("a",)}
    five = "one two three four five "
    assert repeated_ngrams(five * 4) == {tuple(five.split())}
    assert repeated_ngrams("x " + "one two three four five six " * 4) == set()  # n = 6 is too long
    assert repeated_ngrams("") == set()
    assert repeated_ngrams(["b", "b", "b", "b"]) == {("b",)}
    with pytest.raises(ValueError):
        repeated_ngrams("a", max_n=0)


@pytest.mark.parametrize(
    ("reference", "hypothesis", "looping"),
    [
        ("the gym was closed", "the gym gym gym gym", True),
        ("go to the end of the road", "go to the end of the of the of the of the", True),
        ("go to the end", "go go go to the end", False),  # three times is not a loop
        ("no no no no he said", "no no no no he said", False),  # the reference repeats itself
        ("no no no no he said", "no no no no no no no no he said", False),  # same unit, longer run
        ("no no no no he said", "he said yes yes yes yes", True),  # a different n-gram loops
        ("", "", False),
        ("hello", "", False),
    ],
)
def test_looping(reference, hypothesis, looping):
    assert is_looping(reference, hypothesis) is looping


def test_flags_normalize_raw_text_on_request():
    # punctuation and case are gone after normalisation: "Gym, gym. GYM! gym?" is a loop
    flags = regression_flags("The gym.", "Gym, gym. GYM! gym?", normalized=False)
    assert flags.looping and not flags.empty
    assert regression_flags("Hello.", "[laughter]", normalized=False).empty  # normalises to nothing


def test_score_job_writes_flags(tmp_path):
    from whisperquant.data.manifest import Row, write_manifest
    from whisperquant.jobs import score_job
    from whisperquant.report.statistics import read_utt_scores

    refs = {"u0": "The gym was closed.", "u1": "Hello there.", "u2": "No, no, no, no!", "u3": "Fine."}
    hyps = {"u0": "The gym gym gym gym.", "u1": "", "u2": "No no no no.", "u3": "fine"}
    rows = [Row(k, f"wav/{k}.wav", "1.000", v, "0" * 64) for k, v in refs.items()]
    manifest = write_manifest(tmp_path, rows)
    transcript = tmp_path / "cell.jsonl"
    transcript.write_text("".join(
        json.dumps({"id": k, "reference": refs[k], "hypothesis": hyps[k], "audio_s": 1.0}) + "\n"
        for k in refs))
    timing = tmp_path / "cell.timing.json"
    timing.write_text(json.dumps({"status": "ok"}))
    score, utt = tmp_path / "score.json", tmp_path / "utts.tsv"
    score_job(transcript, timing, manifest, score, utt)
    header = utt.read_text().splitlines()[0].split("\t")
    assert header == ["id", "ref_words", "substitutions", "deletions", "insertions", "hits", "errors",
                      "empty", "looping"]
    df = read_utt_scores(utt).set_index("id")
    assert df["empty"].to_dict() == {"u0": 0, "u1": 1, "u2": 0, "u3": 0}
    assert df["looping"].to_dict() == {"u0": 1, "u1": 0, "u2": 0, "u3": 0}
    rec = json.loads(score.read_text())
    assert (rec["empty_hyps"], rec["looping_hyps"], rec["n_utts"]) == (1, 1, 4)
    assert rec["insertions"] == 1 and rec["errors"] == int(df["errors"].sum())

    # a failed cell keeps the same header
    timing.write_text(json.dumps({"status": "failed", "reason": "boom", "log": "x.log"}))
    score_job(transcript, timing, manifest, score, utt)
    assert utt.read_text().splitlines() == ["\t".join(header)]

"""Whisper's English normaliser (with its spelling map) and corpus WER, on hand-checked cases."""

from __future__ import annotations

import pytest
from whisperquant.evaluate.scoring import ZERO, corpus_errors, normalize, score_pair, spelling_map, word_errors


def test_spelling_map_is_whispers():
    m = spelling_map()
    assert len(m) == 1739
    assert m["colour"] == "color" and m["grey"] == "gray"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The colour is GREY.", "the color is gray"),
        ("Mr. Smith's car", "mister smith is car"),  # Whisper expands 's like this
        ("HE BEGAN A CONFUSED COMPLAINT", "he began a confused complaint"),
        ("twenty-one", "21"),
        ("uh, um, hello [laughter]", "hello"),
        ("re-entered", "re entered"),
    ],
)
def test_normalizer(text, expected):
    assert normalize(text) == expected


def test_word_errors_hand_counted():
    # ref: a b c d ; hyp: a x c d e  -> 1 substitution (b->x), 1 insertion (e)
    e = word_errors("a b c d", "a x c d e")
    assert (e.ref_words, e.substitutions, e.deletions, e.insertions, e.hits) == (4, 1, 0, 1, 3)
    assert e.wer == pytest.approx(0.5)
    # deletion of two words
    e = word_errors("one two three four", "one four")
    assert (e.substitutions, e.deletions, e.insertions) == (0, 2, 0)


def test_empty_sides():
    assert word_errors("", "hello").insertions == 1
    assert word_errors("hello world", "").deletions == 2
    assert word_errors("", "").errors == 0


def test_normalization_happens_before_counting():
    # British spelling and punctuation are not errors after normalisation.
    assert score_pair("The colour of the sea.", "the color of the sea").errors == 0


def test_corpus_wer_is_total_errors_over_total_words():
    pairs = [("a b c d e f g h i j", "a b c d e f g h i j"), ("x", "y")]
    total = corpus_errors(pairs)
    # 1 error over 11 words, not the mean of per-utterance rates (0.5)
    assert total.errors == 1 and total.ref_words == 11
    assert total.wer == pytest.approx(1 / 11)
    assert (ZERO + total) == total


def test_same_as_transformers_normalizer_with_the_map():
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    reference = EnglishTextNormalizer(spelling_map())
    texts = ["The colour is GREY.", "Mr. Smith's 1st car cost $20.50!", "re-entered, um, twenty-one",
             "He began a confused complaint against the wizard, who had vanished behind the curtain on the left.",
             "I'm sorry, that number is not valid.", "Press star to cancel this message..."]
    for t in texts:
        assert normalize(t) == " ".join(reference(t).split())

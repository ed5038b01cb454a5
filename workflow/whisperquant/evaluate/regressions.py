"""Hallucination flags of one utterance: an empty hypothesis and a looping one.

A low corpus WER can hide the failures a user notices first: a model that
returns nothing for some clips, or one that gets stuck repeating a word or a
phrase ("gym gym gym gym ...") until it runs out of tokens.  Both are counted
per utterance here, on the *normalised* texts (:func:`whisperquant.evaluate.
scoring.normalize`), so punctuation, case and spelling never decide a flag.

Rules (on normalised text split into words):

* **empty** -- the hypothesis has no words while the reference has at least one.
  An utterance whose reference is empty too is not flagged.
* **looping** -- the hypothesis contains a *run*: some n-gram of 1 <= n <= 5
  words that occurs at least 4 times in a row ("gym gym gym gym", "of the of
  the of the of the"), and the reference has no run of that same n-gram (a
  reference that itself repeats, "no no no no", does not make a loop).  Only
  *primitive* n-grams count: one that is itself a repetition of a shorter one
  ("gym gym", "a b a b") is represented by its shortest unit, so a reference
  with "no" four times also excuses a hypothesis with "no" eight times.

The functions are pure: no I/O, no state, deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "MAX_NGRAM",
    "MIN_REPEATS",
    "RegressionFlags",
    "is_empty",
    "is_looping",
    "regression_flags",
    "repeated_ngrams",
]

#: Longest n-gram (in words) whose repetition counts as a loop.
MAX_NGRAM = 5
#: Consecutive occurrences of an n-gram that make a run.
MIN_REPEATS = 4


@dataclass(frozen=True)
class RegressionFlags:
    """The flags of one utterance (see the module docstring for the rules)."""

    empty: bool
    looping: bool


def _words(text: str | Sequence[str]) -> list[str]:
    return text.split() if isinstance(text, str) else list(text)


def _primitive(gram: tuple[str, ...]) -> bool:
    """Whether ``gram`` is not a repetition of a shorter n-gram ("a a" and "a b a b" are not)."""
    n = len(gram)
    return not any(n % d == 0 and gram == gram[:d] * (n // d) for d in range(1, n))


def repeated_ngrams(
    words: str | Sequence[str], max_n: int = MAX_NGRAM, min_repeats: int = MIN_REPEATS
) -> set[tuple[str, ...]]:
    """Every primitive n-gram (1 <= n <= ``max_n``) that occurs ``min_repeats`` or more times in a row.

    ``words`` is a normalised string (split on whitespace) or a word list.
    ``"of the of the of the of the"`` gives ``{("of", "the")}``; ``"a a a a a a a a"``
    gives ``{("a",)}`` only ("a a" is not primitive).  O(len(words) * max_n * min_repeats).
    """
    if max_n < 1 or min_repeats < 2:
        raise ValueError(f"max_n must be >= 1 and min_repeats >= 2, got {max_n}, {min_repeats}")
    w = _words(words)
    found: set[tuple[str, ...]] = set()
    for n in range(1, max_n + 1):
        span = n * min_repeats
        for i in range(len(w) - span + 1):
            gram = tuple(w[i : i + n])
            if gram in found or not _primitive(gram):
                continue
            if all(tuple(w[i + k * n : i + (k + 1) * n]) == gram for k in range(1, min_repeats)):
                found.add(gram)
    return found


def is_empty(reference: str, hypothesis: str) -> bool:
    """Normalised ``hypothesis`` has no words while normalised ``reference`` has some."""
    return not hypothesis.split() and bool(reference.split())


def is_looping(
    reference: str, hypothesis: str, max_n: int = MAX_NGRAM, min_repeats: int = MIN_REPEATS
) -> bool:
    """The normalised hypothesis has a run (an n-gram, n <= ``max_n``, ``min_repeats``+ times in a
    row) of an n-gram that has no such run in the normalised reference."""
    hyp_runs = repeated_ngrams(hypothesis, max_n, min_repeats)
    if not hyp_runs:
        return False
    return bool(hyp_runs - repeated_ngrams(reference, max_n, min_repeats))


def regression_flags(reference: str, hypothesis: str, normalized: bool = True) -> RegressionFlags:
    """Both flags of one utterance.

    ``normalized=True`` (default) expects texts already passed through
    :func:`~whisperquant.evaluate.scoring.normalize` (as the scoring job has
    them); ``False`` normalises raw texts first.
    """
    if not normalized:
        from .scoring import normalize

        reference, hypothesis = normalize(reference), normalize(hypothesis)
    return RegressionFlags(empty=is_empty(reference, hypothesis), looping=is_looping(reference, hypothesis))

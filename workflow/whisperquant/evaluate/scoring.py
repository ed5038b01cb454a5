"""Word error rate with Whisper's English normaliser, as open_asr_leaderboard scores.

Raw hypotheses are kept untouched in the transcripts; normalisation happens
here only.  The normaliser is OpenAI Whisper's ``EnglishTextNormalizer`` as the
``whisper-normalizer`` wheel ships it, with Whisper's English spelling map
(``english.json``, 1,739 British -> American spellings).  transformers carries
the same class but needs the map passed in (an empty map silently counts
"colour"/"color" as an error) and costs seconds of imports per scoring job;
the tests check both give identical output with the map.

Corpus WER is total word errors over total reference words (not a mean of
per-utterance rates).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources


@cache
def spelling_map() -> dict[str, str]:
    """Whisper's English spelling map, from the pinned whisper-normalizer wheel."""
    ref = resources.files("whisper_normalizer").joinpath("normalizers/english.json")
    mapping = json.loads(ref.read_text(encoding="utf-8"))
    if len(mapping) < 1000:
        raise RuntimeError(f"Whisper's English spelling map looks truncated ({len(mapping)} entries)")
    return mapping


@cache
def _normalizer():
    from whisper_normalizer.english import EnglishTextNormalizer

    normalizer = EnglishTextNormalizer()
    if normalizer.standardize_spellings.mapping != spelling_map():
        raise RuntimeError("whisper-normalizer did not load Whisper's English spelling map")
    return normalizer


def normalize(text: str) -> str:
    """Whisper's English normalisation (lower case, spelling map, numbers, no punctuation)."""
    return " ".join(_normalizer()(text).split())


@dataclass(frozen=True)
class WordErrors:
    """Edit operations of one or many utterances against their references."""

    ref_words: int
    substitutions: int
    deletions: int
    insertions: int
    hits: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        """Errors per reference word; NaN when there are no reference words."""
        return self.errors / self.ref_words if self.ref_words else float("nan")

    def __add__(self, other: WordErrors) -> WordErrors:
        return WordErrors(*(a + b for a, b in zip(self.astuple(), other.astuple(), strict=True)))

    def astuple(self) -> tuple[int, int, int, int, int]:
        return (self.ref_words, self.substitutions, self.deletions, self.insertions, self.hits)

    def asdict(self) -> dict:
        return {**asdict(self), "errors": self.errors, "wer": self.wer}


ZERO = WordErrors(0, 0, 0, 0, 0)


def word_errors(reference: str, hypothesis: str) -> WordErrors:
    """Align two already-normalised strings word by word (jiwer's Levenshtein)."""
    import jiwer

    ref, hyp = reference.split(), hypothesis.split()
    if not ref:
        return WordErrors(0, 0, 0, len(hyp), 0)
    if not hyp:
        return WordErrors(len(ref), 0, len(ref), 0, 0)
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    return WordErrors(len(ref), out.substitutions, out.deletions, out.insertions, out.hits)


def score_pair(reference: str, hypothesis: str) -> WordErrors:
    """Normalise both sides, then count word errors."""
    return word_errors(normalize(reference), normalize(hypothesis))


def corpus_errors(pairs: Iterable[tuple[str, str]]) -> WordErrors:
    """Sum of word errors over (reference, hypothesis) pairs: the corpus-level WER's numerator."""
    total = ZERO
    for ref, hyp in pairs:
        total = total + score_pair(ref, hyp)
    return total

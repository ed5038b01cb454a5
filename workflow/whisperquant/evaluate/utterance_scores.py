"""Score a cell's transcript utterance by utterance: word errors and hallucination flags, and their totals.

What the score job (:func:`whisperquant.jobs.score_job`) writes, one row per utterance
(:data:`UTT_COLUMNS`, the per-utterance TSV the report's bootstrap resamples) and the corpus
totals of its record.  Texts are normalised once (:func:`~.scoring.normalize`), then
scored (:func:`~.scoring.word_errors`) and flagged (:func:`~.regressions.regression_flags`).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..data.manifest import read_manifest
from .regressions import regression_flags
from .scoring import ZERO, normalize, word_errors

#: Columns of a per-utterance score TSV.
UTT_COLUMNS = ("id", "ref_words", "substitutions", "deletions", "insertions", "hits", "errors", "empty", "looping")
#: Its header line.
UTT_HEADER = "\t".join(UTT_COLUMNS)


def score_transcript(transcript: str | Path, manifest: str | Path) -> tuple[list[str], dict]:
    """(the per-utterance TSV's lines, header first; the totals of the score record) of ``transcript``
    (JSON lines of id, reference, hypothesis) against the corpus ``manifest``.

    The transcript must cover exactly the manifest's utterances, each with the manifest's
    reference: anything else is a ValueError naming the file (a partial transcript is never scored).
    """
    rows = [json.loads(line) for line in Path(transcript).read_text(encoding="utf-8").split("\n") if line]
    expected = {r.id: r.reference for r in read_manifest(manifest)}
    got = {r["id"] for r in rows}
    if got != set(expected):
        missing = sorted(set(expected) - got)
        raise ValueError(f"{transcript}: transcript does not cover the corpus ({len(missing)} missing, "
                         f"e.g. {missing[:1]}); refusing to score a partial transcript")
    lines = [UTT_HEADER]
    total, empty, looping = ZERO, 0, 0
    for r in sorted(rows, key=lambda r: r["id"]):
        if r["reference"] != expected[r["id"]]:
            raise ValueError(f"utterance {r['id']}: reference in {transcript} differs from {manifest}")
        ref, hyp = normalize(r["reference"]), normalize(r["hypothesis"])
        e = word_errors(ref, hyp)  # = score_pair(reference, hypothesis), normalising once
        flags = regression_flags(ref, hyp)
        total = total + e
        empty += flags.empty
        looping += flags.looping
        lines.append("\t".join(map(str, (r["id"], e.ref_words, e.substitutions, e.deletions, e.insertions,
                                         e.hits, e.errors, int(flags.empty), int(flags.looping)))))
    return lines, {"n_utts": len(rows), **total.asdict(), "empty_hyps": empty, "looping_hyps": looping}

"""Uncertainty and trade-off statistics for corpus word error rates.

A quantised model is only "as good as fp32" if the difference is small compared
to the noise of a finite test set, so every WER in the report carries an
interval and every difference to fp32 a paired test:

* :func:`bootstrap_wer_ci` -- percentile bootstrap over *utterances* of the
  corpus WER (total errors / total reference words).  Utterances, not words,
  are the independent sampling units: errors cluster within an utterance
  (one misheard name costs several words), so resampling words would give
  intervals that are too narrow.
* :func:`paired_bootstrap_delta` -- the same bootstrap applied to the
  difference of two systems scored on the same utterances, with *identical*
  resample indices for both.  Pairing cancels the utterance-difficulty
  variance that both systems share, which makes small quantisation effects
  detectable that two independent intervals would hide.
* :func:`pareto_frontier` -- the size/WER trade-off curve.
* :func:`median_interval` -- the distribution-free interval of a median (order
  statistics), for absolute speeds (RTFx).
* :func:`hodges_lehmann_interval` -- the Hodges-Lehmann estimate of a centre and
  its Wilcoxon signed-rank interval, for paired speedups (on log pair ratios).
* :func:`ratio_of_locations_interval` -- a percentile bootstrap of the quotient of
  two independent speedups (a speedup chained through a common reference).

Everything is plain numpy, vectorised over resamples (drawn in chunks so that
memory stays bounded for large corpora), and deterministic: the same inputs
and seed give bit-identical outputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["PairedResult", "bootstrap_wer_ci", "cluster_sums", "hodges_lehmann_interval", "median_interval",
           "paired_bootstrap_delta", "pareto_frontier", "ratio_of_locations_interval"]

# Upper bound on the number of elements of one index matrix (resamples x
# utterances).  2**22 int64 indices = 32 MiB, plus a gathered float copy of
# the same size.  The chunk size depends only on the corpus size, so results
# do not depend on the machine.
_MAX_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class PairedResult:
    """Outcome of a paired bootstrap comparison of system A against system B.

    ``delta`` is WER_A - WER_B on the full set (a fraction, positive = A makes
    more errors); ``ci_low``/``ci_high`` the percentile interval of the
    bootstrap distribution of that difference; ``p_value`` the two-sided
    bootstrap p-value; ``significant`` whether the interval excludes 0.
    """

    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    significant: bool


def _as_vector(x: npt.ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if np.any(arr < 0):
        raise ValueError(f"{name} contains negative counts")
    return arr


def _check_common(n_resamples: int, confidence: float) -> None:
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")


def _resampled_sums(values: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Column sums of ``values`` ([n_utts, k]) over bootstrap resamples of its rows.

    Returns an array [n_resamples, k].  Every column sees the *same* resample
    indices, which is what makes the paired comparison paired.  Indices are
    drawn chunk by chunk from one generator so memory stays bounded.
    """
    n = values.shape[0]
    rng = np.random.default_rng(seed)
    chunk = max(1, _MAX_CHUNK_ELEMENTS // n)
    out = np.empty((n_resamples, values.shape[1]), dtype=np.float64)
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        for k in range(values.shape[1]):
            out[start:stop, k] = values[:, k][idx].sum(axis=1)
    return out


def _percentile_interval(dist: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = 1.0 - confidence
    lo, hi = np.quantile(dist, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


def bootstrap_wer_ci(
    errors: npt.ArrayLike,
    ref_words: npt.ArrayLike,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the corpus WER sum(errors) / sum(ref_words).

    Utterances are resampled with replacement (the ratio of sums is recomputed
    for each resample, not averaged per utterance, matching how corpus WER is
    defined).  Returns ``(low, high)`` as fractions; ``(nan, nan)`` for an
    empty corpus or one without reference words.  Resamples that happen to
    contain no reference words (possible only when many utterances have an
    empty reference) are dropped.
    """
    _check_common(n_resamples, confidence)
    e = _as_vector(errors, "errors")
    r = _as_vector(ref_words, "ref_words")
    if e.shape != r.shape:
        raise ValueError(f"errors ({e.size}) and ref_words ({r.size}) differ in length")
    if e.size == 0 or r.sum() == 0:
        return float("nan"), float("nan")
    sums = _resampled_sums(np.column_stack([e, r]), int(n_resamples), seed)
    valid = sums[:, 1] > 0
    wers = sums[valid, 0] / sums[valid, 1]
    return _percentile_interval(wers, confidence)


def paired_bootstrap_delta(
    errors_a: npt.ArrayLike,
    errors_b: npt.ArrayLike,
    ref_words: npt.ArrayLike,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedResult:
    """Paired bootstrap of WER_A - WER_B over utterances scored by both systems.

    The i-th entries of ``errors_a``, ``errors_b`` and ``ref_words`` must refer
    to the same utterance.  Both systems are evaluated on the same resample
    indices, so the distribution reflects only how the *difference* varies.

    The p-value is two-sided, read off the bootstrap distribution with the
    usual +1 correction: ``min(1, 2 * min(#(d* <= 0) + 1, #(d* >= 0) + 1) / (B + 1))``.
    It agrees with the interval: ``significant`` (the interval excludes 0)
    roughly coincides with ``p_value < 1 - confidence``.  Identical systems
    give delta 0, interval [0, 0], p-value 1 and are never significant.
    """
    _check_common(n_resamples, confidence)
    ea = _as_vector(errors_a, "errors_a")
    eb = _as_vector(errors_b, "errors_b")
    r = _as_vector(ref_words, "ref_words")
    if not ea.shape == eb.shape == r.shape:
        raise ValueError(
            f"errors_a ({ea.size}), errors_b ({eb.size}) and ref_words ({r.size}) differ in length"
        )
    nan = float("nan")
    if ea.size == 0 or r.sum() == 0:
        return PairedResult(nan, nan, nan, nan, False)
    d = ea - eb  # exact for integer counts, so identical systems give exactly 0
    delta = float(d.sum() / r.sum())
    sums = _resampled_sums(np.column_stack([d, r]), int(n_resamples), seed)
    valid = sums[:, 1] > 0
    dist = sums[valid, 0] / sums[valid, 1]
    lo, hi = _percentile_interval(dist, confidence)
    b = dist.size
    n_le = int(np.count_nonzero(dist <= 0.0))
    n_ge = int(np.count_nonzero(dist >= 0.0))
    p_value = min(1.0, 2.0 * (min(n_le, n_ge) + 1) / (b + 1))
    significant = bool(lo > 0.0 or hi < 0.0)
    return PairedResult(delta, lo, hi, p_value, significant)


def cluster_sums(ids: Sequence[str], clusters: Mapping[str, str], *columns: npt.ArrayLike,
                 where: str = "") -> list[np.ndarray]:
    """Each column summed per cluster (e.g. speaker), clusters in sorted order.

    Resampling these sums is the cluster bootstrap: utterances of one speaker are
    not independent, so a speaker is drawn with all of them.  Corpus WER is a
    ratio of sums, so it is unchanged.  Every id must have a cluster; a missing
    one raises ValueError naming it (and ``where``).
    """
    ids = [str(i) for i in ids]
    missing = [i for i in ids if i not in clusters]
    if missing:
        raise ValueError(f"{where}utterance {missing[0]!r} has no speaker ({len(missing)} without one)")
    names = sorted({clusters[i] for i in ids})
    index = {c: k for k, c in enumerate(names)}
    code = np.fromiter((index[clusters[i]] for i in ids), dtype=np.int64, count=len(ids))
    out = []
    for col in columns:
        v = _as_vector(col, "column")
        if v.size != len(ids):
            raise ValueError(f"a column has {v.size} values for {len(ids)} ids")
        out.append(np.bincount(code, weights=v, minlength=len(names)).astype(np.float64))
    return out


def pareto_frontier(size: npt.ArrayLike, wer: npt.ArrayLike) -> np.ndarray:
    """Boolean mask of the points no other point dominates (both to be minimised).

    Point j dominates point i when ``size_j <= size_i`` and ``wer_j <= wer_i``
    with at least one strict inequality.  Exact duplicates do not dominate
    each other, so both stay on the front.  Points with a NaN coordinate
    (failed or unsupported cells) are never on the front and dominate nothing.
    O(n log n): sort by size, then compare each point with the best WER of all
    strictly smaller sizes and with the best WER of its own size.
    """
    s = np.asarray(size, dtype=np.float64)
    w = np.asarray(wer, dtype=np.float64)
    if s.shape != w.shape or s.ndim != 1:
        raise ValueError(f"size {s.shape} and wer {w.shape} must be 1-D arrays of equal length")
    mask = np.zeros(s.shape, dtype=bool)
    ok = np.flatnonzero(~(np.isnan(s) | np.isnan(w)))
    if ok.size == 0:
        return mask
    order = ok[np.lexsort((w[ok], s[ok]))]
    ss, ws = s[order], w[order]
    _, starts, group = np.unique(ss, return_index=True, return_inverse=True)
    group_min = np.minimum.reduceat(ws, starts)
    best_smaller = np.concatenate([[np.inf], np.minimum.accumulate(group_min)[:-1]])
    dominated = (ws >= best_smaller[group]) | (ws > group_min[group])
    mask[order] = ~dominated
    return mask


def median_rank(n: int, confidence: float = 0.95) -> int:
    """The rank ``k`` of the distribution-free interval ``[x(k), x(n+1-k)]`` of a median of ``n`` values.

    The largest ``k`` whose interval covers the population median with probability at
    least ``confidence`` (binomial(n, 1/2) tails, ties aside); 0 when no interval of ``n``
    values reaches it (fewer than 6 values for 95 %).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    alpha = 1.0 - confidence
    k, tail = 0, 0.0
    while k < n // 2:
        tail_next = tail + math.comb(n, k) / 2.0**n  # P(B <= k), B ~ binomial(n, 1/2)
        if 2.0 * tail_next > alpha:
            break
        tail, k = tail_next, k + 1
    return k


def median_interval(values: npt.ArrayLike, confidence: float = 0.95) -> tuple[float, float, float]:
    """(median, low, high): the median of ``values`` and its distribution-free interval.

    The interval is a pair of order statistics (:func:`median_rank`), so it assumes only
    that the values are independent draws of one distribution: no normality, and one
    disturbed measurement cannot stretch it the way it stretches a standard error.
    ``low``/``high`` are NaN when there are too few values for ``confidence``.
    """
    x = np.sort(np.asarray(values, dtype=np.float64))
    if x.ndim != 1 or x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError(f"median_interval needs a non-empty 1-D array of finite values, got {x!r}")
    k = median_rank(x.size, confidence)
    med = float(np.median(x))
    if k == 0:
        return med, float("nan"), float("nan")
    return med, float(x[k - 1]), float(x[x.size - k])


def signed_rank_critical(n: int, confidence: float = 0.95) -> int:
    """The rank ``c`` of the Wilcoxon signed-rank interval ``[W(c), W(M+1-c)]`` of ``n`` values.

    ``W`` are the ``M = n(n+1)/2`` sorted Walsh averages.  ``c - 1`` is the largest
    signed-rank statistic ``t`` with ``P(T <= t) <= (1 - confidence) / 2`` under the
    null distribution, counted exactly (2**n sign patterns); 0 when no interval of ``n``
    values reaches ``confidence`` (fewer than 6 values for 95 %).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    m = n * (n + 1) // 2
    counts = [1] + [0] * m  # counts[t]: sign patterns of ranks 1..k whose positive ranks sum to t
    for k in range(1, n + 1):
        for t in range(m, k - 1, -1):
            counts[t] += counts[t - k]
    alpha_half, total, c = (1.0 - confidence) / 2.0, 2.0**n, 0
    cumulative = 0
    for t in range(m + 1):
        cumulative += counts[t]
        if cumulative / total > alpha_half:
            break
        c = t + 1
    return c


def _walsh_averages(x: np.ndarray) -> np.ndarray:
    """Every (x_i + x_j) / 2 with i <= j, along the last axis (the Hodges-Lehmann estimator's inputs)."""
    i, j = np.triu_indices(x.shape[-1])
    return (x[..., i] + x[..., j]) / 2.0


def hodges_lehmann_interval(values: npt.ArrayLike, confidence: float = 0.95) -> tuple[float, float, float]:
    """(estimate, low, high): the Hodges-Lehmann centre of ``values`` and its signed-rank interval.

    The estimate is the median of the Walsh averages; the interval two of their order
    statistics (:func:`signed_rank_critical`).  It assumes independent values from one
    distribution symmetric about its centre (log speed ratios: a slow and a fast
    outlier are equally likely), not normality.  Why not the plain median: the
    Hodges-Lehmann estimate keeps ~95 % of the mean's efficiency on normal noise where
    the median keeps 64 %, so the same pairs give a narrower interval, and one
    disturbed pair still moves it little.  ``low``/``high`` are NaN when there are
    too few values for ``confidence``.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError(f"hodges_lehmann_interval needs a non-empty 1-D array of finite values, got {x!r}")
    w = np.sort(_walsh_averages(x))
    est = float(np.median(w))
    c = signed_rank_critical(x.size, confidence)
    if c == 0:
        return est, float("nan"), float("nan")
    return est, float(w[c - 1]), float(w[w.size - c])


def paired_speedup(ratios: npt.ArrayLike, confidence: float = 0.95) -> tuple[float, float, float]:
    """(speedup, low, high) of paired timing ratios: :func:`hodges_lehmann_interval` of their logarithms.

    On logarithms, so that the speedup of A over B is exactly the reciprocal of B's
    over A, and a ratio of 2 and one of 1/2 weigh alike.
    """
    r = np.asarray(ratios, dtype=np.float64)
    if r.size and np.any(r <= 0):
        raise ValueError(f"paired_speedup needs positive ratios, got {r!r}")
    est, lo, hi = hodges_lehmann_interval(np.log(r), confidence)
    return math.exp(est), math.exp(lo), math.exp(hi)


def ratio_of_locations_interval(numerator: npt.ArrayLike, denominator: npt.ArrayLike, n_resamples: int = 2000,
                                seed: int = 0, confidence: float = 0.95) -> tuple[float, float, float]:
    """(ratio, low, high): ``paired_speedup(numerator) / paired_speedup(denominator)``, two independent samples.

    Each sample of pair ratios is resampled on its own (they come from different jobs);
    the interval is the percentile interval of the resampled quotients.  Used to chain
    two speedups measured against the same reference: (cell / fp32) / (CTranslate2 int8 / fp32).
    """
    _check_common(n_resamples, confidence)
    a = np.asarray(numerator, dtype=np.float64)
    b = np.asarray(denominator, dtype=np.float64)
    if a.size == 0 or b.size == 0 or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))) or np.any(a <= 0) \
            or np.any(b <= 0):
        raise ValueError("ratio_of_locations_interval needs non-empty finite samples of positive ratios")
    rng = np.random.default_rng(seed)
    la, lb = np.log(a), np.log(b)
    ha = np.median(_walsh_averages(la[rng.integers(0, a.size, size=(int(n_resamples), a.size))]), axis=1)
    hb = np.median(_walsh_averages(lb[rng.integers(0, b.size, size=(int(n_resamples), b.size))]), axis=1)
    lo, hi = _percentile_interval(np.exp(ha - hb), confidence)
    return paired_speedup(a)[0] / paired_speedup(b)[0], lo, hi

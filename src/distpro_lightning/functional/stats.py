"""Statistics of paired comparisons: Student-t quantiles, paired t-intervals and tests, the
crossed (searches x seeds) interval and its two-table form, Holm's step-down adjustment, and a two-way cluster
bootstrap (searches x seeds).

Pure Python (no SciPy at run time): the t distribution through the regularised incomplete
beta function (Lentz's continued fraction) and its quantile by bisection, exact to about
1e-10; tests check every function against SciPy and an independent computation."""

from __future__ import annotations

import dataclasses
import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
        + a * math.log(x) + b * math.log1p(-x)
    )  # fmt: skip
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """``P(T <= t)`` for Student's t with ``df`` degrees of freedom."""
    near = t * t / (df + t * t)
    if near < 0.5:  # near the centre: P(|T| <= |t|) directly, no cancellation
        half = 0.5 * betainc(0.5, df / 2.0, near)
        return 0.5 + half if t > 0 else 0.5 - half
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p``-quantile of Student's t with ``df`` degrees of freedom (bisection)."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    lo, hi = -1.0, 1.0
    while t_cdf(lo, df) > p:
        lo *= 2.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class PairedResult:
    """A paired comparison: mean difference, its interval at ``level``, the two-sided
    p-value of the paired t-test and the number of pairs."""

    mean: float
    low: float
    high: float
    p_value: float
    n: int
    level: float = 0.95


def paired_t(diffs: Sequence[float], level: float = 0.95) -> PairedResult:
    """Paired t-interval and test of ``diffs`` (one difference per pair). With fewer than
    two pairs the interval and p-value are NaN; with zero spread the p-value is 0 or 1."""
    n = len(diffs)
    if n == 0:
        raise ValueError("paired_t needs at least one difference")
    mean = statistics.fmean(diffs)
    if n < 2:
        return PairedResult(mean, math.nan, math.nan, math.nan, n, level)
    se = statistics.stdev(diffs) / math.sqrt(n)
    half = t_quantile(0.5 + level / 2.0, n - 1) * se
    if se == 0.0:
        return PairedResult(mean, mean, mean, 1.0 if mean == 0.0 else 0.0, n, level)
    p = 2.0 * (1.0 - t_cdf(abs(mean) / se, n - 1))
    return PairedResult(mean, mean - half, mean + half, p, n, level)


def crossed_t(diffs: Sequence[Sequence[float]], level: float = 0.95) -> PairedResult:
    """The interval and test of the mean of ``diffs[s][k]`` (search ``s`` x paired seed
    ``k``, every cell given) when both the searches and the seeds are draws: every search
    replayed on every seed shifts all seeds alike, so the spread over seeds alone misses
    the search's variance. The variance of the mean is estimated as
    ``var(search means) / S + var(seed means) / K`` (two-way random effects; this
    over-counts the interaction by ``sigma_e^2 / (S K)``, so it errs wide), with
    Satterthwaite's degrees of freedom. With one search it is `paired_t` over the seeds;
    with one seed, over the searches. ``n`` is the number of cells."""
    n_s, n_k = len(diffs), len(diffs[0]) if diffs else 0
    if n_s == 0 or n_k == 0 or any(len(row) != n_k for row in diffs):
        raise ValueError("crossed_t needs a full searches x seeds table")
    if n_s == 1 or n_k == 1:
        flat = [x for row in diffs for x in row]
        return dataclasses.replace(paired_t(flat, level), n=len(flat))
    mean = statistics.fmean(x for row in diffs for x in row)
    a = statistics.variance([statistics.fmean(row) for row in diffs]) / n_s
    b = statistics.variance([statistics.fmean(col) for col in zip(*diffs)]) / n_k
    se = math.sqrt(a + b)
    if se == 0.0:
        return PairedResult(mean, mean, mean, 1.0 if mean == 0.0 else 0.0, n_s * n_k, level)
    df = (a + b) ** 2 / (a * a / (n_s - 1) + b * b / (n_k - 1))
    half = t_quantile(0.5 + level / 2.0, df) * se
    p = 2.0 * (1.0 - t_cdf(abs(mean) / se, df))
    return PairedResult(mean, mean - half, mean + half, p, n_s * n_k, level)


def two_table_t(
    a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], level: float = 0.95
) -> PairedResult:
    """The interval and test of ``mean(a) - mean(b)`` for two methods on the same paired
    seeds, each a table of its own searches x the seeds (one row: a method without
    searches), whose searches are independent draws (not shared). The variance of the
    difference is ``var(a's search means) / S_a + var(b's search means) / S_b +
    var(per-seed differences of the pooled means) / K`` (a term is left out where its
    table has one row), with Satterthwaite's degrees of freedom; like `crossed_t` it errs
    wide. Two one-row tables give `paired_t` over the seeds; ``b`` of one row gives
    `crossed_t` of ``a - b``."""
    n_k = len(a[0]) if a and b else 0
    if n_k < 2 or any(len(row) != n_k for row in (*a, *b)):
        raise ValueError("two_table_t needs two full tables on the same two or more seeds")
    mean = statistics.fmean(x for row in a for x in row) - statistics.fmean(
        x for row in b for x in row
    )
    per_seed = [statistics.fmean(ca) - statistics.fmean(cb) for ca, cb in zip(zip(*a), zip(*b))]
    terms = [(statistics.variance(per_seed) / n_k, n_k - 1)]
    for table in (a, b):
        if len(table) > 1:
            means = [statistics.fmean(row) for row in table]
            terms.append((statistics.variance(means) / len(table), len(table) - 1))
    var = sum(t for t, _ in terms)
    cells = (len(a) + len(b)) * n_k
    if var == 0.0:
        return PairedResult(mean, mean, mean, 1.0 if mean == 0.0 else 0.0, cells, level)
    df = var**2 / sum(t * t / d for t, d in terms if t > 0)
    se = math.sqrt(var)
    half = t_quantile(0.5 + level / 2.0, df) * se
    p = 2.0 * (1.0 - t_cdf(abs(mean) / se, df))
    return PairedResult(mean, mean - half, mean + half, p, cells, level)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def holm_levels(p_values: Sequence[float], alpha: float = 0.05) -> list[float]:
    """The confidence level of each hypothesis's interval under Holm's step-down procedure:
    the ``i``-th smallest p-value is tested at ``alpha / (m - i)`` (i from 0); from the first
    hypothesis Holm does not reject on, the procedure stops and every later one keeps that
    level. Intervals at these levels agree with Holm's decisions."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    levels = [0.0] * m
    stopped: float | None = None
    for rank, i in enumerate(order):
        a = alpha / (m - rank) if stopped is None else stopped
        if stopped is None and not p_values[i] <= a:
            stopped = a
        levels[i] = 1.0 - a
    return levels


def cluster_bootstrap(
    diffs: Sequence[Sequence[float]], level: float = 0.95, draws: int = 10_000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean and percentile interval of ``diffs[s][k]`` (search ``s``, seed ``k``) under a
    two-way cluster bootstrap: searches and seeds are each resampled with replacement, so
    the interval counts the variance of the searches and of the seeds."""
    n_s, n_k = len(diffs), len(diffs[0])
    if n_s == 0 or n_k == 0 or any(len(row) != n_k for row in diffs):
        raise ValueError("cluster_bootstrap needs a full searches x seeds table")
    rng = random.Random(seed)
    means = []
    for _ in range(draws):
        rows = [rng.randrange(n_s) for _ in range(n_s)]
        cols = [rng.randrange(n_k) for _ in range(n_k)]
        means.append(statistics.fmean(diffs[r][c] for r in rows for c in cols))
    means.sort()
    lo = means[int(math.floor((1.0 - level) / 2.0 * draws))]
    hi = means[min(draws - 1, int(math.ceil((1.0 + level) / 2.0 * draws)) - 1)]
    return statistics.fmean(x for row in diffs for x in row), lo, hi

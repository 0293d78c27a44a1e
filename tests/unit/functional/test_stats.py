"""distpro_lightning.functional.stats against SciPy and independent computations."""

from __future__ import annotations

import itertools
import math
import random
import statistics

import pytest

from distpro_lightning.functional import stats
from distpro_lightning.functional.stats import crossed_t, paired_t

scipy_stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 14, 30, 120])
@pytest.mark.parametrize("p", [0.005, 0.025, 0.5, 0.8, 0.975, 0.99375])
def test_t_quantile_matches_scipy(p, df):
    assert stats.t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), abs=1e-8)


@pytest.mark.parametrize("df", [1, 4, 9])
@pytest.mark.parametrize("t", [-6.0, -1.3, 0.0, 0.4, 2.776, 9.0])
def test_t_cdf_matches_scipy(t, df):
    assert stats.t_cdf(t, df) == pytest.approx(scipy_stats.t.cdf(t, df), abs=1e-10)


def test_t_quantile_refuses_a_probability_outside_the_open_interval():
    with pytest.raises(ValueError, match="0 < p < 1"):
        stats.t_quantile(1.0, 4)


def test_paired_t_matches_scipy_ttest_and_the_interval_formula():
    diffs = [0.8, 1.9, -0.3, 1.1, 0.6]
    res = stats.paired_t(diffs)
    ref = scipy_stats.ttest_1samp(diffs, 0.0)
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-8)
    half = scipy_stats.t.ppf(0.975, 4) * statistics.stdev(diffs) / math.sqrt(5)
    assert (res.low, res.high) == pytest.approx((res.mean - half, res.mean + half), rel=1e-9)
    wider = stats.paired_t(diffs, level=0.99)
    assert wider.low < res.low and wider.high > res.high
    assert math.isnan(stats.paired_t([1.0]).low)


def test_holm_matches_the_step_down_definition():
    p = [0.01, 0.04, 0.03, 0.005]
    # by hand: sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 with a running max
    assert stats.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # statsmodels-free cross-check by brute force: reject at 0.05 iff Holm's procedure does
    for pv in itertools.product([0.001, 0.013, 0.02, 0.3], repeat=3):
        m, reject, order = len(pv), [False] * 3, sorted(range(3), key=lambda i: pv[i])
        for rank, i in enumerate(order):
            if pv[i] > 0.05 / (m - rank):
                break
            reject[i] = True
        assert [a <= 0.05 for a in stats.holm(pv)] == reject


def test_holm_levels_agree_with_holm_decisions():
    p = [0.001, 0.02, 0.2, 0.011]
    levels = stats.holm_levels(p)
    # sorted: 0.001 at 0.05/4, 0.011 at 0.05/3, 0.02 at 0.05/2 (rejected: 0.02 <= 0.025),
    # 0.2 at 0.05/1 (not rejected; last)
    assert levels == pytest.approx([1 - 0.05 / 4, 1 - 0.05 / 2, 1 - 0.05, 1 - 0.05 / 3])
    stopped = stats.holm_levels([0.001, 0.04, 0.045])  # 0.04 > 0.05/2: stops there
    assert stopped == pytest.approx([1 - 0.05 / 3, 1 - 0.05 / 2, 1 - 0.05 / 2])


def test_cluster_bootstrap_counts_the_spread_of_searches():
    seeds_only = [[1.0, 2.0, 3.0, 2.0, 1.0]] * 3  # three identical searches
    spread = [[x + d for x in seeds_only[0]] for d in (-2.0, 0.0, 2.0)]
    m0, lo0, hi0 = stats.cluster_bootstrap(seeds_only, draws=4000)
    m1, lo1, hi1 = stats.cluster_bootstrap(spread, draws=4000)
    assert m0 == pytest.approx(1.8) and m1 == pytest.approx(1.8)
    assert hi1 - lo1 > hi0 - lo0  # the search variance widens the interval
    # the percentile interval of the seed-only case lies inside the range of seed means
    assert 1.0 <= lo0 <= m0 <= hi0 <= 3.0
    with pytest.raises(ValueError, match="full searches x seeds"):
        stats.cluster_bootstrap([[1.0, 2.0], [1.0]])


def test_crossed_t_with_one_search_is_the_paired_t_over_the_seeds():
    diffs = [0.4, 1.1, -0.2, 0.9, 0.5]
    one = crossed_t([diffs])
    plain = paired_t(diffs)
    assert (one.mean, one.low, one.high, one.p_value) == (
        plain.mean,
        plain.low,
        plain.high,
        plain.p_value,
    )


def test_crossed_t_matches_the_two_way_mean_squares_and_satterthwaite():
    diffs = [[0.9, 1.4, 0.2, 1.1, 0.8], [0.1, 0.6, -0.4, 0.2, 0.3], [1.5, 1.9, 0.9, 1.6, 1.0]]
    n_s, n_k = len(diffs), len(diffs[0])
    grand = sum(map(sum, diffs)) / (n_s * n_k)
    rows = [sum(r) / n_k for r in diffs]
    cols = [sum(diffs[s][k] for s in range(n_s)) / n_s for k in range(n_k)]
    ms_s = n_k * sum((r - grand) ** 2 for r in rows) / (n_s - 1)  # ANOVA mean squares
    ms_k = n_s * sum((c - grand) ** 2 for c in cols) / (n_k - 1)
    var = (ms_s + ms_k) / (n_s * n_k)
    df = (ms_s + ms_k) ** 2 / (ms_s**2 / (n_s - 1) + ms_k**2 / (n_k - 1))
    half = scipy_stats.t.ppf(0.975, df) * var**0.5
    got = crossed_t(diffs)
    assert got.mean == pytest.approx(grand) and got.n == 15
    assert (got.low, got.high) == pytest.approx((grand - half, grand + half), rel=1e-8)
    assert got.p_value == pytest.approx(2 * scipy_stats.t.sf(abs(grand) / var**0.5, df), rel=1e-6)


def test_crossed_t_covers_when_searches_vary_and_the_seeds_alone_do_not():
    # 3 searches, each replayed on the same 5 seeds; no true difference. The search's
    # effect shifts every seed alike: an interval over the per-seed means misses it.
    rng = random.Random(7)
    covered = naive = 0
    draws = 400
    for _ in range(draws):
        search = [rng.gauss(0, 0.6) for _ in range(3)]
        seed = [rng.gauss(0, 0.3) for _ in range(5)]
        table = [[a + b + rng.gauss(0, 0.2) for b in seed] for a in search]
        got = crossed_t(table)
        covered += got.low <= 0.0 <= got.high
        pooled = paired_t([sum(col) / 3 for col in zip(*table)])
        naive += pooled.low <= 0.0 <= pooled.high
    assert covered / draws >= 0.93 and naive / draws <= 0.8


def test_two_table_t_matches_its_variance_terms_by_hand_and_reduces_to_the_others():
    a = [[85.1, 84.2, 86.0, 84.9], [84.0, 83.6, 85.1, 84.2], [85.9, 84.8, 86.3, 85.5]]
    b = [[83.0, 82.9, 84.1, 83.3], [84.1, 83.0, 84.9, 83.9]]
    k = 4
    seed_diff = [sum(ca) / 3 - sum(cb) / 2 for ca, cb in zip(zip(*a), zip(*b))]
    terms = [
        (statistics.variance(seed_diff) / k, k - 1),
        (statistics.variance([sum(r) / k for r in a]) / 3, 2),
        (statistics.variance([sum(r) / k for r in b]) / 2, 1),
    ]
    var = sum(t for t, _ in terms)
    df = var**2 / sum(t * t / d for t, d in terms)
    mean = sum(map(sum, a)) / 12 - sum(map(sum, b)) / 8
    got = stats.two_table_t(a, b)
    half = scipy_stats.t.ppf(0.975, df) * math.sqrt(var)
    assert got.mean == pytest.approx(mean)
    assert (got.low, got.high) == pytest.approx((mean - half, mean + half), rel=1e-8)
    # one row each: the paired t over the seeds; b of one row: crossed_t of a - b
    one = stats.two_table_t([a[0]], [b[0]])
    assert one.p_value == pytest.approx(paired_t([x - y for x, y in zip(a[0], b[0])]).p_value)
    crossed = crossed_t([[x - y for x, y in zip(row, b[0])] for row in a])
    assert stats.two_table_t(a, [b[0]]).high == pytest.approx(crossed.high)


def test_two_table_t_covers_when_both_methods_have_searches_of_their_own():
    # no true difference; each method's own searches shift every seed alike
    rng = random.Random(11)
    covered = naive = 0
    draws = 300
    for _ in range(draws):
        seed = [rng.gauss(0, 0.3) for _ in range(5)]
        a = [
            [s + b + rng.gauss(0, 0.2) for b in seed] for s in (rng.gauss(0, 0.6) for _ in range(2))
        ]
        b = [
            [s + b + rng.gauss(0, 0.2) for b in seed] for s in (rng.gauss(0, 0.6) for _ in range(2))
        ]
        got = stats.two_table_t(a, b)
        covered += got.low <= 0.0 <= got.high
        pooled = paired_t([sum(x) / 2 - sum(y) / 2 for x, y in zip(zip(*a), zip(*b))])
        naive += pooled.low <= 0.0 <= pooled.high
    assert covered / draws >= 0.93 and naive / draws <= 0.8

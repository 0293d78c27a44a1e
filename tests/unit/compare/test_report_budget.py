"""The report's statistics against an independent computation (SciPy's paired t-test and
t quantiles, Holm by hand), the recommended method chosen on validation, the pairing
check, the fixed combination's shares, and the cut to a wall-time budget."""

from __future__ import annotations

import math
import statistics

import pytest

from distpro_lightning.compare.budget import estimate, fit_budget, runs_of
from distpro_lightning.compare.methods import fixed_shares
from distpro_lightning.compare.plan import params_key
from distpro_lightning.compare.report import differences, recommended, report_text
from distpro_lightning.compare.runner import PairingError, check_pairing
from distpro_lightning.compare.settings import CompareSettings

scipy_stats = pytest.importorskip("scipy.stats")


def runs_of_tops(tops, vals=None):
    vals = vals or tops
    return {s: {"top1": t, "val_top1": v, "params": {}, "wall_s": 1.0}
            for s, (t, v) in enumerate(zip(tops, vals))}  # fmt: skip


def test_differences_match_scipys_paired_test_and_holm_by_hand():
    best = [0.80, 0.82, 0.79, 0.85, 0.81]
    others = {
        "student": [0.70, 0.74, 0.72, 0.71, 0.73],
        "hinton_kd": [0.79, 0.80, 0.80, 0.83, 0.80],
    }
    runs = {"distpro": runs_of_tops(best)} | {m: runs_of_tops(v) for m, v in others.items()}
    got = differences(runs, "distpro")
    p_values = {}
    for method, tops in others.items():
        diffs = [100 * (a - b) for a, b in zip(best, tops)]
        plain, _, _ = got[method]
        test = scipy_stats.ttest_rel([100 * b for b in best], [100 * t for t in tops])
        half = scipy_stats.t.ppf(0.975, len(diffs) - 1) * scipy_stats.sem(diffs)
        mean = sum(diffs) / len(diffs)
        assert plain.mean == pytest.approx(mean)
        assert (plain.low, plain.high) == pytest.approx((mean - half, mean + half), rel=1e-7)
        assert plain.p_value == pytest.approx(test.pvalue, rel=1e-6)
        p_values[method] = test.pvalue
    small, large = sorted(p_values, key=p_values.get)
    assert got[small][2] == pytest.approx(min(1.0, 2 * p_values[small]), rel=1e-6)
    assert got[large][2] == pytest.approx(max(2 * p_values[small], p_values[large]), rel=1e-6)
    # the Holm-level interval of the smallest p-value is at 1 - 0.05 / 2
    level = got[small][1]
    diffs = [100 * (a - b) for a, b in zip(best, others[small])]
    half = scipy_stats.t.ppf(1 - 0.025 / 2, 4) * scipy_stats.sem(diffs)
    assert level.level == pytest.approx(0.975) and level.high - level.low == pytest.approx(2 * half)


def test_the_recommended_method_is_chosen_on_validation_not_test():
    s = CompareSettings(
        methods=["student", "distpro", "distpro_cheap"], seeds=[0, 1], grid_seeds=[0]
    )
    runs = {
        "distpro": runs_of_tops([0.9, 0.9], vals=[0.6, 0.6]),  # best on test
        "distpro_cheap": runs_of_tops([0.7, 0.7], vals=[0.8, 0.8]),  # best on validation
        "student": runs_of_tops([0.5, 0.5]),
    }
    assert recommended(s, runs) == "distpro_cheap"


def test_the_report_table_holds_every_method_with_its_interval(tmp_path):
    s = CompareSettings(methods=["student", "distpro"], seeds=[0, 1, 2], grid_seeds=[0])
    records = []
    for method, tops in (("student", [0.70, 0.72, 0.71]), ("distpro", [0.75, 0.78, 0.76])):
        for seed, top in enumerate(tops):
            records.append({"kind": "run", "key": f"run:{method}:{seed}:default", "method": method,
                            "seed": seed, "params": {}, "top1": top, "val_top1": top,
                            "wall_s": 2.0, "pairing": {}})  # fmt: skip
    text = report_text({"records": records, "history": []}, s)
    assert "| student alone (CE) | – | 3 | 71.00 ± 1.00 |" in text
    assert "| +5.33 [" in text and "DistPro method compared: **DistPro, full search" in text
    assert "Verdict: DistPro, full search (the frozen recipe) has the best mean validation" in text
    # the same runs with the student best on validation: the report says to use it
    for r in records:
        if r["method"] == "student":
            r["val_top1"] = 0.9
    text = report_text({"records": records, "history": []}, s)
    assert "Verdict: on validation **student alone (CE)** (90.00 %) beats the DistPro" in text
    assert "DistPro is not recommended over it." in text
    # under way (the searches of search seeds 2100 and 3100 are planned, not done)
    assert "**In progress:**" in text and "replays one search" in text


def test_a_run_that_is_not_paired_with_its_seed_is_refused():
    first = {"kind": "run", "key": "run:student:0:default", "seed": 0,
             "pairing": {"init": "a", "order": "b"}}  # fmt: skip
    check_pairing([first], {**first, "key": "run:equal:0:w=1"})
    check_pairing(
        [first],
        {**first, "key": "run:equal:1:w=1", "seed": 1, "pairing": {"init": "c", "order": "d"}},
    )
    with pytest.raises(PairingError, match="differ in their init"):
        check_pairing(
            [first], {**first, "key": "run:equal:0:w=1", "pairing": {"init": "x", "order": "b"}}
        )


def test_fixed_shares_put_f_on_the_features_and_refuse_a_space_without_kd_pathways():
    names = [
        "layer1->layer1:conv_bn",
        "layer2->layer2:conv_bn",
        "logits->logits:kd",
        "review->review:abf",
    ]
    shares = fixed_shares(names, 0.8)
    assert shares == pytest.approx([0.4, 0.4, 0.1, 0.1]) and math.isclose(sum(shares), 1.0)
    with pytest.raises(ValueError, match="response_kd and/or review_kd"):
        fixed_shares(names[:2], 0.5)


COST = {"step_s": {"student": 0.01, "hinton_kd": 0.02, "distpro": 0.03, "search": 0.1, "equal": 0.03},
        "run_steps": 100}  # fmt: skip


def test_the_estimate_counts_runs_by_the_plan_and_a_budget_cuts_seeds_and_says_so():
    s = CompareSettings(methods=["student", "hinton_kd", "distpro"], seeds=[0, 1, 2, 3], grid_seeds=[0, 1],
                        grids={"hinton_kd": [{"w": 1.0, "T": 4.0}, {"w": 2.0, "T": 4.0}]},
                        budget={"wall_s": 26.0}, search_seeds=[100])  # fmt: skip
    assert runs_of(s) == {"student": 4, "hinton_kd": 2 * 2 + 2, "distpro": 4}
    found = estimate(s, COST, [])
    # runs: 4 x 1 s + 6 x 2 s + 4 x 3 s; the full search: 100 steps x 0.1 s
    assert found.total_s == pytest.approx(4 + 12 + 12 + 10)
    cut, cuts = fit_budget(s, COST, [])
    assert cuts == ["seed 3", "seed 2"] and list(cut.seeds) == [0, 1]
    assert estimate(cut, COST, []).total_s == pytest.approx(2 + 8 + 6 + 10)


def test_several_searches_multiply_the_replays_and_the_searches_in_the_estimate():
    s = CompareSettings(methods=["student", "distpro"], seeds=[0, 1], grid_seeds=[0],
                        search_seeds=[100, 200, 300])  # fmt: skip
    assert runs_of(s) == {"student": 2, "distpro": 2 * 3}
    found = estimate(s, COST, [])
    assert found.searches == {"full": 3}
    # runs: 2 x 1 s + 6 x 3 s; three full searches of 100 steps x 0.1 s
    assert found.total_s == pytest.approx(2 + 18 + 30)
    done = [{"kind": "search", "key": "search:full:s200", "method": "full"}]
    assert estimate(s, COST, done).left_s == pytest.approx(2 + 18 + 20)


def test_a_replay_is_pooled_per_seed_and_its_interval_is_crossed_over_searches_and_seeds():
    from distpro_lightning.compare.plan import choice_runs

    s = CompareSettings(methods=["student", "distpro"], seeds=[0, 1, 2], grid_seeds=[0],
                        search_seeds=[100, 200])  # fmt: skip
    tops = {(0, 100): 0.80, (0, 200): 0.84, (1, 100): 0.78, (1, 200): 0.79, (2, 100): 0.83,
            (2, 200): 0.86}  # fmt: skip
    student = [0.75, 0.77, 0.76]
    records = [
        {"kind": "run", "method": "distpro", "seed": seed, "params": {}, "search_seed": x,
         "key": f"run:distpro:{seed}:default:s{x}", "top1": t, "val_top1": t, "wall_s": 2.0}
        for (seed, x), t in tops.items()
    ] + [
        {"kind": "run", "method": "student", "seed": seed, "params": {}, "top1": t,
         "key": f"run:student:{seed}:default", "val_top1": t, "wall_s": 1.0}
        for seed, t in enumerate(student)
    ]  # fmt: skip
    runs = {m: choice_runs(s, records, m) for m in s.methods}
    means = [(tops[(k, 100)] + tops[(k, 200)]) / 2 for k in range(3)]
    assert [runs["distpro"][k]["top1"] for k in range(3)] == pytest.approx(means)
    assert {r["searches"] for r in runs["distpro"].values()} == {2}
    plain, _, _ = differences(runs, "distpro")["student"]
    # the crossed interval: rows = searches, columns = seeds (by hand: the variance of the
    # search means over 2 plus that of the seed means over 3, Satterthwaite's df)
    table = [[100 * (tops[(k, x)] - student[k]) for k in range(3)] for x in (100, 200)]
    rows = [sum(r) / 3 for r in table]
    cols = [sum(c) / 2 for c in zip(*table)]
    a, b = statistics.variance(rows) / 2, statistics.variance(cols) / 3
    df = (a + b) ** 2 / (a * a / 1 + b * b / 2)
    mean = sum(rows) / 2
    assert plain.mean == pytest.approx(100 * (sum(means) - sum(student)) / 3) == pytest.approx(mean)
    p_value = 2 * scipy_stats.t.sf(abs(mean) / math.sqrt(a + b), df)
    assert plain.p_value == pytest.approx(p_value, rel=1e-6)
    text = report_text({"records": records, "history": []}, s)
    assert "| 3 × 2 searches |" in text
    # a third search on one seed only: the table keeps the complete 2 x 3 block, says so
    extra = {**records[0], "search_seed": 300, "key": "run:distpro:0:default:s300", "top1": 0.1}
    text = report_text({"records": [*records, extra], "history": []}, s)
    assert "| 3 × 2 searches, of 3 so far |" in text


def test_a_grid_cut_drops_widening_then_grid_seeds_and_an_impossible_budget_is_refused():
    s = CompareSettings(methods=["hinton_kd"], seeds=[0, 1], grid_seeds=[0, 1],
                        grids={"hinton_kd": [{"w": 1.0, "T": 4.0}, {"w": 2.0, "T": 4.0}]},
                        budget={"wall_s": 7.0, "cut": "grids"})  # fmt: skip
    cut, cuts = fit_budget(s, COST, [])
    assert cuts[0] == "grid widening" and cuts[1].startswith("grid seeds [1]")
    assert cut.widen_rounds == 0 and list(cut.grid_seeds) == [0]
    tight = CompareSettings(**{**s.as_dict(), "budget": {"wall_s": 1.0, "cut": "grids"}})
    with pytest.raises(ValueError, match="over the budget of"):
        fit_budget(tight, COST, [])


def _kd_run(seed, w, val, chosen=False):
    params = {"w": w, "T": 4.0}
    key = f"run:hinton_kd:{seed}:{'chosen' if chosen else params_key(params)}"
    return {"kind": "run", "method": "hinton_kd", "seed": seed, "params": params, "key": key,
            "top1": val, "val_top1": val, "wall_s": 1.0}  # fmt: skip


def test_a_grid_in_progress_is_reported_so_far_and_a_superseded_choice_never():
    from distpro_lightning.compare.plan import choice_runs

    s = CompareSettings(methods=["hinton_kd"], seeds=[0, 1, 2], grid_seeds=[0, 1], widen_rounds=0,
                        grids={"hinton_kd": [{"w": 1.0, "T": 4.0}, {"w": 2.0, "T": 4.0}]})  # fmt: skip
    partial = [_kd_run(0, 1.0, 0.7), _kd_run(1, 1.0, 0.72), _kd_run(0, 2.0, 0.9)]
    assert choice_runs(s, partial, "hinton_kd") == {}  # w=2 is not done on seed 1
    so_far = choice_runs(s, partial, "hinton_kd", provisional=True)
    assert sorted(so_far) == [0, 1] and {r["params"]["w"] for r in so_far.values()} == {1.0}
    text = report_text({"records": partial, "history": []}, s)
    assert "| w=1, T=4 (so far: grid not done) | 2 |" in text
    assert "1 done on the grid seeds, choice pending; so far w=1, T=4." in text
    # done: w=2 wins; a chosen run at w=1 (made before, e.g. by an earlier grid) is not it
    done = [*partial, _kd_run(1, 2.0, 0.88), _kd_run(2, 1.0, 0.5, chosen=True)]
    final = choice_runs(s, done, "hinton_kd")
    assert sorted(final) == [0, 1] and {r["params"]["w"] for r in final.values()} == {2.0}
    done.append(_kd_run(2, 2.0, 0.86, chosen=True))
    assert sorted(choice_runs(s, done, "hinton_kd")) == [0, 1, 2]


def test_a_results_files_notes_are_in_its_report():
    s = CompareSettings(methods=["student"], seeds=[0, 1], grid_seeds=[0])
    payload = {"records": [], "history": [], "notes": ["made elsewhere; costs are rough."]}
    assert "\nNote: made elsewhere; costs are rough.\n" in report_text(payload, s)

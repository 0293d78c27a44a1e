"""The plan of a comparison: the one rule that chooses a grid point reads validation only,
widening beyond an edge, chosen runs only once a grid is final, searches before their
replays, nothing done twice."""

from __future__ import annotations

import pytest

from distpro_lightning.compare.plan import (
    CHOSEN,
    Task,
    choice_runs,
    chosen_point,
    final_grid,
    params_key,
    plan,
    resolve,
)
from distpro_lightning.compare.settings import CompareSettings


def run(method, seed, point, val, test=0.5, chosen=False):
    key = f"run:{method}:{seed}:{CHOSEN if chosen else params_key(point)}"
    return {"kind": "run", "key": key, "method": method, "seed": seed, "params": point,
            "val_top1": val, "top1": test, "wall_s": 1.0}  # fmt: skip


def kd_settings(**kw):
    grid = [{"w": 1.0, "T": 4.0}, {"w": 2.0, "T": 4.0}, {"w": 4.0, "T": 4.0}]
    return CompareSettings(methods=["hinton_kd"], seeds=[0, 1, 2], grid_seeds=[0, 1],
                           grids={"hinton_kd": grid}, **kw)  # fmt: skip


def test_the_choice_reads_validation_and_never_the_test_set():
    s = kd_settings()
    # w=2 is best on validation, w=1 is best on test (by far): validation decides
    records = [
        run("hinton_kd", seed, {"w": w, "T": 4.0}, val, test)
        for seed in (0, 1)
        for w, val, test in ((1.0, 0.60, 0.99), (2.0, 0.80, 0.10), (4.0, 0.70, 0.50))
    ]
    assert chosen_point(s, records, "hinton_kd") == {"w": 2.0, "T": 4.0}
    tasks = plan(s, records)
    assert [t.key for t in tasks] == ["run:hinton_kd:2:chosen"]
    assert resolve(s, records, tasks[0]) == {"w": 2.0, "T": 4.0}
    records.append(run("hinton_kd", 2, {"w": 2.0, "T": 4.0}, 0.5, 0.2, chosen=True))
    reported = choice_runs(s, records, "hinton_kd")
    assert sorted(reported) == [0, 1, 2]
    assert {params_key(r["params"]) for r in reported.values()} == {"w=2,T=4"}


def test_a_choice_on_an_edge_widens_the_grid_and_the_chosen_runs_wait_for_it():
    s = kd_settings(widen_rounds=1)
    records = [
        run("hinton_kd", seed, {"w": w, "T": 4.0}, val)
        for seed in (0, 1)
        for w, val in ((1.0, 0.6), (2.0, 0.7), (4.0, 0.8))  # best on the upper edge of w
    ]
    grid, final = final_grid(s, records, "hinton_kd")
    assert grid[-1] == {"w": 8.0, "T": 4.0} and len(grid) == 4 and not final  # T not varied
    keys = [t.key for t in plan(s, records)]
    assert keys == ["run:hinton_kd:0:w=8,T=4", "run:hinton_kd:1:w=8,T=4"]  # no chosen run yet
    records += [run("hinton_kd", seed, {"w": 8.0, "T": 4.0}, 0.75) for seed in (0, 1)]
    assert final_grid(s, records, "hinton_kd")[1]
    assert chosen_point(s, records, "hinton_kd") == {"w": 4.0, "T": 4.0}
    assert [t.key for t in plan(s, records)] == ["run:hinton_kd:2:chosen"]


def test_widening_stops_after_its_rounds_and_a_tie_goes_to_the_earlier_point():
    s = kd_settings(widen_rounds=0)
    records = [
        run("hinton_kd", seed, {"w": w, "T": 4.0}, 0.7) for seed in (0, 1) for w in (1.0, 2.0, 4.0)
    ]
    grid, final = final_grid(s, records, "hinton_kd")
    assert len(grid) == 3 and final
    assert chosen_point(s, records, "hinton_kd") == {"w": 1.0, "T": 4.0}


def test_searches_come_first_and_their_replays_wait_for_them():
    s = CompareSettings(methods=["student", "alpha_T", "distpro", "distpro_cheap"], seeds=[0, 1],
                        grid_seeds=[0], search_seeds=[100, 200])  # fmt: skip
    tasks = plan(s, [])
    searches = ["search:cheap:s100", "search:cheap:s200", "search:full:s100", "search:full:s200"]
    assert [t.key for t in tasks[:4]] == searches
    by_key = {t.key: t for t in tasks}
    # every replay runs once per paired seed and search, after its own search
    assert len(by_key) == 4 + 2 + 3 * 2 * 2
    assert by_key["run:distpro:1:default:s200"].deps == ("search:full:s200",)
    assert by_key["run:distpro_cheap:0:default:s100"].deps == ("search:cheap:s100",)
    assert by_key["run:student:0:default"].deps == ()
    done = [{"kind": "search", "key": "search:full:s200"}]
    after = {t.key: t for t in plan(s, done)}
    assert "search:full:s200" not in after and after["run:distpro:1:default:s200"].deps == ()
    assert after["run:distpro:1:default:s100"].deps == ("search:full:s100",)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"methods": ["hinton_kd", "nope"]}, "unknown or repeated names"),
        ({"grid_seeds": [7]}, "must be a non-empty subset"),
        ({"seeds": [0]}, "at least two distinct seeds"),
        ({"search_seeds": [1, 1]}, "compare.search_seeds"),
        ({"grid_seeds": [0, 0]}, "without repeats"),
        (
            {"grids": {"hinton_kd": [{"w": 1.0, "T": 4.0}, {"T": 4.0, "w": 1.0000001}]}},
            "given more than once",
        ),
        ({"search_seeds": []}, "compare.search_seeds"),
        ({"methods": ["transfer"]}, "compare.transfer_process is not set"),
        ({"grids": {"hinton_kd": [{"w": 1.0}]}}, "does not name exactly the method's parameters"),
        ({"grids": {"reviewkd": [{"w": 1.0, "warm": 0.0}]}}, "not in compare.methods"),
        ({"recipes": {"fast": {}}}, "unknown recipe"),
        # a value out of its range: refused here, not when its run starts hours later
        ({"grids": {"hinton_kd": [{"w": -1.0, "T": 4.0}]}}, r"w = -1; w is a distillation"),
        ({"grids": {"hinton_kd": [{"w": 1.0, "T": 0.0}]}}, r"T = 0; T is a temperature"),
        ({"grids": {"hinton_kd": [{"w": float("nan"), "T": 4.0}]}}, r"w = nan"),
        (
            {"methods": ["reviewkd"], "grids": {"reviewkd": [{"w": 1.0, "warm": 1.0}]}},
            r"warm = 1; warm is a fraction of the epochs, in \[0, 1\)",
        ),
        (
            {"methods": ["fixed"], "grids": {"fixed": [{"w": 1.0, "f": 1.0}]}},
            r"f = 1; f is the feature pathways' share, in \(0, 1\)",
        ),
        ({"budget": {"cut": "all"}}, "cut must be seeds, grids or none"),
    ],
)
def test_bad_settings_are_refused_with_the_fix(kw, message):
    base = {"methods": ["hinton_kd"], "seeds": [0, 1], "grid_seeds": [0]}
    with pytest.raises(ValueError, match=message):
        CompareSettings(**{**base, **kw})


def test_a_task_key_names_its_method_seed_and_point():
    assert Task("run", "equal", 3, "w=1").key == "run:equal:3:w=1"
    assert Task("search", "full", search=100).key == "search:full:s100"
    assert Task("run", "distpro", 2, "default", search=7).key == "run:distpro:2:default:s7"


def test_grid_points_take_one_order_of_their_keys_whatever_order_they_are_given_in():
    # YAML dumps sort keys: {T, w} must be the same point as {w, T}
    s = CompareSettings(methods=["hinton_kd"], seeds=[0, 1], grid_seeds=[0],
                        grids={"hinton_kd": [{"T": 4.0, "w": 1.0}, {"w": 2.0, "T": 4.0}]})  # fmt: skip
    assert [params_key(p) for p in s.grids["hinton_kd"]] == ["w=1,T=4", "w=2,T=4"]


def test_the_complete_block_keeps_several_searches_before_more_cells():
    from distpro_lightning.compare.plan import complete_block

    # one search on 5 seeds (5 cells) or two on 2 seeds (4 cells): the two, whose spread
    # the interval needs
    assert complete_block({100: {0, 1, 2, 3, 4}, 2100: {0, 1}}) == ([100, 2100], [0, 1])
    assert complete_block({100: {0, 1, 2}, 2100: {0}}) == ([100], [0, 1, 2])
    assert complete_block({100: {0}, 2100: {1}}) == ([], [])
    # past 8 searches: the one on the fewest seeds goes
    many = {x: {0, 1, 2} for x in range(9)} | {9: {0}}
    assert complete_block(many) == (list(range(9)), [0, 1, 2])

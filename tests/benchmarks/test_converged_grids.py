"""The baselines' grids in the converged protocol (benchmarks/converged_grids.py): chosen on
validation, widened beyond an edge the choice sits on, stale chosen runs superseded; and the
protocol's runner (benchmarks/converged.py), which re-plans as runs finish so that a widening
runs to its end."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import converged_grids as grids


def _rec(method, params, seed, val, pair="p", key=None):
    key = key or f"run:{pair}:{method}:{seed}:{grids.params_key(params)}"
    return dict(kind="run", pair=pair, method=method, seed=seed, params=params, val_top1=val,
                top1=0.5, key=key)  # fmt: skip


def _grid_records(method, val, points, seeds=(0, 1)):
    return [_rec(method, p, s, val(p)) for p in points for s in seeds]


def test_an_interior_choice_keeps_the_grid():
    points = grids.GRIDS["reviewkd"]  # w 0.5, 1, 4
    records = _grid_records("reviewkd", lambda p: 0.9 if p["w"] == 1.0 else 0.8, points)
    grid, final = grids.final_grid("reviewkd", records, "p", [0, 1])
    assert grid == points and final
    assert grids.choose_point(records, "p", "reviewkd", [0, 1]) == "w=1"


def test_an_edge_choice_widens_by_a_factor_two_and_waits_for_the_new_point():
    points = grids.GRIDS["reviewkd"]
    records = _grid_records("reviewkd", lambda p: p["w"] / 10, points)  # best: the largest w
    grid, final = grids.final_grid("reviewkd", records, "p", [0, 1])
    assert [p["w"] for p in grid] == [0.5, 1.0, 4.0, 8.0] and not final
    with pytest.raises(RuntimeError, match="no complete grid"):
        grids.choose_point(records, "p", "reviewkd", [0, 1])
    # the smallest value on the edge: halved
    low = _grid_records("reviewkd", lambda p: 1 / p["w"], points)
    assert [p["w"] for p in grids.final_grid("reviewkd", low, "p", [0, 1])[0]] == [
        0.5, 1.0, 4.0, 0.25,
    ]  # fmt: skip


def test_widening_stops_after_its_rounds_and_says_the_choice_is_still_on_the_edge():
    def val(p):
        return p["w"] / 100  # always the largest

    records = _grid_records("reviewkd", val, grids.GRIDS["reviewkd"] + [{"w": 8.0}, {"w": 16.0}])
    grid, final = grids.final_grid("reviewkd", records, "p", [0, 1])
    assert [p["w"] for p in grid] == [0.5, 1.0, 4.0, 8.0, 16.0] and final
    assert grids.WIDEN_ROUNDS == 2
    best = grids.best_point(grid, grids.grid_scores(records, "p", "reviewkd", [0, 1]), [0, 1])
    assert best == {"w": 16.0} and grids.edges(grid, best) == {"w": 32.0}
    from benchmarks import converged_report as report

    [line] = [x for x in report.grid_lines(records, "p") if x.startswith("- ReviewKD")]
    assert line == (
        "- ReviewKD: 5 points (w 0.5–16, widened from 3); chosen w=16, still on the edge of w."
    )


def test_two_parameters_on_edges_add_both_steps_and_the_corner():
    points = grids.GRIDS["hinton_kd"]  # w 0.5, 1, 2 x T 2, 4

    def val(p):
        return p["w"] + p["T"]  # best: w 2, T 4 (both largest)

    records = _grid_records("hinton_kd", val, points)
    grid, final = grids.final_grid("hinton_kd", records, "p", [0, 1])
    added = [p for p in grid if p not in points]
    assert added == [{"w": 2.0, "T": 8.0}, {"w": 4.0, "T": 4.0}, {"w": 4.0, "T": 8.0}]
    assert not final
    # one parameter on an edge, the other inside: one point
    records = _grid_records("hinton_kd", lambda p: -abs(p["w"] - 1) + p["T"], points)
    grid, _ = grids.final_grid("hinton_kd", records, "p", [0, 1])
    assert [p for p in grid if p not in points] == [{"w": 1.0, "T": 8.0}]


def test_the_choice_is_the_best_mean_over_the_grid_seeds():
    # w=4 best on seed 0, w=1 best on average
    vals = {
        (0.5, 0): 0.1,
        (0.5, 1): 0.1,
        (1.0, 0): 0.8,
        (1.0, 1): 0.8,
        (4.0, 0): 0.9,
        (4.0, 1): 0.5,
    }
    records = [_rec("reviewkd", {"w": w}, s, v) for (w, s), v in vals.items()]
    assert grids.choose_point(records, "p", "reviewkd", [0, 1]) == "w=1"
    scores = grids.grid_scores(records, "p", "reviewkd", [0, 1])
    assert grids.best_point(grids.GRIDS["reviewkd"], scores, [0, 1]) == {"w": 1.0}
    # a duplicated record is one seed, not two: w=4 is not done on seed 1 without it
    partial = [r for r in records if not (r["params"]["w"] == 4.0 and r["seed"] == 1)]
    partial.append(dict(partial[-1]))
    scores = grids.grid_scores(partial, "p", "reviewkd", [0, 1])
    assert grids.best_point(grids.GRIDS["reviewkd"], scores, [0, 1]) is None


@pytest.mark.parametrize("reverse", [False, True])
def test_a_tie_goes_to_the_earlier_grid_point_in_the_planner_and_the_report(reverse):
    from benchmarks import converged_report as report

    def val(p):
        return 0.7 if p["w"] in (1.0, 4.0) else 0.1

    records = _grid_records("reviewkd", val, grids.GRIDS["reviewkd"])
    records = records[::-1] if reverse else records
    assert grids.choose_point(records, "p", "reviewkd", [0, 1]) == "w=1"
    chosen = report.chosen_runs(records, "p")["reviewkd"]
    assert {r["params"]["w"] for r in chosen.values()} == {1.0}


def test_the_report_says_which_grids_wait_for_runs():
    from benchmarks import converged_report as report

    records = _grid_records("reviewkd", lambda p: p["w"], grids.GRIDS["reviewkd"])
    records += _grid_records("equal", lambda p: p["w"], grids.GRIDS["equal"][:1])
    lines = report.grid_lines(records, "p")
    assert lines[0].startswith("Grids (p): chosen on the mean validation top-1 of seeds 0, 1")
    assert "at most 2 times" in lines[0]
    assert (
        "- ReviewKD: 4 points (w 0.5–8, widened from 3); chosen so far w=4, runs of 1 "
        "point(s) pending." in lines
    )
    assert (
        "- equally weighted: 3 points (w 0.5–2); chosen so far w=0.5, runs of 2 "
        "point(s) pending." in lines
    )


def test_chosen_runs_of_a_point_no_longer_chosen_are_stale():
    points = grids.GRIDS["reviewkd"] + [{"w": 8.0}]

    def val(p):
        return {0.5: 0.1, 1.0: 0.2, 4.0: 0.5, 8.0: 0.7, 16.0: 0.6}[p["w"]]

    records = _grid_records("reviewkd", val, points)
    old = _rec("reviewkd", {"w": 4.0}, 2, 0.5, key="run:p:reviewkd:2:chosen")
    assert grids.stale_chosen([*records, old], [0, 1]) == []  # grid not final yet (w 16)
    records += _grid_records("reviewkd", val, [{"w": 16.0}])
    assert grids.stale_chosen([*records, old], [0, 1]) == [old]
    new = _rec("reviewkd", {"w": 8.0}, 2, 0.7, key="run:p:reviewkd:2:chosen")
    assert grids.stale_chosen([*records, new], [0, 1]) == []


def _fake_execute(args, task):
    """A run's record without training: ReviewKD's validation top-1 peaks at w = 8."""
    params = grids.parse_params(task.resolved or task.params) if task.kind == "run" else {}
    val = 0.8 - 0.01 * (math.log2(params["w"]) - 3) ** 2 if "w" in params else 0.7
    record = dict(method=task.method, params=params, top1=val - 0.05, val_top1=val, steps=1,
                  curve={"train_loss": [1.0], "val_top1": [[0, val]]})  # fmt: skip
    if task.kind == "teacher":
        record = dict(teacher="resnet20", epochs=1, top1=0.9)
    elif task.kind == "search":
        record["method"] = f"search_{task.method}"
    record.update(kind=task.kind, key=task.key, pair=task.pair, seed=task.seed, wall_s=1.0,
                  device="cpu")  # fmt: skip
    return record


def test_a_resumed_file_widens_a_grid_and_reruns_a_superseded_choice(tmp_path, monkeypatch):
    """A results file whose ReviewKD grid chose its edge (w = 4) before grids widened: the
    next command widens the grid as its runs finish (w = 8, then 16), supersedes the chosen
    run at w = 4 and runs the point now chosen (w = 8) on that seed."""
    from benchmarks import converged

    monkeypatch.setattr(converged, "execute", _fake_execute)
    argv = [
        "--name", "g", "--out", str(tmp_path), "--teacher-dir", "", "--pairs",
        "resnet20-resnet8", "--methods", "student", "reviewkd", "--searches", "main",
        "--seeds", "0", "1", "--grid-seeds", "0", "--jobs", "1",
    ]  # fmt: skip
    monkeypatch.setattr(grids, "WIDEN_ROUNDS", 0)  # the file as it was before widening
    converged.main(argv)
    before = json.loads((tmp_path / "g.json").read_text())
    chosen = [r for r in before["records"] if r["key"].endswith(":chosen")]
    assert [(r["seed"], r["params"]) for r in chosen] == [(1, {"w": 4.0})]

    monkeypatch.setattr(grids, "WIDEN_ROUNDS", 2)
    converged.main(argv)
    after = json.loads((tmp_path / "g.json").read_text())
    review = [r for r in after["records"] if r.get("method") == "reviewkd"]
    assert sorted(r["params"]["w"] for r in review if r["seed"] == 0) == [0.5, 1, 4, 8, 16]
    assert [(r["seed"], r["params"]) for r in review if r["seed"] == 1] == [(1, {"w": 8.0})]
    assert [r["params"] for r in after["superseded"]] == [{"w": 4.0}]
    assert len({r["key"] for r in after["records"]}) == len(after["records"])
    report = (tmp_path / "g.md").read_text()
    assert "- ReviewKD: 5 points (w 0.5–16, widened from 3); chosen w=8, inside the grid." in report


def test_a_failed_widened_point_ends_the_command_and_a_missing_grid_seed_is_refused(
    tmp_path, monkeypatch
):
    """A widened point that fails (--keep-going) is recorded as a failure and tried once;
    the command ends without choosing. Seeds without their grid seeds are refused."""
    from benchmarks import converged

    def failing(args, task):
        if task.kind == "run" and task.params == "w=8":
            raise RuntimeError("w=8 broke")
        return _fake_execute(args, task)

    monkeypatch.setattr(converged, "execute", failing)
    argv = [
        "--name", "f", "--out", str(tmp_path), "--teacher-dir", "", "--pairs",
        "resnet20-resnet8", "--methods", "reviewkd", "--searches", "main",
        "--grid-seeds", "0", "--jobs", "1", "--keep-going",
    ]  # fmt: skip
    converged.main([*argv, "--seeds", "0", "1"])
    data = json.loads((tmp_path / "f.json").read_text())
    assert [f["key"] for f in data["failures"]] == ["run:resnet20-resnet8:reviewkd:0:w=8"]
    assert not any(r.get("seed") == 1 for r in data["records"])  # no choice without w=8
    assert "chosen so far w=4, runs of 1 point(s) pending." in (tmp_path / "f.md").read_text()
    with pytest.raises(SystemExit, match=r"not done on grid seed\(s\) \[0\].*add \[0\]"):
        converged.main([*argv, "--seeds", "1"])


def test_a_deadline_stops_the_command_between_tasks_and_a_later_command_resumes(
    tmp_path, monkeypatch, capsys
):
    """``--deadline``: no task starts after it; what finished is saved, and the same command
    without the deadline runs only what is left."""
    from benchmarks import converged

    ran: list[str] = []

    def counting(args, task):
        ran.append(task.key)
        return _fake_execute(args, task)

    monkeypatch.setattr(converged, "execute", counting)
    argv = [
        "--name", "d", "--out", str(tmp_path), "--teacher-dir", "", "--pairs",
        "resnet20-resnet8", "--methods", "student", "--searches", "main", "--seeds", "0", "1",
        "--grid-seeds", "0", "--jobs", "1",
    ]  # fmt: skip
    clock = iter([0.0, 0.0, 10.0, 10.0, 10.0])  # the start, the first task, then past it
    monkeypatch.setattr(converged.time, "perf_counter", lambda: next(clock, 10.0))
    converged.main([*argv, "--deadline", "5"])
    assert "[converged] stopped: --deadline 5 s passed before" in capsys.readouterr().out
    first = json.loads((tmp_path / "d.json").read_text())
    assert [r["key"] for r in first["records"]] == ran and len(ran) == 1
    converged.main(argv)
    done = json.loads((tmp_path / "d.json").read_text())
    assert len(done["records"]) == len(ran) > 1 and len(set(ran)) == len(ran)


def test_a_task_whose_dependency_failed_in_this_call_is_recorded_as_not_run(tmp_path):
    """`Run`: a failure is kept apart (``failures``, never a record) and a task depending on
    it returns a failure naming that dependency without being resolved or executed."""
    import argparse

    from benchmarks import converged

    args = argparse.Namespace(deadline=0, jobs=1, keep_going=True)
    payload = {"records": [], "history": []}
    run = converged.Run(args, payload, tmp_path / "r.json", tmp_path, 0.0, set())
    search = converged.Task("search", "resnet20-resnet8", method="main")
    run.on_done(search, {"failed": "RuntimeError: broke", "key": search.key})
    replay = converged.Task("run", "resnet20-resnet8", method="distpro", deps=(search.key,))
    skipped = run.run(replay)
    assert skipped == {"failed": f"not run: its dependency {search.key} failed", "key": replay.key}
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["records"] == [] and [f["key"] for f in saved["failures"]] == [search.key]

"""Issue 34's rows of the converged protocol (benchmarks/converged*.py, ``--rows issue34``):
the fixed combination of the recipe's space, ReviewKD's warm-up grid, the frozen recipe's
three independent searches, the half-epoch and transfer rows, and the planner's order."""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks import converged, converged_grids
from benchmarks import converged_methods as methods
from distpro_lightning.models import create

PAIR1, PAIR3 = "resnet20-resnet8", "wrn_40_2-shufflenet_v1"


def _args(*extra: str):
    return converged.parse_args(["--rows", "issue34", *extra])


def test_fixed_shares_split_the_total_between_features_kd_and_review():
    names = [f"layer{i}->layer{j}:conv_bn" for i in (1, 2, 3) for j in (1, 2, 3)]
    names += ["review->review:abf", "logits->logits:kd"]
    shares = methods.fixed_shares(names, 0.5)
    assert math.isclose(sum(shares), 1.0)
    assert shares[-2:] == [0.25, 0.25] and all(math.isclose(s, 0.5 / 9) for s in shares[:9])
    with pytest.raises(ValueError, match="response_kd / review_kd"):
        methods.fixed_shares(names[:9], 0.5)


def test_fixed_combination_holds_the_weights_at_the_grid_point_for_the_whole_fit():
    args = _args()
    teacher = create("resnet20", num_classes=10, in_channels=1)
    module, callbacks = methods.build_method(
        args, "fixed_review", PAIR1, teacher, {"w": 11.0, "f": 0.2}, None
    )
    assert len(module.pathway_names) == 11
    callbacks[0].on_fit_start(None, module)  # what Trainer.fit calls
    weights = module.alpha_weights().detach()
    # the total is w; the feature pathways carry f of it, KD and ReviewKD (1 - f) / 2 each
    assert math.isclose(float(weights.sum()), 11.0, rel_tol=1e-5)
    by_name = dict(zip(module.pathway_names, weights.tolist()))
    assert math.isclose(by_name["logits->logits:kd"], 11.0 * 0.4, rel_tol=1e-5)
    assert math.isclose(by_name["review->review:abf"], 11.0 * 0.4, rel_tol=1e-5)
    assert math.isclose(by_name["layer1->layer1:conv_bn"], 11.0 * 0.2 / 9, rel_tol=1e-5)
    assert all(module.active_pathways())  # nothing pruned at tau 0.5


def test_reviewkd_grid_runs_the_warm_up_it_names():
    args = _args()
    teacher = create("resnet20", num_classes=10, in_channels=1)
    for warm in (0.0, 2.5):
        module, _ = methods.build_method(
            args, "reviewkd", PAIR1, teacher, {"w": 1.0, "warm": warm}, None
        )
        assert module.warmup_epochs == warm
    grid = converged_grids.GRIDS_ISSUE34["reviewkd"]
    assert {p["warm"] for p in grid} == {0.0, 2.5}  # the paper's 20 of 240 epochs x 30


def test_widening_moves_only_the_total_weight_and_the_kd_weight():
    grid = converged_grids.GRIDS_ISSUE34["fixed_review"]
    best = {"w": 22.0, "f": 0.8}  # on the edge of both parameters
    assert converged_grids.edges(grid, best, converged_grids.WIDEN["fixed_review"]) == {"w": 44.0}
    review = converged_grids.GRIDS_ISSUE34["reviewkd"]
    assert converged_grids.edges(review, {"w": 4.0, "warm": 2.5}, ("w",)) == {"w": 8.0}


def test_transfer_map_takes_the_source_levels_by_relative_depth():
    names = [f"block{i}->stage{j}:conv_bn" for i in (1, 2, 3) for j in (1, 2, 3, 4)]
    names += ["review->review:abf", "logits->logits:kd"]
    mapping = methods.transfer_map(names)
    assert mapping["block1->stage1:conv_bn"] == "layer1->layer1:conv_bn"
    assert mapping["block2->stage2:conv_bn"] == "layer2->layer2:conv_bn"
    assert mapping["block3->stage3:conv_bn"] == "layer3->layer3:conv_bn"
    assert mapping["block3->stage4:conv_bn"] == "layer3->layer3:conv_bn"  # last -> last
    assert mapping["review->review:abf"] == "review->review:abf"


def test_the_three_searches_draw_disjoint_subsets():
    from benchmarks.converged_data import FashionTensors

    n = 3000
    data = FashionTensors(
        torch.zeros(n, 1, 2, 2), torch.zeros(n, dtype=torch.long), torch.zeros(1, 1, 2, 2),
        torch.zeros(1, dtype=torch.long), torch.arange(100), torch.arange(100, n),
    )  # fmt: skip
    exclude = list(range(10))
    draws = [set(data.disjoint_subset(100, exclude, k).tolist()) for k in range(3)]
    runs = set().union(*(data.subset(s, 100).tolist() for s in exclude))
    assert all(len(d) == 100 for d in draws)
    assert not (draws[0] & draws[1]) and not (draws[0] & draws[2]) and not (draws[1] & draws[2])
    assert not (set().union(*draws) & runs)
    # draw 0 is the shared search's subset of the issue-20 protocol, unchanged
    assert torch.equal(data.disjoint_subset(100, exclude), data.disjoint_subset(100, exclude, 0))
    seeds = {v: methods.SEARCH_SEED_OFFSET[v] for v in methods.RECIPE_SEARCHES}
    assert len(set(seeds.values())) == 3


def test_plan_orders_the_decisive_rows_first_and_transfers_from_pair_one(tmp_path):
    from pathlib import Path

    for name in ("teacher_resnet20.pt", "teacher_wrn_16_2.pt"):  # as when the run started
        (tmp_path / name).symlink_to(Path("benchmarks/results/teachers", name).resolve())
    args = _args("--seeds", "0", "--teacher-dir", str(tmp_path))
    tasks = converged.plan(args, [])
    keys = [t.key for t in sorted(tasks, key=lambda t: -t.priority)]
    # the first two pairs' teachers were committed; pair 3's teacher comes after their rows
    assert "teacher:wrn_16_2" not in keys and "teacher:resnet20" not in keys
    last_pair2 = max(i for i, k in enumerate(keys) if "wrn_16_2-mobilenet_v2" in k
                     and "half" not in k and "transfer" not in k
                     and "_mean:" not in k and "val4" not in k)  # fmt: skip
    assert keys.index("teacher:wrn_40_2") > last_pair2
    # half-epoch and transfer rows come after every pair's comparison, the levers last of all
    levers = [k for k in keys if "_mean:" in k or "val4" in k]
    tail = [k for k in keys if "half" in k or "transfer" in k]
    assert keys[-len(levers) :] == levers and keys[-len(levers) - len(tail) : -len(levers)] == tail
    transfer = [t for t in tasks if t.method == "transfer_review"]
    assert {t.pair for t in transfer} == {"wrn_16_2-mobilenet_v2", PAIR3}  # not its source
    assert all("search:resnet20-resnet8:-1:review" in t.deps for t in transfer)
    assert methods.run_epochs(args, "distpro_review_half") == 15
    assert methods.run_epochs(args, "distpro_review") == 30


def test_a_file_before_issue_34_resumes_with_its_own_grids(tmp_path):
    import json

    path = tmp_path / "old.json"
    settings = {k: getattr(converged.parse_args([]), k) for k in converged.SETTINGS}
    settings.pop("grids")  # made before the setting existed
    path.write_text(json.dumps({"settings": settings, "history": [], "records": []}))
    converged.load_payload(converged.parse_args([]), path)  # the issue-20 grids: accepted
    with pytest.raises(SystemExit, match="grids: 'issue20' there, 'issue34' now"):
        converged.load_payload(_args(), path)


def test_headline_pools_the_three_searches_and_adjusts_the_family():
    from benchmarks import converged_headline as headline
    from distpro_lightning.functional import stats

    def runs(points):
        return {s: {"top1": p / 100} for s, p in enumerate(points)}

    pair = {
        "distpro_review": runs([85, 84, 86, 85, 84]),
        "distpro_review_s2": runs([84, 84, 85, 85, 83]),
        "distpro_review_s3": runs([86, 85, 86, 84, 85]),
        "hinton_kd": runs([83, 83, 84, 84, 83]),
        "reviewkd": runs([84, 84, 85, 83, 84]),
        "fixed_review": runs([85, 84, 85, 85, 84]),
        "student": runs([79, 80, 79]),  # three seeds only: compared on those
    }
    lines = headline.headline_lines({"p": pair}, {})
    text = "\n".join(lines)
    # recipe per seed: mean of the three searches
    means = [85.0, 84.333333, 85.666667, 84.666667, 84.0]
    kd = [m - h for m, h in zip(means, [83, 83, 84, 84, 83])]
    ref = stats.paired_t(kd)
    row = next(line for line in lines if "| hinton_kd |" in line)
    assert f"{ref.mean:+.2f}" in row and f"[{ref.low:+.2f}, {ref.high:+.2f}]" in row
    p_values = [
        stats.paired_t([m - 100 * pair[r][s]["top1"] for s, m in enumerate(means)]).p_value
        for r in headline.FAMILY
    ]
    assert f"{stats.holm(p_values)[0]:.3f}" in row
    student = next(line for line in lines if "| student |" in line)
    assert "| 3 |" in student and student.endswith("| – | – |")  # not in Holm's family
    assert "3 comparisons so far" in text


def test_costs_price_each_row_from_the_measured_steps(tmp_path):
    import json

    from benchmarks import converged_headline as headline

    step = {"hinton_kd": 0.5, "reviewkd": 1.0, "replay": 1.5, "replay_pruned": 0.6}
    step["search_k1"] = 3.0
    evaluated = {
        "review": {"over_reviewkd": 3.6, "replay": "replay_pruned"},
        "cheap_review": {"over_reviewkd": 1.9},
    }
    costs = headline.run_costs({"step_s": step, "evaluated": evaluated})
    assert costs["hinton_kd"] == 0.5 and costs["fixed_review"] == 1.5
    assert costs["distpro_review_half"] == pytest.approx(3.0 + 0.3)
    assert costs["transfer_review"] == pytest.approx(0.6)
    path = tmp_path / headline.COST_FILES[PAIR1][0]
    path.parent.mkdir(parents=True)
    path.write_text(
        json.dumps({"pairs": {"recommended": {"step_s": step, "evaluated": evaluated}}})
    )
    lines = headline.cost_lines(PAIR1, {"fixed_review": 18}, {}, root=tmp_path)
    row = next(line for line in lines if line.startswith("| fixed_review |"))
    assert row == "| fixed_review | 1.50 | 18 | 27.00 | – |"  # 9 points x 2 seeds x 1.5
    assert "not measured" in headline.cost_lines(PAIR3, {}, {}, root=tmp_path)[0]


def test_a_process_of_a_search_with_no_record_is_set_aside_not_replayed(tmp_path, capsys):
    args = _args("--out", str(tmp_path), "--name", "run")
    folder = converged.out_dir(args)
    folder.mkdir(parents=True)
    done = converged.process_path(args, PAIR1, converged.SHARED, "review")
    half = converged.process_path(args, PAIR1, converged.SHARED, "review_s2")
    per_seed = converged.process_path(args, PAIR1, 3, "main")
    for path in (done, half, per_seed):
        path.write_text("{}")
    records = [{"kind": "search", "key": converged.Task("search", PAIR1, "review", -1).key}]
    moved = converged.set_aside_interrupted(args, records)
    assert sorted(p.name for p in moved) == sorted(
        f"{p.stem}.interrupted.json" for p in (half, per_seed)
    )
    assert done.is_file() and not half.exists() and all(p.is_file() for p in moved)
    assert "runs again" in capsys.readouterr().out
    assert converged.set_aside_interrupted(args, records) == []  # kept, never moved twice


def test_a_task_whose_dependency_failed_is_not_run():
    search = converged.Task("search", PAIR1, "review_s2", -1)
    replay = converged.Task("run", PAIR1, "distpro_review_s2", 0, "default", (search.key,))
    record = converged.failed_dependency(replay, {search.key})
    assert record == {"failed": f"not run: its dependency {search.key} failed", "key": replay.key}
    assert converged.failed_dependency(replay, set()) is None


def test_the_mean_lever_waits_for_all_three_searches_and_replays_their_average(
    tmp_path, monkeypatch
):
    from distpro_lightning.process import DistillationProcess

    args = _args("--seeds", "0", "--out", str(tmp_path), "--name", "run")
    [mean] = [
        t for t in converged.plan(args, []) if t.key.startswith(f"run:{PAIR1}:distpro_review_mean")
    ]
    assert {f"search:{PAIR1}:-1:{v}" for v in methods.RECIPE_SEARCHES} <= set(mean.deps)
    norm = {"name": "biased_softmax", "bias": 1.0, "scale": 11.0}
    names = [f"p{i}" for i in range(3)]
    converged.out_dir(args).mkdir(parents=True)
    sources = []
    for i, variant in enumerate(methods.RECIPE_SEARCHES):
        p = DistillationProcess(names, norm, logits=[[float(i), 0.0, -float(i)]] * 4)
        p.save(converged.process_path(args, PAIR1, converged.SHARED, variant))
        sources.append(p)
    seen = {}
    monkeypatch.setattr(converged.FashionTensors, "load", staticmethod(lambda *a: None))
    monkeypatch.setattr(
        converged, "build_run", lambda a, task, d, t, process: seen.setdefault("p", process) and {}
    )
    converged.execute(args, mean)
    want = sum(p.weights() for p in sources) / 3
    torch.testing.assert_close(seen["p"].weights(), want)
    assert len(seen["p"].provenance["averaged_from"]) == 3


def test_the_val4_lever_searches_with_four_held_out_batches_on_the_first_search_draw():
    assert methods.VAL_BATCHES["review_val4"] == 4
    assert methods.SPACE["review_val4"] == methods.REVIEW_SPACE
    # the first search's seed and subset: only the held-out batches per step differ
    assert methods.SEARCH_SEED_OFFSET["review_val4"] == methods.SEARCH_SEED_OFFSET["review"]
    assert methods.SEARCH_DRAW.get("review_val4", 0) == methods.SEARCH_DRAW.get("review", 0)
    assert methods.DERIVED["distpro_review_val4"] == "review_val4"
    args = _args("--seeds", "0")
    tasks = converged.plan(args, [])
    searches = [t for t in tasks if t.key.endswith(":review_val4")]
    assert sorted(t.pair for t in searches) == sorted(methods.PAIRS)  # one search per pair
    frozen = [t for t in tasks if t.method not in converged.LEVERS]
    assert max(t.priority for t in searches) < min(t.priority for t in frozen)


def test_lever_costs_pay_their_own_searches(tmp_path):
    import json

    from benchmarks import converged_headline as headline
    from benchmarks import recipe_cost

    found = recipe_cost.evidence_processes(PAIR1)
    assert "review_mean" in found  # pair 1's three searches are committed
    mean = found["review_mean"]
    step = {"search_k1": 3.0, "search_k1_val4": 4.0, "reviewkd": 1.0, "hinton_kd": 0.5}
    step |= {"replay_review_mean": 1.2, "replay_review_val4": 1.1}
    processes = {"review_mean": mean, "review_val4": found["review"]}  # a stand-in file
    rows = recipe_cost.evaluated_recipes(step, processes)
    assert rows["review_mean"]["searches"] == 3 and rows["review_mean"]["fraction"] == 1.0
    assert rows["review_mean"]["over_reviewkd"] == pytest.approx(3 * 3.0 + 1.2)
    assert rows["review_val4"]["over_reviewkd"] == pytest.approx(4.0 + 1.1)
    assert rows["review_mean"]["process"].startswith("average of 3 searches (")
    with pytest.raises(SystemExit, match="search_k1_val4 is timed only for the pairs"):
        recipe_cost.evaluated_recipes({"search_k1": 1.0}, {"review_val4": found["review"]})
    base = {"hinton_kd": 0.5, "reviewkd": 1.0, "replay": 1.5, "replay_pruned": 0.6}
    evaluated = {"review": {"over_reviewkd": 3.6, "replay": "replay_pruned"}}
    evaluated["cheap_review"] = {"over_reviewkd": 1.9}
    entry = {"step_s": {**base, "search_k1": 3.0}, "evaluated": evaluated}
    path = tmp_path / headline.COST_FILES[PAIR1][0]
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"pairs": {"recommended": entry}}))
    text = "\n".join(headline.cost_lines(PAIR1, {}, {}, root=tmp_path))
    assert "Not priced yet: distpro_review_mean; distpro_review_val4" in text
    lever_file = tmp_path / headline.ISSUE34_COST
    lever_file.write_text(json.dumps({"pairs": {PAIR1: {"evaluated": rows}}}))
    costs = headline.lever_costs(PAIR1, tmp_path)
    assert costs["distpro_review_mean"] == pytest.approx(10.2)
    assert costs["distpro_review_val4"] == pytest.approx(5.1)


def _measured() -> tuple[dict, dict]:
    """A made-up recipe_cost entry's step seconds and evaluated recipes."""
    step = {"hinton_kd": 0.5, "reviewkd": 1.0, "replay": 1.5, "replay_pruned": 0.6}
    step["search_k1"] = 3.0
    evaluated = {"review": {"over_reviewkd": 3.6, "replay": "replay_pruned"}}
    evaluated["cheap_review"] = {"over_reviewkd": 1.9}
    return step, evaluated


def test_pair_one_keeps_its_frozen_costs_and_takes_the_levers_from_the_issue_34_file(tmp_path):
    import json

    from benchmarks import converged_headline as headline

    step, evaluated = _measured()
    for path, key, review in (
        (headline.COST_FILES[PAIR1][0], "recommended", 3.6),
        (headline.ISSUE34_COST, PAIR1, 9.9),  # a later measurement with the levers
    ):
        file = tmp_path / path
        file.parent.mkdir(parents=True, exist_ok=True)
        lever = {"review_mean": {"over_reviewkd": 10.2}} if key == PAIR1 else {}
        entry = {"step_s": step, "evaluated": {**evaluated, "review": {**evaluated["review"],
                 "over_reviewkd": review}, **lever}}  # fmt: skip
        file.write_text(json.dumps({"pairs": {key: entry}}))
    costs = headline.pair_costs(PAIR1, tmp_path)
    assert costs["distpro_review"] == 3.6  # the frozen rows' own measurement
    assert costs["distpro_review_mean"] == 10.2 and "distpro_review_val4" not in costs
    text = "\n".join(headline.cost_lines(PAIR1, {}, {}, root=tmp_path))
    assert "| distpro_review_mean | 10.20 |" in text
    assert "Not priced yet: distpro_review_val4; distpro_review_fromfixed (" in text


def test_levers_are_compared_with_the_rivals_and_the_pooled_recipe_outside_the_headline():
    from benchmarks import converged_headline as headline

    def runs(points):
        return {s: {"top1": p / 100} for s, p in enumerate(points)}

    pair = {
        "distpro_review": runs([85, 84, 86]),
        "distpro_review_s2": runs([84, 84, 85]),
        "distpro_review_s3": runs([86, 85, 86]),
        "fixed_review": runs([84, 84, 85]),
        "hinton_kd": runs([83, 83, 84]),
        "distpro_review_mean": runs([86, 85, 87]),
    }
    lines = headline.versus_lines({"p": pair}, {})
    fixed = next(line for line in lines if "| fixed_review |" in line)
    assert "| distpro_review_mean | fixed_review | 3 | +1.67 |" in fixed  # (2 + 1 + 2) / 3
    recipe = next(line for line in lines if "frozen recipe (3 searches pooled)" in line)
    assert "| +1.00 |" in recipe  # recipe per seed 85, 84.33, 85.67
    assert not any("reviewkd" in line for line in lines)  # no ReviewKD runs: no row
    assert not any(
        "distpro_review_mean" in line for line in headline.headline_lines({"p": pair}, {})
    )


def test_the_half_epoch_row_is_set_against_the_rivals_at_full_length():
    from benchmarks import converged_headline as headline

    def runs(points):
        return {s: {"top1": p / 100} for s, p in enumerate(points)}

    recipe = {m: runs([85, 84, 86]) for m in headline.RECIPE}
    pair = {**recipe, "reviewkd": runs([84, 84, 85]), "distpro_review_half": runs([84, 83, 86])}
    lines = headline.versus_lines({"p": pair}, {})
    row = next(line for line in lines if "| distpro_review_half | reviewkd |" in line)
    assert "| 3 | +0.00 |" in row  # (0 - 1 + 1) / 3
    pooled = next(line for line in lines if "| distpro_review_half | frozen recipe" in line)
    assert "| -0.67 |" in pooled


def test_a_killed_teacher_fit_resumes_at_its_last_finished_epoch(tmp_path, monkeypatch):
    """Pair 3's teacher is hours of CPU: its fit checkpoints every epoch and a new call
    resumes there (fewer steps), saves the weights and removes the checkpoint."""
    from lightning.pytorch import Callback

    from benchmarks.converged_data import FashionTensors

    n = 48
    g = torch.Generator().manual_seed(0)
    data = FashionTensors(
        torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g),
        torch.randn(8, 1, 28, 28, generator=g), torch.randint(0, 10, (8,), generator=g),
        torch.arange(8), torch.arange(8, n),
    )  # fmt: skip
    args = _args("--teacher-epochs", "3")  # batch 256: one step per epoch here
    steps: list[int] = []

    class Count(Callback):
        def on_train_batch_end(self, trainer, *a):  # noqa: ANN001, ANN002
            steps.append(trainer.global_step)

    class Kill(Callback):
        def on_train_epoch_start(self, trainer, pl_module):  # noqa: ANN001
            if trainer.current_epoch == 2:
                raise RuntimeError("killed")

    real = methods.make_trainer
    extra = [Count(), Kill()]
    monkeypatch.setattr(
        methods, "make_trainer", lambda a, e, cbs, val: real(a, e, [*cbs, *extra], val)
    )
    path = tmp_path / "teacher_resnet20.pt"
    with pytest.raises(RuntimeError, match="killed"):
        methods.train_teacher(args, PAIR1, data, path)
    resume = tmp_path / "teacher_resnet20.pt.resume.ckpt"
    assert resume.is_file() and not path.exists() and steps == [1, 2]  # 2 epochs of 1 step
    extra[:] = [Count()]
    record = methods.train_teacher(args, PAIR1, data, path)
    assert record["resumed_from"] == str(resume) and steps == [1, 2, 3]  # one more epoch
    assert path.is_file() and not resume.exists()
    resumed = torch.load(path, weights_only=True)
    create("resnet20", num_classes=10, in_channels=1).load_state_dict(resumed)
    # against a fit never killed: the same schedule and momentum carried over, so the same
    # weights up to the resumed epoch's batch order (one batch here: the same order)
    whole = tmp_path / "whole.pt"
    methods.train_teacher(args, PAIR1, data, whole)
    reference = torch.load(whole, weights_only=True)
    for key, value in reference.items():
        torch.testing.assert_close(resumed[key], value, rtol=1e-4, atol=1e-5)


def test_a_teacher_checkpoint_of_another_fit_is_refused_not_resumed(tmp_path):
    ckpt = {"hyper_parameters": {"model": "wrn_40_2"}, "lr_schedulers": [{"T_max": 15}]}
    path = tmp_path / "t.pt.resume.ckpt"
    torch.save(ckpt, path)
    assert methods.resume_point(path, "wrn_40_2", 15) == path
    with pytest.raises(SystemExit, match="over 15 epochs, not of wrn_40_2 over 12.*delete it"):
        methods.resume_point(path, "wrn_40_2", 12)
    assert methods.resume_point(tmp_path / "none.ckpt", "wrn_40_2", 12) is None


def test_rows_whose_replay_prunes_nothing_carry_their_compiled_price(tmp_path):
    import json

    from benchmarks import converged_headline as headline

    step, evaluated = _measured()
    for path, key, entry in (
        (headline.COST_FILES[PAIR1][0], "recommended", {"step_s": step, "evaluated": evaluated}),
        (headline.COMPILED_COST, "recommended",
         {"compiled": {"uniform": {"over_reviewkd": 0.8}, "cheap_review": {"over_reviewkd": 1.3}}}),
    ):  # fmt: skip
        file = tmp_path / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps({"pairs": {key: entry}}))
    assert headline.compiled_costs(PAIR1, tmp_path) == {
        "uniform_review": 0.8, "fixed_review": 0.8, "distpro_cheap_review": 1.3,
    }  # fmt: skip
    lines = headline.cost_lines(PAIR1, {"fixed_review": 18}, {}, root=tmp_path)
    assert "| fixed_review | 1.50 | 18 | 27.00 | 0.80 |" in lines
    assert "| distpro_review | " not in "\n".join(lines)  # its own label
    assert any(line.endswith("| 3.60 | – | 3.60 | – |") for line in lines)  # pruned: none
    assert headline.compiled_costs("wrn_16_2-mobilenet_v2", tmp_path) == {}


def test_recipe_cost_compiles_the_replay_of_an_evidence_pair():
    from benchmarks import recipe_cost
    from benchmarks.step_cost import _loaders

    x, y = recipe_cost.batch_for("wrn_16_2-mobilenet_v2", 8)
    methods = recipe_cost.compiled_methods(_loaders(x, y, 9), {}, "wrn_16_2-mobilenet_v2")
    assert set(methods) == {*recipe_cost.COMPILED_METHODS, "replay_compiled"}
    assert methods["replay_compiled"].module.distill_heads.compiled is True
    assert methods["replay_compiled"].module.num_pathways == 14  # that pair's space


def _fixed_grid_records(best: dict[str, float], pair: str = PAIR1) -> list[dict]:
    """Finished runs of the fixed combination's grid on the grid seeds, ``best`` chosen
    (inside the grid, so the grid does not widen)."""
    args = _args()
    return [
        {"kind": "run", "method": "fixed_review", "pair": pair, "seed": g, "params": p,
         "val_top1": 0.9 if p == best else 0.8,
         "key": converged.Task("run", pair, "fixed_review", g, converged.params_key(p)).key}
        for g in args.grid_seeds for p in converged_grids.GRIDS_ISSUE34["fixed_review"]
    ]  # fmt: skip


@pytest.mark.parametrize("point", [{"w": 22.0, "f": 0.8}, {"w": 5.5, "f": 0.2}])
def test_the_fromfixed_search_starts_at_the_fixed_combinations_weights(tmp_path, point):
    args = _args()
    teacher = create("resnet20", num_classes=10, in_channels=1)
    fixed, callbacks = methods.build_method(args, "fixed_review", PAIR1, teacher, point, None)
    callbacks[0].on_fit_start(None, fixed)  # what Trainer.fit calls
    path = tmp_path / "process_p_shared_review_fromfixed.json"
    space, init = methods.start_at_fixed(args, PAIR1, teacher, point, path)
    assert init.endswith("start_p_shared_review_fromfixed.json")  # not a process_* file
    module = methods.distpro_module(args, PAIR1, teacher, **space)
    from distpro_lightning.search.state import warm_start

    warm_start(module, init)  # what the search does with alpha.init_process
    # the search's first weights are the fixed combination's, pathway by pathway
    torch.testing.assert_close(module.alpha_weights().detach(), fixed.alpha_weights().detach())
    assert module.active_pathways() is None and module.prune_threshold is None
    # at the uniform start's level: the normalised weights sum to P / (P + 1)
    p = module.num_pathways
    total = float(module.alpha_weights().sum()) / module.weight_scale
    assert math.isclose(total, p / (p + 1), rel_tol=1e-5)
    # its replay reads the kd_weight back from the process's scale
    process = module.new_process({})
    process.append(module.alpha_logits.detach())
    replay, _ = methods.build_method(args, "distpro_review_fromfixed", PAIR1, teacher, {}, process)
    assert math.isclose(replay.kd_weight, module.kd_weight, rel_tol=1e-6)
    assert replay.prune_threshold is None


def test_the_fromfixed_search_waits_for_the_fixed_grid_and_starts_at_its_choice():
    args = _args("--seeds", "0", "1", "2")
    before = converged.plan(args, [])
    assert not [t for t in before if "fromfixed" in t.key]  # no point chosen yet
    best = {"w": 11.0, "f": 0.8}  # inside the grid: it does not widen
    records = _fixed_grid_records(best)
    tasks = converged.plan(args, records)
    [search] = [t for t in tasks if t.key == f"search:{PAIR1}:-1:review_fromfixed"]
    replays = [t for t in tasks if t.method == "distpro_review_fromfixed" and t.pair == PAIR1]
    assert sorted(t.seed for t in replays) == [0, 1, 2]
    assert all(search.key in t.deps for t in replays)
    assert not [t for t in tasks if "fromfixed" in t.key and t.pair != PAIR1]  # grids not done
    resolved = converged.resolve(args, search, records)
    assert converged.parse_params(resolved.resolved) == best
    frozen = [t for t in tasks if t.method not in converged.LEVERS]
    assert search.priority < min(t.priority for t in frozen)  # after every frozen row
    # a complete grid whose choice sits on the w edge is not final: no start point yet
    edge = _fixed_grid_records({"w": 22.0, "f": 0.8})
    assert not [t for t in converged.plan(args, edge) if "fromfixed" in t.key]


def test_the_fromfixed_search_draws_the_first_searchs_heads(tmp_path):
    from lightning.pytorch import seed_everything

    args = _args()
    teacher = create("resnet20", num_classes=10, in_channels=1)
    # the same seed and subset as the frozen recipe's first search
    assert methods.SEARCH_SEED_OFFSET["review_fromfixed"] == methods.SEARCH_SEED_OFFSET["review"]
    assert methods.SEARCH_DRAW.get("review_fromfixed", 0) == methods.SEARCH_DRAW.get("review", 0)
    seed_everything(100)  # as search_process does, then builds the module of its variant
    first = methods.distpro_module(args, PAIR1, teacher, **methods.REVIEW_SPACE)
    seed_everything(100)
    path = tmp_path / "process_p_shared_review_fromfixed.json"
    space, _ = methods.start_at_fixed(args, PAIR1, teacher, {"w": 22.0, "f": 0.8}, path)
    lever = methods.distpro_module(args, PAIR1, teacher, **space)
    heads = dict(first.distill_heads.named_parameters())
    assert heads  # randomly initialised transform and review heads
    for name, value in lever.distill_heads.named_parameters():
        torch.testing.assert_close(value, heads[name], msg=name)


def test_the_fromfixed_lever_is_refused_without_what_it_needs():
    with pytest.raises(SystemExit, match="review_fromfixed"):  # its search variant
        converged.plan(_args("--methods", "distpro_review_fromfixed", "--searches", "review"), [])
    lone = _args("--methods", "distpro_review_fromfixed", "--searches", "review_fromfixed")
    with pytest.raises(SystemExit, match="add it to --methods"):  # its start point's grid
        converged.plan(lone, [])


def test_a_fromfixed_search_from_a_point_no_longer_chosen_is_superseded(tmp_path):
    args = _args("--seeds", "0", "1", "2", "--out", str(tmp_path), "--name", "run")
    records = _fixed_grid_records({"w": 11.0, "f": 0.5})
    search = {"kind": "search", "method": "search_review_fromfixed", "pair": PAIR1, "seed": -1,
              "params": {}, "start_point": {"w": 11.0, "f": 0.8},
              "key": converged.Task("search", PAIR1, "review_fromfixed", -1).key}  # fmt: skip
    replay = {"kind": "run", "method": "distpro_review_fromfixed", "pair": PAIR1, "seed": 0,
              "params": {}, "key": "run:replay"}  # fmt: skip
    other = {"kind": "run", "method": "distpro_review", "pair": PAIR1, "seed": 0, "params": {},
             "key": "run:other"}  # fmt: skip
    payload = {"records": [*records, search, replay, other]}
    converged.out_dir(args).mkdir(parents=True)
    process = converged.process_path(args, PAIR1, converged.SHARED, "review_fromfixed")
    process.write_text("{}")
    converged.supersede(args, payload)
    assert payload["superseded"] == [search, replay]  # the choice is now f=0.5
    assert other in payload["records"] and search not in payload["records"]
    assert not process.exists() and process.with_name(f"{process.stem}.superseded.json").is_file()
    assert converged.set_aside_interrupted(args, payload["records"]) == []  # not moved again
    search["start_point"] = {"w": 11.0, "f": 0.5}  # started at the point chosen: kept
    assert converged.stale_starts(args, [*records, search]) == []


def test_the_fromfixed_search_is_handed_its_start_point(monkeypatch):
    args = _args()
    search = converged.Task("search", PAIR1, "review_fromfixed", -1, resolved="f=0.8,w=22")
    seen = {}
    monkeypatch.setattr(converged.FashionTensors, "load", staticmethod(lambda *a: None))
    monkeypatch.setattr(
        converged, "search_process", lambda *a: seen.setdefault("warm", a[-1]) and {}
    )
    converged.execute(args, search)
    assert seen["warm"] == {"f": 0.8, "w": 22.0}


@pytest.mark.slow
def test_the_fromfixed_lever_runs_end_to_end_from_the_chosen_fixed_point(tmp_path, monkeypatch):
    import json
    from pathlib import Path

    from distpro_lightning.data.fashion_mnist import DEBIAN_FASHION_MNIST_DIR
    from distpro_lightning.process import DistillationProcess

    if not (Path(DEBIAN_FASHION_MNIST_DIR).is_dir() or Path("data/FashionMNIST/raw").is_dir()):
        pytest.skip("Fashion-MNIST files absent")
    # a grid of two points, as fixed (widening: tests/benchmarks/test_converged_grids.py)
    grid = [{"w": 5.5, "f": 0.5}, {"w": 22.0, "f": 0.8}]
    monkeypatch.setitem(converged_grids.GRIDS_ISSUE34, "fixed_review", grid)
    monkeypatch.setattr(converged_grids, "WIDEN_ROUNDS", 0)
    tiny = [
        "--rows", "issue34", "--name", "tiny", "--out", str(tmp_path), "--pairs", PAIR1,
        "--subset", "200", "--batch-size", "16", "--epochs", "2", "--teacher-epochs", "1",
        "--max-steps", "2", "--test-batches", "1", "--val-size", "300", "--teacher-dir", "",
        "--methods", "fixed_review", "distpro_review_fromfixed", "--searches",
        "review_fromfixed", "--grid-seeds", "0", "--seeds", "0", "1",
    ]  # fmt: skip
    converged.main(tiny)
    records = json.loads((tmp_path / "tiny.json").read_text())["records"]
    fixed = [r for r in records if r["method"] == "fixed_review"]
    chosen = max((r for r in fixed if r["seed"] == 0), key=lambda r: r["val_top1"])["params"]
    [search] = [r for r in records if r["kind"] == "search"]
    assert search["start_point"] == chosen  # started at the point validation chose
    replays = [r for r in records if r["method"] == "distpro_review_fromfixed"]
    assert sorted(r["seed"] for r in replays) == [0, 1]
    folder = tmp_path / "tiny"
    process = DistillationProcess.load(folder / f"process_{PAIR1}_shared_review_fromfixed.json")
    start = DistillationProcess.load(folder / f"start_{PAIR1}_shared_review_fromfixed.json")
    assert process.provenance["init_process"]["fingerprint"] == start.fingerprint()
    # the search started at the fixed point's weights: total w, f of it on the features
    first = start.weights()[0]  # with the weight scale
    names = start.pathway_names
    features = sum(float(w) for n, w in zip(names, first) if n.endswith(":conv_bn"))
    assert math.isclose(float(first.sum()), chosen["w"], rel_tol=1e-5)
    assert math.isclose(features / float(first.sum()), chosen["f"], rel_tol=1e-5)
    assert process.normalization == start.normalization and process.prune_threshold is None


def test_the_fromfixed_lever_pays_the_fixed_grid_it_starts_from(tmp_path):
    import json

    from benchmarks import converged_headline as headline

    step, evaluated = _measured()
    evaluated["review_fromfixed"] = {"over_reviewkd": 4.4}
    for path, key in (
        (headline.COST_FILES[PAIR1][0], "recommended"),
        (headline.ISSUE34_COST, PAIR1),
    ):
        file = tmp_path / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps({"pairs": {key: {"step_s": step, "evaluated": evaluated}}}))
    grid = {"fixed_review": 20}
    text = "\n".join(headline.cost_lines(PAIR1, grid, {}, root=tmp_path))
    fixed_one = step["replay"] / step["reviewkd"]  # 1.5: the fixed combination's run
    assert f"| fixed_review | {fixed_one:.2f} | 20 | {20 * fixed_one:.2f} |" in text
    # its own search and replay, plus the 20 grid runs that chose its start
    assert f"| distpro_review_fromfixed | 4.40 | 20 | {4.4 + 20 * fixed_one:.2f} |" in text


def test_a_replay_module_takes_the_scale_and_threshold_of_its_process():
    from benchmarks import recipe_cost
    from distpro_lightning import DistProModule
    from distpro_lightning.process import DistillationProcess

    _, dp_kwargs, _, _ = recipe_cost.pair_setup(PAIR1)
    names = list(recipe_cost.build_module(DistProModule, **dp_kwargs).pathway_names)
    norm = {"name": "biased_softmax", "bias": 1.0, "scale": 33.0}
    process = DistillationProcess(names, norm, logits=[[1.0] * len(names)] * 2)
    kwargs = recipe_cost.replay_kwargs(dp_kwargs, process)
    module = recipe_cost.build_module(DistProModule, **kwargs)
    assert math.isclose(module.weight_scale, 33.0) and module.prune_threshold is None
    assert recipe_cost.pruned_share(process) == 0.0
    pruned = DistillationProcess(names, norm, [[0.0] * len(names)], prune_threshold=0.5)
    assert recipe_cost.pruned_share(pruned) == 1.0


def test_the_plot_chooses_grid_points_by_the_runs_own_grids(tmp_path, monkeypatch):
    from benchmarks import converged_report as report

    seen = []
    run = {"curve": {"val_top1": [[0, 0.5], [1, 0.6]], "train_loss": [2.0, 1.0]}}

    def chosen(records, pair, seeds, gset=None):
        seen.append(gset)
        return {"student": {0: run}}

    monkeypatch.setattr(report, "chosen_runs", chosen)
    records = [{"kind": "run", "pair": PAIR1, "method": "student", "seed": 0}]
    payload = {"records": records, "settings": {"grids": "issue34", "grid_seeds": [0, 1]}}
    report.plot(payload, tmp_path / "p.png")
    assert seen == [converged_grids.GRIDS_ISSUE34]  # as the tables choose, not issue 20's
    assert (tmp_path / "p.png").stat().st_size > 0


def test_the_report_chooses_grid_points_once_per_pair_by_the_runs_own_grids(monkeypatch):
    """Every table of the report (the pair's table, convergence) shows the runs chosen under
    the file's own grids; an issue-34 file's convergence table once used issue 20's."""
    from benchmarks import converged_report as report

    seen = []
    run = {"top1": 0.8, "val_top1": 0.8, "params": {}, "wall_s": 1.0}
    run["curve"] = {"val_top1": [[0, 0.5], [1, 0.6]], "train_loss": [2.0, 1.0]}

    def chosen(records, pair, seeds, gset=None):
        seen.append((pair, gset))
        return {"student": {0: run}}

    monkeypatch.setattr(report, "chosen_runs", chosen)
    records = [{"kind": "run", "pair": PAIR1, "method": "student", "seed": 0, "wall_s": 1.0}]
    settings = {"grids": "issue20", "grid_seeds": [0, 1]}
    text = report.report_text({"records": records, "history": [], "settings": settings}, "n")
    assert seen == [(PAIR1, converged_grids.GRIDS)]
    own = dict(converged_grids.GRIDS)  # equal to issue 20's, another object
    monkeypatch.setitem(converged_grids.GRID_SETS, "issue20", own)
    seen.clear()
    report.report_text({"records": records, "history": [], "settings": settings}, "n")
    assert len(seen) == 1 and seen[0][1] is own  # the file's grids, chosen once for every table
    assert "| student alone (CE) | 1.000 | 50.00 | 60.00 |" in text

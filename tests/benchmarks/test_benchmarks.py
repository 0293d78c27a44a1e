"""The benchmark scripts in a tiny form, so they cannot rot (timings are not asserted): the
runs of the scripts are in the slow tier; their planning and pricing logic in the default."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

# The benchmarks' smoke runs are tiny on purpose, and the library says what such runs do:
# a process of a few steps stretched over the timed steps, "use alpha_T" replayed with the
# KD pathway (a method measured on purpose), and a sparse search of a 1-3-step fit that
# updates alpha once. Each message is tested where it is raised (tests/unit/replay,
# tests/unit/search).
pytestmark = [
    pytest.mark.filterwarnings("ignore:DistPro replay stretches a process:UserWarning"),
    pytest.mark.filterwarnings("ignore:ProcessScheduleCallback.mode='final'. with the:UserWarning"),
    pytest.mark.filterwarnings(
        "ignore:search.schedule.every_n_steps=.* updates alpha once:UserWarning"
    ),
]

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_step_cost_tiny(tmp_path):
    out = tmp_path / "step_cost.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.step_cost",
            "--batch",
            "8",
            "--repeats",
            "2",
            "--warmup",
            "0",
            "--out",
            str(out),
            "--teacher",
            "none",
            "--threads",
            "1",
            "--official-batch",  # the official pair's fits at batch 4 (64 by default)
            "4",
            "--rounds",  # one round of fits (the same code as three)
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    for key in (
        "search_over_kd",
        "search_over_floor",
        "search_floor_s",
        "exact_search_over_kd",
        "retrain_over_reviewkd",
        "peak_memory_search_over_kd",
        "peak_memory_search_over_retrain",
        "fit_search_reuse_over_retrain",
        "fit_retrain_unpruned_over_reviewkd",
    ):
        assert result[key] > 0, key
    assert len(result["raw_s"]["search_fd"]) == 2


TINY_QUALITY = [
    "--name",
    "tiny",
    "--pairs",
    "resnet20-resnet8",
    "--epochs",
    "1",
    "--budgets",
    "2",
    "--subset",
    "256",
    "--max-steps",
    "2",
    "--test-batches",
    "1",
    "--search-epochs",
    "1",
    "--teacher-epochs",
    "1",
    "--resnet20-teacher",
    "none",
    "--batch-size",
    "32",
]


@pytest.mark.slow
def test_quality_tiny(tmp_path):
    from benchmarks import quality

    quality.main([*TINY_QUALITY, "--out", str(tmp_path), "--seeds", "0"])
    data = json.loads((tmp_path / "tiny.json").read_text())
    methods = {r["method"] for r in data["runs"]}
    assert methods == {"student", "hinton_kd", "fitnet", "reviewkd", "equal", "alpha_T", "distpro"}
    assert {r["epochs"] for r in data["runs"] if r["method"] == "distpro"} == {1, 2}
    for r in data["runs"]:
        assert 0.0 <= r["top1"] <= 1.0 and r["wall_s"] > 0 and r["process"].endswith(".json")
    assert data["teachers"]["resnet20"]["epochs"] == 1
    assert "| resnet20-resnet8 |" in (tmp_path / "tiny.md").read_text()
    assert (tmp_path / "tiny.png").stat().st_size > 1000

    # Resume with a second seed, two tasks at a time in worker processes: the first run's
    # results are kept as they are, only the missing runs are added.
    quality.main([*TINY_QUALITY, "--out", str(tmp_path), "--seeds", "0", "1", "--jobs", "2"])
    again = json.loads((tmp_path / "tiny.json").read_text())
    assert again["runs"][: len(data["runs"])] == data["runs"]
    assert len(again["runs"]) == 2 * len(data["runs"])
    assert {r["seed"] for r in again["runs"][len(data["runs"]) :]} == {1}
    assert {r["jobs"] for r in again["runs"][len(data["runs"]) :]} == {2}
    assert len(again["history"]) == 2
    assert (
        "| resnet20-resnet8 | DistPro (searched process) | 2 | 2 |"
        in (tmp_path / "tiny.md").read_text()
    )

    # Other settings would mix incomparable runs: refused, naming the setting; nothing written.
    with pytest.raises(SystemExit, match="lr: 0.05 there, 0.1 now"):
        quality.main([*TINY_QUALITY, "--out", str(tmp_path), "--seeds", "0", "--lr", "0.1"])
    assert json.loads((tmp_path / "tiny.json").read_text()) == again
    # So would runs of a teacher that is gone (a new one would need a new search too).
    (tmp_path / "teachers" / "smoke_teacher_resnet20.ckpt").unlink()
    with pytest.raises(SystemExit, match="put it back"):
        quality.main([*TINY_QUALITY, "--out", str(tmp_path), "--seeds", "0"])


def test_quality_schedule_respects_dependencies():
    from benchmarks import quality

    Task = quality.Task
    teacher = Task("teacher", "wrn_16_2-mobilenet_v2")
    search = Task("search", "wrn_16_2-mobilenet_v2", deps=(teacher.key,))
    runs = [
        Task("run", "wrn_16_2-mobilenet_v2", "student", 0, 2),
        Task("run", "wrn_16_2-mobilenet_v2", "reviewkd", 0, 2, deps=(teacher.key,)),
        Task("run", "wrn_16_2-mobilenet_v2", "distpro", 0, 2, deps=(search.key,)),
    ]
    order: list[str] = []
    quality.schedule([*runs, search, teacher], 1, lambda t: {}, lambda t, r: order.append(t.key))
    assert order == [teacher.key, search.key, runs[2].key, runs[1].key, runs[0].key]

    # A failure stops new work but the tasks already done are reported, then it is raised.
    def run(task):
        if task.kind == "search":
            raise RuntimeError("search broke")
        return {}

    done: list[str] = []
    with pytest.raises(RuntimeError, match="search broke"):
        quality.schedule([*runs, search, teacher], 2, run, lambda t, r: done.append(t.key))
    assert teacher.key in done and runs[2].key not in done


@pytest.mark.parametrize("pair", ["resnet20-resnet8", "wrn_16_2-mobilenet_v2"])
def test_every_quality_pair_trains_every_method(pair):
    # One optimizer step of each method on each pair of quality.py (random weights, random
    # 28x28 images): a pair whose taps or shapes do not fit a method fails here, not hours
    # into a benchmark run. alpha_T and DistPro are "equal" with another schedule mode.
    import torch
    from conftest import quiet_trainer
    from torch.utils.data import DataLoader, TensorDataset

    from benchmarks import quality
    from distpro_lightning.baselines.recipes import build_method

    assert pair in quality.PAIRS
    teacher, student = quality.PAIRS[pair]
    torch.manual_seed(0)
    loader = DataLoader(
        TensorDataset(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))), batch_size=8
    )
    for method in ("student", "hinton_kd", "fitnet", "reviewkd", "equal"):
        module, callbacks = build_method(method, student, teacher, None)
        trainer = quiet_trainer(max_epochs=1, limit_val_batches=0, callbacks=callbacks)
        trainer.fit(module, loader)
        assert trainer.global_step == 1, method
        assert torch.isfinite(trainer.callback_metrics["train/loss"]), method


@pytest.mark.slow
def test_gpu_step_cost_tiny_on_cpu(tmp_path):
    """The prepared GPU script, in its CPU smoke form (fused and per-pathway heads)."""
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, "-m", "benchmarks.gpu_step_cost", "--tiny", "--device"]
    cmd += ["cpu", "--threads", "1", "--configs", "fused,per_pathway", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    for name in ("fused", "per_pathway"):
        config = result["configs"][name]
        assert config["repeats"] >= 1
        for key in ("search_over_retrain", "retrain_over_reviewkd", "search_reuse_over_retrain"):
            assert config[key] > 0, (name, key)
        assert config["peak_memory_search_over_retrain"] > 0


@pytest.mark.slow
def test_recipe_cost_tiny(tmp_path):
    """The end-to-end cost benchmark in its smoke form: every recipe priced against both
    baselines (timings are not asserted)."""
    from benchmarks import recipe_cost

    out = tmp_path / "rc.json"
    assert recipe_cost.main(["--tiny", "--out", str(out)]) == 0
    result = json.loads(out.read_text())["pairs"]["project"]
    assert set(result["step_s"]) == {
        "hinton_kd", "reviewkd", "replay", "replay_pruned",
        "search_k1", "search_k2", "search_k4", "search_k8",
    }  # fmt: skip
    assert len(result["recipes"]) == 4 * 3 * 2
    for row in result["recipes"].values():
        assert row["over_reviewkd"] > 0 and row["over_hinton_kd"] > 0


@pytest.mark.slow
def test_recipe_cost_prices_the_recommended_space_with_a_real_process(tmp_path):
    """The recommended space (11 pathways) replays the committed searched process for its
    pruned replay through the real callback, compressed onto the timed steps, so tau prunes
    what the process's rows say (its last rows keep the KD pathway alone)."""
    from benchmarks import recipe_cost
    from benchmarks.step_cost import _loaders

    x, y = recipe_cost.batch_for("recommended", 8)
    methods = recipe_cost.pair_methods("recommended", _loaders(x, y, 9))
    pruned = methods["replay_pruned"]
    assert pruned.module.num_pathways == 11
    [callback] = pruned.callbacks()
    assert type(callback).__name__ == "ProcessScheduleCallback"
    args = argparse.Namespace(rounds=1, window=8, device="cpu")
    step_s = recipe_cost.time_pair(args, {"replay_pruned": pruned}, _loaders(x, y, 9)[0])
    assert step_s["replay_pruned"] > 0
    # the last timed step replays the process's last row: all but the KD pathway pruned
    assert int((pruned.module.alpha_logits <= recipe_cost.TAU).sum()) == 10
    out = tmp_path / "rc.json"
    assert recipe_cost.main(["--tiny", "--pairs", "recommended", "--out", str(out)]) == 0
    result = json.loads(out.read_text())["pairs"]["recommended"]
    assert set(result["step_s"]) >= {"replay", "replay_pruned", "reviewkd", "search_k1"}


@pytest.mark.slow
def test_recipe_cost_prices_each_evaluated_recipe_with_its_own_process(tmp_path):
    """A cheap recipe is priced with the process it replayed in the paired comparison, at the
    k and proxy fraction that process records, not with the full search's pruned replay."""
    from benchmarks import recipe_cost

    names = ("review", "proxy_review", "cheap_review")
    processes = {n: recipe_cost.EVIDENCE.format(n) for n in names}
    out = tmp_path / "rc.json"
    items = [f"{n}={p}" for n, p in processes.items()]
    argv = ["--tiny", "--pairs", "recommended", "--out", str(out), "--processes", *items]
    assert recipe_cost.main(argv) == 0
    result = json.loads(out.read_text())["pairs"]["recommended"]
    step_s, rows = result["step_s"], result["evaluated"]
    assert {"replay_proxy_review", "replay_cheap_review"} <= set(step_s)
    assert set(rows) == set(names)
    # k and the fraction from the files: 64 proxy rows over 30 epochs of 8 steps
    assert (rows["review"]["k"], rows["review"]["fraction"]) == (1, 1.0)
    assert (rows["cheap_review"]["k"], rows["cheap_review"]["fraction"]) == (4, 64 / 240)
    assert (rows["proxy_review"]["k"], rows["proxy_review"]["fraction"]) == (1, 64 / 240)
    cheap = rows["cheap_review"]
    expected = (64 / 240 * step_s["search_k4"] + step_s["replay_cheap_review"]) / step_s["reviewkd"]
    assert cheap["over_reviewkd"] == pytest.approx(expected)
    assert cheap["replay"] == "replay_cheap_review" and rows["review"]["replay"] == "replay_pruned"
    # the cheap search barely moved alpha: its process prunes nothing at tau, the full one most
    assert cheap["pruned_pathway_steps"] == 0.0 and rows["review"]["pruned_pathway_steps"] > 0.7
    with pytest.raises(SystemExit, match="NAME=PATH"):
        recipe_cost.parse_processes(["review.json"])


def test_recipe_cost_prices_the_unpruned_recipes_with_a_compiled_replay():
    """--compiled-replay: the unpruned replay built with compile_heads=True, and the recipes
    whose process prunes nothing (and the replay alone) priced with it (the timing path is
    the one the other recipe-cost tests run; compiling in a test would take minutes)."""
    from benchmarks import recipe_cost
    from benchmarks.step_cost import _loaders

    processes = {n: recipe_cost.EVIDENCE.format(n) for n in ("review", "cheap_review")}
    x, y = recipe_cost.batch_for("recommended", 8)
    methods = recipe_cost.compiled_methods(_loaders(x, y, 9), processes)
    assert set(methods) == {*recipe_cost.COMPILED_METHODS, "replay_compiled"}
    assert methods["replay_compiled"].module.distill_heads.compiled is True
    assert methods["replay"].module.distill_heads.compiled is False
    assert methods["replay_compiled"].module.num_pathways == 11
    step = {"search_k4": 2.0, "replay_compiled": 1.0, "reviewkd": 1.25, "hinton_kd": 0.5}
    rows = recipe_cost.compiled_recipes(step, processes)
    assert set(rows) == {"cheap_review", "uniform"}  # the full search's process prunes
    assert rows["cheap_review"]["over_reviewkd"] == pytest.approx((64 / 240 * 2.0 + 1.0) / 1.25)
    assert rows["cheap_review"]["over_hinton_kd"] == pytest.approx((64 / 240 * 2.0 + 1.0) / 0.5)
    assert rows["uniform"]["over_reviewkd"] == pytest.approx(1.0 / 1.25)


@pytest.mark.slow
def test_recipe_cost_prices_another_pair_of_the_evidence_with_its_own_process(
    tmp_path, monkeypatch
):
    """Issue 34's costs on the other pairs: the recommended space of wrn_16_2 -> mobilenet_v2
    (14 pathways), replaying that pair's own searched process; a pair without one is refused
    with the file it needs."""
    from benchmarks import recipe_cost

    process = "benchmarks/results/evidence_fmnist/process_wrn_16_2-mobilenet_v2_shared_review.json"
    out = tmp_path / "rc.json"
    pair = "wrn_16_2-mobilenet_v2"
    args = ["--tiny", "--pairs", pair, "--processes", f"review={process}", "--out", str(out)]
    assert recipe_cost.main(args) == 0
    result = json.loads(out.read_text())["pairs"][pair]
    assert set(result["step_s"]) >= {"hinton_kd", "reviewkd", "replay", "replay_pruned"}
    assert result["evaluated"]["review"]["process"] == process
    assert result["evaluated"]["review"]["over_reviewkd"] > 0
    monkeypatch.setattr(recipe_cost, "ISSUE34", str(tmp_path / "none_{}_{}.json"))
    with pytest.raises(SystemExit, match="no searched process of the frozen recipe"):
        recipe_cost.main(["--tiny", "--pairs", "wrn_40_2-shufflenet_v1", "--out", str(out)])


def test_recipe_cost_keeps_the_pairs_an_earlier_call_priced(tmp_path):
    from benchmarks.recipe_cost import merged

    out = tmp_path / "cost.json"
    assert merged(out, {"pairs": {"b": {"x": 1}}}) == {"pairs": {"b": {"x": 1}}}
    out.write_text(json.dumps({"command": "first", "pairs": {"a": {"x": 0}, "b": {"x": 9}}}))
    new = merged(out, {"command": "second", "pairs": {"b": {"x": 1}}})
    assert new == {"command": "second", "pairs": {"a": {"x": 0}, "b": {"x": 1}}}

"""The converged quality protocol (benchmarks/converged*.py): statistics against independent
computations, pairing, controls, validation-only selection, and a tiny end-to-end run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from benchmarks import converged_methods as methods
from benchmarks import converged_report as report
from distpro_lightning.data.fashion_mnist import DEBIAN_FASHION_MNIST_DIR

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

HAVE_FASHION = Path(DEBIAN_FASHION_MNIST_DIR).is_dir() or Path("data/FashionMNIST/raw").is_dir()


def test_paired_interval_matches_the_t_formula():
    # diffs 1..5: mean 3, sd sqrt(2.5), se sqrt(0.5); t_{0.975, 4} = 2.776 (tables)
    mean, lo, hi = report.paired_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.776 * math.sqrt(2.5) / math.sqrt(5)
    assert mean == 3.0
    assert lo == pytest.approx(3.0 - half) and hi == pytest.approx(3.0 + half)
    assert math.isnan(report.paired_interval([1.0])[1])


def test_selection_uses_validation_never_test():
    def rec(w, seed, val, test):
        return dict(kind="run", pair="p", method="hinton_kd", seed=seed, params={"w": w},
                    val_top1=val, top1=test)  # fmt: skip

    records = [rec(1.0, s, 0.80, 0.90) for s in (0, 1)] + [rec(2.0, s, 0.85, 0.70) for s in (0, 1)]
    chosen = report.chosen_runs(records, "p")["hinton_kd"]
    assert {r["params"]["w"] for r in chosen.values()} == {2.0}  # best validation, worse test


def test_task_time_sums_the_core_comparison_and_the_whole_pair():
    def rec(method, wall_s, pair="p", kind="run"):
        return dict(kind=kind, pair=pair, method=method, wall_s=wall_s)

    records = [
        rec("hinton_kd", 1800), rec("search_main", 3600, kind="search"), rec("random", 1800),
        rec("distpro", 3600, pair="q"), dict(kind="teacher", teacher="t", wall_s=9000),
    ]  # fmt: skip
    [line, blank] = report.time_lines(records, "p")
    assert "core comparison" in line and "2 tasks, 1.50 h" in line
    assert "every task of the pair 3 tasks, 2.00 h" in line and blank == ""


def test_random_walk_control_keeps_spread_and_level():
    torch.manual_seed(0)
    rows = 1.0 + torch.randn(50, 9).cumsum(0) * 0.05
    walk = methods.random_walk_like(rows, seed=3)
    assert walk.shape == rows.shape
    assert walk[-1].std().item() == pytest.approx(rows[-1].std().item(), rel=1e-5)
    assert torch.allclose(walk.mean(1), rows.mean(1), atol=1e-5)
    assert not torch.allclose(walk, rows)
    assert methods.step_change(walk) > 0
    assert not torch.equal(walk, methods.random_walk_like(rows, seed=4))


def test_student_init_is_paired_per_seed():
    a = methods.student_init("resnet20-resnet8", 0)
    b = methods.student_init("resnet20-resnet8", 0)
    c = methods.student_init("resnet20-resnet8", 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_FASHION, reason="Fashion-MNIST files absent")
def test_converged_protocol_tiny(tmp_path, monkeypatch):
    from benchmarks import converged, converged_grids

    # grids as fixed, not widened (widening: tests/benchmarks/test_converged_grids.py)
    monkeypatch.setattr(converged_grids, "WIDEN_ROUNDS", 0)

    tiny = [
        "--name", "tiny", "--out", str(tmp_path), "--pairs", "resnet20-resnet8",
        "--subset", "200", "--batch-size", "16", "--epochs", "2", "--teacher-epochs", "1",
        "--max-steps", "2", "--test-batches", "1", "--val-size", "300", "--teacher-dir", "",
        "--methods", "student", "hinton_kd", "distpro", "alpha_T", "random", "reversed",
        "distpro_review", "alpha_T_review", "distpro_cheap", "distpro_proxy_review",
        "distpro_cheap_review", "distpro_cheap10_review", "uniform_review", "--searches",
        "main", "review", "cheap", "proxy_review", "cheap_review", "cheap10_review", "--grid-seeds", "0", "--reversed-seeds", "0",
    ]  # fmt: skip
    converged.main([*tiny, "--seeds", "0"])
    data = json.loads((tmp_path / "tiny.json").read_text())
    keys = {r["key"] for r in data["records"]}
    # one shared search per variant (seed field -1), on a subset disjoint from the runs'
    assert {"search:resnet20-resnet8:-1:main", "search:resnet20-resnet8:-1:review"} <= keys
    assert "teacher:resnet20" in keys
    runs = [r for r in data["records"] if r["kind"] == "run"]
    assert {r["method"] for r in runs} == {
        "student", "hinton_kd", "distpro", "alpha_T", "random", "reversed", "distpro_review",
        "alpha_T_review", "distpro_cheap", "distpro_proxy_review", "distpro_cheap_review",
        "distpro_cheap10_review", "uniform_review",
    }  # fmt: skip
    cheap = json.loads(
        (tmp_path / "tiny" / "process_resnet20-resnet8_shared_cheap.json").read_text()
    )
    assert cheap["provenance"]["run_settings"]["proxy"] is True
    assert cheap["provenance"]["run_settings"]["search_every_n_steps"] == 4
    for variant, every in (("proxy_review", 1), ("cheap_review", 4), ("cheap10_review", 4)):
        name = f"process_resnet20-resnet8_shared_{variant}.json"
        proxy = json.loads((tmp_path / "tiny" / name).read_text())
        assert proxy["provenance"]["run_settings"]["proxy"] is True
        assert proxy["provenance"]["run_settings"]["search_every_n_steps"] == every
        assert {"review->review:abf", "logits->logits:kd"} <= set(proxy["pathway_names"])
    review = (tmp_path / "tiny" / "process_resnet20-resnet8_shared_review.json").read_text()
    assert "review->review:abf" in review and "logits->logits:kd" in review
    search = next(r for r in data["records"] if r["kind"] == "search")
    assert -1.0 <= search["diagnostics"]["agreement"] <= 1.0  # step 0 was diagnosed
    assert len([r for r in runs if r["method"] == "hinton_kd"]) == 6  # its whole grid
    for r in runs:
        assert 0.0 <= r["top1"] <= 1.0 and 0.0 <= r["val_top1"] <= 1.0
        assert r["steps"] == 2 and r["curve"]["train_loss"]
        # validated at 2/3 of training (epoch 0 of 2) and on the final weights only (max_steps)
        assert [e for e, _ in r["curve"]["val_top1"]] == [0, 1]
        assert r["val_top1"] == r["curve"]["val_top1"][-1][1]
    text = (tmp_path / "tiny.md").read_text()
    assert "| control: random process |" in text and "95 %" in text
    assert "Recommended recipe" in text

    # Resume: a second seed adds only its runs, the baseline at the point chosen on seed 0's
    # validation (not its grid), and no search; the first seed's records stay as they were.
    converged.main([*tiny, "--seeds", "0", "1"])
    again = json.loads((tmp_path / "tiny.json").read_text())
    assert again["records"][: len(data["records"])] == data["records"]
    added = again["records"][len(data["records"]) :]
    assert {r["seed"] for r in added} == {1} and all(r["kind"] == "run" for r in added)
    assert "reversed" not in {r["method"] for r in added}
    kd = [r for r in added if r["method"] == "hinton_kd"]
    seed0 = [r for r in runs if r["method"] == "hinton_kd"]
    best = max(seed0, key=lambda r: r["val_top1"])
    assert len(kd) == 1 and kd[0]["params"] == best["params"]
    with pytest.raises(SystemExit, match="epochs: 2 there, 3 now"):
        converged.main([*tiny, "--seeds", "0", "--epochs", "3"])


@pytest.mark.skipif(not HAVE_FASHION, reason="Fashion-MNIST files absent")
def test_every_method_of_a_seed_sees_the_same_data(tmp_path):
    from benchmarks import converged_data as data_mod

    data = data_mod.FashionTensors.load("data", val_size=500)
    s0, s0b, s1 = data.subset(0, 300), data.subset(0, 300), data.subset(1, 300)
    assert torch.equal(s0, s0b) and not torch.equal(s0, s1)
    assert not set(s0.tolist()) & set(data.val_index.tolist())  # never a validation image
    train, held = data.search_split(s0, 0)
    assert len(held) == 60 and set(train.tolist()) | set(held.tolist()) == set(s0.tolist())
    first = [
        next(iter(data_mod.TensorDataModule(data, s0, 16, order_seed=0).train_dataloader()))[1]
        for _ in range(2)
    ]
    assert torch.equal(first[0], first[1])


def test_proxy_searches_run_their_fraction_of_the_epochs():
    from benchmarks import converged
    from benchmarks.converged_methods import search_epochs

    args = converged.parser().parse_args(["--protocol", "converged", "--epochs", "30"])
    assert search_epochs(args, "main") == 30 and search_epochs(args, "review") == 30
    assert search_epochs(args, "cheap_review") == 8  # 25 % of 30, rounded
    assert search_epochs(args, "cheap10_review") == 3  # 10 %
    args.epochs = 4
    assert search_epochs(args, "cheap10_review") == 1  # at least one epoch


def test_uniform_review_trains_the_recommended_space_held_at_uniform_weights():
    from benchmarks import converged
    from benchmarks.converged_methods import build_method, distpro_module, space_of
    from distpro_lightning.models import create
    from distpro_lightning.replay import ProcessScheduleCallback

    args = converged.parser().parse_args(["--protocol", "converged"])
    assert space_of("uniform_review") == space_of("distpro_review")
    teacher = create("resnet20", num_classes=10, in_channels=1)
    module, callbacks = build_method(args, "uniform_review", "resnet20-resnet8", teacher, {}, None)
    searched = distpro_module(args, "resnet20-resnet8", teacher, **space_of("distpro_review"))
    assert module.pathway_names == searched.pathway_names
    assert {"review->review:abf", "logits->logits:kd"} <= set(module.pathway_names)
    assert [type(c) for c in callbacks] == [ProcessScheduleCallback]
    assert callbacks[0].mode == "uniform"

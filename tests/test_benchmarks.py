"""The benchmark scripts in a tiny form, so they cannot rot (timings are not asserted)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_step_cost_tiny(tmp_path):
    out = tmp_path / "step_cost.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks/step_cost.py"),
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
        ],
        capture_output=True,
        text=True,
        timeout=900,
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
    ):
        assert result[key] > 0, key
    assert len(result["raw_s"]["search_fd"]) == 2


def test_quality_tiny(tmp_path):
    quality = _load("quality")
    quality.main(
        [
            "--name",
            "tiny",
            "--out",
            str(tmp_path),
            "--pairs",
            "resnet20-resnet8",
            "--seeds",
            "0",
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
    )
    data = json.loads((tmp_path / "tiny.json").read_text())
    methods = {r["method"] for r in data["runs"]}
    assert methods == {"student", "hinton_kd", "fitnet", "reviewkd", "equal", "alpha_T", "distpro"}
    assert {r["epochs"] for r in data["runs"] if r["method"] == "distpro"} == {1, 2}
    for r in data["runs"]:
        assert 0.0 <= r["top1"] <= 1.0 and r["wall_s"] > 0 and r["process"].endswith(".json")
    assert "| resnet20-resnet8 |" in (tmp_path / "tiny.md").read_text()
    assert (tmp_path / "tiny.png").stat().st_size > 1000

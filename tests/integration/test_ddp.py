"""Multi-process CPU (gloo) DDP searches: alpha identical on every rank; DDP == one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distpro_lightning import DistillationProcess

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ddp_search.py"
pytestmark = pytest.mark.ddp


def _run(out: Path, devices: int, batch: int, val_batch: int, model: str, steps: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            str(out),
            str(devices),
            str(batch),
            str(val_batch),
            model,
            str(steps),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_alpha_bit_identical_across_ranks(tmp_path):
    _run(tmp_path, 2, 16, 16, "resnet", 4)
    r0 = torch.load(tmp_path / "alpha_rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "alpha_rank1.pt", weights_only=True)
    assert r0.shape == (4, 18)
    assert torch.equal(r0, r1)
    assert not torch.equal(r0[-1], torch.ones(18))  # the search did move alpha
    proc = DistillationProcess.load(tmp_path / "process.json")  # written once, by rank 0
    assert torch.equal(proc.logits, r0)
    assert proc.provenance["world_size"] == 2
    # search/val_loss: the MeanMetric over the last epoch's steps of both ranks, on both
    losses = [json.loads((tmp_path / f"val_loss_rank{r}.json").read_text()) for r in (0, 1)]
    last = max(e for e, _ in losses[0]["steps"])
    per_rank = [[v for e, v in rec["steps"] if e == last] for rec in losses]
    assert per_rank[0] and per_rank[0] != per_rank[1]  # the ranks' held-out batches differ
    both = per_rank[0] + per_rank[1]
    for rec in losses:
        assert rec["epoch"] == pytest.approx(sum(both) / len(both), rel=1e-6)


def test_two_ranks_match_one_rank_with_the_same_global_batch(tmp_path):
    """BatchNorm-free model, exact hypergradient: 2 ranks x batch 16 == 1 rank x batch 32."""
    _run(tmp_path / "ddp", 2, 16, 8, "vit", 4)
    _run(tmp_path / "single", 1, 32, 16, "vit", 4)
    ddp = torch.load(tmp_path / "ddp" / "alpha_rank0.pt", weights_only=True)
    single = torch.load(tmp_path / "single" / "alpha_rank0.pt", weights_only=True)
    assert not torch.equal(single[-1], torch.ones_like(single[-1]))
    assert (single[1:] != single[:-1]).any(dim=1).all()  # alpha moved at every step
    torch.testing.assert_close(ddp, single, rtol=1e-4, atol=1e-5)

"""Fused pathway heads against the per-pathway heads: losses, gradients, BatchNorm state."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from conftest import make_module
from torch.utils.flop_counter import FlopCounterMode

from distpro_lightning.functional.losses import (
    BATCHED_DISTANCES,
    hcl_loss,
    hcl_losses,
    l1_loss,
    l1_losses,
    mse_loss,
    mse_losses,
)
from distpro_lightning.pathways.heads import PathwayHeads, build_specs, resolve_connections
from distpro_lightning.search.hypergradient import frozen_batchnorm_stats

# student taps: 8 channels at 8x8, 12 at 4x4, 16 at 2x2; teacher taps: 6 at 8x8, 10 at 4x4
# (pool-first, same-size and upsampling connections all occur)
STUDENT = [(8, 8, 8), (12, 4, 4), (16, 2, 2)]
TEACHER = [(6, 8, 8), (10, 4, 4)]
KINDS = ["attn3", "conv_bn", "attn2"]  # not in depth order: the fused order must not matter
PRUNED = [0, 4, 5, 9, 13, 17]  # whole connections, single heads, the deepest kind


def _heads(fused: bool, distance=hcl_loss, kinds=KINDS, **kw) -> PathwayHeads:
    torch.manual_seed(0)
    pairs = resolve_connections("all", len(TEACHER), len(STUDENT))
    specs = build_specs(["t0", "t1"], ["s0", "s1", "s2"], pairs, kinds)
    heads = PathwayHeads(specs, STUDENT, TEACHER, distance, fused=fused, **kw).double()
    for m in heads.modules():  # non-trivial BatchNorm affine parameters and running stats
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return heads


def _inputs(batch: int = 5):
    gen = torch.Generator().manual_seed(1)
    s = [torch.randn(batch, *shape, generator=gen, dtype=torch.float64) for shape in STUDENT]
    t = [torch.randn(batch, *shape, generator=gen, dtype=torch.float64) for shape in TEACHER]
    return [x.requires_grad_(True) for x in s], t


def _run(heads: PathwayHeads, active):
    s, t = _inputs()
    losses = heads(s, t, active)
    weights = torch.linspace(0.5, 2.0, len(losses), dtype=losses.dtype)
    (losses * weights).sum().backward()
    grads = {n: p.grad for n, p in heads.named_parameters()}
    return losses.detach(), grads, [x.grad for x in s]


def _assert_same(fused, plain, active):
    lf, gf, xf = _run(fused, active)
    lp, gp, xp = _run(plain, active)
    # the distances run in float32 (as in training); the heads here in float64
    torch.testing.assert_close(lf, lp, rtol=1e-6, atol=1e-7)
    for (name, a), b in zip(gf.items(), gp.values()):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=name)
    for a, b in zip(xf, xp):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    for (name, a), b in zip(fused.state_dict().items(), plain.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)
    return lf


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("pruned", [False, True], ids=["all", "pruned"])
@pytest.mark.parametrize("grouped", [True, False], ids=["grouped", "per_head"])
def test_fused_equals_per_pathway(train, pruned, grouped):
    """Same losses, parameter and input gradients, running stats and batch counts."""
    plain = _heads(False)
    fused = _heads(True, grouped_convs=grouped)
    assert len(fused.groups) == 6 and all(len(g.members) == 3 for g in fused.groups)
    plain.train(train)
    fused.train(train)
    active = [p not in PRUNED for p in range(18)] if pruned else None
    before = copy.deepcopy(plain.state_dict())
    losses = _assert_same(fused, plain, active)
    for p in range(18):
        assert (losses[p] == 0) == (pruned and p in PRUNED)
    changed = [k for k, v in plain.state_dict().items() if not torch.equal(v, before[k])]
    # train mode updated the running stats of exactly the active heads' BatchNorms
    heads_changed = {int(k.split(".")[1]) for k in changed}
    assert heads_changed == (
        set(range(18)) - (set(PRUNED) if pruned else set()) if train else set()
    )


@pytest.mark.parametrize("distance", [hcl_loss, mse_loss, l1_loss, F.smooth_l1_loss])
def test_fused_distances(distance):
    """Every batched distance (and an unbatched custom one) gives the per-pathway losses."""
    plain, fused = _heads(False, distance), _heads(True, distance)
    _assert_same(fused, plain, None)


def test_batched_distances_match_pairwise():
    torch.manual_seed(0)
    for size in (1, 2, 5, 7, 8, 14):
        s, t = torch.randn(3, 4, 2, size, size), torch.randn(3, 2, size, size)
        for batched, pairwise in BATCHED_DISTANCES.items():
            expected = torch.stack([batched(s[:, k], t) for k in range(4)])
            torch.testing.assert_close(pairwise(s, t), expected, msg=f"{batched.__name__} {size}")
    tokens_s, tokens_t = torch.randn(2, 3, 5, 4), torch.randn(2, 5, 4)
    for fn in (hcl_losses, mse_losses, l1_losses):
        expected = torch.stack([F.mse_loss(tokens_s[:, k], tokens_t) for k in range(3)])
        if fn is l1_losses:
            expected = torch.stack([F.l1_loss(tokens_s[:, k], tokens_t) for k in range(3)])
        torch.testing.assert_close(fn(tokens_s, tokens_t), expected)


def _conv_flops(heads, active):
    s, t = _inputs()
    with FlopCounterMode(display=False) as counter:
        heads(s, t, active)
    return counter.get_flop_counts()["Global"][torch.ops.aten.convolution]


def test_pruned_pathways_are_not_computed():
    """Pruned heads: no convolution work, no gradient, no running-stat update."""
    fused, plain = _heads(True, grouped_convs=True), _heads(False)
    active = [p not in PRUNED for p in range(18)]
    per_head = [_conv_flops(plain, [q == p for q in range(18)]) for p in range(18)]
    assert _conv_flops(fused, None) == sum(per_head)
    assert _conv_flops(fused, active) == sum(f for p, f in enumerate(per_head) if active[p])
    _, grads, _ = _run(fused, active)
    for name, g in grads.items():
        assert (g is None) == (int(name.split(".")[1]) in PRUNED), name


def test_frozen_batchnorm_stats_apply_to_fused_heads():
    fused = _heads(True).train()
    before = copy.deepcopy(fused.state_dict())
    with frozen_batchnorm_stats(fused):
        _run(fused, None)
    for k, v in fused.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_state_dict_of_per_pathway_heads_loads_into_fused():
    plain, fused = _heads(False), _heads(True)
    for p in fused.parameters():
        p.data.normal_()  # different weights until the load
    buffer = io.BytesIO()
    torch.save(plain.state_dict(), buffer)
    buffer.seek(0)
    fused.load_state_dict(torch.load(buffer, weights_only=True))
    assert list(fused.state_dict()) == list(plain.state_dict())
    _assert_same(fused, plain, None)


def test_hooked_head_runs_on_its_own():
    fused, plain = _heads(True), _heads(False)
    calls = []
    fused.heads[7].register_forward_hook(lambda *a: calls.append(7))
    _assert_same(fused, plain, None)
    assert calls == [7]


def test_forward_mode_and_functional_call_match():
    """The exact hypergradient's JVP and substituted parameters go through the fused path."""
    fused, plain = _heads(True).eval(), _heads(False).eval()
    s, t = _inputs()
    tangents = [torch.randn_like(x) for x in s]
    params = {n: p.detach() * 1.1 for n, p in plain.named_parameters()}

    def losses(heads, *feats):
        return torch.func.functional_call(heads, params, (list(feats), t, None))

    outs = [
        torch.func.jvp(lambda *f, h=h: losses(h, *f), tuple(s), tuple(tangents))
        for h in (fused, plain)
    ]
    torch.testing.assert_close(outs[0][0], outs[1][0])
    # (the reference's tangent comes out in float64, the fused one in float32)
    torch.testing.assert_close(outs[0][1].double(), outs[1][1].double(), rtol=1e-5, atol=1e-7)


def test_module_training_loss_fused_equals_per_pathway():
    """Through DistProModule: the default (fused) heads and fused_heads=False agree."""
    torch.manual_seed(0)
    fused = make_module(prune_threshold=0.5)
    torch.manual_seed(0)
    plain = make_module(prune_threshold=0.5, fused_heads=False)
    assert fused.distill_heads.fused and not plain.distill_heads.fused
    for a, b in zip(fused.state_dict(keep_vars=True).values(), plain.state_dict().values()):
        assert torch.equal(a, b)
    logits = torch.ones(fused.num_pathways)
    logits[[1, 5, 6, 7, 20]] = 0.0
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    results = []
    for m in (fused, plain):
        m.alpha_logits.copy_(logits)
        loss, _, losses, _ = m.training_loss((x, y))
        loss.backward()
        results.append((losses.detach(), [p.grad for p in m.distill_heads.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(results[0][1], results[1][1]):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def _compiler_unavailable() -> str | None:
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(3))
    except Exception as err:  # noqa: BLE001 - any failure means no working toolchain here
        return f"{type(err).__name__}: {err}"
    return None


@pytest.mark.slow
def test_compiled_heads_equal_eager():
    """``compiled=True`` (the fused graph): same losses, gradients and state as eager."""
    reason = _compiler_unavailable()
    if reason is not None:
        pytest.skip(f"torch.compile does not work here: {reason[:200]}")
    specs = build_specs(["t0"], ["s0"], [(0, 0)], ["conv_bn", "attn2"])
    torch.manual_seed(0)
    eager = PathwayHeads(specs, [(4, 4, 4)], [(6, 2, 2)], hcl_loss)
    auto = PathwayHeads(specs, [(4, 4, 4)], [(6, 2, 2)], hcl_loss, compiled=True)
    assert not auto.fused  # compiled: per-pathway form unless fused=True is asked for
    compiled = PathwayHeads(specs, [(4, 4, 4)], [(6, 2, 2)], hcl_loss, fused=True, compiled=True)
    compiled.load_state_dict(eager.state_dict())
    assert list(compiled.state_dict()) == list(eager.state_dict())
    s, t = [torch.randn(3, 4, 4, 4)], [torch.randn(3, 6, 2, 2)]
    results = []
    for heads in (eager, compiled):
        feats = [s[0].clone().requires_grad_(True)]
        losses = heads(feats, t)
        grads = torch.autograd.grad(losses.sum() * 2, [*heads.parameters(), *feats])
        results.append((losses, grads))
    torch.testing.assert_close(results[1][0], results[0][0])
    for a, b in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(a, b)
    for a, b in zip(compiled.state_dict().values(), eager.state_dict().values()):
        torch.testing.assert_close(a, b)  # running statistics updated alike


@pytest.mark.slow
def test_heads_cost_benchmark_tiny(tmp_path):
    """``benchmarks/heads_cost.py`` in a tiny form (timings are not asserted)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    out = tmp_path / "heads.json"
    args = ["--batch", "4", "--repeats", "1", "--warmup", "0", "--fractions", "0", "0.5"]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.heads_cost", *args, "--threads", "1"]
        + ["--device", "cpu", "--teacher", "none", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["heads"]) == {"0", "0.5"} and result["heads"]["0.5"]["pruned"] == 14
    assert all(v < 1e-3 for v in result["max_rel_deviation_from_per_pathway"].values())
    assert result["ratios"]["retrain_unpruned_over_reviewkd_fused"] > 0

"""Cost of the pathway heads: fused vs per-pathway, by pruned fraction; and the retrain step.

    .venv/bin/python -m benchmarks.heads_cost --threads 2     # CPU
    python -m benchmarks.heads_cost --device cuda --compile    # GPU

resnet20 -> resnet8 taps on Fashion-MNIST shaped batches (1x28x28), 27 pathways (3x3 taps x
``conv_bn``/``attn2``/``attn3``), HCL. Two tables, every variant interleaved with the others
(A, B, C, ..., A, B, C, ...), median and interquartile range:

1. ``heads``: ``PathwayHeads.forward`` + backward (what ``DistProModule.pathway_forward``
   calls) on fixed student/teacher features, per variant (per-pathway; fused with grouped
   3x3 convolutions; fused with one 3x3 convolution per head; with ``--compile`` the
   compiled per-pathway and fused heads), at each pruned fraction (a random subset of the
   pathways below tau, the same for all variants).
2. ``step``: one DistPro retrain optimizer step (``training_loss``, backward, SGD step, as
   ``training_step`` runs it) with the fused and the per-pathway heads, unpruned and with
   16 of 27 pruned, side by side with a ReviewKD step.

``--compile`` reports the first call (compilation) separately; it is not in the medians.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import torch
import torch.nn.functional as F

from benchmarks.build import build_module
from distpro_lightning import DistProModule
from distpro_lightning.baselines.reviewkd import ReviewKDModule
from distpro_lightning.files import atomic_write_text
from distpro_lightning.functional.losses import get_distance
from distpro_lightning.pathways.heads import PathwayHeads
from distpro_lightning.pathways.taps import FeatureTaps

FRACTIONS = (0.0, 0.25, 0.5, 0.6, 0.75, 0.9)  # 0.6: 16 of 27, as in the step table
N_PRUNED_STEP = 16  # as benchmarks/step_cost.py: ~60 % of 27, the paper's saving at tau = 0.5
COMMON = dict(num_classes=10, in_channels=1, input_shape=[1, 28, 28])


def _module(fused: bool, device: torch.device, teacher, compiled: bool = False) -> DistProModule:
    torch.manual_seed(0)
    return build_module(
        DistProModule,
        student="resnet8",
        teacher=teacher,
        transforms=["conv_bn", "attn2", "attn3"],
        connections="all",
        distance="hcl",
        log_pathway_losses=False,
        prune_threshold=0.5,
        fused_heads=fused,
        compile_heads=compiled,
        **COMMON,
    ).to(device)


def _pruned(n: int, k: int) -> list[bool]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    dropped = set(order[:k])
    return [p not in dropped for p in range(n)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _features(args, device, dp: DistProModule):
    """Student tap features (leaves with grad) and the teacher's output for one batch."""
    x = torch.randn(args.batch, 1, 28, 28, device=device)
    teacher = dp.teacher_outputs(x)
    taps = FeatureTaps(dp.student, dp.student_tap_names, "student")
    with taps.capture() as store:
        dp.student(x)
    return [f.detach().requires_grad_(True) for f in taps.ordered(store)], teacher


def heads_variants(args, device, dp: DistProModule) -> dict[str, Callable[[list[bool]], None]]:
    """One ``run(active)`` per heads variant, all on the same features and weights."""
    feats, teacher = _features(args, device, dp)
    s_shapes = [f.shape[1:] for f in feats]
    t_shapes = [t.shape[1:] for t in teacher.features]
    options = {
        "per_pathway": dict(fused=False),
        "fused_grouped": dict(fused=True, grouped_convs=True),
        "fused_per_head": dict(fused=True, grouped_convs=False),
    }
    if args.compile:
        options["compiled_per_pathway"] = dict(fused=False, compiled=True)
        options["compiled_fused"] = dict(fused=True, compiled=True)
    weights = torch.linspace(0.5, 1.5, dp.num_pathways, device=device)
    runs = {}
    for name, kw in options.items():
        heads = PathwayHeads(dp.pathway_specs, s_shapes, t_shapes, get_distance("hcl"), **kw)
        heads.load_state_dict(dp.distill_heads.state_dict())
        heads.to(device).train()

        def run(active, heads=heads):
            losses = heads(feats, teacher.features, active)
            (losses * weights).sum().backward()
            grads = [p.grad for p in heads.parameters()] + [f.grad for f in feats]
            for p in heads.parameters():
                p.grad = None
            for f in feats:
                f.grad = None
            return losses.detach(), grads

        runs[name] = run
    return runs


def retrain_steps(args, device) -> dict[str, Callable[[], None]]:
    teacher = args.teacher if args.teacher and Path(args.teacher).is_file() else "resnet20"
    fused, plain = _module(True, device, teacher), _module(False, device, teacher)
    rk = build_module(
        ReviewKDModule, student="resnet8", teacher=fused.teacher, warmup_epochs=0, **COMMON
    )
    rk.to(device).train()
    x = torch.randn(args.batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    ones = torch.ones(fused.num_pathways, device=device)
    pruned = torch.tensor(_pruned(fused.num_pathways, N_PRUNED_STEP), device=device).float()

    def sgd(params):
        return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)

    def step(module, logits):
        module.train()
        opt = sgd(list(module.student.parameters()) + list(module.distill_heads.parameters()))

        def run():
            module.alpha_logits.copy_(logits)
            loss, *_ = module.training_loss((x, y))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return run

    opt_rk = sgd(list(rk.student.parameters()) + list(rk.abfs.parameters()))

    def reviewkd():
        logits, review = rk.review_loss(x)
        (F.cross_entropy(logits, y) + review).backward()
        opt_rk.step()
        opt_rk.zero_grad(set_to_none=True)

    steps = {
        "reviewkd": reviewkd,
        "retrain_fused": step(fused, ones),
        "retrain_per_pathway": step(plain, ones),
        "retrain_pruned_fused": step(fused, pruned),
        "retrain_pruned_per_pathway": step(plain, pruned),
    }
    if args.compile:  # the first (warm-up) call of each pruning pattern compiles
        compiled = _module(args.compile_fused, device, teacher, compiled=True)
        steps["retrain_compiled"] = step(compiled, ones)
        steps["retrain_pruned_compiled"] = step(compiled, pruned)
    return steps


def _tf32(v: torch.Tensor) -> torch.Tensor:
    """``v`` with its mantissa cut to TF32's 10 bits (straight-through gradient)."""
    cut = (v.detach().view(torch.int32) & ~0x1FFF).view(torch.float32)
    return v + (cut - v.detach())


def tf32_sensitivity(args, dp: DistProModule) -> dict[str, float]:
    """How far TF32 convolutions move the per-pathway heads' losses and gradients, on CPU.

    cuDNN runs float32 convolutions in TF32 by default (``torch.backends.cudnn.allow_tf32``),
    so on a GPU two correct implementations that pick different convolution kernels (fused
    vs per-pathway) differ by TF32 rounding. Here the per-pathway heads run once in float32
    and once with every convolution's input and weight cut to TF32's mantissa, compared by
    the same measure as ``max_rel_deviation_from_per_pathway``.
    """
    feats, teacher = _features(args, torch.device("cpu"), dp)
    weights = torch.linspace(0.5, 1.5, dp.num_pathways)

    def run(heads):
        losses = heads(feats, teacher.features, None)
        (losses * weights).sum().backward()
        grads = [p.grad for p in heads.parameters()] + [f.grad for f in feats]
        for f in feats:
            f.grad = None
        return losses.detach(), grads

    plain = PathwayHeads(
        dp.pathway_specs,
        [f.shape[1:] for f in feats],
        [t.shape[1:] for t in teacher.features],
        get_distance("hcl"),
        fused=False,
    )
    plain.load_state_dict(dp.distill_heads.state_dict())
    reference = run(copy.deepcopy(plain))
    conv2d = F.conv2d
    with mock.patch.object(F, "conv2d", lambda i, w, *a, **k: conv2d(_tf32(i), _tf32(w), *a, **k)):
        rounded = run(copy.deepcopy(plain))
    return {"max_rel_deviation_tf32_convs": _deviation(rounded, reference)}


def _deviation(out, reference) -> float:
    """Largest relative difference of losses and gradients (each tensor by its max)."""
    pairs = [(out[0], reference[0]), *zip(out[1], reference[1])]
    return max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)) for a, b in pairs)


def interleaved(fns: dict[str, Callable[[], None]], args, device) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for rep in range(args.warmup + args.repeats):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            if rep >= args.warmup:
                times[name].append(time.perf_counter() - t0)
        print(f"repeat {rep + 1}/{args.warmup + args.repeats}", file=sys.stderr)
    return times


def summary(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    def iqr(v):
        q = statistics.quantiles(v, n=4) if len(v) >= 2 else [v[0]] * 3
        return q[2] - q[0]

    return {k: {"median_s": statistics.median(v), "iqr_s": iqr(v)} for k, v in times.items()}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--teacher", default="runs/fashion_mnist/teacher/teacher.ckpt")
    p.add_argument("--compile", action="store_true", help="add the torch.compile'd heads")
    p.add_argument(
        "--compile-fractions",
        type=float,
        nargs="+",
        default=[0.0, 0.6],
        help="pruned fractions at which the compiled heads are timed (each pattern compiles)",
    )
    p.add_argument(
        "--compile-fused",
        type=int,
        default=0,
        help="heads of the compiled retrain step: 1 fused, 0 per-pathway (default)",
    )
    p.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS))
    p.add_argument("--skip-step", action="store_true", help="only the heads table")
    p.add_argument(
        "--tf32-sensitivity",
        action="store_true",
        help="only measure how far TF32 convolutions move the heads (CPU emulation), to "
        "benchmarks/results/tf32_sensitivity.json",
    )
    p.add_argument(
        "--out", default=None, help="default: benchmarks/results/heads_cost_<device>.json"
    )
    return p


def first_calls(
    variants: dict[str, Callable[[list[bool]], None]], n: int, device: torch.device
) -> tuple[dict[str, float], dict[str, float]]:
    """Each variant's first call, outside the timings: the compiled ones' seconds (they
    compile) and every variant's deviation from the per-pathway heads."""
    compile_s, deviation = {}, {}
    reference = variants["per_pathway"](_pruned(n, 0))
    for name, run in variants.items():
        _sync(device)
        t0 = time.perf_counter()
        first = run(_pruned(n, 0))
        _sync(device)
        if name.startswith("compiled"):
            compile_s[name] = time.perf_counter() - t0
        deviation[name] = _deviation(first, reference)
    return compile_s, deviation


def heads_table(
    args: argparse.Namespace,
    variants: dict[str, Callable[[list[bool]], None]],
    n: int,
    device: torch.device,
) -> dict[str, dict]:
    """The ``heads`` table: every variant at each pruned fraction of the ``n`` pathways."""
    heads: dict[str, dict] = {}
    for frac in args.fractions:
        active = _pruned(n, round(frac * n))
        fns = {
            name: (lambda run=run, a=active: run(a))
            for name, run in variants.items()
            if not name.startswith("compiled") or frac in args.compile_fractions
        }
        stats = summary(interleaved(fns, args, device))
        base = stats["per_pathway"]["median_s"]
        for s in stats.values():
            s["over_per_pathway"] = s["median_s"] / base
        heads[f"{frac:g}"] = {"pruned": sum(not a for a in active), **stats}
        print(frac, {k: round(v["over_per_pathway"], 3) for k, v in stats.items()})
    return heads


def step_table(args: argparse.Namespace, device: torch.device) -> dict[str, dict]:
    """The ``step`` table and its ``ratios`` to the ReviewKD step."""
    step = summary(interleaved(retrain_steps(args, device), args, device))
    rk = step["reviewkd"]["median_s"]
    ratios = {
        "retrain_unpruned_over_reviewkd_fused": step["retrain_fused"]["median_s"] / rk,
        "retrain_unpruned_over_reviewkd_per_pathway": step["retrain_per_pathway"]["median_s"] / rk,
        "retrain_pruned_over_reviewkd_fused": step["retrain_pruned_fused"]["median_s"] / rk,
        "retrain_pruned_over_reviewkd_per_pathway": step["retrain_pruned_per_pathway"]["median_s"]
        / rk,
    }
    for name in ("retrain_compiled", "retrain_pruned_compiled"):
        if name in step:
            ratios[f"{name}_over_reviewkd"] = step[name]["median_s"] / rk
    return {"step": step, "ratios": ratios}


def describe_setup(args: argparse.Namespace, n: int, device: torch.device) -> dict[str, Any]:
    """The results file's ``setup``: the pair, the settings and the machine."""
    return {
        "pair": "resnet20 -> resnet8 (Fashion-MNIST 1x28x28)",
        "pathways": n,
        "batch": args.batch,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''} ({platform.node()})",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def main() -> None:
    args = parser().parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compile:  # each (variant, pruning pattern) is one more compiled graph
        torch._dynamo.config.recompile_limit = 64
    device = torch.device(args.device)
    out = Path(args.out or f"benchmarks/results/heads_cost_{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    dp = _module(True, device, "resnet20")
    if args.tf32_sensitivity:
        result = {**tf32_sensitivity(args, dp), "command": " ".join(sys.argv)}
        atomic_write_text("benchmarks/results/tf32_sensitivity.json", json.dumps(result) + "\n")
        print(result)
        return
    variants = heads_variants(args, device, dp)
    compile_s, deviation = first_calls(variants, dp.num_pathways, device)
    print("max relative deviation from per_pathway", deviation)
    result = {
        "heads": heads_table(args, variants, dp.num_pathways, device),
        "compile_first_call_s": compile_s,
        "max_rel_deviation_from_per_pathway": deviation,
    }
    if not args.skip_step:
        result.update(step_table(args, device))
        print(json.dumps(result["ratios"], indent=1))
    result["setup"] = describe_setup(args, dp.num_pathways, device)
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""The step-cost table on one GPU in a few minutes (prepared for a lent H100/H200).

    python -m benchmarks.gpu_step_cost --out benchmarks/results/step_cost_gpu_h100.json
    python -m benchmarks.gpu_step_cost --tiny --device cpu --out /tmp/t.json  # CI

For each head configuration (``fused``, ``per_pathway``, ``fused_compiled``: fused heads
under ``torch.compile``) it builds the steps of ``benchmarks/step_cost.py`` (the very
``SearchStep`` object the callback runs, the module's real update, ReviewKD, Hinton KD; the
resnet20 -> resnet8 pair, batch 128, 27 pathways, 16 pruned), times them interleaved
(median of ``--repeats`` after ``--warmup``; CUDA synchronised) and measures each step's
peak memory (``torch.cuda.max_memory_allocated`` over one step after a warm-up; CPU: the
profiler's allocation events). It stops adding repeats when ``--budget-s`` is spent, so the
whole run fits the device time (5 minutes by default). Ratios per configuration: retrain
(pruned, unpruned) / ReviewKD, search / retrain, search with reuse / retrain, search /
Hinton KD, peak memory search / retrain; the search with its own forward
(``share_training_forward=False``) and with forward differences. ``Trainer.fit`` timings on the GPU:
``benchmarks/step_cost.py --device cuda``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from benchmarks import step_cost  # noqa: E402
from distpro_lightning.files import atomic_write_text

STEPS = [
    "hinton_kd",
    "reviewkd",
    "distpro_retrain",
    "distpro_retrain_pruned",
    "search_fd",
    "search_fd_own_forward",
    "search_forward_difference",
    "search_fd_reuse",
    "search_exact",
]
CONFIGS = {"fused": (True, False), "per_pathway": (False, False), "fused_compiled": (True, True)}


def peak_bytes(fn, device: torch.device) -> int:
    if device.type != "cuda":
        return step_cost._cpu_peak_bytes(fn)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def run_config(args: argparse.Namespace, name: str, deadline: float) -> dict:
    fused, compiled = CONFIGS[name]
    ns = argparse.Namespace(
        batch=args.batch, teacher="none", process=None, fused_heads=fused, compile_heads=compiled
    )
    device = torch.device(args.device)
    fns = step_cost.build(ns, device)
    t0 = time.perf_counter()
    for _ in range(args.warmup):  # compile and autotune happen here
        for m in STEPS:
            fns[m]()
    warm_s = time.perf_counter() - t0
    times: dict[str, list[float]] = {m: [] for m in STEPS}
    for _ in range(args.repeats):
        for m in STEPS:
            times[m].append(step_cost.timed(fns[m], device))
        if time.perf_counter() > deadline:
            break
    med = {m: statistics.median(v) for m, v in times.items()}
    # CPU (the smoke run): the profiler is slow, so only the two steps of the ratio
    measured = STEPS if device.type == "cuda" else ("distpro_retrain", "search_fd")
    peaks = {m: int(peak_bytes(fns[m], device)) for m in measured}
    return {
        "median_s": med,
        "repeats": len(times["search_fd"]),
        "warmup_s": warm_s,
        "peak_memory_bytes": peaks,
        **step_cost.step_ratios(med),
        "peak_memory_search_over_retrain": peaks["search_fd"] / max(peaks["distpro_retrain"], 1),
    }


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--budget-s", type=float, default=240.0, help="stop adding repeats after it")
    p.add_argument("--configs", default="fused,per_pathway,fused_compiled")
    p.add_argument("--tiny", action="store_true", help="batch 8, 2 repeats, 1 warm-up")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--out", default="benchmarks/results/step_cost_gpu.json")
    args = p.parse_args()
    if args.tiny:
        args.batch, args.repeats, args.warmup = 8, 2, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.configs.split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        p.error(f"unknown configs {unknown}; choose from {sorted(CONFIGS)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("no CUDA device: use --device cpu (with --tiny) for a smoke run")
    start = time.perf_counter()
    report: dict = {
        "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "batch": args.batch,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "configs": {},
    }
    for i, name in enumerate(names):
        deadline = start + args.budget_s * (i + 1) / len(names)
        report["configs"][name] = run_config(args, name, deadline)
        print(name, json.dumps({k: v for k, v in report["configs"][name].items() if "_over_" in k}))
    report["wall_s"] = time.perf_counter() - start
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(report, indent=1) + "\n")
    print(f"wrote {out} in {report['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CUDA-path check (run by hand on a GPU machine; CI has none).

    python -m benchmarks.gpu_check --out gpu_check.json

1. the exact hypergradient equals autograd through the unrolled step on the GPU (float64);
2. a search fit (finite differences and exact) under 32-true, bf16-mixed and 16-mixed on the
   GPU: alpha finite and moving, process written;
3. a replay fit under bf16-mixed.
Step timings on the GPU: ``benchmarks/step_cost.py --device cuda``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer

from benchmarks.build import build_module
from distpro_lightning import (
    DistillationProcess,
    DistProModule,
    ProcessScheduleCallback,
    ProcessSearchCallback,
)
from distpro_lightning.data import DigitsDataModule
from distpro_lightning.files import atomic_write_text


def module(**kw):
    torch.manual_seed(0)
    return build_module(
        DistProModule,
        student="resnet8",
        teacher="resnet14",
        num_classes=10,
        in_channels=1,
        input_shape=[1, 8, 8],
        log_pathway_losses=False,
        **kw,
    )


def unrolled_check() -> float:
    m = module(response_kd=True).double().cuda().train()
    m.alpha_logits.copy_(torch.rand(m.num_pathways, dtype=torch.float64, device="cuda") * 2)
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(16, 1, 8, 8, generator=g, dtype=torch.float64).cuda()
    y = torch.randint(0, 10, (16,), generator=g).cuda()
    xv = torch.randn(16, 1, 8, 8, generator=g, dtype=torch.float64).cuda()
    yv = torch.randint(0, 10, (16,), generator=g).cuda()
    params = m.search_parameters().map(lambda p: p.detach().clone().requires_grad_(True))
    a = m.alpha_logits.detach().clone().requires_grad_(True)
    teacher = m.teacher_outputs(x)
    out, losses = m.pathway_forward(x, teacher, None, params)
    loss = F.cross_entropy(out, y) + (m.alpha_weights(a) * losses).sum()
    keys = list(params.student)
    grads = torch.autograd.grad(
        loss, [params.student[k] for k in keys], create_graph=True, allow_unused=True
    )
    new = {k: params.student[k] - 0.1 * gr for k, gr in zip(keys, grads) if gr is not None}
    expected = torch.autograd.grad(F.cross_entropy(m.student_forward(xv, new), yv), a)[0]
    got = ProcessSearchCallback(hypergradient="exact").hypergradient_of(m, (x, y), (xv, yv), lr=0.1)
    return float((got - expected).norm() / expected.norm())


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="gpu_check.json")
    args = p.parse_args()
    assert torch.cuda.is_available(), "no CUDA device"
    report: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    report["exact_vs_unrolled_rel_err"] = unrolled_check()
    tmp = Path(tempfile.mkdtemp())
    fits = {}
    for precision in ("32-true", "bf16-mixed", "16-mixed"):
        for method in ("finite_difference", "exact"):
            m = module()
            path = tmp / f"{precision}-{method}.json"
            cb = ProcessSearchCallback(
                hypergradient=method, output={"save_path": str(path), "plot": False}
            )
            t = Trainer(
                accelerator="gpu",
                devices=1,
                precision=precision,
                max_steps=6,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                callbacks=[cb],
            )
            t0 = time.perf_counter()
            t.fit(m, datamodule=DigitsDataModule(mode="search", subset=1024, batch_size=64))
            proc = DistillationProcess.load(path)
            fits[f"{precision}/{method}"] = {
                "rows": len(proc),
                "finite": bool(torch.isfinite(proc.logits).all()),
                "moved": float((proc.logits[-1] - 1).abs().max()),
                "skipped": cb.skipped_updates,
                "wall_s": time.perf_counter() - t0,
            }
    report["search_fits"] = fits
    replay = module()
    cb = ProcessScheduleCallback(process=str(tmp / "bf16-mixed-finite_difference.json"))
    Trainer(
        accelerator="gpu",
        devices=1,
        precision="bf16-mixed",
        max_steps=8,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[cb],
    ).fit(replay, datamodule=DigitsDataModule(subset=1024, batch_size=64))
    report["replay_bf16_ok"] = True
    atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    ok = report["exact_vs_unrolled_rel_err"] < 1e-4 and all(
        f["finite"] and f["rows"] == 6 and f["moved"] > 0 for f in fits.values()
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

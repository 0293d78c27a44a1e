"""How far TF32 convolutions move the pathway losses and gradients (on CPU, emulated).

    PYTHONPATH=src .venv/bin/python benchmarks/tf32_sensitivity.py

cuDNN runs float32 convolutions in TF32 by default (``torch.backends.cudnn.allow_tf32``),
so on a GPU two correct implementations of the heads that pick different convolution
kernels (fused vs per-pathway) differ by TF32 rounding, not by float32 rounding. This script
measures that scale without a GPU: the per-pathway heads (resnet20 -> resnet8 taps, batch
128, 27 pathways, train mode) once in float32 and once with every convolution's input and
weight rounded to TF32's 10-bit mantissa, compared by the measure ``heads_cost.py`` reports
(largest ``|a - b| / max |b|`` over the loss vector and every gradient).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

from distpro_lightning import DistProModule
from distpro_lightning.taps import FeatureTaps


def _tf32(v: torch.Tensor) -> torch.Tensor:
    """``v`` with its mantissa cut to 10 bits (straight-through gradient)."""
    cut = (v.detach().view(torch.int32) & ~0x1FFF).view(torch.float32)
    return v + (cut - v.detach())


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    dp = DistProModule(
        student="resnet8",
        teacher="resnet20",
        num_classes=10,
        in_channels=1,
        input_shape=[1, 28, 28],
        log_pathways_every_n_steps=0,
        fused_heads=False,
    ).train()
    x = torch.randn(128, 1, 28, 28)
    teacher = dp.teacher_outputs(x)
    taps = FeatureTaps(dp.student, dp.student_tap_names, "student")
    with taps.capture() as store:
        dp.student(x)
    feats = [f.detach().requires_grad_(True) for f in taps.ordered(store)]
    weights = torch.linspace(0.5, 1.5, dp.num_pathways)

    def run(heads):
        losses = heads(feats, teacher.features, None)
        (losses * weights).sum().backward()
        grads = [p.grad for p in heads.parameters()] + [f.grad for f in feats]
        for f in feats:
            f.grad = None
        return [losses.detach(), *grads]

    reference = run(copy.deepcopy(dp.distill_heads))
    conv2d = F.conv2d
    with mock.patch.object(F, "conv2d", lambda i, w, *a, **k: conv2d(_tf32(i), _tf32(w), *a, **k)):
        rounded = run(copy.deepcopy(dp.distill_heads))
    devs = sorted(
        float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
        for a, b in zip(rounded, reference)
    )
    result = {
        "max_rel_deviation": devs[-1],
        "median_rel_deviation": devs[len(devs) // 2],
        "tensors": len(devs),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "torch": torch.__version__,
    }
    out = Path("benchmarks/results/tf32_sensitivity.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

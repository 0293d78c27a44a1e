"""Cost of one optimizer step: plain, Hinton KD, ReviewKD, DistPro retrain, DistPro search,
timed on the code users run.

    .venv/bin/python -m benchmarks.step_cost                 # resnet20 -> resnet8, batch 128
    .venv/bin/python -m benchmarks.step_cost --quick         # a few repeats, for CI

Two measurements, side by side in one run:

1. **Steps** (``median_s``): every method runs the same pair on the same Fashion-MNIST batch;
   repeats are interleaved (method A, B, C, ..., A, B, C, ...) and the median and the
   interquartile range are reported. A search step is the very object
   ``ProcessSearchCallback`` runs (:class:`~distpro_lightning.search.step.SearchStep`: teacher
   once, hypergradient, alpha update), followed by the module's real update (its training
   objective from the search's shared training forward, by default; its own forward with
   ``search_fd_own_forward``; or the reused gradient). ``search_forward_difference``: one
   perturbed forward instead of two. The "floor" is the sum of the passes a central
   finite-difference step cannot avoid: a training forward+backward of student and heads
   (virtual step), a held-out forward+backward of the student, two forwards of student and
   heads (finite differences) and the real update's backward (a retrain step less one
   student + heads forward).
2. **Fits** (``fit``, ``official_pair``): ``Trainer.fit`` with the real callbacks
   (``ProcessSearchCallback``, ``ProcessScheduleCallback``) and the recipes' modules; a timing
   callback, first in the list, measures each optimizer step from ``on_train_batch_start`` to
   ``on_train_batch_end``. Fits are interleaved in rounds (each round: every method, one
   warm-up step then ``repeats / rounds`` timed steps). ``official_pair`` is the official
   release's setting: WRN-40-2 -> WRN-16-2, 100 classes, 3x32x32, batch 64, four taps per
   model, lower-to-higher connections (10 pathways), one ``conv_bn`` transform, HCL.

Peak memory: each method runs in a fresh subprocess, one warm-up step, then one measured
step: the peak of the bytes held by tensors allocated during that step (CPU: the profiler's
allocation events; CUDA: ``torch.cuda.max_memory_allocated`` over the step).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, Trainer
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.build import build_module
from distpro_lightning import (
    DistProModule,
    ProcessScheduleCallback,
    ProcessSearchCallback,
    SearchSettings,
    SearchStep,
)
from distpro_lightning.baselines.recipes import RecipeSettings, build_method, distpro_kwargs
from distpro_lightning.baselines.reviewkd import ReviewKDModule
from distpro_lightning.files import atomic_write_text
from distpro_lightning.functional.losses import hinton_kd_loss
from distpro_lightning.models import create
from distpro_lightning.search.hypergradient import frozen_batchnorm_stats

METHODS = [
    "plain",
    "hinton_kd",
    "reviewkd",
    "distpro_retrain",
    "distpro_retrain_pruned",
    "search_fd",
    "search_fd_own_forward",
    "search_forward_difference",
    "search_exact",
    "search_fd_reuse",
    "search_forward_difference_reuse",
    "floor_virtual_fwd_bwd",
    "floor_heldout_fwd_bwd",
    "floor_two_forwards",
]
MEMORY_NOTE = (
    "peak bytes held by tensors allocated during one step after a warm-up step (CPU: "
    "profiler allocation events; CUDA: max_memory_allocated), excluding weights allocated before"
)
MEMORY_METHODS = tuple(m for m in METHODS if not m.startswith("floor_"))
#: With ``--compiled-retrain``: the retrain steps with ``compile_heads=True`` (per-pathway
#: heads under ``torch.compile``; first calls, which compile, are the warm-up).
COMPILED_METHODS = ["distpro_retrain_compiled", "distpro_retrain_pruned_compiled"]
N_PRUNED = 16  # of 27 pathways (~60 %, the saving the paper reports for tau = 0.5)


def batch(size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from distpro_lightning.data import FashionMNISTDataModule

        dm = FashionMNISTDataModule(data_dir="data", batch_size=size, augment=False)
        x, y = next(iter(dm.train_dataloader()))
    except Exception:  # noqa: BLE001 - timing does not depend on the pixel values
        x, y = torch.randn(size, 1, 28, 28), torch.randint(0, 10, (size,))
    return x.to(device), y.to(device)


COMMON = dict(num_classes=10, in_channels=1, input_shape=[1, 28, 28])
Step = Callable[[], None]


@dataclass
class StepState:
    """What the steps of one `build` share: the modules, their optimizers, the training batch
    ``(x, y)``, the held-out batch ``(xv, yv)`` and the retrain's logits (unpruned, pruned)."""

    dp: DistProModule
    rk: ReviewKDModule
    plain: torch.nn.Module
    opt_dp: torch.optim.Optimizer
    opt_rk: torch.optim.Optimizer
    opt_plain: torch.optim.Optimizer
    x: torch.Tensor
    y: torch.Tensor
    xv: torch.Tensor
    yv: torch.Tensor
    ones: torch.Tensor
    pruned: torch.Tensor


def _sgd(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def _distpro(teacher: Any, device: torch.device, **kwargs: Any) -> DistProModule:
    """The resnet20 -> resnet8 DistPro module of the steps (27 pathways, HCL, tau = 0.5)."""
    return build_module(
        DistProModule,
        student="resnet8",
        teacher=teacher,
        transforms=["conv_bn", "attn2", "attn3"],
        connections="all",
        distance="hcl",
        prune_threshold=0.5,
        log_pathway_losses=False,
        **kwargs,
        **COMMON,
    ).to(device)


def _pruned_logits(args: argparse.Namespace, dp: DistProModule, device: torch.device) -> Any:
    """The pruned retrain's logits: ``--process``'s last row, else `N_PRUNED` pathways at 0."""
    if args.process:
        from distpro_lightning import DistillationProcess

        return DistillationProcess.load(args.process).remap(dp.pathway_names).final().to(device)
    pruned = torch.ones(dp.num_pathways, device=device)
    order = torch.randperm(dp.num_pathways, generator=torch.Generator().manual_seed(0))
    pruned[order[:N_PRUNED]] = 0.0
    return pruned


def step_state(args: argparse.Namespace, device: torch.device) -> StepState:
    """The modules (seeded), their optimizers, the batches and the retrain's logits."""
    torch.manual_seed(0)
    teacher = args.teacher if args.teacher and Path(args.teacher).is_file() else "resnet20"
    dp = _distpro(
        teacher,
        device,
        fused_heads=getattr(args, "fused_heads", None),
        compile_heads=getattr(args, "compile_heads", False),
    )
    dp.train()
    rk = build_module(
        ReviewKDModule, student="resnet8", teacher=dp.teacher, warmup_epochs=0, **COMMON
    ).to(device)
    rk.train()
    plain = create("resnet8", 10, 1).to(device).train()
    x, y = batch(args.batch, device)
    xv, yv = batch(args.batch, device)
    return StepState(
        dp=dp,
        rk=rk,
        plain=plain,
        opt_dp=_sgd(list(dp.student.parameters()) + list(dp.distill_heads.parameters())),
        opt_rk=_sgd(list(rk.student.parameters()) + list(rk.abfs.parameters())),
        opt_plain=_sgd(plain.parameters()),
        x=x,
        y=y,
        xv=xv.flip(0),
        yv=yv,
        ones=torch.ones(dp.num_pathways, device=device),
        pruned=_pruned_logits(args, dp, device),
    )


def baseline_steps(s: StepState) -> dict[str, Step]:
    """The plain (cross-entropy), Hinton KD and ReviewKD steps."""

    def plain_step() -> None:
        _step(s.opt_plain, F.cross_entropy(s.plain(s.x), s.y))

    def kd_step() -> None:
        with torch.no_grad():
            t = s.dp.teacher.eval()(s.x)
        out = s.plain(s.x)
        _step(s.opt_plain, F.cross_entropy(out, s.y) + hinton_kd_loss(out, t, 4.0))

    def reviewkd_step() -> None:
        logits, review = s.rk.review_loss(s.x)
        _step(s.opt_rk, F.cross_entropy(logits, s.y) + review)

    return {"plain": plain_step, "hinton_kd": kd_step, "reviewkd": reviewkd_step}


def _retrain_step(
    dp: DistProModule, opt: torch.optim.Optimizer, s: StepState, logits: torch.Tensor
) -> Step:
    def run() -> None:
        dp.alpha_logits.copy_(logits)
        loss, *_ = dp.training_loss((s.x, s.y))
        _step(opt, loss)

    return run


def _search_step(s: StepState, method: str, reuse: bool = False, share: bool = True) -> Step:
    settings = SearchSettings(
        hypergradient=method, reuse_training_gradient=reuse, share_training_forward=share
    )
    search_step = SearchStep(s.dp, s.opt_dp, settings)

    def run() -> None:
        s.dp.alpha_logits.copy_(s.ones)  # same state every repeat (no drift into pruning)
        search_step.alpha.data.copy_(s.ones)
        search_step((s.x, s.y), (s.xv, s.yv), step=0)
        if reuse:
            _step(s.opt_dp, s.dp.take_reused_gradient().surrogate_loss())
        else:
            loss, *_ = s.dp.training_loss((s.x, s.y))
            _step(s.opt_dp, loss)
        s.dp.step_context = None

    return run


def distpro_steps(s: StepState) -> dict[str, Step]:
    """The DistPro retrain steps (unpruned, pruned) and search steps."""
    fd, fwd = "finite_difference", "forward_difference"
    return {
        "distpro_retrain": _retrain_step(s.dp, s.opt_dp, s, s.ones),
        "distpro_retrain_pruned": _retrain_step(s.dp, s.opt_dp, s, s.pruned),
        "search_fd": _search_step(s, fd),
        "search_fd_own_forward": _search_step(s, fd, share=False),
        "search_forward_difference": _search_step(s, fwd),
        "search_exact": _search_step(s, "exact"),
        "search_fd_reuse": _search_step(s, fd, reuse=True),
        "search_forward_difference_reuse": _search_step(s, fwd, reuse=True),
    }


def floor_steps(s: StepState, teacher_out: Any) -> dict[str, Step]:
    """The passes a central finite-difference search step cannot avoid (the floor)."""
    dp, x = s.dp, s.x

    def floor_virtual() -> None:
        dp.alpha_logits.copy_(s.ones)
        theta = dp.search_parameters().student
        with frozen_batchnorm_stats(dp.student, dp.distill_heads):
            loss = dp.objective(x, s.y, teacher_out, dp.alpha_weights()).loss
            torch.autograd.grad(loss, list(theta.values()))

    def floor_heldout() -> None:
        params = {
            k: p.detach().requires_grad_(True) for k, p in dp.search_parameters().student.items()
        }
        with frozen_batchnorm_stats(dp.student):
            loss = F.cross_entropy(dp.student_forward(s.xv, params), s.yv)
            torch.autograd.grad(loss, list(params.values()))

    def floor_two_forwards() -> None:
        params = dp.search_parameters().map(lambda p: p.detach())
        with torch.no_grad(), frozen_batchnorm_stats(dp.student, dp.distill_heads):
            for _ in range(2):
                dp.pathway_forward(x, teacher_out, None, params)

    return {
        "floor_virtual_fwd_bwd": floor_virtual,
        "floor_heldout_fwd_bwd": floor_heldout,
        "floor_two_forwards": floor_two_forwards,
    }


def compiled_retrain_steps(s: StepState, device: torch.device) -> dict[str, Step]:
    """`COMPILED_METHODS`: the retrain steps of a copy of the module with ``compile_heads``."""
    dpc = _distpro(s.dp.teacher, device, compile_heads=True)
    dpc.load_state_dict(s.dp.state_dict())
    dpc.train()
    opt = _sgd(list(dpc.student.parameters()) + list(dpc.distill_heads.parameters()))
    return {
        "distpro_retrain_compiled": _retrain_step(dpc, opt, s, s.ones),
        "distpro_retrain_pruned_compiled": _retrain_step(dpc, opt, s, s.pruned),
    }


def build(args: argparse.Namespace, device: torch.device) -> dict[str, Callable[[], None]]:
    """Every step of `METHODS`, and of `COMPILED_METHODS` with ``args.compiled_retrain``;
    sets ``args.n_pruned`` and ``args.pruned_logits`` (the pruned retrain's)."""
    s = step_state(args, device)
    args.n_pruned = int((s.pruned <= 0.5).sum())
    args.pruned_logits = s.pruned
    teacher_out = s.dp.teacher_outputs(s.x)
    compiled = {}
    if getattr(args, "compiled_retrain", False):
        compiled = compiled_retrain_steps(s, device)
    return {**baseline_steps(s), **distpro_steps(s), **floor_steps(s, teacher_out), **compiled}


def step_ratios(med: dict[str, float]) -> dict[str, float]:
    """The ratios of the step medians that the CPU and the GPU scripts both report."""
    retrain = med["distpro_retrain"]
    return {
        "retrain_over_reviewkd": med["distpro_retrain_pruned"] / med["reviewkd"],
        "retrain_unpruned_over_reviewkd": retrain / med["reviewkd"],
        "search_over_retrain": med["search_fd"] / retrain,
        "search_reuse_over_retrain": med["search_fd_reuse"] / retrain,
        "search_forward_difference_over_retrain": med["search_forward_difference"] / retrain,
        "search_own_forward_over_search": med["search_fd_own_forward"] / med["search_fd"],
        "search_over_kd": med["search_fd"] / med["hinton_kd"],
    }


def timed(fn: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------- Trainer.fit
#: The official release's pair and setting (bytedance/DistPro): four taps per model (the stem
#: and the three stages), teacher level i -> student levels j >= i: 10 pathways.
OFFICIAL_TAPS = ["conv1", "block1", "block2", "block3"]
OFFICIAL = dict(
    student="wrn_16_2",
    teacher="wrn_40_2",
    num_classes=100,
    in_channels=3,
    input_shape=[3, 32, 32],
    student_taps=OFFICIAL_TAPS,
    teacher_taps=OFFICIAL_TAPS,
    connections="lower_to_higher",
    transforms=["conv_bn"],
    distance="hcl",
    log_pathway_losses=False,
)
#: Per-step seconds measured on the 2-core CPU machine, idle, for this pair: the official
#: release (KD retrain step, search step) and this project's callback before the search step
#: was split out of it.
OFFICIAL_REFERENCE = {
    "official_release": {"kd_retrain_s": 0.715, "search_s": 3.02, "search_over_retrain": 4.23},
    "previous_callback": {"retrain_s": 0.321, "search_s": 0.844, "search_over_retrain": 2.63},
}


class StepTimer(Callback):
    """Seconds of each optimizer step, from ``on_train_batch_start`` (first callback) to
    ``on_train_batch_end`` (the search, the training step, backward and optimizer step)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times: list[float] = []
        self._t0 = 0.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._sync()
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync()
        self.times.append(time.perf_counter() - self._t0)


@dataclass
class FitMethod:
    """A module (built once) and the callbacks of one fit (built per fit)."""

    module: Any
    callbacks: Callable[[], list[Callback]]


def _retrain(module: Any, logits: torch.Tensor) -> FitMethod:
    process = module.new_process({})
    process.append(logits)
    return FitMethod(module, lambda: [ProcessScheduleCallback(process=process, mode="final")])


def _search(
    module: Any, held_out: DataLoader, method: str, reuse: bool = False, share: bool = True
) -> FitMethod:
    def callbacks() -> list[Callback]:
        module.alpha_logits.fill_(1.0)  # every fit starts at a~ = 1 (no drift into pruning)
        cb = ProcessSearchCallback(
            hypergradient={
                "method": method,
                "reuse_training_gradient": reuse,
                "share_training_forward": share,
            },
            output={"save_path": None, "plot": False},
        )
        cb.search_val_loader = held_out
        return [cb]

    return FitMethod(module, callbacks)


def resnet_fit_methods(args: argparse.Namespace, teacher: str, loaders: Any) -> dict:
    """The resnet20 -> resnet8 methods as the recipes build them."""
    settings = RecipeSettings(num_classes=10, in_channels=1, input_shape=(1, 28, 28))
    methods = {
        name: FitMethod(build_method(name, "resnet8", teacher, None, settings)[0], list)
        for name in ("hinton_kd", "reviewkd")
    }
    dp = {
        k: build_module(DistProModule, **distpro_kwargs("resnet8", teacher, settings))
        for k in range(7)
    }
    ones = torch.ones(dp[0].num_pathways)
    methods["distpro_retrain"] = _retrain(dp[0], ones)
    methods["distpro_retrain_pruned"] = _retrain(dp[1], args.pruned_logits.cpu())
    fd = "finite_difference"
    methods["search_fd"] = _search(dp[2], loaders[1], fd)
    methods["search_fd_own_forward"] = _search(dp[5], loaders[1], fd, share=False)
    methods["search_forward_difference"] = _search(dp[6], loaders[1], "forward_difference")
    methods["search_exact"] = _search(dp[3], loaders[1], "exact")
    methods["search_fd_reuse"] = _search(dp[4], loaders[1], fd, reuse=True)
    dp[7] = build_module(DistProModule, **distpro_kwargs("resnet8", teacher, settings))
    methods["search_forward_difference_reuse"] = _search(
        dp[7], loaders[1], "forward_difference", reuse=True
    )
    return methods


def official_fit_methods(loaders: Any) -> dict:
    """The official release's pair: a DistPro retrain and DistPro searches."""
    modules = [build_module(DistProModule, **OFFICIAL) for _ in range(3)]
    return {
        "distpro_retrain": _retrain(modules[0], torch.ones(modules[0].num_pathways)),
        "search_fd": _search(modules[1], loaders[1], "finite_difference"),
        "search_forward_difference": _search(modules[2], loaders[1], "forward_difference"),
    }


def _loaders(x: torch.Tensor, y: torch.Tensor, steps: int) -> tuple[DataLoader, DataLoader]:
    """A training loader of ``steps`` batches (copies of ``(x, y)``) and a held-out one."""
    batch = x.shape[0]
    train = TensorDataset(x.cpu().repeat(steps, *[1] * (x.dim() - 1)), y.cpu().repeat(steps))
    held_out = TensorDataset(x.cpu().flip(0), y.cpu().flip(0))
    return DataLoader(train, batch_size=batch), DataLoader(held_out, batch_size=batch)


def time_fits(args: argparse.Namespace, methods: dict, train: DataLoader) -> dict:
    """Per-step seconds of every method's fits, interleaved in rounds."""
    rounds = max(1, min(args.rounds, args.repeats))
    per_round = [args.repeats // rounds + (r < args.repeats % rounds) for r in range(rounds)]
    times: dict[str, list[float]] = {name: [] for name in methods}
    for r, steps in enumerate(per_round):
        for name, method in methods.items():
            timer = StepTimer(torch.device(args.device))
            trainer = Trainer(
                accelerator="cuda" if args.device.startswith("cuda") else "cpu",
                devices=1,
                max_epochs=1,
                max_steps=args.fit_warmup + steps,
                limit_val_batches=0,
                num_sanity_val_steps=0,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                callbacks=[timer, *method.callbacks()],
            )
            trainer.fit(method.module, train_dataloaders=train)
            times[name] += timer.times[args.fit_warmup :]
        print(f"fit round {r + 1}/{rounds}", file=sys.stderr)
    return times


def fit_report(times: dict[str, list[float]]) -> dict[str, Any]:
    med = {m: statistics.median(v) for m, v in times.items()}
    report: dict[str, Any] = {
        "search_over_retrain": med["search_fd"] / med["distpro_retrain"],
        "median_s": med,
        "iqr_s": {m: iqr(v) for m, v in times.items()},
        "raw_s": times,
    }
    if "reviewkd" in med:
        report["retrain_over_reviewkd"] = med["distpro_retrain_pruned"] / med["reviewkd"]
        report["retrain_unpruned_over_reviewkd"] = med["distpro_retrain"] / med["reviewkd"]
        report["search_over_kd"] = med["search_fd"] / med["hinton_kd"]
    for name in (
        "search_fd_reuse",
        "search_fd_own_forward",
        "search_forward_difference",
        "search_forward_difference_reuse",
    ):
        if name in med:
            short = name.removeprefix("search_fd_").removeprefix("search_")
            report[f"search_{short}_over_retrain"] = med[name] / med["distpro_retrain"]
    return report


def iqr(v: list[float]) -> float:
    q = statistics.quantiles(v, n=4) if len(v) >= 2 else [v[0]] * 3
    return q[2] - q[0]


def _cpu_peak_bytes(fn: Callable[[], None]) -> int:
    """Peak of the bytes held by tensors allocated during ``fn`` (the CPU analogue of
    ``torch.cuda.max_memory_allocated``), from the profiler's allocation events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]"
    )
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak


def memory_child(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    fns = build(args, device)
    fn = fns[args.memory_child]
    fn()  # warm-up: optimizer state and caches exist, as in a running fit
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _cpu_peak_bytes(fn)
    print(json.dumps({"peak_bytes": int(peak)}))


def measure_memory(args: argparse.Namespace) -> dict[str, int]:
    peaks = {}
    for m in MEMORY_METHODS:
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.step_cost",
            "--memory-child",
            m,
            "--batch",
            str(args.batch),
            "--device",
            args.device,
            "--teacher",
            args.teacher,
        ]
        if args.process:
            cmd += ["--process", args.process]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        peaks[m] = json.loads(out.strip().splitlines()[-1])["peak_bytes"]
    return peaks


FLOP_METHODS = (
    "hinton_kd",
    "reviewkd",
    "distpro_retrain",
    "distpro_retrain_pruned",
    "search_fd",
    "search_forward_difference",
    "search_fd_reuse",
    "search_forward_difference_reuse",
)


def measure_flops(args: argparse.Namespace) -> dict[str, Any]:
    """Floating-point operations of one step of each of `FLOP_METHODS`
    (``torch.utils.flop_counter``: matmuls and convolutions, forward and backward), after a
    warm-up step: what the step must compute, whatever the kernels."""
    from torch.utils.flop_counter import FlopCounterMode

    fns = build(args, torch.device(args.device))
    flops = {}
    for m in FLOP_METHODS:
        fns[m]()
        with FlopCounterMode(display=False) as counter:
            fns[m]()
        flops[m] = int(counter.get_total_flops())
    return {
        "flops": flops,
        "flops_retrain_unpruned_over_reviewkd": flops["distpro_retrain"] / flops["reviewkd"],
        "flops_retrain_over_reviewkd": flops["distpro_retrain_pruned"] / flops["reviewkd"],
        "flops_search_over_retrain": flops["search_fd"] / flops["distpro_retrain"],
        **{
            f"flops_{m.removeprefix('search_fd_').removeprefix('search_')}_over_retrain": flops[m]
            / flops["distpro_retrain"]
            for m in FLOP_METHODS[5:]
        },
    }


def memory_report(peaks: dict[str, int]) -> dict[str, Any]:
    """The peaks and their ratios: search / Hinton KD and search / (unpruned) retrain."""
    return {
        "peak_memory_bytes": peaks,
        "peak_memory_search_over_kd": peaks["search_fd"] / max(peaks["hinton_kd"], 1),
        "peak_memory_search_over_retrain": peaks["search_fd"] / max(peaks["distpro_retrain"], 1),
        "peak_memory_note": MEMORY_NOTE,
    }


def run_fits(args: argparse.Namespace) -> dict[str, Any]:
    """The ``Trainer.fit`` measurements: the resnet pair, then the official release's pair."""
    steps = args.fit_warmup + -(-args.repeats // max(1, min(args.rounds, args.repeats)))
    teacher = args.teacher if args.teacher and Path(args.teacher).is_file() else "resnet20"
    torch.manual_seed(0)
    x, y = batch(args.batch, torch.device("cpu"))
    loaders = _loaders(x, y, steps)
    fit = fit_report(time_fits(args, resnet_fit_methods(args, teacher, loaders), loaders[0]))
    g = torch.Generator().manual_seed(0)
    xo = torch.randn(args.official_batch, 3, 32, 32, generator=g)
    yo = torch.randint(0, 100, (args.official_batch,), generator=g)
    loaders = _loaders(xo, yo, steps)
    torch.manual_seed(0)
    official = fit_report(time_fits(args, official_fit_methods(loaders), loaders[0]))
    official["setup"] = {
        **{k: v for k, v in OFFICIAL.items() if k != "log_pathway_losses"},
        "pathways": 10,
        "batch": args.official_batch,
        "weights": "random (timing does not depend on them)",
    }
    official.update(OFFICIAL_REFERENCE)
    return {"fit": fit, "official_pair": official, **top_level_ratios(fit, official)}


def top_level_ratios(fit: dict[str, Any], official: dict[str, Any]) -> dict[str, float]:
    """The fits' ratios at the top of the results file: ``fit_<ratio>``, ``official_<ratio>``."""
    out = {}
    for prefix, report in (("fit_", fit), ("official_", official)):
        for key, value in report.items():
            if key.endswith(("_over_retrain", "_over_reviewkd")) and prefix + key not in out:
                out[prefix + key] = value
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="3 repeats, batch 32, no memory runs")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--teacher", default="runs/fashion_mnist/teacher/teacher.ckpt")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--out", default="benchmarks/results/step_cost.json")
    p.add_argument(
        "--process",
        default=None,
        help="take the pruned retrain's logits from this process's last row "
        f"(default: {N_PRUNED} of 27 pathways pruned, the paper's ~60 %%)",
    )
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--no-flops", action="store_true")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the fits")
    p.add_argument("--fit-warmup", type=int, default=1, help="untimed steps per fit")
    p.add_argument("--official-batch", type=int, default=64)
    p.add_argument("--no-fits", action="store_true", help="only the step measurements")
    p.add_argument(
        "--memory-only",
        action="store_true",
        help="only (re)measure peak memory and update the --out file",
    )
    p.add_argument(
        "--compiled-retrain",
        action="store_true",
        help="also time the retrain with compile_heads=True (compiles in the warm-up)",
    )
    p.add_argument(
        "--flops-only",
        action="store_true",
        help="only (re)count the floating-point operations and update the --out file",
    )
    p.add_argument("--memory-child", choices=METHODS, help=argparse.SUPPRESS)
    return p


def update_flops(args: argparse.Namespace) -> None:
    """``--flops-only``: recount the FLOPs into the ``--out`` file."""
    out = Path(args.out)
    result = json.loads(out.read_text())
    result.update(measure_flops(args))
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k.startswith("flops")}, indent=1))


def update_memory(args: argparse.Namespace) -> None:
    """``--memory-only``: remeasure the peak memory into the ``--out`` file."""
    out = Path(args.out)
    result = json.loads(out.read_text())
    peaks = measure_memory(args)
    result.update(memory_report(peaks))
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    print(json.dumps(peaks, indent=1), result["peak_memory_search_over_kd"])


def time_steps(
    args: argparse.Namespace, fns: dict[str, Step], methods: list[str], device: torch.device
) -> dict[str, list[float]]:
    """Seconds of each method's steps, interleaved, after ``args.warmup`` untimed repeats."""
    times: dict[str, list[float]] = {m: [] for m in methods}
    for rep in range(args.warmup + args.repeats):
        for m in methods:
            t = timed(fns[m], device)
            if rep >= args.warmup:
                times[m].append(t)
        print(f"repeat {rep + 1}/{args.warmup + args.repeats}", file=sys.stderr)
    return times


def steps_report(args: argparse.Namespace, times: dict[str, list[float]]) -> dict[str, Any]:
    """The steps' medians, spreads and ratios, the floor's among them."""
    med = {m: statistics.median(v) for m, v in times.items()}
    # the real update's forward is the virtual step's (shared): a retrain step less one
    # student + heads forward (half of the two perturbed forwards)
    floor = (
        med["floor_virtual_fwd_bwd"]
        + med["floor_heldout_fwd_bwd"]
        + med["floor_two_forwards"] / 2
        + med["distpro_retrain"]
    )
    result = {
        **step_ratios(med),
        "search_over_floor": med["search_fd"] / floor,
        "search_floor_s": floor,
        "exact_search_over_kd": med["search_exact"] / med["hinton_kd"],
        "search_reuse_over_search": med["search_fd_reuse"] / med["search_fd"],
        "search_forward_difference_reuse_over_retrain": med["search_forward_difference_reuse"]
        / med["distpro_retrain"],
        "forward_difference_over_search": med["search_forward_difference"] / med["search_fd"],
        "search_over_plain": med["search_fd"] / med["plain"],
        "median_s": med,
        "iqr_s": {m: iqr(v) for m, v in times.items()},
        "raw_s": times,
    }
    if args.compiled_retrain:
        result["retrain_compiled_over_reviewkd"] = med["distpro_retrain_compiled"] / med["reviewkd"]
        result["retrain_pruned_compiled_over_reviewkd"] = (
            med["distpro_retrain_pruned_compiled"] / med["reviewkd"]
        )
    return result


def describe_setup(args: argparse.Namespace) -> dict[str, Any]:
    """The results file's ``setup``: the pair, the settings and the machine."""
    return {
        "pair": "resnet20 -> resnet8 (Fashion-MNIST 1x28x28)",
        "pathways": 27,
        "pruned_in_retrain_pruned": args.n_pruned,
        "pruned_logits_from": args.process or f"synthetic: {N_PRUNED} of 27 below tau",
        "batch": args.batch,
        "repeats": args.repeats,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "load_average_1_5_15_min_at_end": list(os.getloadavg()),
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''} ({platform.node()})",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def print_report(result: dict[str, Any], methods: list[str], out: Path) -> None:
    med = result["median_s"]
    print(f"{'method':<32} {'median s':>10} {'IQR s':>8}")
    for m in methods:
        print(f"{m:<32} {med[m]:>10.4f} {result['iqr_s'][m]:>8.4f}")
    for part in ("fit", "official_pair"):
        for m, v in result.get(part, {}).get("median_s", {}).items():
            print(f"{part + ':' + m:<40} {v:>10.4f} {result[part]['iqr_s'][m]:>8.4f}")
    for k, v in result.items():
        if isinstance(v, float):
            print(f"{k:<48} {v:.3f}")
    print(f"wrote {out}")


def main() -> None:
    args = parser().parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.repeats, args.warmup, args.batch, args.no_memory = 3, 1, 32, True
    if args.memory_child:
        memory_child(args)
        return
    if args.flops_only:
        update_flops(args)
        return
    if args.memory_only:
        update_memory(args)
        return
    device = torch.device(args.device)
    fns = build(args, device)
    methods = METHODS + (COMPILED_METHODS if args.compiled_retrain else [])
    result = steps_report(args, time_steps(args, fns, methods, device))
    if not args.no_fits:
        result.update(run_fits(args))
    if not args.no_memory:
        peaks = measure_memory(args)
        result.update(memory_report(peaks))
    if not args.no_flops:
        result.update(measure_flops(args))
    result["setup"] = describe_setup(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    print_report(result, methods, out)


if __name__ == "__main__":
    main()

"""Methods, searches and controls of the converged protocol, each built from the library's
public API (``DistProModule``, ``ReviewKDModule``, ``ClassifierModule``, the two callbacks)
and trained with ``Trainer.fit``."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from torch import Tensor, nn

from benchmarks.build import build_module
from benchmarks.converged_grids import parse_params
from distpro_lightning import ClassifierModule, DistProModule, ProcessSearchCallback
from distpro_lightning.baselines.recipes import METHODS as TABLE1_METHODS
from distpro_lightning.baselines.recipes import RecipeSettings, distpro_kwargs
from distpro_lightning.baselines.reviewkd import ReviewKDModule
from distpro_lightning.compare.methods import FixedWeights, fixed_shares
from distpro_lightning.models import create
from distpro_lightning.process.core import DistillationProcess
from distpro_lightning.replay import ProcessScheduleCallback

PAIRS = {
    "resnet20-resnet8": ("resnet20", "resnet8"),
    "wrn_16_2-mobilenet_v2": ("wrn_16_2", "mobilenet_v2"),
    # issue 34's third pair (paper Table 1), named before its first run and used for no
    # choice at all: it tests the frozen recipe out of sample
    "wrn_40_2-shufflenet_v1": ("wrn_40_2", "shufflenet_v1"),
}
METHODS = (  # the Table 1 methods, then the controls and levers of this protocol
    *TABLE1_METHODS,
    "random",
    "reversed",
    "distpro_seed2",
    "distpro_warm",
    "alpha_T_warm",
    "distpro_kd",
    "alpha_T_kd",
    "distpro_review",
    "alpha_T_review",
    "distpro_cheap",
    "distpro_proxy_review",
    "distpro_cheap_review",
    "distpro_cheap10_review",
    "distpro_review_lr3",
    "distpro_review_lr10",
    "uniform_review",
    "distpro_fast",
    "distpro_avg",
    "distpro_smooth",
    # issue 34: the tuned fixed combination of the recipe's space, the frozen recipe's
    # second and third searches, its replay over half the epochs, and a transfer from pair 1
    "fixed_review",
    "distpro_review_s2",
    "distpro_review_s3",
    "distpro_review_half",
    "transfer_review",
    # issue 34's levers (registered after the frozen rows, before their own runs): the
    # average of the frozen recipe's three searches, and its search with 4 held-out batches
    # per step
    "distpro_review_mean",
    "distpro_review_val4",
    # and its third lever (registered after pairs 1-2 had run, before any run of its own and
    # with nothing of pair 3): the first search started at the tuned fixed combination
    "distpro_review_fromfixed",
)
# the default comparison (issue 20): FitNet and the fast/avg/smooth levers stay selectable
DEFAULT_METHODS = tuple(
    m for m in METHODS if m not in ("fitnet", "distpro_fast", "distpro_avg", "distpro_smooth")
)
SEARCH_VARIANTS = ("main", "seed2", "warm", "kd", "review", "cheap", "proxy_review")
SEARCH_VARIANTS += ("cheap_review", "cheap10_review", "fast", "avg", "review_lr3", "review_lr10")
SEARCH_VARIANTS += ("review_s2", "review_s3", "review_val4", "review_fromfixed")
DEFAULT_SEARCHES = ("main", "seed2", "warm", "kd", "review", "cheap", "proxy_review")
DEFAULT_SEARCHES += ("cheap_review", "cheap10_review", "review_lr3", "review_lr10")
# the alpha learning rate of a variant, as a factor of ``--alpha-lr``: a 10x lever in the
# main space (fast), and the recommended space's alpha-lr grid {1, 3, 10} x (review,
# review_lr3, review_lr10), among which validation chooses as among every variant of ours
ALPHA_LR_FACTOR = {"fast": 10.0, "review_lr3": 3.0, "review_lr10": 10.0}
# the cheap recipes (docs/cost.md): a proxy search over a fraction of the epochs
# (CHEAP_FRACTION; PROXY_FRACTION where it differs), replayed stretched over the whole run,
# with alpha updated at every step (proxy_review) or every CHEAP_EVERY-th step (cheap,
# cheap_review, cheap10_review)
CHEAP_FRACTION, CHEAP_EVERY = 0.25, 4
PROXY = {"cheap": CHEAP_EVERY, "proxy_review": 1, "cheap_review": CHEAP_EVERY}
PROXY |= {"cheap10_review": CHEAP_EVERY}
PROXY_FRACTION = {"cheap10_review": 0.1}
# the search space of a variant beyond the feature pathways: Hinton KD on the logits as a
# pathway (kd), and in addition ReviewKD's fused review features as one pathway (review,
# the recommended space, also of its cheap recipes)
REVIEW_SPACE = dict(response_kd=True, review_kd=True)
SPACE = {"kd": dict(response_kd=True), "review": REVIEW_SPACE}
SPACE |= {"proxy_review": REVIEW_SPACE, "cheap_review": REVIEW_SPACE}
SPACE |= {"cheap10_review": REVIEW_SPACE, "review_lr3": REVIEW_SPACE, "review_lr10": REVIEW_SPACE}
SPACE |= {"review_s2": REVIEW_SPACE, "review_s3": REVIEW_SPACE, "review_val4": REVIEW_SPACE}
# issue 34's third lever: the frozen recipe's first search (same seed and subset, base alpha
# lr) started at the pair's tuned fixed combination (the point the one rule chose among its
# grid) instead of the uniform start: does a process beat the best fixed weights when it
# starts from them? variant -> the method whose chosen point starts it (`fixed_start`)
FROM_FIXED = {"review_fromfixed": "fixed_review"}
SPACE |= {"review_fromfixed": REVIEW_SPACE}
# held-out batches per search step (1 unless named): the mean of 4 held-out batches' gradients
# (`avg`, and `review_val4`, issue 34's lever: the frozen recipe's first search with a less
# noisy hypergradient, same seed and subset)
VAL_BATCHES = {"avg": 4, "review_val4": 4}
# methods without a search that still train in a search variant's space: the recommended
# space held at the search's uniform start (the control for what its search adds), and at
# tuned fixed weights (issue 34's strongest fixed rival)
SPACE_ONLY = {"uniform_review": "review", "fixed_review": "review"}
# The frozen recipe of issue 34 (docs/quality.md, "The frozen recipe"): the full search
# (alpha at every step over the whole run, 80/20 split) in the recommended space at the base
# alpha lr, replayed stretched with tau 0.5. Its three independent searches: the shared
# search of issue 20 (``review``) and two more, each with its own search seed and its own
# subset, disjoint from each other's and from every run's (`SEARCH_DRAW`).
RECIPE_SEARCHES = ("review", "review_s2", "review_s3")
SEARCH_DRAW = {"review_s2": 1, "review_s3": 2}
# a run over a fraction of ``--epochs`` (the paper's Fig. 5: the process in half the epochs)
EPOCH_FRACTION = {"distpro_review_half": 0.5}
# the transfer row: the process searched on this pair (the frozen recipe's first search)
# replayed on the other pairs, no search there (paper Table 3)
TRANSFER_SOURCE = ("resnet20-resnet8", "review")
# method -> the search whose process it replays
DERIVED = {
    "alpha_T": "main",
    "distpro": "main",
    "random": "main",
    "reversed": "main",
    "distpro_seed2": "seed2",
    "distpro_warm": "warm",
    "alpha_T_warm": "warm",
    "distpro_kd": "kd",
    "alpha_T_kd": "kd",
    "distpro_review": "review",
    "alpha_T_review": "review",
    "distpro_cheap": "cheap",
    "distpro_proxy_review": "proxy_review",
    "distpro_cheap_review": "cheap_review",
    "distpro_cheap10_review": "cheap10_review",
    "distpro_review_lr3": "review_lr3",
    "distpro_review_lr10": "review_lr10",
    "distpro_fast": "fast",
    "distpro_avg": "avg",
    "distpro_smooth": "main",
    "distpro_review_s2": "review_s2",
    "distpro_review_s3": "review_s3",
    "distpro_review_half": "review",
    "transfer_review": "review",  # of `TRANSFER_SOURCE`'s pair
    "distpro_review_mean": "review",  # and the others of `AVERAGED`
    "distpro_review_val4": "review_val4",
    "distpro_review_fromfixed": "review_fromfixed",
}
# a method that replays the average of several searches' processes (weights averaged at every
# step, `DistillationProcess.average`): issue 34's lever over the frozen recipe's searches
AVERAGED = {"distpro_review_mean": RECIPE_SEARCHES}
SMOOTH_ROWS = 25  # distpro_smooth: the centred moving average of 25 search rows
SHAPE = [1, 28, 28]


class Curves(Callback):
    """Per-epoch mean training loss, and validation top-1 at the epochs in ``val_epochs``
    (0-based; the protocol validates at two thirds of training and at the end only)."""

    def __init__(self, probe: Any = None, val_epochs: tuple[int, ...] = ()) -> None:
        self.train_loss: list[float] = []
        self.val_top1: list[tuple[int, float]] = []
        self.probe = probe
        self.val_epochs = set(val_epochs)
        self._sum: Tensor | None = None
        self._n = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            self._sum = loss.detach() if self._sum is None else self._sum + loss.detach()
            self._n += 1

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        if self._n:
            self.train_loss.append(float(self._sum) / self._n)
        self._sum, self._n = None, 0
        if self.probe is not None and trainer.current_epoch in self.val_epochs:
            self.val_top1.append((trainer.current_epoch, self.probe(pl_module)))

    def record(self) -> dict[str, Any]:
        return {"train_loss": self.train_loss, "val_top1": self.val_top1}


def val_epochs(args: argparse.Namespace, epochs: int | None = None) -> tuple[int, ...]:
    """The epochs (0-based) whose end is validated: two thirds of training and the end."""
    n = args.epochs if epochs is None else epochs
    return tuple(sorted({max(0, round(2 * n / 3) - 1), n - 1}))


def validation_probe(data: Any, device: str) -> Any:
    """``probe(module) -> top-1`` of the module's student on the fixed validation set (the
    training images never trained on), in eval mode; the train/eval state is put back."""

    def probe(module: Any) -> float:
        net = student_of(module)
        was_training = net.training
        net.eval()
        x, y = data.train_x[data.val_index], data.train_y[data.val_index]
        correct = 0
        with torch.no_grad():
            for i in range(0, len(y), 1000):
                logits = net(x[i : i + 1000].to(device))
                correct += int((logits.argmax(1).cpu() == y[i : i + 1000]).sum())
        net.train(was_training)
        return correct / len(y)

    return probe


def make_trainer(args: argparse.Namespace, epochs: int, callbacks: list[Any], val: bool) -> Trainer:
    """The fit's trainer. Validation runs through `Curves`' probe at the epochs that use
    it (``val``), not through Lightning's loop every epoch."""
    return Trainer(
        accelerator=args.device,
        devices=1,
        max_epochs=epochs,
        max_steps=args.max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        limit_test_batches=args.test_batches or 1.0,
        callbacks=callbacks,
    )


def evaluate(trainer: Trainer, module: Any, dm: Any, curves: Curves) -> dict[str, float]:
    """Test top-1 and validation top-1 of the final weights (no checkpoint is selected)."""
    if not curves.val_top1 or curves.val_top1[-1][0] != trainer.current_epoch:
        # a fit stopped early (max_steps): validate the final weights too
        curves.val_top1.append((trainer.current_epoch, curves.probe(module)))
    test = trainer.test(module, datamodule=dm, verbose=False)[0]["test/top1"]
    return {"top1": float(test), "val_top1": float(curves.val_top1[-1][1])}


def load_teacher_module(pair: str, path: Any) -> nn.Module:
    teacher = create(PAIRS[pair][0], num_classes=10, in_channels=1)
    teacher.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return teacher


def student_init(pair: str, seed: int) -> dict[str, Tensor]:
    """The initial student weights of ``seed``: the same for every method of that seed."""
    torch.manual_seed(seed)
    return create(PAIRS[pair][1], num_classes=10, in_channels=1).state_dict()


def student_of(module: Any) -> nn.Module:
    return module.model if isinstance(module, ClassifierModule) else module.student


class EpochCheckpoint(Callback):
    """Save the fit's full state (weights, optimizer, scheduler, loops) to ``path`` after
    every training epoch, atomically (a temporary file of this process, synced, then
    renamed; earlier writers' leftovers removed), so that a killed fit resumes at its last
    finished epoch: a teacher is hours of CPU (`train_teacher`)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_epoch_end(self, trainer: Trainer, pl_module: Any) -> None:
        import tempfile

        from distpro_lightning.files import remove_stale_temps, temp_prefix

        remove_stale_temps(self.path)
        fd, tmp = tempfile.mkstemp(
            dir=self.path.parent, prefix=temp_prefix(self.path), suffix=".tmp"
        )
        os.close(fd)
        trainer.save_checkpoint(tmp, weights_only=False)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)


def resume_point(path: Path, model: str, epochs: int) -> Path | None:
    """``path`` if it holds a killed teacher fit of ``model`` over ``epochs`` epochs (its
    cosine schedule's length), ``None`` if there is none; a checkpoint of another fit is
    refused with the fix, never resumed."""
    if not path.is_file():
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    got = (ckpt["hyper_parameters"].get("model"), ckpt["lr_schedulers"][0].get("T_max"))
    if got != (model, epochs):
        raise SystemExit(
            f"{path} is a checkpoint of a teacher fit of {got[0]} over {got[1]} epochs, not of "
            f"{model} over {epochs}: delete it to train from the start, or run with "
            f"--teacher-epochs {got[1]} to resume it."
        )
    return path


def train_teacher(args: argparse.Namespace, pair: str, data: Any, path: Any) -> dict[str, Any]:
    """Train ``pair``'s teacher on all training images and save its weights to ``path``. The
    fit checkpoints every epoch beside it (``<path>.resume.ckpt``, loaded with
    ``weights_only=True``, `resume_point`) and resumes from there when killed (the resumed
    epochs repeat the batch order from the first epoch on: the order's generator starts
    again); the checkpoint is removed once the weights are saved (a kill between the two
    leaves it, unused: the weights are done)."""
    from benchmarks.converged_data import TensorDataModule

    seed_everything(0)
    name = PAIRS[pair][0]
    module = build_module(
        ClassifierModule, model=name, num_classes=10, in_channels=1, lr=0.1, scheduler="cosine"
    )
    dm = TensorDataModule(data, torch.arange(len(data.train_y)), 256, order_seed=0)
    resume = Path(f"{path}.resume.ckpt")
    trainer = make_trainer(args, args.teacher_epochs, [EpochCheckpoint(resume)], val=False)
    start = resume_point(resume, name, args.teacher_epochs)
    trainer.fit(module, datamodule=dm, ckpt_path=start, weights_only=True)
    save_weights(module.model.state_dict(), path)
    resume.unlink(missing_ok=True)
    top1 = float(trainer.test(module, datamodule=dm, verbose=False)[0]["test/top1"])
    record = {"method": "teacher", "teacher": name, "epochs": args.teacher_epochs, "top1": top1}
    return record | ({"resumed_from": str(start)} if start else {})


def save_weights(state: dict[str, Tensor], path: Any) -> None:
    """``torch.save`` through the library's atomic writer."""
    from distpro_lightning.files import atomic_write

    atomic_write(path, lambda fh: torch.save(state, fh))


def distpro_module(args: argparse.Namespace, pair: str, teacher: nn.Module, **kw: Any) -> Any:
    """The DistPro module of the comparison: ``args.transforms`` on every 3 x 3 connection
    (9 pathways with ``conv_bn``, the main CPU grid), HCL, biased softmax, tau."""
    student = create(PAIRS[pair][1], num_classes=10, in_channels=1)
    base = distpro_kwargs(student, teacher, RecipeSettings(lr=args.lr, tau=args.tau))
    if kw.get("connections") != "none":  # Hinton KD has no feature pathways to transform
        base["transforms"] = list(args.transforms)
    base.update(log_pathway_losses=False, **kw)
    return build_module(DistProModule, **base)


def space_of(method: str) -> dict[str, bool]:
    """The extra pathways of the search whose process ``method`` replays."""
    return SPACE.get(DERIVED.get(method, SPACE_ONLY.get(method, "")), {})


def build_method(
    args: argparse.Namespace,
    method: str,
    pair: str,
    teacher: nn.Module | None,
    params: dict[str, float],
    process: DistillationProcess | None,
) -> tuple[Any, list[Any]]:
    w = params.get("w", 1.0)
    if method == "student":
        model = create(PAIRS[pair][1], num_classes=10, in_channels=1)
        return build_module(ClassifierModule, model, 10, 1, lr=args.lr, scheduler="cosine"), []
    if method == "hinton_kd":
        kw = dict(connections="none", response_kd=True, normalization="uniform")
        kw.update(kd_weight=w, kd_temperature=params["T"], prune_threshold=None)
        return distpro_module(args, pair, teacher, **kw), []
    if method == "fitnet":
        kw = dict(connections=[(1, 1)], transforms=["conv_bn"], distance="mse")
        kw.update(normalization="uniform", kd_weight=w, prune_threshold=None)
        return distpro_module(args, pair, teacher, **kw), []
    if method == "reviewkd":
        student = create(PAIRS[pair][1], num_classes=10, in_channels=1)
        module = build_module(
            ReviewKDModule, student, teacher, 10, 1, input_shape=SHAPE, review_weight=w,
            warmup_epochs=params.get("warm", 0.0), lr=args.lr, scheduler="cosine",
        )  # fmt: skip
        return module, []
    if method == "fixed_review":
        return fixed_combination(args, pair, teacher, w, params["f"])
    if method in ("equal", "uniform_review"):
        module = distpro_module(args, pair, teacher, kd_weight=w, **space_of(method))
        return module, [ProcessScheduleCallback(mode="uniform", plot=False)]
    mode = "final" if method.startswith("alpha_T") else "process"
    smooth = SMOOTH_ROWS if method == "distpro_smooth" else 1
    space = space_of(method)
    if DERIVED.get(method) in FROM_FIXED and process is not None:
        space = from_fixed_space(args, pair, teacher, float(process.normalization["scale"]))
    return distpro_module(args, pair, teacher, **space), [
        ProcessScheduleCallback(process=process, mode=mode, plot=False, smooth_steps=smooth)
    ]


def fixed_combination(
    args: argparse.Namespace, pair: str, teacher: nn.Module | None, total: float, share: float
) -> tuple[Any, list[Any]]:
    """The recommended space at fixed weights: ``total`` distillation weight, ``share`` of it
    on the feature pathways (issue 34's strongest fixed rival)."""
    probe = distpro_module(args, pair, teacher, **REVIEW_SPACE)
    kd_weight = total / probe.weight_scale  # weight_scale is linear in kd_weight (1.0 here)
    module = distpro_module(args, pair, teacher, kd_weight=kd_weight, **REVIEW_SPACE)
    callback = FixedWeights(fixed_shares(list(module.pathway_names), share))
    return module, [callback]


def run_epochs(args: argparse.Namespace, method: str) -> int:
    """The epochs of ``method``'s run: ``--epochs``, or its `EPOCH_FRACTION` of them."""
    return max(1, round(EPOCH_FRACTION.get(method, 1.0) * args.epochs))


def transfer_map(names: list[str]) -> dict[str, str]:
    """Module pathway -> pathway of `TRANSFER_SOURCE`'s process (resnet20 -> resnet8, taps
    ``layer1..3`` on both sides): teacher level ``i`` and student level ``j`` of ``L`` student
    levels take level ``ceil(3 j / L)`` (the last student level takes the process's last),
    the KD and ReviewKD pathways their namesakes."""
    import math
    import re

    students = sorted({n.split("->")[1].split(":")[0] for n in names if ":conv_bn" in n})
    teachers = sorted({n.split("->")[0] for n in names if ":conv_bn" in n})
    out = {}
    for n in names:
        m = re.fullmatch(r"(.+)->(.+):(\w+)", n)
        if m is None or m.group(3) != "conv_bn":
            out[n] = n
            continue
        i = teachers.index(m.group(1)) + 1
        j = math.ceil(3 * (students.index(m.group(2)) + 1) / len(students))
        out[n] = f"layer{i}->layer{j}:conv_bn"
    return out


def build_run(
    args: argparse.Namespace, task: Any, data: Any, teacher_file: Any, process: Any
) -> dict[str, Any]:
    from benchmarks.converged_data import TensorDataModule

    params = parse_params(task.resolved or task.params)
    teacher = None if task.method == "student" else load_teacher_module(task.pair, teacher_file)
    seed_everything(task.seed)
    module, callbacks = build_method(args, task.method, task.pair, teacher, params, process)
    if task.method == "transfer_review":
        callbacks = [
            ProcessScheduleCallback(
                process=process, plot=False, pathway_map=transfer_map(list(module.pathway_names))
            )
        ]
    student_of(module).load_state_dict(student_init(task.pair, task.seed))
    epochs = run_epochs(args, task.method)
    curves = Curves(validation_probe(data, args.device), val_epochs(args, epochs))
    dm = TensorDataModule(data, data.subset(task.seed, args.subset), args.batch_size, task.seed)
    trainer = make_trainer(args, epochs, [*callbacks, curves], val=True)
    trainer.fit(module, datamodule=dm)
    return {
        "method": task.method,
        "params": params,
        **evaluate(trainer, module, dm, curves),
        "curve": curves.record(),
        "steps": trainer.global_step,
    }


SEARCH_SEED_OFFSET = {"main": 0, "seed2": 1000, "warm": 0, "kd": 0, "review": 0, "cheap": 0}
SEARCH_SEED_OFFSET |= {"proxy_review": 0, "cheap_review": 0, "fast": 0, "avg": 0}
SEARCH_SEED_OFFSET |= {"cheap10_review": 0, "review_lr3": 0, "review_lr10": 0}
SEARCH_SEED_OFFSET |= {"review_s2": 2000, "review_s3": 3000, "review_val4": 0}
SEARCH_SEED_OFFSET |= {"review_fromfixed": 0}
SHARED_SEARCH_SEED = 100  # the seed of the shared searches (disjoint from the runs' seeds)


def search_split(
    args: argparse.Namespace, data: Any, seed: int, variant: str
) -> tuple[Tensor, Tensor, int]:
    """A search's training and held-out indices (the 80/20 split of its subset) and its
    seed. ``seed < 0``: the shared search of the pair (``--shared-search``), on a subset of
    ``--subset`` images disjoint from every run's subset, replayed on all seeds."""
    from benchmarks.converged_data import FashionTensors

    if seed < 0:
        exclude = sorted(set(range(10)) | set(args.seeds))
        index = data.disjoint_subset(args.subset, exclude, SEARCH_DRAW.get(variant, 0))
        base_seed = SHARED_SEARCH_SEED
    else:
        index, base_seed = data.subset(seed, args.subset), seed
    search_seed = base_seed + SEARCH_SEED_OFFSET[variant]
    train, held_out = FashionTensors.search_split(index, search_seed)
    return train, held_out, search_seed


def alpha_lr_of(args: argparse.Namespace, variant: str) -> float:
    """The alpha learning rate of the search ``variant``: ``--alpha-lr`` times its factor."""
    return args.alpha_lr * ALPHA_LR_FACTOR.get(variant, 1.0)


def search_callback(
    args: argparse.Namespace, variant: str, search_seed: int, init: str | None, path: str | Path
) -> ProcessSearchCallback:
    """The search of ``variant``: its alpha lr, held-out batches, sparse or proxy schedule,
    started from ``init`` (a process file, or the uniform start), saved to ``path``."""
    return ProcessSearchCallback(
        alpha={"lr": alpha_lr_of(args, variant), "init_process": init},
        schedule={
            "seed": search_seed, "val_batches_per_step": VAL_BATCHES.get(variant, 1),
            "diagnostics_every_n_steps": args.diagnostics_every,
            "every_n_steps": PROXY.get(variant, 1), "proxy": variant in PROXY,
        },
        output={"save_path": str(path), "plot": False, "save_every_n_steps": 0},
    )  # fmt: skip


def search_process(
    args: argparse.Namespace,
    pair: str,
    seed: int,
    variant: str,
    data: Any,
    teacher_file: Any,
    path: Any,
    warm: Any,
) -> dict[str, Any]:
    """Search a process over the same epochs and schedule as the retrain, on the 80/20 split
    of a subset (`search_split`); returns the search student's own test top-1 (a control).
    ``warm``: what the search starts from, other than the uniform start: a process file (the
    second pass) or a fixed combination's grid point ``{"w", "f"}`` (`FROM_FIXED`,
    `start_at_fixed`)."""
    from benchmarks.converged_data import TensorDataModule
    from distpro_lightning.search.diagnostics import summarize

    train, held_out, search_seed = search_split(args, data, seed, variant)
    teacher = load_teacher_module(pair, teacher_file)
    seed_everything(search_seed)
    space, init = SPACE.get(variant, {}), None if warm is None else str(warm)
    if isinstance(warm, dict):
        space, init = start_at_fixed(args, pair, teacher, warm, path)
    module = distpro_module(args, pair, teacher, **space)
    module.student.load_state_dict(student_init(pair, search_seed))
    search = search_callback(args, variant, search_seed, init, path)
    epochs = search_epochs(args, variant)
    curves = Curves(validation_probe(data, args.device), val_epochs(args, epochs))
    dm = TensorDataModule(data, train, args.batch_size, search_seed, held_out_index=held_out)
    trainer = make_trainer(args, epochs, [search, curves], val=True)
    trainer.fit(module, datamodule=dm)
    process = DistillationProcess.load(path)
    return {
        "diagnostics": summarize(process),
        "method": f"search_{variant}",
        "params": {"alpha_lr": alpha_lr_of(args, variant)},
        **({"start_point": warm} if isinstance(warm, dict) else {}),
        **evaluate(trainer, module, dm, curves),
        "curve": curves.record(),
        "steps": trainer.global_step,
        "rows": len(process),
    }


def fixed_start(
    shares: Tensor, total: float, bias: float, unit_scale: float
) -> tuple[float, Tensor]:
    """The ``kd_weight`` and the logits ``[P]`` with which a biased-softmax search starts at
    a fixed combination's weights ``total * shares`` (``shares`` sum to 1; ``unit_scale``:
    the module's weight scale per unit of ``kd_weight``). As at the uniform start (every logit
    at the bias), the normalised weights sum to P / (P + 1): logit_i = bias + log(P share_i)
    gives weight_i = P share_i / (P + 1), and kd_weight = total (P + 1) / (P unit_scale)."""
    p = shares.numel()
    logits = bias + torch.log(p * shares.double())
    return total * (p + 1) / (p * unit_scale), logits.float()


def start_at_fixed(
    args: argparse.Namespace, pair: str, teacher: nn.Module, point: dict[str, float], path: Any
) -> tuple[dict[str, Any], str]:
    """The module settings and the init-process file (one row, ``start_<...>`` beside the
    process file ``path``, not a ``process_*`` file) of a search in the recommended space
    that starts at the fixed combination ``point`` (``{"w": total, "f": feature share}``,
    `fixed_shares`). Nothing is pruned, in the search or its replay: the fixed combination
    prunes nothing, and tau acts on logits, which here start at the point's level, not at
    the uniform start's. The modules built here draw from a forked random state, so the
    search's own module draws the very heads of the frozen recipe's first search."""
    with torch.random.fork_rng(devices=[]):
        probe, unit = review_probe(args, pair, teacher)
        shares = torch.tensor(fixed_shares(list(probe.pathway_names), point["f"]))
        kd_weight, logits = fixed_start(shares, point["w"], probe.normalization_bias, unit)
        space = dict(REVIEW_SPACE, kd_weight=kd_weight, prune_threshold=None)
        start = distpro_module(args, pair, teacher, **space).new_process({"fixed_start": point})
    start.append(logits)
    init = Path(path).with_name("start_" + Path(path).name.removeprefix("process_"))
    start.save(init)
    return space, str(init)


def from_fixed_space(
    args: argparse.Namespace, pair: str, teacher: nn.Module, scale: float
) -> dict[str, Any]:
    """The replay settings of a process searched from a fixed combination (`start_at_fixed`):
    its ``kd_weight`` (the process's weight ``scale`` per unit), no pruning. Its probe draws
    from the seed's random state as `fixed_combination`'s does, so the replay's heads are the
    fixed combination's own on that seed: lever − fixed combination differs in the weights
    alone."""
    probe, _ = review_probe(args, pair, teacher)
    return dict(REVIEW_SPACE, kd_weight=probe.kd_weight_for_scale(scale), prune_threshold=None)


def review_probe(args: argparse.Namespace, pair: str, teacher: nn.Module) -> tuple[Any, float]:
    """A module of the recommended space (built from the current random state) and its
    weight scale per unit of ``kd_weight``."""
    probe = distpro_module(args, pair, teacher, **REVIEW_SPACE)
    return probe, probe.weight_scale / probe.kd_weight


def search_epochs(args: argparse.Namespace, variant: str) -> int:
    """The epochs a search runs: the retrain's, or a proxy's fraction of them (at least 1)."""
    if variant not in PROXY:
        return args.epochs
    return max(1, round(PROXY_FRACTION.get(variant, CHEAP_FRACTION) * args.epochs))


def derived_process(method: str, source: DistillationProcess, seed: int) -> DistillationProcess:
    """The process a method replays: the searched one, or a control made from it."""
    if method not in ("random", "reversed"):
        return source
    rows = source.logits
    new = rows.flip(0) if method == "reversed" else random_walk_like(rows, seed)
    return DistillationProcess(
        source.pathway_names,
        source.normalization,
        new,
        teacher_taps=source.teacher_taps,
        student_taps=source.student_taps,
        transform_kinds=source.transform_kinds,
        prune_threshold=source.prune_threshold,
        steps_per_epoch=source.steps_per_epoch,
        provenance={**source.provenance, "control": method, "control_seed": seed},
    )


def random_walk_like(rows: Tensor, seed: int) -> Tensor:
    """A random walk of logits with the searched rows' per-step change and spread.

    Each pathway's logit takes Gaussian steps; the walk is centred per row and scaled so that
    its spread across pathways at the last row equals the searched one's, and each row keeps
    the searched row's mean (the level that matters against the biased softmax's bias)."""
    g = torch.Generator().manual_seed(50_000 + seed)
    steps = torch.randn(rows.shape[0] - 1, rows.shape[1], generator=g)
    walk = torch.cat([torch.zeros(1, rows.shape[1]), steps.cumsum(0)])
    walk = walk - walk.mean(1, keepdim=True)
    scale = rows[-1].std() / walk[-1].std().clamp_min(1e-12)
    return rows.mean(1, keepdim=True) + scale * walk


def step_change(rows: Tensor) -> float:
    """RMS per-step change of the logits (to compare a control with the searched process)."""
    return float((rows[1:] - rows[:-1]).pow(2).mean().sqrt()) if len(rows) > 1 else 0.0


def describe(params: dict[str, float]) -> str:
    return json.dumps(params, sort_keys=True)

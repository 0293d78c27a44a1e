"""``ProcessSearchCallback``: the second-order alpha search at every optimizer step."""

from __future__ import annotations

import datetime as _dt
import logging
import math
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader

from . import __version__
from .hypergradient import SGDHyper, compute_hypergradient
from .module import DistProMixin
from .process import DistillationProcess, log_process_figures

log = logging.getLogger(__name__)


class ProcessSearchCallback(Callback):
    """Learn the pathway logits ``a~_t`` by bi-level meta-optimization and record them.

    At every optimizer step, before the real update, it computes the hypergradient of the
    held-out loss after a virtual step of the student (paper eqs. 4-5), averages it over
    DDP ranks, updates ``module.alpha_logits`` with its own optimizer, and appends the new
    logits to :attr:`process`. The real update then uses ``w(a~_{t+1})`` and reuses the
    teacher features computed for the search.

    Python::

        from distpro_lightning import ProcessSearchCallback
        search = ProcessSearchCallback(hypergradient="finite_difference", alpha_lr=0.05,
                                       save_path="runs/search/process.json")
        trainer = Trainer(max_epochs=40, callbacks=[search])
        trainer.fit(module, datamodule=FashionMNISTDataModule(mode="search"))

    YAML (``distpro fit``, flat sweep keys such as ``--search.alpha_lr 0.1``)::

        search:
          hypergradient: finite_difference
          alpha_lr: 0.05
          save_path: runs/search/process.json

    Args:
        hypergradient: ``"finite_difference"`` (two forward passes at ``theta +- eps v``)
            or ``"exact"`` (one forward-mode JVP, ``torch.func.jvp``).
        alpha_lr: learning rate of the logits' optimizer.
        alpha_optimizer: ``"adam"`` (paper; betas ``alpha_betas``) or ``"sgd"``.
        alpha_betas: Adam betas (the official release uses ``(0.5, 0.999)``).
        alpha_weight_decay: weight decay on the logits.
        epsilon: finite-difference radius; ``eps = epsilon / ||v||``.
        save_path: where the process is written (JSON, atomically, rank 0); ``None``: not
            written. A PNG plot is written beside it at the end of fit.
        save_every_n_steps: also write it every n steps (0: only at the end).
        log_every_n_steps: how often weights, hypergradient norm and held-out loss are logged.
        warmup_steps: optimizer steps before alpha starts moving (rows are still recorded).
        average_virtual_gradient: under DDP, average the virtual step's training gradient
            over ranks (one all-reduce of the student's gradient per step), so the virtual
            step matches the real one.
        average_val_gradient: under DDP, average the held-out gradient ``v`` over ranks
            (another all-reduce of the student's gradient size). With both averages on, a
            DDP search equals a one-process search on the union of the ranks' batches
            (exactly so for models without BatchNorm); off, each rank's mixed derivative
            uses its own ``v`` and only the hypergradients are averaged.
        reuse_training_gradient: use the virtual step's training gradient for the real update
            (one forward+backward fewer per step, at the price of a one-step lag: the update
            uses ``w(a~_t)`` instead of ``w(a~_{t+1})``). Needs :class:`DistProModule`.
        seed: seed of the held-out batch order (cycle ``c`` uses ``seed + c``).
        plot: write and log the process plots at the end of fit.
        enabled: ``False`` makes the callback inert (the ``distpro`` CLI's default for its
            ``search:`` section, so ``search.enabled: true`` switches the search on).
    """

    def __init__(
        self,
        hypergradient: Literal["finite_difference", "exact"] = "finite_difference",
        alpha_lr: float = 0.05,
        alpha_optimizer: Literal["adam", "sgd"] = "adam",
        alpha_betas: tuple[float, float] = (0.5, 0.999),
        alpha_weight_decay: float = 0.0,
        epsilon: float = 0.01,
        save_path: str | None = "process.json",
        save_every_n_steps: int = 100,
        log_every_n_steps: int = 50,
        warmup_steps: int = 0,
        average_virtual_gradient: bool = True,
        average_val_gradient: bool = True,
        reuse_training_gradient: bool = False,
        seed: int = 0,
        plot: bool = True,
        enabled: bool = True,
    ) -> None:
        if hypergradient not in ("finite_difference", "exact"):
            raise ValueError(
                f"hypergradient must be 'finite_difference' or 'exact', got {hypergradient!r}."
            )
        if alpha_optimizer not in ("adam", "sgd"):
            raise ValueError(f"alpha_optimizer must be 'adam' or 'sgd', got {alpha_optimizer!r}.")
        if not (alpha_lr > 0 and math.isfinite(alpha_lr)):
            raise ValueError(f"alpha_lr must be a positive number, got {alpha_lr}.")
        if not (epsilon > 0 and math.isfinite(epsilon)):
            raise ValueError(f"epsilon must be a positive number, got {epsilon}.")
        for name, value in (
            ("save_every_n_steps", save_every_n_steps),
            ("log_every_n_steps", log_every_n_steps),
            ("warmup_steps", warmup_steps),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}.")
        self.hypergradient = hypergradient
        self.alpha_lr = alpha_lr
        self.alpha_optimizer = alpha_optimizer
        self.alpha_betas = tuple(alpha_betas)
        self.alpha_weight_decay = alpha_weight_decay
        self.epsilon = epsilon
        self.save_path = save_path
        self.save_every_n_steps = save_every_n_steps
        self.log_every_n_steps = log_every_n_steps
        self.warmup_steps = warmup_steps
        self.average_virtual_gradient = average_virtual_gradient
        self.average_val_gradient = average_val_gradient
        self.reuse_training_gradient = reuse_training_gradient
        self.seed = seed
        self.plot = plot
        self.enabled = enabled
        self.search_val_loader: DataLoader | None = None
        self.process: DistillationProcess | None = None
        self.skipped_updates = 0
        self._alpha: torch.nn.Parameter | None = None
        self._alpha_opt: torch.optim.Optimizer | None = None
        self._pending_state: dict[str, Any] | None = None
        self._val_iter: Iterator[Any] | None = None
        self._val_cycle = 0
        self._val_consumed = 0

    # ------------------------------------------------------------------ the pure form
    def hypergradient_of(
        self, module: DistProMixin, train_batch: Any, val_batch: Any, lr: float
    ) -> Tensor:
        """Gradient w.r.t. ``module.alpha_logits`` of ``L_val(theta - lr * grad L_train)``
        (plain SGD virtual step), by this callback's method. Leaves parameters, ``.grad``,
        buffers and ``alpha_logits`` unchanged."""
        x, y = module.split_batch(train_batch)
        xv, yv = module.split_batch(val_batch)
        teacher = module.teacher_outputs(x)
        return compute_hypergradient(
            module,
            x,
            y,
            xv,
            yv,
            teacher,
            lambda key, p: SGDHyper(lr=lr),
            self.hypergradient,
            self.epsilon,
        ).hypergradient

    # ------------------------------------------------------------------ setup
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled:
            return
        if not isinstance(pl_module, DistProMixin):
            raise TypeError(
                "ProcessSearchCallback needs a module with DistProMixin (e.g. DistProModule); "
                f"got {type(pl_module).__name__}."
            )
        if not pl_module.automatic_optimization:
            raise RuntimeError(
                "ProcessSearchCallback runs before Lightning's automatic optimizer step; with "
                "manual optimization call `callback.search_step(trainer, module, batch)` "
                "yourself before your optimizer step, or use automatic optimization."
            )
        if len(trainer.optimizers) != 1:
            raise RuntimeError(
                f"ProcessSearchCallback supports exactly one optimizer (theta of student and "
                f"heads); configure_optimizers returned {len(trainer.optimizers)}."
            )
        precision = str(trainer.precision)
        if precision in (
            "16-true",
            "bf16-true",
            "transformer-engine",
            "transformer-engine-float16",
        ):
            raise RuntimeError(
                f"precision={precision!r} is not supported by the search (second-order terms "
                "in half precision are unreliable). Use '32-true', 'bf16-mixed' or '16-mixed'."
            )
        if self.reuse_training_gradient and not hasattr(pl_module, "_reused_gradient"):
            raise RuntimeError(
                "reuse_training_gradient=True needs DistProModule (its training_step applies the "
                "reused gradient); with your own module leave it False."
            )
        self._setup_alpha(pl_module)
        self._setup_val_loader(trainer)
        if self.process is None:
            self.process = self._new_process(trainer, pl_module)
        pending, self._pending_state = self._pending_state, None
        if pending is not None:
            self._restore(pending, pl_module)

    def _setup_alpha(self, pl_module: DistProMixin) -> None:
        self._alpha = torch.nn.Parameter(pl_module.alpha_logits.detach().clone().float())
        if self.alpha_optimizer == "adam":
            self._alpha_opt = torch.optim.Adam(
                [self._alpha],
                lr=self.alpha_lr,
                betas=self.alpha_betas,
                weight_decay=self.alpha_weight_decay,
            )
        else:
            self._alpha_opt = torch.optim.SGD(
                [self._alpha], lr=self.alpha_lr, weight_decay=self.alpha_weight_decay
            )

    def _setup_val_loader(self, trainer: pl.Trainer) -> None:
        loader = self.search_val_loader
        if loader is None:
            dm = trainer.datamodule
            if dm is None or not hasattr(dm, "search_val_dataloader"):
                raise RuntimeError(
                    "ProcessSearchCallback needs held-out batches: use a data module with "
                    "search_val_dataloader() in mode='search', or set "
                    "callback.search_val_loader = DataLoader(...)."
                )
            loader = dm.search_val_dataloader()
        self._val_dataset = loader.dataset
        self._val_batch_size = loader.batch_size or 1
        self._val_collate = loader.collate_fn
        self._val_workers = loader.num_workers
        n = len(self._val_dataset)
        per_rank = n // trainer.world_size
        if per_rank < self._val_batch_size:
            raise RuntimeError(
                f"The held-out split has {n} samples, fewer than one batch of "
                f"{self._val_batch_size} per rank ({trainer.world_size} ranks)."
            )
        self._val_iter = None

    def _new_process(self, trainer: pl.Trainer, module: DistProMixin) -> DistillationProcess:
        dm = trainer.datamodule
        provenance = {
            "library_version": __version__,
            "torch_version": torch.__version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "student": type(module.student).__name__,
            "teacher": type(module.teacher).__name__,
            "dataset": type(dm).__name__ if dm is not None else None,
            "seed": getattr(dm, "seed", None),
            "hypergradient": self.hypergradient,
            "alpha_lr": self.alpha_lr,
            "world_size": trainer.world_size,
        }
        hp = getattr(module, "hparams", {})
        for key in ("student", "teacher"):
            if isinstance(hp.get(key), str):
                provenance[key] = hp[key]
        return DistillationProcess(
            module.pathway_names,
            {
                "name": module.normalization,
                "bias": module.normalization_bias,
                "scale": module.weight_scale,
            },
            teacher_taps=module.teacher_tap_names,
            student_taps=module.student_tap_names,
            transform_kinds=module.transform_kinds,
            prune_threshold=module.prune_threshold,
            provenance=provenance,
        )

    # ------------------------------------------------------------------ held-out batches
    def _val_indices(self, trainer: pl.Trainer) -> list[int]:
        g = torch.Generator().manual_seed(self.seed + self._val_cycle)
        perm = torch.randperm(len(self._val_dataset), generator=g)
        world, rank = trainer.world_size, trainer.global_rank
        per_rank = (len(perm) // world) // self._val_batch_size * self._val_batch_size
        return perm[rank::world][:per_rank].tolist()

    def _next_val_batch(self, trainer: pl.Trainer) -> Any:
        while True:
            if self._val_iter is None:
                indices = self._val_indices(trainer)[self._val_consumed * self._val_batch_size :]
                loader = DataLoader(
                    self._val_dataset,
                    batch_size=self._val_batch_size,
                    sampler=indices,
                    collate_fn=self._val_collate,
                    num_workers=self._val_workers,
                    drop_last=True,
                )
                self._val_iter = iter(loader)
            try:
                batch = next(self._val_iter)
            except StopIteration:
                self._val_iter = None
                self._val_cycle += 1
                self._val_consumed = 0
                continue
            self._val_consumed += 1
            return trainer.strategy.batch_to_device(batch)

    # ------------------------------------------------------------------ the step
    def _hyper_fn(self, trainer: pl.Trainer, module: DistProMixin):
        opt = trainer.optimizers[0]
        if isinstance(opt, torch.optim.SGD):
            by_id: dict[int, SGDHyper] = {}
            for group in opt.param_groups:
                if group.get("maximize"):
                    raise RuntimeError("SGD(maximize=True) is not supported by the search.")
                for p in group["params"]:
                    buf = opt.state.get(p, {}).get("momentum_buffer")
                    by_id[id(p)] = SGDHyper(
                        lr=float(group["lr"]),
                        momentum=float(group["momentum"]),
                        dampening=float(group["dampening"]),
                        weight_decay=float(group["weight_decay"]),
                        nesterov=bool(group["nesterov"]),
                        buf=buf,
                    )
        else:
            # Documented choice: other optimizers use a plain-gradient step with their lr.
            by_id = {
                id(p): SGDHyper(lr=float(group["lr"]))
                for group in opt.param_groups
                for p in group["params"]
            }

        def hyper(key: str, p: Tensor) -> SGDHyper:
            if id(p) not in by_id:
                raise RuntimeError(
                    f"Parameter {key} is trained by the search but not in the optimizer: "
                    "configure_optimizers must optimise the student and the pathway heads."
                )
            return by_id[id(p)]

        return hyper

    def _autocast(self, trainer: pl.Trainer):
        if str(trainer.precision) == "bf16-mixed" and self.hypergradient == "finite_difference":
            return trainer.precision_plugin.forward_context
        return nullcontext  # fp32 search passes (16-mixed: no GradScaler, fp32 throughout)

    def search_step(self, trainer: pl.Trainer, pl_module: DistProMixin, batch: Any) -> None:
        """One search step on ``batch``: update and record ``alpha_logits``."""
        assert self._alpha is not None and self._alpha_opt is not None and self.process is not None
        step = trainer.global_step
        if self.process.steps_per_epoch is None:
            batches = trainer.num_training_batches
            if batches and math.isfinite(batches):
                self.process.steps_per_epoch = max(
                    1, int(batches) // trainer.accumulate_grad_batches
                )
        x, y = pl_module.split_batch(batch)
        teacher = pl_module.teacher_outputs(x)
        pl_module.cache_teacher_outputs(x, teacher)
        if step >= self.warmup_steps:
            xv, yv = pl_module.split_batch(self._next_val_batch(trainer))
            strategy = trainer.strategy
            reducer = _make_grad_reducer(strategy) if trainer.world_size > 1 else None
            result = compute_hypergradient(
                pl_module,
                x,
                y,
                xv,
                yv,
                teacher,
                self._hyper_fn(trainer, pl_module),
                self.hypergradient,
                self.epsilon,
                reduce_grads=reducer if self.average_virtual_gradient else None,
                reduce_val_grads=reducer if self.average_val_gradient else None,
                keep_full_gradient=self.reuse_training_gradient,
                autocast=self._autocast(trainer),
            )
            hg = result.hypergradient.to(self._alpha.device)
            if trainer.world_size > 1:
                hg = strategy.reduce(hg, reduce_op="mean")
            if bool(torch.isfinite(hg).all()):
                self._alpha_opt.zero_grad(set_to_none=False)
                self._alpha.grad = hg.to(self._alpha.dtype).clone()
                self._alpha_opt.step()
                with torch.no_grad():
                    pl_module.alpha_logits.copy_(self._alpha.detach())
            else:
                self.skipped_updates += 1
                rank_zero_warn(
                    f"DistPro search: non-finite hypergradient at step {step}; alpha update "
                    f"skipped ({self.skipped_updates} so far). Lower the student lr or epsilon, "
                    "or check the data for NaNs."
                )
            if self.reuse_training_gradient:
                pl_module._reused_gradient = (x, result.virtual_grads, result.train_loss)
            if self.log_every_n_steps and step % self.log_every_n_steps == 0:
                pl_module.log(
                    "search/val_loss", result.val_loss.float(), on_step=True, sync_dist=False
                )
                pl_module.log("search/hypergrad_norm", hg.float().norm(), on_step=True)
                weights = pl_module.alpha_weights().detach()
                for name, w, a in zip(pl_module.pathway_names, weights, pl_module.alpha_logits):
                    pl_module.log(f"alpha_weight/{name}", w, on_step=True)
                    pl_module.log(f"alpha_logit/{name}", a, on_step=True)
        self.process.append(pl_module.alpha_logits)
        if self.save_every_n_steps and len(self.process) % self.save_every_n_steps == 0:
            self.save(trainer)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self.enabled or batch_idx % trainer.accumulate_grad_batches != 0:
            return
        self.search_step(trainer, pl_module, batch)

    # ------------------------------------------------------------------ output
    def save(self, trainer: pl.Trainer) -> None:
        """Write the process file (rank 0 only)."""
        if self.save_path is None or self.process is None or len(self.process) == 0:
            return
        if trainer.is_global_zero:
            self.process.save(self.save_path)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled:
            return
        self.save(trainer)
        if self.process is None or len(self.process) == 0 or not self.plot:
            return
        if trainer.is_global_zero:
            if self.save_path is not None:
                png = Path(self.save_path).with_suffix(".png")
                self.process.plot(png)
                self.process.plot(png.with_name(png.stem + "_heatmap.png"), kind="heatmap")
            log_process_figures(trainer, self.process, "search/process")
        if self.skipped_updates:
            rank_zero_warn(f"DistPro search skipped {self.skipped_updates} non-finite updates.")

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        if self.process is None or self._alpha_opt is None:
            return {}
        return {
            "alpha_optimizer": self._alpha_opt.state_dict(),
            "logits": self.process.logits,
            "pathway_names": list(self.process.pathway_names),
            "val_cycle": self._val_cycle,
            "val_consumed": self._val_consumed,
            "skipped_updates": self.skipped_updates,
            "provenance_created": self.process.provenance.get("created"),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending_state = dict(state_dict) if state_dict else None

    def _restore(self, state: dict[str, Any], module: DistProMixin) -> None:
        assert self.process is not None and self._alpha_opt is not None and self._alpha is not None
        if list(state["pathway_names"]) != list(module.pathway_names):
            raise RuntimeError(
                "The checkpoint's search state belongs to different pathways: "
                f"{state['pathway_names']} vs {module.pathway_names}."
            )
        self.process.truncate(0)
        for row in state["logits"]:
            self.process.append(row)
        if state.get("provenance_created"):
            self.process.provenance["created"] = state["provenance_created"]
        self._alpha_opt.load_state_dict(state["alpha_optimizer"])
        self._val_cycle = int(state["val_cycle"])
        self._val_consumed = int(state["val_consumed"])
        self.skipped_updates = int(state["skipped_updates"])
        self._val_iter = None


def _make_grad_reducer(strategy: Any):
    """Average a list of gradients over ranks with one flat all-reduce."""

    def reduce(grads: list[Tensor]) -> list[Tensor]:
        flat = torch.cat([g.reshape(-1) for g in grads])
        flat = strategy.reduce(flat, reduce_op="mean")
        out, offset = [], 0
        for g in grads:
            out.append(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()
        return out

    return reduce

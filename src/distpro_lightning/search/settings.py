"""The search's settings, grouped as a Lightning user configures them: how the
hypergradient is computed, how alpha learns, when the search runs, and where its output
goes. `ProcessSearchCallback` takes one object of each (YAML: nested keys such as
``search.alpha.lr``); the flat keywords of earlier versions still work in Python with a
deprecation warning (`from_flat`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

from distpro_lightning.grouping import (
    check_field_types,
    check_ranges,
    coerce_group,
    flat_to_groups,
    non_negative,
    positive,
    say_unused,
)
from distpro_lightning.search.checks import SearchRunOptions
from distpro_lightning.search.hypergradient import Method
from distpro_lightning.search.output import AUTO_PATH
from distpro_lightning.search.step import SearchSettings


@dataclass(frozen=True)
class HypergradientConfig:
    """How each step's hypergradient is computed (``search.hypergradient.*``).

    Attributes:
        method: ``"finite_difference"`` (central, paper: two forwards at ``theta +- eps v``),
            ``"forward_difference"`` (one forward at ``theta + eps v``; ``O(eps)`` error) or
            ``"exact"`` (one forward-mode JVP).
        epsilon: finite-difference radius; ``eps = epsilon / ||v||``.
        average_virtual_gradient: under DDP, average the virtual step's gradient over ranks.
        average_val_gradient: under DDP, average ``v`` over ranks (with both averages: a
            one-process search on the union of the batches, exactly without BatchNorm).
        reuse_training_gradient: the real update reuses the virtual step's training
            gradient (one forward+backward fewer, one step of lag: ``w(a~_t)``); needs a
            module that applies it (``applies_reused_gradient``, e.g. `DistProModule`).
        share_training_forward: the real update backpropagates ``w(a~_{t+1})`` through the
            virtual step's training forward (same theta and inputs, graph kept; the task loss
            is recomputed with the step's targets): exact, one forward fewer. Off under
            ``16-mixed`` and with ``compile_heads=True`` (said at fit start), and with
            ``reuse_training_gradient`` (no forward of its own to share; the provenance's
            ``share_training_forward_in_force`` says so).
    """

    method: Method = "finite_difference"
    epsilon: float = 0.01
    average_virtual_gradient: bool = True
    average_val_gradient: bool = True
    reuse_training_gradient: bool = False
    share_training_forward: bool = True

    def __post_init__(self) -> None:
        check_field_types(self)
        methods = get_args(Method)
        check_ranges(
            "search.hypergradient",
            self,
            {
                "method": (lambda m: m in methods, f"one of {list(methods)}"),
                "epsilon": (positive, "a finite number > 0"),
            },
        )
        exact = "method='exact' (no finite differences)" if self.method == "exact" else None
        say_unused("search.hypergradient", self, {"epsilon": exact})


@dataclass(frozen=True)
class AlphaConfig:
    """How the pathway logits learn (``search.alpha.*``).

    Attributes:
        lr: learning rate of the logits' optimizer (paper: 0.05).
        optimizer: ``"adam"`` (paper; betas ``betas``) or ``"sgd"``.
        betas: Adam betas (the official release uses ``(0.5, 0.999)``).
        weight_decay: weight decay on the logits.
        init_process: a process file whose last row starts a new search's logits (same
            pathways, by name; same normalisation); a resume keeps the checkpoint's.
    """

    lr: float = 0.05
    optimizer: Literal["adam", "sgd"] = "adam"
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0
    init_process: str | None = None

    def __post_init__(self) -> None:
        check_field_types(self)
        betas_ok = (  # noqa: E731
            lambda b: len(b) == 2 and all(isinstance(x, int | float) and 0 <= x < 1 for x in b)
        )
        check_ranges(
            "search.alpha",
            self,
            {
                "lr": (positive, "a finite number > 0"),
                "optimizer": (lambda o: o in ("adam", "sgd"), "'adam' or 'sgd'"),
                "betas": (betas_ok, "two numbers in [0, 1)"),
                "weight_decay": (non_negative, "a finite number >= 0"),
            },
        )
        sgd = "optimizer='sgd' (Adam's betas)" if self.optimizer == "sgd" else None
        say_unused("search.alpha", self, {"betas": sgd})


@dataclass(frozen=True)
class ScheduleConfig:
    """When and on what the search runs (``search.schedule.*``).

    Attributes:
        warmup_steps: optimizer steps before alpha starts moving (rows still recorded).
        every_n_steps: sparse search: alpha is updated at every k-th optimizer step (after
            the warm-up) and held in between (a row per step: the true step axis).
        proxy: this search is a proxy (a fraction of the data and/or epochs) to be replayed
            stretched on a longer run; recorded, so such a replay does not warn.
        val_batches_per_step: held-out batches per step, concatenated.
        seed: seed of the held-out order (cycle ``c`` uses ``seed + c``).
        diagnostics_every_n_steps: diagnose every n steps (`diagnostics`; 0: off).
        max_non_finite_steps: stop after this many consecutive non-finite steps (0: never).
    """

    warmup_steps: int = 0
    every_n_steps: int = 1
    proxy: bool = False
    val_batches_per_step: int = 1
    seed: int = 0
    diagnostics_every_n_steps: int = 0
    max_non_finite_steps: int = 10

    def __post_init__(self) -> None:
        check_field_types(self)
        at_least = {
            "warmup_steps": 0,
            "every_n_steps": 1,
            "val_batches_per_step": 1,
            "diagnostics_every_n_steps": 0,
            "max_non_finite_steps": 0,
        }
        check_ranges(
            "search.schedule",
            self,
            {name: ((lambda v, n=n: v >= n), f">= {n}") for name, n in at_least.items()},
        )
        self._check_diagnostics_meet_searches()

    def _check_diagnostics_meet_searches(self) -> None:
        """Diagnosed steps are the searched steps (``warmup_steps + j * every_n_steps``)
        that are multiples of ``diagnostics_every_n_steps``: refuse settings where none is."""
        d, k, w = self.diagnostics_every_n_steps, self.every_n_steps, self.warmup_steps
        if d and w % math.gcd(d, k):
            raise ValueError(
                f"search.schedule.diagnostics_every_n_steps={d} never meets a searched step "
                f"(warmup_steps={w}, every_n_steps={k}: alpha is updated at steps {w}, "
                f"{w + k}, {w + 2 * k}, ...; diagnostics run at multiples of {d}). Use a "
                f"multiple of every_n_steps with a warm-up that is a multiple of "
                f"every_n_steps, e.g. diagnostics_every_n_steps={k * max(1, d // k)}, "
                f"warmup_steps={k * (w // k)}."
            )


@dataclass(frozen=True)
class OutputConfig:
    """Where the process goes (``search.output.*``).

    Attributes:
        save_path: the process file (JSON, atomic, rank 0). ``"auto"``: ``process.json`` in
            the run's log folder; ``{log_dir}`` in a path is replaced by that folder;
            ``None``: not written. Checked at fit start and at every save.
        save_every_n_steps: also write it every n steps (0: not by step count).
        save_every_epoch: also write it at every epoch end (always on an exception).
        overwrite: replace another run's process file at ``save_path`` (else refused).
        plot: write the plots at the end and log them at every epoch end.
        log_pathways: also log ``alpha_weight/<pathway>``; the summaries are always logged.
    """

    save_path: str | None = AUTO_PATH
    save_every_n_steps: int = 100
    save_every_epoch: bool = True
    overwrite: bool = False
    plot: bool = True
    log_pathways: bool = True

    def __post_init__(self) -> None:
        check_field_types(self)
        check_ranges("search.output", self, {"save_every_n_steps": (lambda v: v >= 0, ">= 0")})
        no_file = None if self.save_path is not None else "save_path=None (no process file)"
        say_unused(
            "search.output",
            self,
            {"save_every_n_steps": no_file, "save_every_epoch": no_file, "overwrite": no_file},
        )


#: The flat keywords of earlier versions: ``name -> (group, field)``.
FLAT_KEYS: dict[str, tuple[str, str]] = {
    "epsilon": ("hypergradient", "epsilon"),
    "average_virtual_gradient": ("hypergradient", "average_virtual_gradient"),
    "average_val_gradient": ("hypergradient", "average_val_gradient"),
    "reuse_training_gradient": ("hypergradient", "reuse_training_gradient"),
    "share_training_forward": ("hypergradient", "share_training_forward"),
    "alpha_lr": ("alpha", "lr"),
    "alpha_optimizer": ("alpha", "optimizer"),
    "alpha_betas": ("alpha", "betas"),
    "alpha_weight_decay": ("alpha", "weight_decay"),
    "init_process": ("alpha", "init_process"),
    "warmup_steps": ("schedule", "warmup_steps"),
    "search_every_n_steps": ("schedule", "every_n_steps"),
    "proxy": ("schedule", "proxy"),
    "val_batches_per_step": ("schedule", "val_batches_per_step"),
    "seed": ("schedule", "seed"),
    "diagnostics_every_n_steps": ("schedule", "diagnostics_every_n_steps"),
    "max_non_finite_steps": ("schedule", "max_non_finite_steps"),
    "save_path": ("output", "save_path"),
    "save_every_n_steps": ("output", "save_every_n_steps"),
    "save_every_epoch": ("output", "save_every_epoch"),
    "overwrite": ("output", "overwrite"),
    "plot": ("output", "plot"),
    "log_pathways": ("output", "log_pathways"),
}


@dataclass(frozen=True)
class SearchConfig:
    """The four groups together, as the callback holds them."""

    hypergradient: HypergradientConfig = field(default_factory=HypergradientConfig)
    alpha: AlphaConfig = field(default_factory=AlphaConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    @classmethod
    def of(cls, *groups: Any) -> SearchConfig:
        """The four groups in order, each a config object or a mapping of its fields
        (``output={"save_path": "p.json"}``); a field that does not exist is refused with
        the group's fields."""
        made = [
            coerce_group("ProcessSearchCallback", f.name, f.default_factory, value)  # type: ignore[misc]
            for f, value in zip(fields(cls), groups)
        ]
        return cls(*made)

    def search_settings(self) -> SearchSettings:
        """The settings of one search step (`SearchStep`): the hypergradient and alpha
        groups' fields under the step's names."""
        h, a = self.hypergradient, self.alpha
        return SearchSettings(
            hypergradient=h.method,
            epsilon=h.epsilon,
            alpha_lr=a.lr,
            alpha_optimizer=a.optimizer,
            alpha_betas=tuple(a.betas),
            alpha_weight_decay=a.weight_decay,
            average_virtual_gradient=h.average_virtual_gradient,
            average_val_gradient=h.average_val_gradient,
            reuse_training_gradient=h.reuse_training_gradient,
            share_training_forward=h.share_training_forward,
        )

    def run_options(self, held_out: Any = None) -> SearchRunOptions:
        """When and on what the search runs (`SearchRunOptions`): the schedule group, the
        alpha group's warm start and the callback's ``held_out`` source."""
        sc = self.schedule
        return SearchRunOptions(
            warmup_steps=sc.warmup_steps,
            seed=sc.seed,
            init_process=self.alpha.init_process,
            val_batches_per_step=sc.val_batches_per_step,
            diagnostics_every_n_steps=sc.diagnostics_every_n_steps,
            held_out=held_out,
            search_every_n_steps=sc.every_n_steps,
            proxy=sc.proxy,
        )

    def with_flat(
        self, flat: dict[str, Any], explicit: Mapping[str, Iterable[str]] | None = None
    ) -> SearchConfig:
        """These groups with earlier versions' flat keywords applied (``alpha_lr=0.1`` ->
        ``alpha.lr``), warning once that they are deprecated; unknown keywords are refused
        with the closest names, and one that contradicts a field its group sets
        (``explicit``: group -> fields given, `given_fields`) too."""
        if "log_every_n_steps" in flat:
            raise TypeError(
                "ProcessSearchCallback(log_every_n_steps=...) was removed: the search logs at "
                "the Trainer's cadence, Trainer(log_every_n_steps=...); drop the argument "
                "(search.log_every_n_steps in configs)."
            )
        if "alpha_betas" in flat:
            flat = {**flat, "alpha_betas": tuple(flat["alpha_betas"])}
        groups = {f.name: getattr(self, f.name) for f in fields(self)}
        valid = ["held_out", "enabled"]
        return SearchConfig(
            **flat_to_groups(
                "ProcessSearchCallback", flat, FLAT_KEYS, groups, valid, explicit=explicit
            )
        )

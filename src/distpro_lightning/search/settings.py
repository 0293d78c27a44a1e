"""The search's settings, grouped as a Lightning user configures them: how the
hypergradient is computed, how alpha learns, when the search runs, and where its output
goes. `ProcessSearchCallback` takes one object of each (YAML: nested keys such as
``search.alpha.lr``); the flat keywords of earlier versions still work in Python with a
deprecation warning (`from_flat`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from lightning.pytorch.utilities import rank_zero_warn

from distpro_lightning.search.hypergradient import Method
from distpro_lightning.search.output import AUTO_PATH


def _check_types(config: Any) -> None:
    """Refuse a field of the wrong type, naming it (``overwrite="no"`` is truthy, and a
    string where a number goes fails only at the first step otherwise)."""
    group = type(config).__name__
    for f in fields(config):
        value, kind = getattr(config, f.name), str(f.type)
        ok = True
        if kind == "bool":
            ok = isinstance(value, bool)
        elif kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind == "float":
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok:
            raise TypeError(
                f"{group}.{f.name} takes {'an' if kind == 'int' else 'a'} {kind}, got {type(value).__name__} {value!r} (in "
                f"YAML: {'true/false' if kind == 'bool' else 'a number without quotes'})."
            )


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
            ``16-mixed`` and with ``compile_heads=True`` (said at fit start).
    """

    method: Method = "finite_difference"
    epsilon: float = 0.01
    average_virtual_gradient: bool = True
    average_val_gradient: bool = True
    reuse_training_gradient: bool = False
    share_training_forward: bool = True

    def __post_init__(self) -> None:
        _check_types(self)


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
        _check_types(self)


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
        _check_types(self)


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
        _check_types(self)


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
        made = []
        for f, value in zip(fields(cls), groups):
            kind = f.default_factory  # type: ignore[misc]
            if isinstance(value, Mapping):
                names = {g.name for g in fields(kind)}
                unknown = sorted(set(value) - names)
                if unknown:
                    raise TypeError(
                        f"ProcessSearchCallback({f.name}=...): unknown keys {unknown}; "
                        f"{kind.__name__} has {sorted(names)}."
                    )
                value = kind(**value)
            if not isinstance(value, kind):
                raise TypeError(
                    f"ProcessSearchCallback({f.name}=...) takes a {kind.__name__} or a dict of "
                    f"its fields, got {type(value).__name__}."
                )
            made.append(value)
        return cls(*made)

    def with_flat(self, flat: dict[str, Any], warn: bool = True) -> SearchConfig:
        """These groups with earlier versions' flat keywords applied (``alpha_lr=0.1`` ->
        ``alpha.lr``), warning once that they are deprecated; unknown keywords are refused
        with the closest names."""
        unknown = sorted(set(flat) - set(FLAT_KEYS))
        if "log_every_n_steps" in unknown:
            raise TypeError(
                "ProcessSearchCallback(log_every_n_steps=...) was removed: the search logs at "
                "the Trainer's cadence, Trainer(log_every_n_steps=...); drop the argument "
                "(search.log_every_n_steps in configs)."
            )
        if unknown:
            import difflib

            valid = [*(f.name for f in fields(SearchConfig)), "held_out", "enabled", *FLAT_KEYS]
            hints = {u: difflib.get_close_matches(u, valid, n=1) for u in unknown}
            shown = ", ".join(
                f"{u!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for u, h in hints.items()
            )
            raise TypeError(f"ProcessSearchCallback got unknown arguments {shown}.")
        groups: dict[str, dict[str, Any]] = {}
        for key, value in flat.items():
            if key in FLAT_KEYS:
                group, name = FLAT_KEYS[key]
                groups.setdefault(group, {})[name] = tuple(value) if name == "betas" else value
        if warn and groups:
            new = ", ".join(f"{FLAT_KEYS[k][0]}.{FLAT_KEYS[k][1]}" for k in flat if k in FLAT_KEYS)
            rank_zero_warn(
                f"ProcessSearchCallback({', '.join(k for k in flat if k in FLAT_KEYS)}=...): flat "
                f"keywords are deprecated; use the grouped settings ({new}), e.g. "
                "ProcessSearchCallback(alpha=AlphaConfig(lr=0.1)) or search.alpha.lr in YAML.",
                category=FutureWarning,
            )
        return replace(
            self, **{g: replace(getattr(self, g), **values) for g, values in groups.items()}
        )

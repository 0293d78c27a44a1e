"""Process figures (paper Fig. 6 lines and a heatmap), their file names, and logging them."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

from torch import Tensor

from distpro_lightning.files import atomic_save_figure


class ProcessView(Protocol):
    """What the figures and the summary read of a `distpro_lightning.process.core.
    DistillationProcess` (a protocol, so this presentation layer does not import the data
    class that uses it)."""

    pathway_names: list[str]
    normalization: Any
    steps_per_epoch: int | None
    provenance: dict[str, Any]
    run_id: str | None

    def __len__(self) -> int: ...

    @property
    def num_pathways(self) -> int: ...

    @property
    def skipped_steps(self) -> list[int]: ...

    @property
    def prune_threshold(self) -> float | None: ...

    def weights(self, logits: Tensor | None = None) -> Tensor: ...

    def final(self) -> Tensor: ...

    def fingerprint(self) -> str: ...

    def teacher_groups(self) -> dict[str, list[int]]: ...


PLOT_KINDS = ("lines", "heatmap")


def plot_paths(save_path: str | os.PathLike[str]) -> dict[str, Path]:
    """The images written beside a process file at ``save_path``: ``{"lines": X.png,
    "heatmap": X_heatmap.png}`` (``X`` is ``save_path`` without its suffix). The one place
    these names are made, so a save path can be checked against them up front."""
    png = Path(save_path).with_suffix(".png")
    return {"lines": png, "heatmap": png.with_name(png.stem + "_heatmap.png")}


def _title(process: ProcessView, kind: str) -> str:
    """``<run id> · <mode or control> · N steps``: what a figure shows, for a team's folder."""
    parts = [str(process.run_id or process.provenance.get("run_id") or "process")]
    for key in ("control", "mode"):
        if process.provenance.get(key):
            parts.append(str(process.provenance[key]))
    parts.append(f"{len(process)} steps, {kind}")
    return " · ".join(parts)


def _epoch_lines(ax: Any, process: ProcessView) -> None:
    """Dotted vertical lines at the epoch boundaries (when the file knows them)."""
    every = process.steps_per_epoch
    if every and 0 < every < len(process):
        for x in range(every, len(process), every):
            ax.axvline(x - 0.5, color="0.8", lw=0.6, ls=":", zorder=0)


def process_figure(process: ProcessView, kind: str = "lines") -> Any:
    """A matplotlib figure: ``"lines"`` (paper Fig. 6: one panel per teacher tap, one line
    per pathway, x = step; one y-range for all panels, the legend outside the curves) or
    ``"heatmap"`` (pathways x steps, a diverging colour map centred on the weight every
    pathway starts from, so up and down read at a glance). Both carry a title (run, mode,
    steps) and the epoch boundaries."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure

    weights = process.weights().numpy()
    if kind == "lines":
        groups = process.teacher_groups()
        fig = Figure(figsize=(4.8 * len(groups), 4.2), constrained_layout=True)
        axes = fig.subplots(1, len(groups), squeeze=False, sharey=True)[0]
        for ax, (tap, idx) in zip(axes, groups.items()):
            for i in idx:
                ax.plot(weights[:, i], label=process.pathway_names[i].split("->", 1)[1], lw=1.2)
            _epoch_lines(ax, process)
            ax.set_title(f"teacher {tap}", fontsize=9)
            ax.set_xlabel("step")
            ax.legend(fontsize=7, ncol=1 + len(idx) // 8, loc="upper center",
                      bbox_to_anchor=(0.5, -0.18), frameon=False)  # fmt: skip
        axes[0].set_ylabel("pathway weight")
        fig.suptitle(_title(process, kind), fontsize=9)
        return fig
    if kind == "heatmap":
        fig = Figure(figsize=(8, 0.3 * process.num_pathways + 1.8), constrained_layout=True)
        ax = fig.subplots()
        import torch

        start = float(process.weights(torch.ones(1, process.num_pathways))[0].mean())
        low, high = float(weights.min()), float(weights.max())
        if not low < start < high:
            start = (low + high) / 2 if high > low else low
        norm = TwoSlopeNorm(
            vcenter=start, vmin=min(low, start - 1e-9), vmax=max(high, start + 1e-9)
        )
        im = ax.imshow(weights.T, aspect="auto", interpolation="nearest", cmap="RdBu_r", norm=norm)
        ax.set_yticks(range(process.num_pathways), process.pathway_names, fontsize=8)
        _epoch_lines(ax, process)
        ax.set_xlabel("step")
        ax.set_title(_title(process, kind), fontsize=9)
        fig.colorbar(im, ax=ax, label="weight (centre: the uniform start)")
        return fig
    raise ValueError(f"Unknown plot kind {kind!r}: use 'lines' or 'heatmap'.")


def log_process_figures(
    trainer: Any, process: ProcessView, tag: str, epoch: int | None = None
) -> list[Path]:
    """Log the process plots to every logger of ``trainer``: as images to loggers that take
    them (W&B, TensorBoard: their own step history), as PNG files in ``figures/`` of the log
    directory of the others (CSV), one per epoch so the history is kept:
    ``figures/<tag>_<kind>_epoch<NNN>.png`` with ``/`` in ``tag`` replaced by ``_``, written
    atomically; ``epoch``: the (0-based) epoch the figures show, by default the Trainer's
    ``current_epoch`` (right during an epoch and at its end, one past the last epoch once
    the fit has ended). Returns the PNG files written (global rank 0 only)."""
    epoch = trainer.current_epoch if epoch is None else epoch
    if len(process) == 0:
        return []
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    written: list[Path] = []
    for logger in trainer.loggers:
        for kind in PLOT_KINDS:
            if isinstance(logger, WandbLogger):
                import wandb

                fig = process_figure(process, kind)
                with tempfile.TemporaryDirectory() as tmp:
                    png = Path(tmp) / f"{kind}.png"
                    fig.savefig(png, dpi=110)
                    logger.experiment.log(
                        {
                            f"{tag}/{kind}": wandb.Image(str(png)),
                            "trainer/global_step": trainer.global_step,
                        }
                    )
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure(
                    f"{tag}/{kind}", process_figure(process, kind), trainer.global_step
                )
            elif trainer.is_global_zero:
                folder = getattr(logger, "log_dir", None) or logger.save_dir
                if folder is None:
                    continue
                name = f"{tag.replace('/', '_')}_{kind}_epoch{epoch:03d}.png"
                png = Path(folder) / "figures" / name
                atomic_save_figure(png, process_figure(process, kind))
                written.append(png)
    return written


def process_summary(process: ProcessView) -> str:
    """A human-readable summary: size, normalisation, prune threshold, skipped steps, one
    table of the pathways sorted by their final weight (heaviest first: the weight at the
    first and the last row, its range, the final share of the total and whether the last
    row prunes it), then the provenance."""
    skipped = process.skipped_steps
    shown = ", ".join(map(str, skipped[:10])) + (" ..." if len(skipped) > 10 else "")
    lines = [
        f"DistPro process: {len(process)} steps x {process.num_pathways} pathways, normalization "
        f"{process.normalization}, prune threshold {process.prune_threshold}, steps/epoch "
        f"{process.steps_per_epoch}, fingerprint {process.fingerprint()}, run id {process.run_id}",
        f"skipped steps: {len(skipped)}" + (f" ({shown})" if skipped else ""),
        weight_table(process),
    ]
    lines += [f"{key}: {value}" for key, value in process.provenance.items()]
    return "\n".join(lines)


def weight_table(process: ProcessView) -> str:
    """The pathways sorted by their final weight, numbered from 1 (see `process_summary`)."""
    if not len(process):
        return "(no rows)"
    w = process.weights()
    final = w[-1]
    total = float(final.abs().sum()) or 1.0
    tau = process.prune_threshold
    last = process.final()
    order = sorted(range(process.num_pathways), key=lambda i: -float(final[i]))
    width = max([len("pathway"), *(len(n) for n in process.pathway_names)])
    header = (
        f"{'#':>3} {'pathway':<{width}} {'w first':>8} {'w last':>8} {'w min':>8} "
        f"{'w max':>8} {'share':>6} {'pruned':>6}"
    )
    rows = [header, "-" * len(header)]
    for rank, i in enumerate(order):
        col = w[:, i]
        pruned = "-" if tau is None else ("yes" if float(last[i]) <= tau else "no")
        rows.append(
            f"{rank + 1:>3} {process.pathway_names[i]:<{width}} {float(col[0]):>8.4f} "
            f"{float(col[-1]):>8.4f} {float(col.min()):>8.4f} {float(col.max()):>8.4f} "
            f"{100 * float(final[i]) / total:>5.1f}% {pruned:>6}"
        )
    return "\n".join(rows)

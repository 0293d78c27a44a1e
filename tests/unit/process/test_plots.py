"""The process figures as a user reads them: one y-range for every panel, the legends below
the curves, a title naming run, mode and steps, the epoch boundaries, and a heatmap whose
diverging colour map is centred on the weight every pathway starts from."""

from __future__ import annotations

import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm

from distpro_lightning.process.core import DistillationProcess
from distpro_lightning.process.plots import process_figure

NAMES = ["layer1->layer1:conv_bn", "layer1->layer2:attn2", "layer2->layer2:conv_bn"]
# bias 1 = the start logit 1, so the uniform start is scale / (P + 1) = 3 / 4 for every pathway
NORM = {"name": "biased_softmax", "bias": 1.0, "scale": 3.0}
START = 0.75
# Six steps, two per epoch: the layer1 panel spans about 0..3, the layer2 panel about 0..1.2.
ROWS = [
    [1.0, 1.0, 1.0],
    [0.0, 10.0, 0.0],
    [1.0, 9.0, -1.0],
    [2.0, 6.0, 2.0],
    [3.0, 1.0, -3.0],
    [4.0, -6.0, 4.0],
]


def process(steps_per_epoch: int | None = 2) -> DistillationProcess:
    return DistillationProcess(
        NAMES,
        NORM,
        logits=ROWS,
        steps_per_epoch=steps_per_epoch,
        run_id="run-7",
        provenance={"mode": "search"},
    )


def epoch_lines(ax) -> list[float]:
    """The x positions of the dotted vertical lines (the curves are solid)."""
    return sorted(
        float(line.get_xdata()[0]) for line in ax.get_lines() if line.get_linestyle() == ":"
    )


def test_line_panels_share_one_y_range_covering_every_curve() -> None:
    p = process()
    fig = process_figure(p, "lines")
    axes = fig.get_axes()
    assert len(axes) == 2  # teachers layer1 and layer2
    w = p.weights()
    # the panels' own data ranges differ, so only a shared axis makes their limits equal
    assert float(w[:, 2].max()) < float(w[:, :2].max()) - 1.0
    assert axes[0].get_ylim() == axes[1].get_ylim()
    low, high = axes[1].get_ylim()
    assert low <= float(w.min()) and high >= float(w.max())


def test_line_legends_sit_below_the_curves() -> None:
    fig = process_figure(process(), "lines")
    FigureCanvasAgg(fig).draw()
    for ax in fig.get_axes():
        legend = ax.get_legend()
        assert legend is not None and len(legend.get_texts()) == len(ax.get_lines()) - 2
        box, plot = legend.get_window_extent(), ax.get_window_extent()
        assert box.y1 <= plot.y0  # entirely under the plotting area (display y grows upwards)


@pytest.mark.parametrize("kind", ["lines", "heatmap"])
def test_title_names_run_mode_and_steps(kind: str) -> None:
    fig = process_figure(process(), kind)
    title = fig._suptitle.get_text() if kind == "lines" else fig.get_axes()[0].get_title()
    assert title == f"run-7 · search · 6 steps, {kind}"


@pytest.mark.parametrize("kind", ["lines", "heatmap"])
def test_epoch_boundaries_are_drawn_at_steps_per_epoch_multiples(kind: str) -> None:
    fig = process_figure(process(steps_per_epoch=2), kind)
    axes = fig.get_axes()[:2] if kind == "lines" else fig.get_axes()[:1]  # not the colour bar
    for ax in axes:
        assert epoch_lines(ax) == [1.5, 3.5]  # between steps 1|2 and 3|4
    for every in (None, 6):  # unknown, or one epoch longer than the file: no boundary
        fig = process_figure(process(steps_per_epoch=every), kind)
        assert epoch_lines(fig.get_axes()[0]) == []


def test_heatmap_colour_map_is_diverging_and_centred_on_the_uniform_start() -> None:
    p = process()
    fig = process_figure(p, "heatmap")
    ax = fig.get_axes()[0]
    (image,) = ax.get_images()
    w = p.weights()
    assert float(w.min()) < START < float(w.max())
    assert image.get_cmap().name == "RdBu_r"
    norm = image.norm
    assert isinstance(norm, TwoSlopeNorm)
    assert norm.vcenter == pytest.approx(START)
    assert float(norm(START)) == pytest.approx(0.5)  # the start is the map's white middle
    assert norm.vmin <= float(w.min()) and norm.vmax >= float(w.max())
    # the first row is the uniform start itself: every cell of its column is the centre
    assert torch.allclose(w[0], torch.full((3,), START))
    assert [float(v) for v in norm(image.get_array()[:, 0])] == pytest.approx([0.5] * 3)

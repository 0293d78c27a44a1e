"""Tests for ``distpro_lightning.models``: shapes, stage hooks, parameter counts, registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distpro_lightning import models

CIFAR_NAMES = [n for n in models.available_models() if not n.startswith("tv_")]
TV_NAMES = [n for n in models.available_models() if n.startswith("tv_")]

EXPECTED_CIFAR = {
    "resnet8",
    "resnet14",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet8x4",
    "resnet32x4",
    "wrn_16_1",
    "wrn_16_2",
    "wrn_40_1",
    "wrn_40_2",
    "wrn_16_4",
    "wrn_28_4",
    "shufflenet_v1",
    "shufflenet_v2",
    "mobilenet_v2",
}
EXPECTED_TV = {"tv_resnet18", "tv_resnet34", "tv_resnet50", "tv_mobilenet_v2", "tv_shufflenet_v2"}

# Parameter counts (millions, 100 classes) reported in the CRD/RepDistiller/ReviewKD papers.
PARAM_COUNTS_M = {
    "resnet8": 0.08,
    "resnet14": 0.18,
    "resnet20": 0.27,
    "resnet32": 0.46,
    "resnet44": 0.66,
    "resnet56": 0.86,
    "resnet110": 1.73,
    "resnet8x4": 1.23,
    "resnet32x4": 7.43,
    "wrn_16_1": 0.18,
    "wrn_16_2": 0.70,
    "wrn_40_1": 0.57,
    "wrn_40_2": 2.25,
    "wrn_16_4": 2.77,
    "wrn_28_4": 5.87,
    "shufflenet_v1": 0.95,
    "shufflenet_v2": 1.35,
    "mobilenet_v2": 0.81,
}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _run_with_hooks(
    model: nn.Module, x: torch.Tensor
) -> tuple[torch.Tensor, dict[str, list[torch.Tensor]], dict[str, list[int]]]:
    """Forward ``x`` with hooks on every stage; return logits, stage outputs, tensor versions."""
    modules = dict(model.named_modules())
    outputs: dict[str, list[torch.Tensor]] = {n: [] for n in model.stage_names}
    versions: dict[str, list[int]] = {n: [] for n in model.stage_names}

    def make_hook(name: str):
        def hook(_m: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            outputs[name].append(out)
            versions[name].append(out._version)

        return hook

    handles = [modules[n].register_forward_hook(make_hook(n)) for n in model.stage_names]
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    return logits, outputs, versions


def test_registry_lists_all_models() -> None:
    names = models.available_models()
    assert set(names) == EXPECTED_CIFAR | EXPECTED_TV
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name", CIFAR_NAMES)
def test_cifar_forward_shapes(name: str) -> None:
    rgb = models.create(name, num_classes=10, in_channels=3)
    gray = models.create(name, num_classes=7, in_channels=1)
    assert rgb(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert gray(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    assert gray(torch.randn(2, 1, 28, 28)).shape == (2, 7)
    gray.eval()
    with torch.no_grad():
        assert gray(torch.randn(2, 1, 8, 8)).shape == (2, 7)


@pytest.mark.parametrize("size", [32, 28])
@pytest.mark.parametrize("name", CIFAR_NAMES)
def test_cifar_stage_hooks(name: str, size: int) -> None:
    model = models.create(name, num_classes=10, in_channels=1)
    names = model.stage_names
    assert isinstance(names, list) and len(names) >= 3
    assert models.stage_names(model) == names == models.stage_names(name)
    modules = dict(model.named_modules())
    for n in names:
        assert n in modules, f"{name}: stage {n!r} is not a submodule"

    logits, outputs, versions = _run_with_hooks(model, torch.randn(2, 1, size, size))
    assert logits.shape == (2, 10)
    sizes = []
    for n in names:
        assert len(outputs[n]) == 1, f"{name}: hook on {n!r} fired {len(outputs[n])} times"
        out = outputs[n][0]
        assert out.dim() == 4 and out.shape[0] == 2
        # The stage output must not be modified in place after its hook fired.
        assert out._version == versions[n][0], f"{name}: {n!r} output modified in place"
        assert out.requires_grad
        sizes.append(out.shape[-1])
        assert out.shape[-2] == out.shape[-1]
    assert all(a >= b for a, b in zip(sizes, sizes[1:])), sizes
    assert all(a > b for a, b in zip(sizes[1:], sizes[2:])), sizes
    # The first stage is at most at input resolution, the last strictly below it.
    assert sizes[0] <= size and sizes[-1] < size


@pytest.mark.parametrize("name", CIFAR_NAMES)
def test_cifar_param_counts(name: str) -> None:
    model = models.create(name, num_classes=100)
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    expected = PARAM_COUNTS_M[name]
    assert abs(n_params - expected) <= 0.15 * expected, (name, n_params, expected)


def test_cifar_stage_gradients_flow() -> None:
    model = models.create("resnet8", num_classes=10)
    _, outputs, _ = _run_with_hooks(model, torch.randn(2, 3, 32, 32))
    loss = sum(o[0].pow(2).mean() for o in outputs.values())
    loss.backward()
    assert model.conv1.weight.grad is not None


def test_mobilenet_width() -> None:
    half = models.create("mobilenet_v2", num_classes=100)
    full = models.create("mobilenet_v2", num_classes=100, width_mult=1.0)
    assert half.width_mult == 0.5 and full.width_mult == 1.0
    n_full = sum(p.numel() for p in full.parameters())
    assert n_full > 2 * sum(p.numel() for p in half.parameters())
    assert full(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    shapes = models.stage_shapes(full, (3, 32, 32))
    assert [s[1] for s in shapes.values()] == [24, 32, 96, 320]


def test_stage_shapes_keeps_mode_and_stats() -> None:
    model = models.create("resnet8", num_classes=10)
    model.train()
    before = model.bn1.running_mean.clone()
    shapes = models.stage_shapes(model, (3, 32, 32))
    assert model.training
    assert torch.equal(model.bn1.running_mean, before)
    assert {k: tuple(v) for k, v in shapes.items()} == {
        "layer1": (2, 16, 32, 32),
        "layer2": (2, 32, 16, 16),
        "layer3": (2, 64, 8, 8),
    }


@pytest.mark.parametrize("name", TV_NAMES)
def test_torchvision_models(name: str) -> None:
    for in_channels in (3, 1):
        model = models.create(name, num_classes=5, in_channels=in_channels)
        names = models.stage_names(model)
        assert names == models.stage_names(name) and len(names) == 5
        modules = dict(model.named_modules())
        assert all(n in modules for n in names)
        model.eval()
        with torch.no_grad():
            logits, outputs, versions = _run_with_hooks(model, torch.randn(2, in_channels, 64, 64))
        assert logits.shape == (2, 5)
        sizes = []
        for n in names:
            assert len(outputs[n]) == 1
            assert outputs[n][0].dim() == 4
            assert outputs[n][0]._version == versions[n][0]
            sizes.append(outputs[n][0].shape[-1])
        # Five taps at 1/2, 1/4, ..., 1/32 of the input resolution.
        assert sizes == [32, 16, 8, 4, 2]


def test_torchvision_first_conv_replaced() -> None:
    model = models.create("tv_resnet18", num_classes=10, in_channels=1)
    assert model.conv1.in_channels == 1
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
    model = models.create("tv_mobilenet_v2", num_classes=10, in_channels=1)
    assert model.features[0][0].in_channels == 1
    model = models.create("tv_shufflenet_v2", num_classes=10, in_channels=1)
    assert model.conv1[0].in_channels == 1


def test_name_normalisation() -> None:
    model = models.create(" ResNet8", num_classes=3)
    assert isinstance(model, models.CifarResNet)
    assert models.stage_names("WRN-40-2") == ["block1", "block2", "block3"]


def test_unknown_name_suggests() -> None:
    with pytest.raises(ValueError) as excinfo:
        models.create("resnet21", num_classes=10)
    message = str(excinfo.value)
    assert "resnet20" in message and "Did you mean" in message
    assert "tv_resnet18" in message  # the full list of names is included

    with pytest.raises(ValueError, match="wrn_40_2"):
        models.stage_names("wrn_40_3")


def test_stage_names_of_plain_module_raises() -> None:
    with pytest.raises(ValueError, match="stage_names"):
        models.stage_names(nn.Linear(2, 2))

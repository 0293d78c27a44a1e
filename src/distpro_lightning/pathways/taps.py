"""Feature taps: capture the outputs of named submodules with forward hooks.

A tap is the dotted name of a submodule as in ``named_modules()`` (``"layer2"``,
``"features.6"``). `FeatureTaps` registers one forward hook per tap; the hooks only
record while a `FeatureTaps.capture` block is open, so the wrapped model behaves
exactly as before outside it. Hooks also fire under ``torch.func.functional_call`` and
``torch.func.jvp``, which the search step relies on.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from distpro_lightning.errors import DistProError
from distpro_lightning.models.timm_models import feature_stage_names


class TapError(DistProError, RuntimeError):
    """A tap misbehaved during a forward pass (fired twice, returned a non-tensor)."""


class _TapHook:
    """A forward hook object (not a closure), so ``copy.deepcopy`` of a module — as
    Lightning's ``StochasticWeightAveraging`` does — gives hooks bound to the copied taps."""

    def __init__(self, taps: FeatureTaps, name: str) -> None:
        self.taps = taps
        self.name = name

    def __call__(self, module: nn.Module, args: object, output: object) -> None:
        self.taps._record(self.name, output)


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip ``DistributedDataParallel`` / ``DataParallel`` and ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def validate_tap_names(model: nn.Module, names: Sequence[str], role: str = "model") -> None:
    """Raise ``ValueError`` for names that are not submodules, listing the closest valid ones."""
    modules = dict(unwrap_model(model).named_modules())
    valid = [n for n in modules if n]
    for name in names:
        if name not in modules or name == "":
            close = difflib.get_close_matches(name, valid, n=5, cutoff=0.4)
            hint = f" Closest valid names: {', '.join(close)}." if close else ""
            shown = ", ".join(valid[:40]) + (" ..." if len(valid) > 40 else "")
            raise ValueError(
                f"Unknown {role} tap {name!r}: no submodule of that name.{hint} "
                f"Valid names (from named_modules()): {shown}"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"Duplicate {role} taps in {list(names)}: each tap may appear once.")


class FeatureTaps:
    """Forward-hook feature capture on a model.

    Example:

    ```python
    taps = FeatureTaps(model, ["layer1", "layer2"], role="student")
    with taps.capture() as feats:
        logits = model(x)
    f1, f2 = feats["layer1"], feats["layer2"]
    ```

    A tapped module that fires twice in one forward raises ``RuntimeError`` (its feature
    would be ambiguous).
    """

    def __init__(self, model: nn.Module, names: Sequence[str], role: str = "model") -> None:
        self.model = unwrap_model(model)
        self.names = list(names)
        self.role = role
        validate_tap_names(self.model, self.names, role)
        self._store: dict[str, Tensor] | None = None
        modules = dict(self.model.named_modules())
        self._handles = [
            modules[name].register_forward_hook(self._make_hook(name)) for name in self.names
        ]

    def _make_hook(self, name: str) -> _TapHook:
        return _TapHook(self, name)

    def _record(self, name: str, output: object) -> None:
        if self._store is None:
            return
        if name in self._store:
            raise TapError(
                f"{self.role} tap {name!r} fired twice in one forward pass; its output is "
                "ambiguous. Tap a module that runs once (e.g. the enclosing stage)."
            )
        if isinstance(output, tuple | list):
            output = output[0]
        if not isinstance(output, Tensor):
            raise TapError(
                f"{self.role} tap {name!r} returned {type(output).__name__}, not a Tensor."
            )
        self._store[name] = output

    @contextmanager
    def capture(self) -> Iterator[dict[str, Tensor]]:
        """Record the tapped outputs of the forward passes run inside the block."""
        if self._store is not None:
            raise RuntimeError("FeatureTaps.capture() blocks cannot be nested.")
        store: dict[str, Tensor] = {}
        self._store = store
        try:
            yield store
        finally:
            self._store = None

    def ordered(self, store: dict[str, Tensor]) -> list[Tensor]:
        """The captured features in tap order; error naming any tap that did not fire."""
        missing = [n for n in self.names if n not in store]
        if missing:
            raise RuntimeError(
                f"{self.role} taps {missing} did not fire during the forward pass. Are these "
                "modules used by forward()?"
            )
        return [store[n] for n in self.names]

    def remove(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _on_model_device(model: nn.Module, example: Tensor) -> Tensor:
    """``example`` moved to the device (and floating dtype) of the model's parameters."""
    param = next(model.parameters(), None)
    if param is None:
        return example
    dtype = param.dtype if example.is_floating_point() and param.is_floating_point() else None
    return example.to(device=param.device, dtype=dtype)


#: Errors of a forward pass that `explained_input_errors` explains.
INPUT_ERRORS = (RuntimeError, ValueError, TypeError, IndexError)
#: Errors it passes on unchanged: the taps' own, out-of-memory, an operation without
#: forward-mode AD (``NotImplementedError``).
NOT_INPUT_ERRORS = (TapError, torch.OutOfMemoryError, NotImplementedError)


def input_error(
    role: str, model: nn.Module, x: Tensor, exc: BaseException, dry_run: bool = True
) -> ValueError:
    """The error for ``model`` (the ``role``: student, teacher) failing on input ``x``: it
    names the model, the input's shape and the fix (``input_shape``, channels).
    ``dry_run=False``: the input is a batch of the data (in training), not the dry run's."""
    name = type(unwrap_model(model)).__name__
    cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    shape = tuple(x.shape)
    if not dry_run:
        return ValueError(
            f"The {role} ({name}) fails on a batch of the data of shape {shape} (per-sample "
            f"{shape[1:]}): {cause}. Check that the data fit the {role}: its in_channels and "
            "input size against the data's (and the data module's transforms)."
        )
    head = (
        f"The {role} ({name}) fails on an input batch of shape {shape} (per-sample "
        f"{shape[1:]}): {cause}."
    )
    has_conv = any(isinstance(m, nn.Conv2d) for m in unwrap_model(model).modules())
    if not has_conv and x.dim() == 4:
        return ValueError(
            f"{head} The {role} has no Conv2d layers, so it does not take images: pass "
            "input_shape with its per-sample input shape (e.g. [784] for a flat MLP), or set "
            "example_input_array."
        )
    return ValueError(
        f"{head} Pass input_shape with the per-sample shape of your data (e.g. [1, 28, 28] "
        "for Fashion-MNIST, [3, 32, 32] for CIFAR) or set example_input_array; if that is "
        f"the data's shape, the {role} does not accept it: check its in_channels and input "
        "size against the data."
    )


@contextmanager
def explained_input_errors(
    role: str, model: nn.Module, x: Tensor, dry_run: bool = True
) -> Iterator[None]:
    """Turn an error of ``model``'s forward on ``x`` into `input_error` (chained to
    the original). Errors of the taps themselves, out-of-memory and operations without
    forward-mode AD pass unchanged (`NOT_INPUT_ERRORS`)."""
    try:
        yield
    except NOT_INPUT_ERRORS:
        raise
    except INPUT_ERRORS as exc:
        raise input_error(role, model, x, exc, dry_run) from exc


def _dry_run(model: nn.Module, example: Tensor, role: str) -> Tensor:
    x = _on_model_device(model, example)
    with explained_input_errors(role, model, x):
        return model(x)


def _record_all(
    model: nn.Module, example: Tensor, role: str = "model"
) -> tuple[list[str], dict[str, Tensor], dict[str, int]]:
    """Run one forward recording every submodule's output, its completion order and call count."""
    order: list[str] = []
    outputs: dict[str, Tensor] = {}
    calls: dict[str, int] = {}
    handles = []
    for name, mod in model.named_modules():
        if not name:
            continue

        def hook(m: nn.Module, a: object, out: object, name: str = name) -> None:
            calls[name] = calls.get(name, 0) + 1
            if isinstance(out, Tensor):
                outputs[name] = out
                order.append(name)

        handles.append(mod.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            _dry_run(model, example, role)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return order, outputs, calls


def auto_taps(model: nn.Module, example: Tensor, role: str = "model") -> list[str]:
    """Pick the outputs of the down-sampling stages of a CNN.

    If the model declares ``stage_names`` (every model of `distpro_lightning.models`
    does) they are used; a model that describes its stages as timm does (``feature_info``)
    gets them from there (`models.timm_models.feature_stage_names`: CNN stages without
    the stem, a transformer's last block of each third). Otherwise one dry-run forward records the 4-D outputs of the
    modules at depth <= 2 that run once; among modules returning the very same tensor the
    shallowest name wins; the outputs are grouped by spatial size, and the last module of
    each group (the end of a stage) is a tap. Groups of spatial size 1x1 (global pooling)
    are dropped. For a torchvision ResNet this gives ``relu, layer1, layer2, layer3,
    layer4``; for a CIFAR ResNet ``layer1, layer2, layer3``. A model that fails on
    ``example`` raises `input_error` (``role`` names it).
    """
    model = unwrap_model(model)
    declared = getattr(model, "stage_names", None) or feature_stage_names(model)
    if declared:
        return list(declared)
    order, outputs, calls = _record_all(model, example, role)
    chosen: list[str] = []
    seen: dict[int, str] = {}
    for name in order:
        out = outputs[name]
        if name.count(".") > 1 or calls.get(name, 0) != 1 or out.dim() != 4:
            continue
        key = id(out)
        if key in seen:
            # Same tensor object as an earlier module (an in-place op or an enclosing
            # container): the shallower name wins, on a tie the later module (it finished
            # the computation, e.g. an in-place ReLU after BatchNorm).
            prev = seen[key]
            if name.count(".") <= prev.count(".") and prev in chosen:
                chosen[chosen.index(prev)] = name
                seen[key] = name
            continue
        seen[key] = name
        chosen.append(name)
    taps: list[str] = []
    last_size: tuple[int, int] | None = None
    for name in chosen:
        size = tuple(outputs[name].shape[-2:])
        if size == (1, 1):
            continue
        if taps and size == last_size:
            taps[-1] = name
        else:
            taps.append(name)
        last_size = size
    if not taps:
        raise ValueError(
            "Could not find down-sampling stages automatically (no 4-D submodule outputs). "
            "Pass explicit tap names."
        )
    return taps


def probe_shapes(
    model: nn.Module, names: Sequence[str], example: Tensor, role: str = "model"
) -> tuple[list[tuple[int, ...]], Tensor]:
    """Per-sample shapes of the tapped features and the output, from one eval-mode dry run.
    A model that fails on ``example`` raises `input_error` naming ``role``."""
    model = unwrap_model(model)
    taps = FeatureTaps(model, names, role)
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), taps.capture() as store:
            out = _dry_run(model, example, role)
        feats = taps.ordered(store)
    finally:
        model.train(was_training)
        taps.remove()
    return [tuple(f.shape[1:]) for f in feats], out


def example_input(
    model: nn.Module, input_shape: Sequence[int] | None, example: Tensor | None
) -> Tensor:
    """A 2-sample input for the dry run that sizes the heads: ``example`` (cut to 2), else
    zeros of ``input_shape``, else 32x32 at the first convolution's channels. An
    ``input_shape`` that disagrees with ``example``'s per-sample shape is said to be unused."""
    if example is not None:
        if input_shape is not None and example.dim() > 0:
            given, used = [int(s) for s in input_shape], list(example.shape[1:])
            if given != used:
                logging.getLogger(__name__).warning(
                    "DistPro: input_shape=%s has no effect: example_input_array (per-sample "
                    "shape %s) sizes the pathway heads. Drop input_shape, or make "
                    "example_input_array the shape you train on.",
                    given,
                    used,
                )
        return example[:2] if example.dim() > 0 and example.shape[0] > 2 else example
    if input_shape is not None:
        return torch.zeros(2, *[int(s) for s in input_shape])
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first_conv is None:
        raise ValueError(
            "Cannot infer the input shape of a model without Conv2d layers: pass input_shape "
            "(per-sample, e.g. [3, 224, 224]) or set example_input_array."
        )
    return torch.zeros(2, first_conv.in_channels, 32, 32)


def resolve_taps(
    model: nn.Module, taps: Sequence[str] | str, example: Tensor, role: str
) -> list[str]:
    """The tap names: the given list, or ``auto_taps`` of ``model`` for ``"auto"``."""
    if isinstance(taps, str):
        taps = auto_taps(model, example)
        logging.getLogger(__name__).info("DistPro: automatic %s taps %s", role, taps)
    return list(taps)

"""Forward and backward passes per step, counted with hooks (counts, not times).

Per search step (finite differences) the passes a second-order step cannot avoid are: one
teacher forward; student + heads forward and backward at ``theta`` (virtual step); a student
forward and backward at ``theta'`` (held-out); two student + heads forwards at ``theta +-``;
the real update: a backward through the virtual step's kept forward (shared forward, the
default), or its own forward and backward (``share_training_forward=False``), or, with the
reused gradient, none. The exact hypergradient replaces the two forwards by one
forward-mode pass, forward differences by one forward at ``theta +``.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from conftest import make_module, quiet_trainer
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from distpro_lightning import (
    ProcessScheduleCallback,
    ProcessSearchCallback,
    SearchSettings,
    SearchStep,
)
from distpro_lightning.data import DigitsDataModule


class PassCounter:
    """Counts forwards of the teacher, the student and the heads (forward hooks) and the
    backwards through the student and the heads (an autograd hook on each forward's output
    that requires grad: it fires once per backward pass that reaches it)."""

    def __init__(self, module) -> None:
        self.counts: Counter[str] = Counter()
        for name in ("teacher", "student", "heads"):
            part = module.distill_heads if name == "heads" else getattr(module, name)
            part.register_forward_hook(self._hook(name))

    def _hook(self, name: str):
        def hook(mod, args, out) -> None:
            self.counts[f"{name}_forward"] += 1
            first = out if isinstance(out, Tensor) else out[0]
            if isinstance(first, Tensor) and first.requires_grad:
                first.register_hook(lambda g: self.counts.update([f"{name}_backward"]))

        return hook

    def take(self) -> dict[str, int]:
        out, self.counts = dict(self.counts), Counter()
        return out


def _expected_search(method: str, reuse: bool, share: bool = True) -> dict[str, int]:
    perturbed = 2 if method == "finite_difference" else 1  # exact: one forward-mode pass
    real_backward = 0 if reuse else 1
    real_forward = 0 if reuse or share else 1
    return {
        "teacher_forward": 1,
        "student_forward": 2 + perturbed + real_forward,
        "heads_forward": 1 + perturbed + real_forward,
        "student_backward": 2 + real_backward,
        "heads_backward": 1 + real_backward,
    }


def _batches(n=16):
    g = torch.Generator().manual_seed(0)
    x, xv = torch.randn(2, n, 1, 8, 8, generator=g)
    y, yv = torch.randint(0, 10, (2, n), generator=g)
    return (x, y), (xv, yv)


@pytest.mark.parametrize(
    "method,reuse,share",
    [
        ("finite_difference", False, True),
        ("finite_difference", False, False),
        ("finite_difference", True, True),
        ("exact", False, True),
        ("forward_difference", False, True),
    ],
)
def test_search_step_object_passes(method, reuse, share):
    torch.manual_seed(0)
    m = make_module(transforms=["conv_bn", "attn2"]).train()
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    counter = PassCounter(m)
    settings = SearchSettings(
        hypergradient=method, reuse_training_gradient=reuse, share_training_forward=share
    )
    step = SearchStep(m, opt, settings)
    train, val = _batches()
    for t in range(2):
        step(train, val, step=m.global_step)  # 0 without a Trainer: the context matches
        reused = m.take_reused_gradient()
        loss = reused.surrogate_loss() if reuse else m.training_loss(train)[0]
        loss.backward()
        opt.step()
        opt.zero_grad()
        m.step_context = None
        assert counter.take() == _expected_search(method, reuse, share), (method, reuse, t)


class _PerStep(Callback):
    """First in the callback list: the counts of each optimizer step, from before the search
    (``on_train_batch_start``) to after the optimizer step (``on_train_batch_end``)."""

    def __init__(self, counter: PassCounter) -> None:
        self.counter = counter
        self.steps: list[dict[str, int]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.counter.take()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append(self.counter.take())


def _fit(m, callback, steps=3):
    per_step = _PerStep(PassCounter(m))
    trainer = quiet_trainer(max_steps=steps, limit_val_batches=0, callbacks=[per_step, callback])
    trainer.fit(m, datamodule=DigitsDataModule(batch_size=16, mode="search", subset=128, seed=0))
    assert len(per_step.steps) == steps
    return per_step.steps


@pytest.mark.parametrize("reuse,share", [(False, True), (False, False), (True, True)])
def test_search_fit_passes(tmp_path, reuse, share):
    torch.manual_seed(0)
    m = make_module(transforms=["conv_bn", "attn2"])
    cb = ProcessSearchCallback(
        output={"save_path": str(tmp_path / "p.json"), "plot": False},
        hypergradient={"reuse_training_gradient": reuse, "share_training_forward": share},
    )
    for counts in _fit(m, cb):
        assert counts == _expected_search("finite_difference", reuse, share)


def test_retrain_fit_passes():
    torch.manual_seed(0)
    m = make_module(transforms=["conv_bn", "attn2"])
    process = m.new_process({})
    process.append(torch.ones(m.num_pathways))
    for counts in _fit(m, ProcessScheduleCallback(process=process, mode="final")):
        assert counts == {
            "teacher_forward": 1,
            "student_forward": 1,
            "heads_forward": 1,
            "student_backward": 1,
            "heads_backward": 1,
        }

"""``share_training_forward``: the real update backpropagates through the search's training
pass instead of running its own forward. Checked against the update with its own forward
(``share_training_forward=False``): the same gradients, parameters, BatchNorm statistics and
process rows."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import make_module, quiet_trainer
from own_project import NetModule

from distpro_lightning import DistProModule, ProcessSearchCallback, SearchSettings, SearchStep
from distpro_lightning.data import DigitsDataModule
from distpro_lightning.modules.contract import Objective
from distpro_lightning.modules.step_context import SharedForward, StepContext
from distpro_lightning.search.step import settings_in_force


def _batches(n=16, seed=3):
    g = torch.Generator().manual_seed(seed)
    x, xv = torch.randn(2, n, 1, 8, 8, generator=g)
    y, yv = torch.randint(0, 10, (2, n), generator=g)
    return (x, y), (xv, yv)


def _steps(m, share: bool, steps: int = 3):
    """``steps`` search steps, each followed by the real update; the gradients of each."""
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    search = SearchStep(m, opt, SearchSettings(share_training_forward=share))
    grads = []
    for t in range(steps):
        train, val = _batches(seed=t)
        search(train, val, step=m.global_step)
        assert (m.step_context.forward is not None) == share
        m.training_loss(train)[0].backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in m.parameters() if p.grad is not None]))
        opt.step()
        opt.zero_grad()
        m.step_context = None
    return grads


def test_shared_forward_gives_the_update_of_a_fresh_forward():
    torch.manual_seed(0)
    shared = make_module(transforms=["conv_bn", "attn2"]).train()
    fresh = copy.deepcopy(shared)
    g_shared, g_fresh = _steps(shared, True), _steps(fresh, False)
    for a, b in zip(g_shared, g_fresh):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    sa, sb = shared.state_dict(), fresh.state_dict()
    for k in sa:  # parameters, alpha logits and BatchNorm running statistics
        assert torch.allclose(sa[k].float(), sb[k].float(), rtol=1e-5, atol=1e-6), k
    moved = make_module(transforms=["conv_bn", "attn2"]).state_dict()
    assert not torch.equal(sa["alpha_logits"], moved["alpha_logits"])


def test_shared_forward_uses_the_updated_weights():
    """The real update backpropagates w(a~_{t+1}), not the virtual step's w(a~_t)."""
    torch.manual_seed(0)
    m = make_module(transforms=["conv_bn", "attn2"]).train()
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    train, val = _batches()
    SearchStep(m, opt, SearchSettings(alpha_lr=0.5))(train, val, step=0)
    objective = m.step_context.forward.objective
    loss = m.training_loss(train)
    updated = objective.task + (m.alpha_weights().detach() * objective.pathway_losses).sum()
    assert torch.equal(loss.loss, updated)
    assert not torch.allclose(loss.loss, objective.loss)  # the weights moved
    assert m.step_context.teacher is None and m.step_context.forward is None  # handed out once


def _compiled_search_step():
    torch.manual_seed(0)
    # 4 pathways (2 connections x 2 transforms): each pathway's head is a graph to compile
    connections = [[0, 0], [2, 2]]
    m = make_module(transforms=["conv_bn", "attn2"], connections=connections, compile_heads=True)
    m.train()
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    with pytest.warns(UserWarning, match="share_training_forward is off with compile_heads"):
        step = SearchStep(m, opt, SearchSettings())
    return m, step


def test_compiled_heads_turn_sharing_off_with_a_warning():
    """A compiled graph's backward runs once (inductor donates its saved buffers), so
    ``compile_heads=True`` runs the real update's own forward, and says so (nothing is
    compiled until a step runs: test_a_compiled_search_step_runs_the_updates_own_forward)."""
    _, step = _compiled_search_step()
    assert step.settings.share_training_forward is False
    assert step.options.keep_training_forward is False


@pytest.mark.slow  # torch.compile compiles the heads' graphs on the first step
def test_a_compiled_search_step_runs_the_updates_own_forward():
    m, step = _compiled_search_step()
    train, val = _batches()
    step(train, val, step=0)
    assert m.step_context.forward is None
    m.training_loss(train)[0].backward()  # its own forward: one backward per graph
    assert all(p.grad is not None for p in m.distill_heads.parameters())


def _context(active):
    losses = torch.ones(3)
    objective = Objective(losses.sum(), losses[0], losses, torch.zeros(4, 10))
    ctx = StepContext(0, 0, (4, 1, 8, 8), teacher=object())
    ctx.forward = SharedForward(objective, active)
    return ctx


@pytest.mark.parametrize(
    "shape,active,taken",
    [
        ((4, 1, 8, 8), [True, True, False], True),
        ((4, 1, 8, 8), [True, False, False], False),  # a pathway pruned by this step's update
        ((4, 1, 8, 8), [True, True, True], False),  # a pathway revived
        ((5, 1, 8, 8), [True, True, False], False),  # another input
    ],
)
def test_shared_forward_is_handed_out_only_for_its_input_and_pathways(shape, active, taken):
    ctx = _context([True, True, False])
    assert (ctx.take_forward(torch.zeros(shape), active) is not None) == taken
    assert ctx.forward is None  # once, either way
    assert (ctx.teacher is None) == taken


def test_fit_with_shared_forward_equals_fit_with_its_own_forward(tmp_path):
    rows, states = [], []
    for share in (True, False):
        torch.manual_seed(0)
        m = make_module(transforms=["conv_bn", "attn2"])
        cb = ProcessSearchCallback(
            output={"save_path": str(tmp_path / f"{share}.json"), "plot": False},
            hypergradient={"share_training_forward": share},
        )
        data = DigitsDataModule(batch_size=16, mode="search", subset=128, seed=0)
        quiet_trainer(max_steps=4, limit_val_batches=0, callbacks=[cb]).fit(m, datamodule=data)
        rows.append(cb.process.logits)
        states.append(m.state_dict())
        assert cb.process.provenance["search_settings"]["share_training_forward"] is share
    assert torch.allclose(rows[0], rows[1], rtol=1e-5, atol=1e-6)
    for k in states[0]:
        assert torch.allclose(states[0][k].float(), states[1][k].float(), rtol=1e-5, atol=1e-6), k


class OwnForward(NetModule):
    """A mixin user whose training step runs its own pathway forward."""

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits, losses = self.pathway_forward(x, self.teacher_outputs(x), self.active_pathways())
        return F.cross_entropy(logits, y) + (self.alpha_weights().detach() * losses).sum()


def test_unused_shared_forward_is_warned_once_and_turned_off(tmp_path):
    torch.manual_seed(0)
    cb = ProcessSearchCallback(output={"save_path": str(tmp_path / "p.json"), "plot": False})
    data = DigitsDataModule(batch_size=16, mode="search", subset=128, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_trainer(max_steps=3, limit_val_batches=0, callbacks=[cb]).fit(
            OwnForward(), datamodule=data
        )
    said = [str(w.message) for w in caught if "ran its own forward" in str(w.message)]
    assert len(said) == 1 and "share_training_forward=False" in said[0]
    assert cb.step.settings.share_training_forward is False
    assert cb.step.options.keep_training_forward is False
    assert cb.process.provenance["share_training_forward_in_force"] is False
    assert cb.state_dict()["settings"]["share_training_forward"] is True  # as requested
    assert len(cb.process) == 3


@pytest.mark.parametrize(
    "precision,method,kept",
    [
        ("32-true", "finite_difference", True),
        ("bf16-mixed", "finite_difference", False),  # the search's passes run in fp32
        ("bf16-mixed", "exact", False),
        ("16-mixed", "finite_difference", False),
    ],
)
def test_shared_forward_only_where_the_training_step_runs_the_same_precision(
    precision, method, kept
):
    settings = SearchSettings(hypergradient=method)
    module = make_module(transforms=["conv_bn"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = settings_in_force(module, settings, precision)
    assert out.share_training_forward is kept
    assert bool([w for w in caught if "share_training_forward is off" in str(w.message)]) != kept


def _one_step(m, share, batch_of_step=None):
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    step = SearchStep(m, opt, SearchSettings(alpha_lr=0.01, share_training_forward=share))
    train, val = _batches()
    step(train, val, step=0)
    loss = m.training_loss(batch_of_step or train)
    loss.loss.backward()
    return loss


def test_a_changed_batch_of_the_same_shape_gets_its_own_forward():
    """A training step that augments its batch (same shape) must not get the search's
    forward (or teacher outputs) of the original batch."""
    torch.manual_seed(0)
    m = make_module(transforms=["conv_bn"]).train()
    fresh = copy.deepcopy(m)
    (x, y), _ = _batches()
    changed = (x.flip(-1), (y + 1) % 10)
    got = _one_step(m, True, changed)
    expected = _one_step(fresh, False, changed)
    assert torch.allclose(got.task, expected.task) and torch.allclose(got.loss, expected.loss)
    ctx = StepContext(0, 0, tuple(x.shape), inputs=x)
    assert ctx.matches(x) and ctx.matches(x.clone()) and not ctx.matches(x.flip(-1))
    x.mul_(2.0)  # changed in place after the search: not the search's input any more
    assert not ctx.matches(x)


def test_a_pathway_pruned_by_the_update_gets_one_batchnorm_update():
    """All logits just above tau: the first Adam step prunes the pathways whose hypergradient
    is positive, so the real update needs its own forward; the running statistics move once,
    as with share_training_forward=False."""
    torch.manual_seed(0)
    runs = []
    for share in (True, False):
        torch.manual_seed(0)
        m = make_module(transforms=["conv_bn", "attn2"], prune_threshold=0.5).train()
        m.alpha_logits.fill_(0.5 + 1e-4)
        before = m.active_pathways()
        _one_step(m, share)
        assert m.active_pathways() != before  # the update pruned some
        runs.append(m.state_dict())
    tracked = [k for k in runs[0] if k.endswith("num_batches_tracked")]
    assert tracked and all(int(runs[0][k]) == 1 for k in tracked if k.startswith("student"))
    for k, v in runs[0].items():
        assert torch.allclose(v.float(), runs[1][k].float(), rtol=1e-5, atol=1e-6), k


class Skips(NetModule):
    """Skips every batch (``training_step`` returns ``None``)."""

    def training_step(self, batch, batch_idx):
        return None


class Raises(NetModule):
    def training_step(self, batch, batch_idx):
        raise ValueError("boom")


def test_a_skipped_batch_discards_the_forward_without_a_warning(tmp_path):
    torch.manual_seed(0)
    cb = ProcessSearchCallback(output={"save_path": str(tmp_path / "p.json"), "plot": False})
    data = DigitsDataModule(batch_size=16, mode="search", subset=128, seed=0)
    m = Skips()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_trainer(max_steps=2, max_epochs=1, limit_val_batches=0, callbacks=[cb]).fit(
            m, datamodule=data
        )
    assert not [w for w in caught if "ran its own forward" in str(w.message)]
    assert cb.step.settings.share_training_forward is True
    assert int(m.net.bn1.num_batches_tracked) == 0  # no batch trained: the pass was undone


def test_an_exception_releases_the_kept_graph(tmp_path):
    torch.manual_seed(0)
    cb = ProcessSearchCallback(output={"save_path": str(tmp_path / "p.json"), "plot": False})
    data = DigitsDataModule(batch_size=16, mode="search", subset=128, seed=0)
    m = Raises()
    with pytest.raises(ValueError, match="boom"):
        quiet_trainer(max_steps=2, limit_val_batches=0, callbacks=[cb]).fit(m, datamodule=data)
    assert m.step_context is None
    copy.deepcopy(m)  # no non-leaf tensor left on the module


def test_forward_differences_are_refused_under_bf16_autocast():
    import contextlib

    from distpro_lightning.search.hypergradient import HypergradientOptions

    with pytest.raises(ValueError, match="forward_difference needs full precision"):
        HypergradientOptions("forward_difference", autocast=lambda: contextlib.nullcontext(0))


def _steps_with(m, share: bool, batch_of_step, steps: int = 3):
    """Like `_steps`, with the real update's batch made from the search's by
    ``batch_of_step`` (a training step that relabels y, or sets loss state)."""
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    search = SearchStep(m, opt, SearchSettings(share_training_forward=share))
    for t in range(steps):
        train, val = _batches(seed=t)
        search(train, val, step=m.global_step)
        m.training_loss(batch_of_step(m, train))[0].backward()
        opt.step()
        opt.zero_grad()
        m.step_context = None
    return m.state_dict()


class Smoothed(DistProModule):
    """A task loss that reads module state (label smoothing set by the training step)."""

    smoothing = 0.0

    def task_loss(self, student_outputs, targets):
        return F.cross_entropy(student_outputs, targets, label_smoothing=self.smoothing)


def _relabel(m, batch):
    return batch[0], (batch[1] + 1) % 10


def _smooth(m, batch):
    m.smoothing = 0.3
    return batch


@pytest.mark.parametrize("kind", ["relabelled targets", "loss state set in the step"])
def test_shared_forward_uses_this_steps_targets_and_loss_state(kind):
    torch.manual_seed(0)
    module_class, change = (
        (DistProModule, _relabel) if kind.startswith("re") else (Smoothed, _smooth)
    )
    shared = make_module(module_class, transforms=["conv_bn"]).train()
    fresh = copy.deepcopy(shared)
    a = _steps_with(shared, True, change)
    b = _steps_with(fresh, False, change)
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-5, atol=1e-6), k


def test_reuse_has_no_forward_to_share_and_the_record_says_so():
    """With ``reuse_training_gradient`` the real update takes the virtual step's gradient and
    runs no forward of its own: sharing is not in force, in the step and in the record."""
    torch.manual_seed(0)
    module = make_module(transforms=["conv_bn"])
    opt = torch.optim.SGD(module.trainable_parameters(), lr=0.05)
    step = SearchStep(module, opt, SearchSettings(reuse_training_gradient=True))
    assert step.requested.share_training_forward is True  # the default, as requested
    assert step.sharing_forward is False and step.options.keep_training_forward is False
    assert step.options.keep_full_gradient is True

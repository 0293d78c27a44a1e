"""The pure functions of one DistPro search step (paper eqs. 4-5, DARTS second order).

No Lightning here. With ``L_train(theta, a) = task + sum_p w_p(a) delta_p(theta)`` and the
virtual step ``theta' = theta - xi * D(g)`` (``D``: the student optimizer's update direction:
SGD's is linear in the gradient ``g`` with slope ``c``; Adam's and AdamW's is elementwise
and nonlinear, with the elementwise slope ``c = dD/dg``), the hypergradient is

    d/da L_val(theta') = - J_w(a)^T [ < grad_theta delta_p(theta), xi * c * v > ]_p ,
    v = grad L_val(theta').

The bracket is a mixed second derivative along ``xi * c * v``: computed exactly by one
forward-mode pass (`mixed_derivative_exact`, ``torch.func.jvp``) or approximated by
central finite differences with two forward passes (`mixed_derivative_fd`), or by forward
differences with one (the losses at ``theta`` are the training pass's).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from distpro_lightning.errors import DistProError
from distpro_lightning.modules.contract import (
    DistillationObjective,
    Objective,
    ParameterGroups,
    TeacherOutput,
)


@dataclass(frozen=True)
class SGDHyper:
    """One parameter's SGD settings and momentum buffer (``None``: none yet / no momentum)."""

    lr: float
    momentum: float = 0.0
    dampening: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    buf: Tensor | None = None


def sgd_virtual_step(
    params: Mapping[str, Tensor], grads: Mapping[str, Tensor], hyper: Mapping[str, SGDHyper]
) -> tuple[dict[str, Tensor], dict[str, float]]:
    """``theta'`` of one step of ``torch.optim.SGD`` (momentum, dampening, weight decay,
    Nesterov, as PyTorch defines them), without touching the parameters or buffers.

    Returns ``(theta', slope)`` where ``slope[k] = d theta'_k / d g_k`` up to sign (the
    learning rate times the derivative of the update direction in the gradient).
    """
    new: dict[str, Tensor] = {}
    slope: dict[str, float] = {}
    for key, p in params.items():
        h = hyper[key]
        d = grads[key] + h.weight_decay * p if h.weight_decay else grads[key]
        factor = 1.0
        if h.momentum:
            if h.buf is None:
                buf = d
            else:
                buf = h.buf * h.momentum + (1.0 - h.dampening) * d
                factor = 1.0 - h.dampening
            if h.nesterov:
                d = d + h.momentum * buf
                factor = 1.0 + h.momentum * factor
            else:
                d = buf
        new[key] = p - h.lr * d
        slope[key] = h.lr * factor
    return new, slope


@dataclass(frozen=True)
class AdamHyper:
    """One parameter's ``torch.optim.Adam`` / ``AdamW`` settings and state: the moments
    (``None`` before the first step) and the number of steps taken. ``decoupled``: AdamW's
    weight decay (``theta * (1 - lr * wd)``), else Adam's (``g + wd * theta``)."""

    lr: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled: bool = False
    step: int = 0
    exp_avg: Tensor | None = None
    exp_avg_sq: Tensor | None = None


def adam_virtual_step(p: Tensor, g: Tensor, h: AdamHyper) -> tuple[Tensor, Tensor]:
    """``(theta', slope)`` of one ``torch.optim.Adam``/``AdamW`` step of one parameter, as
    PyTorch computes it (bias corrections, ``eps`` outside the square root, decoupled or L2
    weight decay), without touching the optimizer. ``slope = -d theta' / d g``, elementwise:

        slope = lr / c1 * [ (1 - b1) / denom - m' (1 - b2) g / (sqrt(c2) sqrt(v') denom^2) ]

    with ``m' = b1 m + (1 - b1) g``, ``v' = b2 v + (1 - b2) g^2``, ``c_i = 1 - b_i^(t+1)``,
    ``denom = sqrt(v' / c2) + eps`` and ``g`` the gradient after L2 weight decay."""
    if h.weight_decay and not h.decoupled:
        g = g + h.weight_decay * p
    m = g * (1.0 - h.beta1) if h.exp_avg is None else h.exp_avg * h.beta1 + (1.0 - h.beta1) * g
    v_prev = torch.zeros_like(g) if h.exp_avg_sq is None else h.exp_avg_sq
    v = v_prev * h.beta2 + (1.0 - h.beta2) * g * g
    t = h.step + 1
    c1, c2 = 1.0 - h.beta1**t, 1.0 - h.beta2**t
    root = v.sqrt()
    denom = root / math.sqrt(c2) + h.eps
    base = p * (1.0 - h.lr * h.weight_decay) if h.weight_decay and h.decoupled else p
    new = base - (h.lr / c1) * m / denom
    safe = torch.where(root > 0, root, torch.ones_like(root))
    second = torch.where(
        root > 0, m * (1.0 - h.beta2) * g / (math.sqrt(c2) * safe * denom * denom), 0.0
    )
    slope = (h.lr / c1) * ((1.0 - h.beta1) / denom - second)
    return new, slope


def virtual_step(
    params: Mapping[str, Tensor],
    grads: Mapping[str, Tensor],
    hyper: Mapping[str, SGDHyper | AdamHyper],
) -> tuple[dict[str, Tensor], dict[str, Tensor | float]]:
    """``(theta', slope)`` of one step of the student optimizer: `sgd_virtual_step` for
    SGD parameters (a scalar slope each), `adam_virtual_step` for Adam/AdamW ones (an
    elementwise slope). ``slope = -d theta'/d g``; the mixed derivative runs along
    ``slope * v``."""
    sgd = {k: h for k, h in hyper.items() if isinstance(h, SGDHyper)}
    new, slope = sgd_virtual_step({k: params[k] for k in sgd}, {k: grads[k] for k in sgd}, sgd)
    out_slope: dict[str, Tensor | float] = dict(slope)
    for key, h in hyper.items():
        if isinstance(h, AdamHyper):
            new[key], out_slope[key] = adam_virtual_step(params[key], grads[key], h)
    return {k: new[k] for k in params}, {k: out_slope[k] for k in params}


def tangent_norm(tangent: Mapping[str, Tensor]) -> Tensor:
    """Euclidean norm of a dict of tensors."""
    return torch.sqrt(sum(t.detach().float().pow(2).sum() for t in tangent.values()))


def mixed_derivative_exact(
    loss_vector: Callable[[dict[str, Tensor]], Tensor],
    params: Mapping[str, Tensor],
    tangent: Mapping[str, Tensor],
) -> Tensor:
    """``[< grad_theta delta_p(theta), tangent >]_p`` exactly, by forward-mode AD."""
    primals = {k: p.detach() for k, p in params.items()}
    tangents = {k: tangent[k].detach().to(primals[k].dtype) for k in primals}
    from torch.nn.attention import SDPBackend, sdpa_kernel

    # no_grad: forward-mode AD still runs, but no autograd graph is recorded. The math
    # attention kernel: the fused CPU/GPU attention kernels have no forward-mode derivative.
    try:
        with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]):
            _, out = torch.func.jvp(loss_vector, (primals,), (tangents,))
    except Exception as exc:  # noqa: BLE001 - re-raised unless forward-mode AD explains it
        explained = forward_ad_error(loss_vector, primals, exc)
        if explained is None:
            raise
        raise explained from exc
    return out.detach().float()


class ForwardModeError(DistProError, RuntimeError):
    """``hypergradient="exact"`` on a model that forward-mode AD cannot pass through."""


def forward_ad_error(
    loss_vector: Callable[[dict[str, Tensor]], Tensor],
    primals: Mapping[str, Tensor],
    exc: BaseException,
) -> ForwardModeError | None:
    """The error for a JVP that failed for want of forward-mode AD (``None``: another
    failure): naming the custom ``torch.autograd.Function`` of the pass without ``jvp`` and
    ``setup_context`` (found in a backward-mode pass), or the operation torch names."""
    head = "hypergradient='exact' needs forward-mode AD (a JVP) through the student and heads"
    fix = "use hypergradient='finite_difference' (or 'forward_difference'), which needs none"
    names = _functions_without_jvp(loss_vector, primals)
    if names:
        return ForwardModeError(
            f"{head}, but the custom torch.autograd.Function {', '.join(names)} has no "
            f"forward-mode derivative: {fix}, or give it a jvp and a setup_context staticmethod."
        )
    cause = next((str(e) for e in _chain(exc) if isinstance(e, NotImplementedError)), "")
    if "forward AD" not in cause:
        return None
    return ForwardModeError(f"{head}: {cause.strip().splitlines()[0]}; {fix}.")


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc`` and its causes."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _functions_without_jvp(
    loss_vector: Callable[[dict[str, Tensor]], Tensor], primals: Mapping[str, Tensor]
) -> list[str]:
    """Names of the custom autograd Functions in the backward graph of ``loss_vector`` at
    ``primals`` that ``torch.func.jvp`` cannot pass (no ``jvp`` or no ``setup_context``)."""
    try:
        with torch.enable_grad():
            output = loss_vector({k: p.detach().requires_grad_() for k, p in primals.items()})
    except Exception:  # noqa: BLE001 - no diagnosis: the JVP's own error stands
        return []
    base, names, seen = torch.autograd.Function, [], set()
    stack = [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        cls = getattr(node, "_forward_cls", None)
        no_jvp = cls is not None and (
            cls.jvp is base.jvp or cls.setup_context is base.setup_context
        )
        if no_jvp and cls.__qualname__ not in names:
            names.append(cls.__qualname__)
        stack.extend(n for n, _ in node.next_functions)
    return names


def mixed_derivative_fd(
    loss_vector: Callable[[dict[str, Tensor]], Tensor],
    params: Mapping[str, Tensor],
    tangent: Mapping[str, Tensor],
    epsilon: float = 0.01,
    at_theta: Tensor | None = None,
) -> Tensor:
    """Central finite differences of the pathway-loss vector along ``tangent``.

    ``eps = epsilon / ||tangent||``; two forward passes at ``theta +- eps * tangent``, no
    backward. With ``at_theta``, the loss vector at ``theta`` (already known): forward
    differences ``(f(theta + eps * tangent) - at_theta) / eps``, one forward pass, error
    ``O(eps)`` instead of ``O(eps^2)``. A zero tangent gives zeros.
    """
    norm = float(tangent_norm(tangent))
    with torch.no_grad():
        if norm == 0.0 or not math.isfinite(norm):
            return loss_vector(dict(params)).detach() * (0.0 if norm == 0.0 else float("nan"))
        eps = epsilon / norm
        plus = {k: p + eps * tangent[k] for k, p in params.items()}
        f_plus = loss_vector(plus)
        del plus
        if at_theta is not None:
            return ((f_plus - at_theta.to(f_plus.dtype)) / eps).detach().float()
        minus = {k: p - eps * tangent[k] for k, p in params.items()}
        f_minus = loss_vector(minus)
        return ((f_plus - f_minus) / (2.0 * eps)).detach().float()


def alpha_hypergradient(
    weights_fn: Callable[[Tensor], Tensor], logits: Tensor, mixed: Tensor
) -> Tensor:
    """``-J_w(logits)^T mixed``: pull the mixed derivative back through the normalisation."""
    a = logits.detach().float().clone().requires_grad_(True)
    with torch.enable_grad():
        w = weights_fn(a)
        (grad,) = torch.autograd.grad(-(w * mixed.to(w.dtype)).sum(), a)
    return grad.detach()


@contextmanager
def frozen_batchnorm_stats(*modules: nn.Module) -> Iterator[None]:
    """Stop BatchNorm layers in train mode from updating running statistics.

    Train-mode BatchNorm normalises with batch statistics either way; with
    ``track_running_stats=False`` it simply does not write ``running_mean``, ``running_var``
    or ``num_batches_tracked``. Used for the virtual, held-out and perturbed passes.
    """
    changed: list[nn.Module] = []
    for module in modules:
        for m in module.modules():
            if (
                isinstance(m, nn.modules.batchnorm._BatchNorm)
                and m.training
                and m.track_running_stats
            ):
                m.track_running_stats = False
                changed.append(m)
    try:
        yield
    finally:
        for m in changed:
            m.track_running_stats = True


#: The hypergradient methods: central finite differences (paper, DARTS: two forwards),
#: forward differences (one forward; the losses at theta come from the training pass) and
#: the exact mixed derivative (one forward-mode pass).
METHODS = ("finite_difference", "forward_difference", "exact")
Method = Literal["finite_difference", "forward_difference", "exact"]


@dataclass(frozen=True)
class HypergradientOptions:
    """How `compute_hypergradient` computes: ``method`` (`METHODS`: central
    ``"finite_difference"``, ``"forward_difference"`` or ``"exact"``) and its ``epsilon``; ``reduce_grads`` / ``reduce_val_grads`` average ``g``
    and ``v`` across DDP ranks; ``keep_full_gradient`` also returns the heads' training
    gradient (for reusing it in the real update); ``autocast`` opens the precision context
    of the training and held-out passes (the perturbed passes run in full precision); ``keep_training_forward`` keeps the training pass's graph and
    returns its `Objective` (the real update's forward: same ``theta``, same batch)."""

    method: str = "finite_difference"
    epsilon: float = 0.01
    reduce_grads: Callable[[list[Tensor]], list[Tensor]] | None = None
    reduce_val_grads: Callable[[list[Tensor]], list[Tensor]] | None = None
    keep_full_gradient: bool = False
    keep_training_forward: bool = False
    autocast: Callable[[], Any] = nullcontext

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}.")
        if self.keep_full_gradient and self.keep_training_forward:
            raise ValueError("keep_full_gradient and keep_training_forward exclude each other.")
        if self.method == "forward_difference" and self.autocast is not nullcontext:
            raise ValueError(
                "forward_difference needs full precision: its losses at theta come from the "
                "training pass, and the perturbed pass runs in fp32."
            )

    @property
    def training_pass_is_real(self) -> bool:
        """Whether the training pass stands for the real update's forward (then it updates
        the BatchNorm running statistics exactly as that forward would)."""
        return self.keep_full_gradient or self.keep_training_forward


@dataclass(frozen=True)
class SearchBatches:
    """The inputs of one search step: the training batch ``(x, y)`` with its teacher
    outputs (computed once per step) and the held-out batch ``(x_val, y_val)``."""

    x: Tensor
    y: Any
    teacher: TeacherOutput
    x_val: Tensor
    y_val: Any


@dataclass
class HypergradientResult:
    """What `compute_hypergradient` computed (all detached but ``training_forward``, the
    training pass with its graph, kept with ``keep_training_forward``)."""

    hypergradient: Tensor
    val_loss: Tensor
    train_loss: Tensor
    training_gradient: ParameterGroups | None = None
    train_task_loss: Tensor | None = None  # the task part of ``train_loss``
    training_forward: Objective | None = None


def _training_gradient(
    module: DistillationObjective,
    batches: SearchBatches,
    theta: ParameterGroups,
    options: HypergradientOptions,
    logits: Tensor,
) -> tuple[Objective, ParameterGroups]:
    """``L_train(theta, a)`` and its gradient (the student's; the heads' too with
    ``keep_full_gradient``), averaged by ``options.reduce_grads``; zeros where unused. The
    objective's graph is kept with ``keep_training_forward``."""
    wrt = theta if options.keep_full_gradient else ParameterGroups(theta.student, {})
    weights = module.alpha_weights(logits).detach()
    with torch.enable_grad(), options.autocast():
        objective = module.objective(
            batches.x, batches.y, batches.teacher, weights, module.active_pathways(logits)
        )
    tensors = wrt.tensors()
    grads = torch.autograd.grad(
        objective.loss, tensors, allow_unused=True, retain_graph=options.keep_training_forward
    )
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(tensors, grads)]
    if options.reduce_grads is not None:
        grads = options.reduce_grads(grads)
    return objective, wrt.with_tensors(grads)


def _held_out_gradient(
    module: DistillationObjective,
    batches: SearchBatches,
    theta_prime: dict[str, Tensor],
    options: HypergradientOptions,
) -> tuple[Tensor, list[Tensor]]:
    """``L_val(theta')`` and ``v = grad L_val(theta')`` (student only), averaged by
    ``options.reduce_val_grads``."""
    prime = {k: t.detach().requires_grad_(True) for k, t in theta_prime.items()}
    with torch.enable_grad(), options.autocast():
        val_loss = module.task_loss(module.student_forward(batches.x_val, prime), batches.y_val)
    v = torch.autograd.grad(val_loss, list(prime.values()), allow_unused=True)
    v = [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(prime.values(), v)]
    if options.reduce_val_grads is not None:
        v = options.reduce_val_grads(v)
    return val_loss.detach(), v


def compute_hypergradient(
    module: DistillationObjective,
    batches: SearchBatches,
    virtual: Mapping[str, SGDHyper | AdamHyper],
    options: HypergradientOptions = HypergradientOptions(),
    logits: Tensor | None = None,
) -> HypergradientResult:
    """One search step's hypergradient for a module with the DistPro mixin.

    1. ``g = grad_theta L_train(theta, a)`` (one forward+backward of student and heads;
       the teacher output ``batches.teacher`` is given, computed once per step);
    2. ``theta' = theta - xi * D(g)`` with ``virtual[name]``, the optimizer settings of each
       student parameter (`virtual_step_settings`);
    3. ``v = grad L_val(theta')`` on the held-out batch (student only);
    4. the mixed derivative along ``xi * c * v`` by ``options.method`` (``"exact"`` JVP,
       central ``"finite_difference"`` or ``"forward_difference"``), pruned pathways skipped;
    5. ``-J_w^T`` of it.

    ``logits``: the pathway logits ``a`` to differentiate at (default: the module's
    ``alpha_logits``); the module's are never read or changed otherwise.

    Parameters, ``.grad``, buffers and ``alpha_logits`` are left untouched, except with
    ``keep_full_gradient`` or ``keep_training_forward``: the training pass of step 1 then
    stands for the real update's forward (same ``theta``, same batch), so it updates the
    BatchNorm running statistics exactly as that forward would.
    """
    logits = (module.alpha_logits if logits is None else logits).detach()
    active = module.active_pathways(logits)
    theta = module.search_parameters()
    parts = (module.student, module.distill_heads)
    with nullcontext() if options.training_pass_is_real else frozen_batchnorm_stats(*parts):
        training, grads = _training_gradient(module, batches, theta, options, logits)
    with frozen_batchnorm_stats(*parts):
        # the virtual step moves the student only: L_val does not depend on the heads
        student = {k: p.detach() for k, p in theta.student.items()}
        new, slope = virtual_step(student, grads.student, {k: virtual[k] for k in student})
        if not options.keep_full_gradient:
            grads = None  # g is in theta' now: free it before the held-out pass
        val_loss, v = _held_out_gradient(module, batches, new, options)
        del new  # theta' (its graph is gone with v)
        tangent = {k: g * slope[k] for k, g in zip(student, v)}
        del v

        def loss_vector(sp: dict[str, Tensor]) -> Tensor:
            # full precision always: eps * v moves each weight by far less than bf16 resolves
            groups = ParameterGroups(sp, theta.heads)
            return module.pathway_forward(batches.x, batches.teacher, active, groups)[1].float()

        if options.method == "exact":
            mixed = mixed_derivative_exact(loss_vector, student, tangent)
        else:
            at_theta = training.pathway_losses.detach().float()
            one_sided = options.method == "forward_difference"
            mixed = mixed_derivative_fd(
                loss_vector, student, tangent, options.epsilon, at_theta if one_sided else None
            )
    return HypergradientResult(
        hypergradient=alpha_hypergradient(module.alpha_weights, logits, mixed),
        val_loss=val_loss,
        train_loss=training.loss.detach(),
        training_gradient=grads,
        train_task_loss=training.task.detach(),
        training_forward=training if options.keep_training_forward else None,
    )

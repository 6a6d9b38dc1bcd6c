r"""PGD in the paper "Towards Deep Learning Models Resistant to Adversarial Attacks" (Madry et al., 2018).

Maximises ``loss_fn(f(x'), y, f(x))`` over :math:`x' ∈ B_p(x, ε) ∩ [0,1]^d`:
Linf :math:`x' ← Π(x' + α·sign(∇_{x'}L))`, L2 :math:`x' ← Π(x' + α·∇L/‖∇L‖_2)`,
L1 :math:`x' ← Π(x' + α·s)` with SLIDE's sparse step ``s`` (below).

Distance Measure : Linf, L2, L1

L1 (Tramèr & Boneh, "Adversarial Training and Robustness for Multiple Perturbations", NeurIPS
2019, SLIDE; cleverhans' ``sparse_l1_descent``): the L1 steepest-ascent direction moves one
coordinate only, so the step moves every coordinate whose ``|g_i|`` reaches the ``l1_sparsity``-th
percentile of ``|g|`` (default 99: cleverhans' ``grad_sparsity=99``, the value of the paper's
CIFAR-10 experiments), by ``sign(g_i)``, divided by their count: ``‖s‖_1 = 1`` (fewer where
``g_i = 0``), so the step has L1 norm α. ``Π``: the exact Euclidean projection of δ onto the L1 ball
(Duchi et al. 2008, :func:`attacks.base.project_l1_ball`), then the clip to [0, 1]: a point of the
intersection (the clip only shrinks each ``|δ_i|``), not the exact projection onto it, which
pyautoattack's L1-APGD computes (``L1_projection``; use ``attack.name: apgd`` for that). The
``"uniform"`` start in the L1 ball: ``δ = ε·U^{1/d}·η/‖η‖_1`` with ``η`` i.i.d. Laplace(0, 1) (the
normalised Laplace vector is uniform on the L1 sphere, the radius ``ε·U^{1/d}`` makes the point
uniform in the ball; cleverhans' ``rand_init``, there with the Laplace location 1), then clipped to
[0, 1].

Arguments:
    eps (float): radius of the ball. (Default: 8/255)
    alpha (float): step size. (Default: 2/255)
    steps (int): number of steps. (Default: 10)
    norm (str): ``"Linf"``, ``"L2"`` or ``"L1"``. (Default: ``"Linf"``)
    loss (str or callable): ``"ce"``, ``"cw"``, ``"kl"`` (TRADES) or a callable
        ``loss_fn(logits_adv, y, logits_nat) -> scalar`` (see :mod:`attacks.losses`; the DKL/GKL
        attack loss is :class:`advtrain.losses.DKLAttackLoss`). (Default: ``"ce"``)
    init (str): starting point, the one knob for it (torchattacks' ``random_start=True`` is
        ``"uniform"``, ``False`` is ``"none"``). ``"uniform"``: uniform in the ball, clipped to [0,1];
        ``"normal"``: ``x + init_std·N(0, I)``, *not* clipped before the first step (TRADES / DKL
        reference, SPEC §2.3); ``"none"``: ``x``. (Default: ``"uniform"``)
    init_std (float): standard deviation of the ``"normal"`` start. (Default: 0.001)
    bn_mode (str): ``"eval"``, ``"train"`` or ``"train_frozen"`` (see :mod:`attacks.base`). (Default: ``"eval"``)
    l1_sparsity (float): L1 only: the percentile of ``|g|`` a coordinate must reach to move, in
        [0, 100) (0: every coordinate). (Default: 99, SLIDE / cleverhans)

Shape:
    - model: maps B×... inputs in [0,1] to B×C logits; passed on every call.
    - x: (B, C, H, W) in [0, 1]; y: (B,) class indices. Returns x_adv of the shape of x, detached.

Examples::

    >>> attack = PGD(eps=8/255, alpha=2/255, steps=10)                 # PGD-AT
    >>> trades = PGD(eps=0.031, alpha=0.007, steps=10, loss="kl", init="normal")
    >>> x_adv = attack(model, x, y)
    >>> attack.set_budget(4/255, 1/255, 10)          # eps ramp: the budget of the next calls, checked

The natural logits needed by ``"kl"`` / callables are computed once per call (under
``no_grad`` in the attack mode), not once per step as in the reference code: identical in eval mode
(SPEC §10.16).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from .base import Attack, AttackError, AttackOptions, flat_norm, project
from .losses import natural_logits, resolve_loss
from .options import check_budget, check_nonnegative, check_setting, setting

INITS = ("uniform", "normal", "none")
#: SLIDE's default percentile (Tramèr & Boneh 2019; cleverhans ``sparse_l1_descent(grad_sparsity=99)``)
L1_SPARSITY = 99.0


@dataclass(frozen=True)
class PGDOptions(AttackOptions):
    """PGD's options besides the budget (``eps``, ``alpha`` = step size, ``steps``) and the loss."""

    init: str = setting("uniform", choices=INITS)  # the starting point (see the module docstring)


class PGD(Attack):
    """Projected gradient ascent on a pluggable loss (see the module docstring).

    ``keep_start_grad = True`` keeps the gradient of the first step, taken at the start point, as
    ``start_grad = (x, gradient)`` of the last call (GradAlign reuses FGSM's gradient at x: its
    ``g1``; ``advtrain.objectives.ce``); it stays None when the attack takes no step.
    """

    Options = PGDOptions
    keep_start_grad = False

    def __init__(self, eps: float = 8 / 255, alpha: float = 2 / 255, steps: int = 10,
                 norm: str = PGDOptions.norm, loss="ce", init: str = PGDOptions.init,
                 init_std: float = 0.001, bn_mode: str = PGDOptions.bn_mode,
                 l1_sparsity: float = L1_SPARSITY):
        super().__init__(eps, norm=norm, bn_mode=bn_mode)
        check_budget(eps, alpha, steps)
        check_nonnegative("init_std", init_std)
        check_nonnegative("l1_sparsity", l1_sparsity)
        if l1_sparsity >= 100:
            raise AttackError(f"attack l1_sparsity must be a percentile in [0, 100), got "
                              f"{l1_sparsity!r}; SLIDE uses 99")
        self.l1_sparsity = float(l1_sparsity)
        resolve_loss(loss)
        self.alpha, self.steps = alpha, steps
        self.loss = loss
        self.init = check_setting(PGDOptions, "init", init, "PGD init")
        self.init_std = init_std

    def set_budget(self, eps: float, step_size: float, steps: int) -> None:
        """Radius, step size (``alpha``) and number of steps of the next calls (checked here)."""
        check_budget(eps, step_size, steps)
        self.eps, self.alpha, self.steps = float(eps), float(step_size), int(steps)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        loss_fn = resolve_loss(self.loss)
        logits_nat = natural_logits(model, x, loss_fn)
        x_adv = self.initial_point(x)
        self.start_grad = None
        if self.steps == 0:
            return project(x_adv, x, self.eps, self.norm)
        for step in range(self.steps):
            grad = self.input_grad(model, loss_fn, x_adv, y, logits_nat)
            if step == 0 and self.keep_start_grad:
                self.start_grad = (x, grad.detach())
            x_adv = project(x_adv.detach() + self.alpha * self.direction(grad), x, self.eps,
                            self.norm)
        return x_adv

    def initial_point(self, x: Tensor) -> Tensor:
        """x (``"none"``), x + init_std·N(0,I) (``"normal"``, unclipped), or uniform in the ball."""
        if self.init == "none":
            return x.clone()
        if self.init == "normal":
            return x + self.init_std * torch.randn_like(x)
        if self.norm == "Linf":
            delta = torch.empty_like(x).uniform_(-self.eps, self.eps)
        elif self.norm == "L1":
            delta = uniform_l1_ball(x, self.eps)
        else:
            delta = uniform_l2_ball(x, self.eps)
        return (x + delta).clamp(0.0, 1.0)

    @staticmethod
    def input_grad(model: nn.Module, loss_fn, x_adv: Tensor, y: Tensor,
                   logits_nat: Optional[Tensor]) -> Tensor:
        """∇_{x'} loss_fn(f(x'), y, n), w.r.t. the input only (no parameter .grad is touched)."""
        x_adv = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(model(x_adv), y, logits_nat)
            if not isinstance(loss, Tensor) or loss.dim() != 0:
                raise AttackError(f"attack loss {loss_fn!r} must return a scalar tensor, got "
                                 f"{type(loss).__name__} {tuple(getattr(loss, 'shape', ()))}")
            (grad,) = torch.autograd.grad(loss, x_adv)
        return grad

    def direction(self, grad: Tensor) -> Tensor:
        """Steepest-ascent unit step: sign(g) for Linf, g/‖g‖₂ for L2 (0 where g = 0), SLIDE's
        sparse step for L1 (:func:`l1_direction`)."""
        if self.norm == "Linf":
            return grad.sign()
        if self.norm == "L1":
            return l1_direction(grad, self.l1_sparsity)
        norms = flat_norm(grad, "L2").clamp_min(1e-12)
        return grad / norms.view(-1, *([1] * (grad.dim() - 1)))


def l1_direction(grad: Tensor, sparsity: float = L1_SPARSITY) -> Tensor:
    r"""SLIDE's L1 step of unit L1 norm (module docstring): per example, the coordinates with
    ``|g_i| >= t`` (``t``: the ``k``-th smallest ``|g_i|``, ``k = max(⌊q/100·d⌋, 1)``, as
    cleverhans' ``kthvalue``; ties all move) get ``sign(g_i)/n``, ``n`` their count; others 0."""
    flat = grad.reshape(grad.shape[0], -1)
    mag = flat.abs()
    k = max(int(sparsity / 100.0 * flat.shape[1]), 1)
    threshold = mag.kthvalue(k, dim=1, keepdim=True).values
    chosen = (mag >= threshold).to(flat.dtype)
    step = flat.sign() * chosen / chosen.sum(dim=1, keepdim=True)
    return step.view_as(grad)


def uniform_l1_ball(x: Tensor, eps: float) -> Tensor:
    r"""δ uniform in the L1 ball of radius ε: direction η/‖η‖₁ with η i.i.d. Laplace(0, 1)
    (uniform on the L1 sphere), radius ε·U^{1/d}."""
    flat = torch.empty_like(x).exponential_().reshape(x.shape[0], -1)  # |η|: Exp(1)
    sign = torch.randint_like(flat, 2) * 2 - 1
    direction = sign * flat / flat.sum(dim=1, keepdim=True).clamp_min(1e-12)
    radius = eps * torch.rand(x.shape[0], 1, device=x.device, dtype=x.dtype) ** (1.0 / flat.shape[1])
    return (direction * radius).view_as(x)


def uniform_l2_ball(x: Tensor, eps: float) -> Tensor:
    r"""δ uniform in the L2 ball of radius ε: direction ~ N(0,I)/‖·‖, radius ε·U^{1/d}."""
    flat = torch.randn_like(x).reshape(x.shape[0], -1)
    direction = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
    radius = eps * torch.rand(x.shape[0], 1, device=x.device, dtype=x.dtype) ** (1.0 / flat.shape[1])
    return (direction * radius).view_as(x)

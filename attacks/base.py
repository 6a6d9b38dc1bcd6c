"""Attack base class: the model is an argument of every call, the mode switch is scoped.

``x_adv = attack(model, x, y)``. Binding no model lets one attack object serve the model, an AWP
proxy and an EMA copy. Around :meth:`Attack.perturb` the base class

* puts the model in the mode named by ``bn_mode`` and restores every module's mode (and, for
  ``"train_frozen"``, the BatchNorm bookkeeping) afterwards, even when the attack raises:

  - ``"eval"`` (default): ``model.eval()``, as TRADES / DKL / AWP attack (SPEC §2.3, §4.1);
  - ``"train"``: ``model.train()``; BatchNorm uses batch statistics *and updates* its running stats;
  - ``"train_frozen"``: ``model.train()`` but BatchNorm running stats and ``num_batches_tracked``
    are left untouched (batch statistics are used, nothing is recorded; DM-Improves-AT, SPEC §6);
* makes the input contiguous, takes gradients w.r.t. the input only (``torch.autograd.grad``), so
  parameters' ``requires_grad`` stay as they are and no ``.grad`` is accumulated into them;
* detaches the result and checks its postconditions: ``‖x_adv − x‖_p ≤ radius()`` (small
  tolerance; the radius is ``eps`` unless an attack declares a larger one by design, e.g. N-FGSM's
  ``k·ε + α`` without projection, SPEC §13.2) and ``x_adv ∈ [0, 1]``. A violation raises ``RuntimeError``: that is a bug in the attack, not a
  user error.

User mistakes (negative ε, unknown norm, inputs outside [0,1]) raise :class:`AttackError` (a
``ValueError`` with a one-line message; this package imports nothing from ``advtrain``, which maps
the error to its own one-line user error).
Settings are checked once: by the constructor (each attack's options against the rules of its
``Options`` dataclass, :mod:`attacks.options`) and by :meth:`Attack.set_budget`, the one method that
changes the budget (radius, step size, steps) of a built attack, e.g. every epoch of an ε ramp. A
call checks only the inputs and the postconditions. The settings stay plain attributes
(``attack.eps``, ``attack.alpha``, ``attack.steps``) that a call reads as they are.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ClassVar, Iterator

import torch
from torch import Tensor, nn

from .options import (AttackError, check_budget, check_nonnegative, check_setting, option_choices,
                      setting, unknown)

__all__ = ["Attack", "AttackOptions", "AttackError", "NORMS", "BN_MODES", "model_mode", "check_inputs",
           "check_nonnegative", "unknown", "flat_norm", "project", "project_l1_ball", "rounding_slack"]

#: the threat models (the one owner; every consumer reads it): ``Linf``, ``L2`` and ``L1`` (the
#: ball ``sum |delta_i| <= eps``; AutoAttack's L1 version, PGD with L1 steps)
NORMS = ("Linf", "L2", "L1")
BN_MODES = ("eval", "train", "train_frozen")
_BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


@contextlib.contextmanager
def model_mode(model: nn.Module, bn_mode: str = "eval") -> Iterator[nn.Module]:
    """Put ``model`` in the attack mode ``bn_mode``; restore every module's state on exit."""
    if bn_mode not in BN_MODES:
        raise unknown("bn_mode", bn_mode, BN_MODES)
    training = [(m, m.training) for m in model.modules()]
    frozen = []
    try:
        model.train(bn_mode != "eval")
        if bn_mode == "train_frozen":
            for m in model.modules():
                if isinstance(m, _BN_TYPES) and m.track_running_stats:
                    # training + track_running_stats=False => batch stats, running stats unused
                    frozen.append(m)
                    m.track_running_stats = False
        yield model
    finally:
        for m in frozen:
            m.track_running_stats = True
        for m, was_training in training:
            m.training = was_training


def flat_norm(delta: Tensor, norm: str) -> Tensor:
    """Per-example norm of ``delta`` (B×...): ``max|δ|`` for Linf, ``sqrt(Σ δ²)`` for L2,
    ``Σ|δ|`` for L1."""
    flat = delta.reshape(delta.shape[0], -1)
    if norm == "Linf":
        return flat.abs().amax(dim=1)
    if norm == "L1":
        return flat.abs().sum(dim=1)
    return flat.norm(p=2, dim=1)


def rounding_slack(norm: str, dim: int, dtype: torch.dtype = torch.float32) -> float:
    """How far float rounding alone can move ``‖x_adv − x‖`` of a point built on the sphere: each
    coordinate of an image in [0, 1] rounds by at most half an ulp of 1, which an L1 distance sums
    over its ``dim`` coordinates (CIFAR float32: 1.8e-4, ImageNet: 9e-3); Linf and L2: 0 (their
    checks' own tolerances cover one coordinate's rounding)."""
    return dim * torch.finfo(dtype).eps / 2 if norm == "L1" else 0.0


def project_l1_ball(delta: Tensor, eps: float) -> Tensor:
    r"""The exact Euclidean projection of each example's ``delta`` onto the L1 ball of radius
    ``eps`` (Duchi, Shalev-Shwartz, Singer, Chandra, "Efficient projections onto the l1-ball for
    learning in high dimensions", ICML 2008, Fig. 1, the sort-based O(d log d) algorithm).

    Inside the ball δ is returned as it is; outside it is the soft threshold
    :math:`\operatorname{sign}(δ)\max(|δ| − θ, 0)` whose θ > 0 puts it on the sphere: with
    :math:`u` = |δ| sorted in decreasing order,
    :math:`ρ = \max\{j : u_j − (Σ_{r≤j} u_r − ε)/j > 0\}` and :math:`θ = (Σ_{r≤ρ} u_r − ε)/ρ`.
    """
    flat = delta.reshape(delta.shape[0], -1)
    mag = flat.abs().double()  # float64: the cumulative sums of an ImageNet image (150,528 terms)
    outside = mag.sum(dim=1) > eps
    if not bool(outside.any()):
        return delta
    u = mag.sort(dim=1, descending=True).values
    css = u.cumsum(dim=1)
    j = torch.arange(1, u.shape[1] + 1, device=u.device, dtype=u.dtype)
    rho = (u - (css - eps) / j > 0).sum(dim=1, keepdim=True).clamp_min(1)  # a prefix holds it
    theta = ((css.gather(1, rho - 1) - eps) / rho.to(u.dtype)).clamp_min(0)
    shrunk = (flat.sign() * (mag - theta).clamp_min(0)).to(flat.dtype)
    return torch.where(outside.view(-1, 1), shrunk, flat).view_as(delta)


def project(x_adv: Tensor, x: Tensor, eps: float, norm: str) -> Tensor:
    r"""Project onto :math:`B_p(x, ε) ∩ [0,1]^d`: clip δ to the ball, then the image to [0, 1].

    Clipping to [0,1] after the ball projection keeps the point in the ball (each coordinate moves
    towards x, which lies in [0,1], so no :math:`|δ_i|` grows). For Linf that is the exact
    projection onto the intersection (it is separable); for L2 and L1 it is a feasible point, not
    the exact Euclidean projection onto the intersection. L1: δ goes through the exact projection
    onto the L1 ball (:func:`project_l1_ball`), then the box clip; pyautoattack's L1-APGD
    (``autopgd_base.L1_projection``, Croce & Hein 2021) projects onto the intersection exactly.
    """
    delta = x_adv - x
    if norm == "Linf":
        delta = delta.clamp(-eps, eps)
    elif norm == "L1":
        delta = project_l1_ball(delta, eps)
    else:
        scale = (eps / (flat_norm(delta, "L2") + 1e-12)).clamp(max=1.0)
        delta = delta * scale.view(-1, *([1] * (delta.dim() - 1)))
    return (x + delta).clamp(0.0, 1.0)


def check_norm(cls, norm: str) -> str:
    """``norm`` checked against the choices of ``cls.Options.norm`` (the attack's own threat
    models); a norm that the attack cannot run but others can is named as such."""
    choices = option_choices(cls.Options, "norm")
    if choices is None:
        return check_setting(AttackOptions, "norm", norm, "attack norm")
    if norm in NORMS and norm not in choices:
        raise AttackError(f"{cls.__name__} does not run the {norm} threat model (its norms: "
                          f"{', '.join(choices)}); use PGD for {norm}")
    return check_setting(cls.Options, "norm", norm, "attack norm")


@dataclass(frozen=True)
class AttackOptions:
    """The options of every attack built on :class:`Attack` (a subclass's ``Options`` adds its own)."""

    norm: str = setting("Linf", choices=NORMS)  # the threat model: the ball of radius eps
    bn_mode: str = setting("eval", choices=BN_MODES)  # the model's mode while attacking


class Attack:
    """Base class. Subclasses implement :meth:`perturb` (model already in attack mode).

    A subclass names its options dataclass in ``Options`` (checked by its constructor) and takes its
    budget through :meth:`set_budget`; a training attack is one of these classes in
    :data:`attacks.registry.TRAINING_ATTACKS`.
    """

    #: the options this attack accepts besides its budget and loss (see :mod:`attacks.options`)
    Options: ClassVar[type] = AttackOptions
    #: absolute tolerance of the postcondition checks (float32 rounding of x + δ − x)
    atol = 1e-5

    def __init__(self, eps: float, norm: str = AttackOptions.norm,
                 bn_mode: str = AttackOptions.bn_mode):
        check_nonnegative("eps", eps)
        self.eps = eps
        self.norm = check_norm(type(self), norm)
        self.bn_mode = check_setting(AttackOptions, "bn_mode", bn_mode, "bn_mode")

    def set_budget(self, eps: float, step_size: float, steps: int) -> None:
        """Radius ``eps``, ``step_size`` and number of ``steps`` of the next calls (the training
        schedule's per-epoch budget), checked here; an attack that takes no steps keeps only eps.
        A refused value changes nothing."""
        check_budget(eps, step_size, steps)
        self.eps = float(eps)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Adversarial examples for ``(x, y)`` against ``model``; detached, same shape as ``x``."""
        x, y = check_inputs(x, y, soft=getattr(self, "loss", None) in SOFT_LOSSES)
        with model_mode(model, self.bn_mode):
            x_adv = self.perturb(model, x, y)
        x_adv = x_adv.detach()
        self.check_result(x, x_adv)
        return x_adv

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """The attack proper; ``x`` is contiguous and in [0,1], ``model`` is in attack mode."""
        raise NotImplementedError

    def radius(self) -> float:
        """The largest ``‖x_adv − x‖_p`` this attack produces by design: ``eps`` for an attack
        that projects onto the ε-ball; an attack that does not (N-FGSM) declares its own bound."""
        return self.eps

    def check_result(self, x: Tensor, x_adv: Tensor) -> None:
        """Raise RuntimeError unless ``x_adv`` lies in the ball of :meth:`radius` around ``x``
        and in [0, 1]."""
        if x_adv.shape != x.shape:
            raise RuntimeError(f"{type(self).__name__} returned shape {tuple(x_adv.shape)} "
                               f"for input {tuple(x.shape)}")
        if not torch.isfinite(x_adv).all():
            raise RuntimeError(f"{type(self).__name__} produced non-finite values")
        if x_adv.numel() == 0:
            return
        dist = flat_norm(x_adv - x, self.norm).max().item()
        atol = max(self.atol, 4 * torch.finfo(x.dtype).eps)  # x + δ − x rounds in low precision
        radius = self.radius()
        slack = rounding_slack(self.norm, x[0].numel(), x.dtype)
        if dist > radius * (1 + atol) + atol + slack:
            raise RuntimeError(f"{type(self).__name__} left the {self.norm} ball: "
                               f"distance {dist:.6g} > radius {radius:.6g} (eps {self.eps:.6g})")
        lo, hi = x_adv.min().item(), x_adv.max().item()
        if lo < 0.0 or hi > 1.0:
            raise RuntimeError(f"{type(self).__name__} left [0,1]: range [{lo:.6g}, {hi:.6g}]")

    def __repr__(self) -> str:
        keys = [k for k in ("eps", "alpha", "steps", "norm", "loss", "init", "bn_mode")
                if hasattr(self, k)]
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in keys)
        return f"{type(self).__name__}({args})"


#: attack losses that also take soft targets y (B×K class probabilities, e.g. mixup/cutmix labels):
#: cross entropy reads them as F.cross_entropy does; the KL losses do not use y
SOFT_LOSSES = ("ce", "kl")


def check_inputs(x: Tensor, y: Tensor, soft: bool = False) -> tuple[Tensor, Tensor]:
    """Validate a batch (float images in [0,1], one int label per example, or with ``soft`` a B×K
    float target per example); return contiguous copies."""
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise AttackError("attack input x must be a float tensor of shape B×... (e.g. B×3×32×32), "
                         f"got {type(x).__name__} {getattr(x, 'dtype', '')} "
                         f"{tuple(getattr(x, 'shape', ()))}")
    given = y
    if soft and isinstance(y, Tensor) and y.dim() == 2 and y.is_floating_point():
        if y.shape[0] != x.shape[0]:
            raise AttackError(f"attack soft targets y must have {x.shape[0]} rows (one per example), "
                              f"got {tuple(y.shape)}")
        y = None  # checked; the image checks below still apply
    if y is not None:
        if not isinstance(y, Tensor) or y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise AttackError(f"attack labels y must be a 1-d tensor with {x.shape[0]} entries (one "
                             f"per example), got {tuple(getattr(y, 'shape', ()))}")
        if y.is_floating_point() or y.is_complex():
            raise AttackError(f"attack labels y must be integer class indices, got dtype {y.dtype}")
    if x.numel() and (x.min().item() < 0.0 or x.max().item() > 1.0):
        raise AttackError(f"attack inputs must be images in [0,1], got range [{x.min().item():.4g}, "
                         f"{x.max().item():.4g}]; move normalisation into the model")
    return x.detach().contiguous(), given.detach().contiguous()

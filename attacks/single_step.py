r"""Single-step training attacks: FGSM with random start (FGSM-RS) and N-FGSM.

Both attack in pixel space ([0,1], normalisation inside the model). The reference code attacks the
normalised tensor with per-channel ``ε_c = ε/σ_c``; since ``σ_c > 0`` that is the same attack with a
scalar ε in pixel space (SPEC §13.0). Linf only, as in both papers. By default the model is in
``train`` mode during the attack, as in both reference codes (the attack's forward updates the
BatchNorm running statistics there too; SPEC §13.0).

FGSM-RS (Wong, Rice, Kolter, "Fast is better than free", ICLR 2020), what
``locuslab/fast_adversarial`` CIFAR10/train_fgsm.py (``--delta-init random``) executes (SPEC §13.1)::

    δ ~ U(−ε, ε)^d;  δ ← clamp(δ, −x, 1−x)               # init, then image range
    g ← ∇_δ CE(f(x+δ), y)
    δ ← clamp(δ + α·sign(g), −ε, ε);  δ ← clamp(δ, −x, 1−x)   # ball first, then image range
    x_adv = x + δ                                        # α = 1.25ε (10/255 at ε = 8/255)

N-FGSM (de Jorge et al., "Make Some Noise: Reliable and Efficient Single-Step Adversarial
Training", NeurIPS 2022), what ``pdejorge/N-FGSM`` train.py:216-248 executes (SPEC §13.2)::

    η ~ U(−kε, kε)^d;  η ← clamp(η, −x, 1−x)               # k = 2
    g ← ∇_η CE(f(x+η), y)
    δ ← η + α·sign(g);  δ ← clamp(δ, −x, 1−x)              # α = ε; NO projection to the ε-ball
    if clip > 0: δ ← clamp(δ, −clip·ε, clip·ε)             # default clip = −1: never
    x_adv = x + δ

N-FGSM's point leaves the ε-ball on purpose: ``‖δ‖∞ ≤ kε + α`` (3ε with the defaults). The class
declares that bound as its :meth:`NFGSM.radius`, which the base class's postcondition checks; the
base check itself is not loosened. (Not ported: ``AttackUtils.attack_nfgsm``, which train.py does
not use and which clamps to ±ε, SPEC §13.2 note 3.)

As training attacks (``attack: {name: fgsm_rs}`` / ``{name: n_fgsm}``) they take their step size
from the schedule's budget (``set_budget(eps, step_size, steps)``; one step whatever ``steps``); built
directly, the step defaults to the paper's (1.25ε, ε).

Examples::

    >>> FGSMRS(eps=8/255)(model, x, y)                # step 10/255
    >>> NFGSM(eps=8/255)(model, x, y)                 # noise U(-16/255, 16/255), step 8/255
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from .base import BN_MODES, Attack, AttackOptions
from .losses import natural_logits, resolve_loss
from .options import check_budget, check_nonnegative, check_setting, setting
from .pgd import PGD


@dataclass(frozen=True)
class FGSMRSOptions(AttackOptions):
    """FGSM-RS's options: Linf only; train-mode BatchNorm while attacking (train_fgsm.py)."""

    norm: str = setting("Linf", choices=("Linf",))
    bn_mode: str = setting("train", choices=BN_MODES)


@dataclass(frozen=True)
class NFGSMOptions(FGSMRSOptions):
    """N-FGSM's options: the noise magnitude ``k`` (noise U(−kε, kε); ``--unif`` 2 in
    experiments.sh for CIFAR-10 at 8/255) and ``clip`` (<= 0: no projection; train.py default −1)."""

    k: float = setting(2.0, min=0)
    clip: float = setting(-1.0)


class _SingleStep(Attack):
    """One signed-gradient step from a random start; the subclasses differ in start and projection."""

    Options = FGSMRSOptions
    #: the step size as a multiple of eps when none is given (the paper's default)
    ALPHA_RATIO = 1.0

    def __init__(self, eps: float = 8 / 255, alpha: Optional[float] = None, loss="ce",
                 norm: str = "Linf", bn_mode: str = "train"):
        super().__init__(eps, norm=norm, bn_mode=bn_mode)  # the norm against self.Options
        self.alpha = self.ALPHA_RATIO * eps if alpha is None else alpha
        check_nonnegative("alpha", self.alpha)
        resolve_loss(loss)
        self.loss = loss

    def set_budget(self, eps: float, step_size: float, steps: int = 1) -> None:
        """Radius and step size of one epoch; one step whatever ``steps`` says (as :class:`FGSM`)."""
        check_budget(eps, step_size, steps)
        self.eps, self.alpha = float(eps), float(step_size)

    def start(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def finish(self, x: Tensor, delta: Tensor) -> Tensor:
        raise NotImplementedError

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        loss_fn = resolve_loss(self.loss)
        logits_nat = natural_logits(model, x, loss_fn)
        delta = self.start(x)
        delta = torch.max(torch.min(delta, 1.0 - x), -x)  # image range: x + δ ∈ [0, 1]
        grad = PGD.input_grad(model, loss_fn, x + delta, y, logits_nat)
        delta = self.finish(x, delta.detach() + self.alpha * grad.sign())
        return x + delta


class FGSMRS(_SingleStep):
    """FGSM with a uniform random start in the ε-ball, step ``alpha`` (default 1.25ε), then ball and
    image clamps (Wong et al. 2020, reference code; see the module docstring)."""

    ALPHA_RATIO = 1.25  # train_fgsm.py: --alpha 10 at --epsilon 8

    def start(self, x: Tensor) -> Tensor:
        return torch.empty_like(x).uniform_(-self.eps, self.eps)

    def finish(self, x: Tensor, delta: Tensor) -> Tensor:
        delta = delta.clamp(-self.eps, self.eps)  # ball first (train_fgsm.py:117)
        return torch.max(torch.min(delta, 1.0 - x), -x)  # then image range (:118)


class NFGSM(_SingleStep):
    """N-FGSM: noise U(−kε, kε), step ``alpha`` (default ε), no projection onto the ε-ball unless
    ``clip > 0`` (de Jorge et al. 2022, reference code; see the module docstring)."""

    Options = NFGSMOptions
    ALPHA_RATIO = 1.0  # experiments.sh: alpha = epsilon

    def __init__(self, eps: float = 8 / 255, alpha: Optional[float] = None, k: float = 2.0,
                 clip: float = -1.0, loss="ce", norm: str = "Linf", bn_mode: str = "train"):
        super().__init__(eps=eps, alpha=alpha, loss=loss, norm=norm, bn_mode=bn_mode)
        self.k = check_setting(NFGSMOptions, "k", k, "N-FGSM k")
        self.clip = check_setting(NFGSMOptions, "clip", clip, "N-FGSM clip")

    def radius(self) -> float:
        """``kε + α`` (3ε with the defaults): N-FGSM does not project onto the ε-ball; with
        ``clip > 0`` the bound is ``min(clip·ε, kε + α)``."""
        bound = self.k * self.eps + self.alpha
        return min(bound, self.clip * self.eps) if self.clip > 0 else bound

    def start(self, x: Tensor) -> Tensor:
        if self.k == 0:
            return torch.zeros_like(x)
        return torch.empty_like(x).uniform_(-self.k * self.eps, self.k * self.eps)

    def finish(self, x: Tensor, delta: Tensor) -> Tensor:
        delta = torch.max(torch.min(delta, 1.0 - x), -x)  # image range (train.py:231)
        if self.clip > 0:  # train.py:232-233, off by default
            delta = delta.clamp(-self.clip * self.eps, self.clip * self.eps)
        return delta

    def __repr__(self) -> str:
        return (f"NFGSM(eps={self.eps!r}, alpha={self.alpha!r}, k={self.k!r}, clip={self.clip!r}, "
                f"loss={self.loss!r}, bn_mode={self.bn_mode!r})")

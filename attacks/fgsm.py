r"""FGSM in the paper "Explaining and Harnessing Adversarial Examples" (Goodfellow et al., 2015).

One gradient step of size ε from x, no random start: Linf :math:`x' = clip_{[0,1]}(x + ε·sign(∇_x L))`,
L2 :math:`x' = Π(x + ε·∇_x L/‖∇_x L‖_2)` (the "fast gradient method").

Distance Measure : Linf, L2

Arguments:
    eps (float): radius and step size. (Default: 8/255)
    norm (str): ``"Linf"`` or ``"L2"``. (Default: ``"Linf"``)
    loss (str or callable): as :class:`attacks.PGD`. (Default: ``"ce"``)
    bn_mode (str): ``"eval"``, ``"train"`` or ``"train_frozen"``. (Default: ``"eval"``)

Examples::

    >>> attack = FGSM(eps=8/255)
    >>> x_adv = attack(model, x, y)
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import Attack, AttackError, AttackOptions
from .options import setting
from .pgd import PGD


@dataclass(frozen=True)
class FGSMOptions(AttackOptions):
    """FGSM's options: norm and bn_mode; no start to choose (always x). Linf and L2 only: one
    step of the whole radius has no L1 form here (an L1 attack takes several sparse steps: pgd)."""

    norm: str = setting("Linf", choices=("Linf", "L2"))


class FGSM(PGD):
    """PGD with one step of size ``eps`` from the clean input (``alpha`` follows ``eps``)."""

    Options = FGSMOptions

    def __init__(self, eps: float = 8 / 255, norm: str = "Linf", loss="ce", bn_mode: str = "eval"):
        super().__init__(eps=eps, alpha=eps, steps=1, norm=norm, loss=loss, init="none",
                         bn_mode=bn_mode)

    @property
    def alpha(self) -> float:
        """The step size is always the current ``eps`` (so an eps ramp moves both)."""
        return self.eps

    @alpha.setter
    def alpha(self, value: float) -> None:
        if value == self.__dict__.get("eps"):  # PGD.__init__ assigns alpha = eps
            return
        raise AttackError(f"FGSM's step size is always its eps ({self.eps}); cannot set alpha={value!r}: "
                         "set attack.eps instead, or use PGD(steps=1, alpha=...) for another step size")

    def set_budget(self, eps: float, step_size: float, steps: int) -> None:
        """Only the radius: FGSM takes one step of size eps, whatever ``step_size`` and ``steps``."""
        Attack.set_budget(self, eps, step_size, steps)

"""The training attacks by name: ``attack: {name: pgd, ...}`` in a training config builds
``TRAINING_ATTACKS[name]``.

A training attack is an :class:`attacks.Attack` subclass that

- names its options dataclass in ``Options`` (every field's type, default and rule, see
  :mod:`attacks.options`; it has ``norm``, the threat model the run is tested in);
- is built as ``cls(loss=loss, **options)``, where ``loss`` is the training method's attack loss
  (``"ce"``, ``"kl"``, a callable; an attack without a loss ignores it);
- takes its per-epoch budget through ``set_budget(eps, step_size, steps)``.

Adding a training attack is its file in ``attacks/`` and one line here; advtrain's config validator,
the schedules and the objectives read everything else from the class.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Type

from .apgd_train import APGDTrain
from .base import Attack
from .fgsm import FGSM
from .no_attack import NoAttack
from .options import unknown
from .pgd import PGD
from .single_step import FGSMRS, NFGSM
from .pgd_best import BestPGD

TRAINING_ATTACKS: Dict[str, Type[Attack]] = {
    "pgd": PGD,  # Madry et al. 2018: the default of every config
    "none": NoAttack,  # x_adv = x (a clean regime)
    "fgsm": FGSM,  # Goodfellow et al. 2015: one step of eps from x (GradAlign's training attack)
    "fgsm_rs": FGSMRS,  # Wong et al. 2020: uniform start, step 1.25 eps, ball + image clamps
    "n_fgsm": NFGSM,  # de Jorge et al. 2022: noise U(-k eps, k eps), step eps, no projection
    "apgd": APGDTrain,  # Singh et al. 2023 (revisiting-at): 2-step APGD-CE, pyautoattack's code
    "pgd_best": BestPGD,  # PGD returning each example's highest-loss iterate (ARES use_best, revisiting-at)
}
DEFAULT = "pgd"


def training_attack(name: str) -> Type[Attack]:
    """The class registered as ``name`` (an :class:`attacks.AttackError` naming the choices if none)."""
    if name not in TRAINING_ATTACKS:
        raise unknown("training attack", name, TRAINING_ATTACKS)
    return TRAINING_ATTACKS[name]


def build_training_attack(name: str, options: Any, *, loss: Any, eps: float, step_size: float,
                          steps: int) -> Attack:
    """Training attack ``name`` with its ``options`` (an instance of its ``Options``), the training
    method's attack ``loss`` and the budget ``(eps, step_size, steps)``."""
    cls = training_attack(name)
    if not isinstance(options, cls.Options):
        raise TypeError(f"training attack {name!r} takes {cls.Options.__name__} options, got "
                        f"{type(options).__name__}")  # a programming error, not a user's
    attack = cls(loss=loss, **{f.name: getattr(options, f.name) for f in dataclasses.fields(options)})
    attack.set_budget(eps, step_size, steps)
    return attack

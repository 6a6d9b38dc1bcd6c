"""Attacks: ``x_adv = attack(model, x, y)`` with the model passed on every call.

- :class:`Attack` -- base class (mode switch and restore, postcondition checks)
- :class:`PGD` -- Linf / L2 projected gradient ascent on ``ce`` / ``cw`` / ``kl`` / ``dkl`` / a callable
- :class:`BestPGD` -- PGD returning each example's highest-loss iterate (training attack ``pgd_best``)
- :class:`FGSM` -- one step of size eps
- :class:`FGSMRS`, :class:`NFGSM` -- single-step training attacks (Wong et al. 2020; de Jorge et al. 2022)
- :class:`APGDTrain` -- APGD-CE as a training attack (pyautoattack's code; revisiting-at)
- :class:`NoAttack` -- ``x_adv = x`` (the ``none`` training attack of a clean regime)
- :data:`TRAINING_ATTACKS` -- the training attacks by name (:mod:`attacks.registry`); each class
  declares its options in a dataclass (``PGD.Options``, fields made with :func:`setting`) and takes
  its budget through ``set_budget(eps, step_size, steps)``
- :class:`AutoAttackAdapter`, :class:`AAResult` -- AutoAttack (PyPI ``pyautoattack``) with per-attack
  accuracies, timings, captured checks and a resumable state file
- loss helpers :func:`ce_loss`, :func:`cw_loss`, :func:`kl_loss`
- :class:`AttackError` -- the ``ValueError`` every user mistake raises (one line)

This package imports nothing from ``advtrain`` (a test checks it): a training method hands PGD its
loss as a callable, and advtrain maps :class:`AttackError` to its own one-line user error.
"""
from __future__ import annotations

from .base import BN_MODES, NORMS, Attack, AttackError, AttackOptions, model_mode
from .fgsm import FGSM
from .losses import ce_loss, cw_loss, kl_loss
from .no_attack import NoAttack
from .options import setting
from .pgd import PGD
from .pgd_best import BestPGD
from .single_step import FGSMRS, NFGSM
from .apgd_train import APGDTrain
from .registry import TRAINING_ATTACKS, build_training_attack, training_attack

__all__ = ["Attack", "AttackError", "AttackOptions", "PGD", "BestPGD", "FGSM", "FGSMRS", "NFGSM",
           "APGDTrain", "NoAttack", "AutoAttackAdapter", "AAResult", "ce_loss", "cw_loss", "kl_loss",
           "model_mode", "NORMS", "BN_MODES", "setting", "TRAINING_ATTACKS", "training_attack",
           "build_training_attack"]


def __getattr__(name):  # pyautoattack is imported only when the adapter is used
    if name in ("AutoAttackAdapter", "AAResult"):
        from . import autoattack

        return getattr(autoattack, name)
    raise AttributeError(f"module 'attacks' has no attribute {name!r}")

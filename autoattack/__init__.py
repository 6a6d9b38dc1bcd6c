"""Compatibility shim: the official AutoAttack API (``autoattack``) backed by PyPI's ``pyautoattack``.

Why this exists: robustbench 1.1.1 does ``from autoattack import AutoAttack`` and
``from autoattack.state import EvaluationState``, but the official AutoAttack code is not on PyPI; PyPI
ships it as ``pyautoattack`` with a different call style (keyword-only ``attacks=`` and
``batch_size=``, no ``log_path``, ``run_standard_evaluation`` returning ``(x_adv, y_adv)``).
Installing advtrain installs this module so that, in any interpreter,

    from autoattack import AutoAttack
    adversary = AutoAttack(model, norm="Linf", eps=8/255, version="standard",
                           attacks_to_run=[], device="cpu", log_path=None)
    x_adv = adversary.run_standard_evaluation(x, y, bs=250, state_path=None)

works exactly as with the official package. The attacks themselves are pyautoattack's code; nothing
here re-implements an attack. If the official ``autoattack`` is installed instead, do not install both.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import pyautoattack as _pyaa
from pyautoattack.autoattack import AutoAttack as _PyAutoAttack

__version__ = getattr(_pyaa, "__version__", "unknown") + "+advtrain-shim"
__all__ = ["AutoAttack"]


class AutoAttack(_PyAutoAttack):
    """``autoattack.AutoAttack`` with the official constructor and method signatures."""

    def __init__(self, model, norm="Linf", eps=0.3, seed=None, verbose=True, attacks_to_run=(),
                 version="standard", is_tf_model=False, device="cuda", log_path=None):
        if is_tf_model:
            raise NotImplementedError("TensorFlow models are not supported by this shim")
        attacks = list(attacks_to_run) if version == "custom" else None
        super().__init__(model, attacks=attacks, device=device, eps=eps, norm=norm, seed=seed,
                         version=version)
        self.verbose = verbose
        self.log_path = log_path
        self.is_tf_model = False
        self._set_logger(verbose, log_path)

    def _set_logger(self, verbose, log_path):
        # one child logger per instance so handlers never pile up across instances
        logger = logging.getLogger("auto-attack").getChild(f"shim{id(self)}")
        logger.setLevel(logging.DEBUG)
        logger.propagate = True
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        if verbose:
            logger.addHandler(logging.StreamHandler(sys.stdout))
        if log_path is not None:
            logger.addHandler(logging.FileHandler(log_path))
        self.logger = logger
        for attack in (self.apgd, self.apgd_targeted):
            attack.logger = logger

    def run_standard_evaluation(self, x_orig, y_orig, bs=250, return_labels=False, state_path=None):
        if state_path is not None:
            state_path = Path(state_path)
        x_adv, y_adv = super().run_standard_evaluation(
            x_orig.contiguous(), y_orig.contiguous(), batch_size=bs, state_path=state_path)
        return (x_adv, y_adv) if return_labels else x_adv

    def clean_accuracy(self, x_orig, y_orig, bs=250):
        return super().clean_accuracy(x_orig, y_orig, bs=bs)

    def run_standard_evaluation_individual(self, x_orig, y_orig, bs=250, return_labels=False):
        adv = super().run_standard_evaluation_individual(x_orig.contiguous(), y_orig.contiguous(),
                                                         batch_size=bs)
        return adv if return_labels else {k: v[0] for k, v in adv.items()}

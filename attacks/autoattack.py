r"""AutoAttack in the paper "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks" (Croce & Hein, 2020), run through PyPI's ``pyautoattack``.

Robust accuracy :math:`\frac1n\sum_i 1[\arg\max f(x'_i) = y_i]` after the attacks of a version run in
sequence, each on the points still robust (standard: APGD-CE, APGD-T, FAB-T, Square).
For L1 pyautoattack's standard version (``AutoAttack._set_version``) runs the same four attacks
with L1-APGD (Croce & Hein, "Mind the box: l1-APGD for sparse adversarial attacks on image
classifiers", ICML 2021): APGD-CE with 5 restarts and APGD-T with 5 target classes, both with
``use_largereps`` (radius 3ε, 2ε, ε over 30 %, 30 %, 40 % of the iterations, each with the exact
projection onto the L1 ball ∩ [0, 1]^d), then FAB-T (9 targets) and Square (5000 queries).

Distance Measure : Linf, L2, L1

Arguments:
    norm (str): ``"Linf"``, ``"L2"`` or ``"L1"``. (Default: ``"Linf"``)
    eps (float): radius. (Default: 8/255)
    version (str): ``"standard"``, ``"plus"``, ``"rand"`` or ``"custom"``. (Default: ``"standard"``)
    attacks (list[str]): with ``version="custom"`` only: a subset of ``apgd-ce, apgd-dlr, apgd-t, fab,
        fab-t, square``, run in the given order.
    seed (int): seed of every attack (fixed seed => reproducible results). (Default: 0)
    batch_size (int): examples per forward. (Default: 500)
    device (str): device of the model; inputs are moved batch by batch. (Default: ``"cpu"``)
    state_path (path): resumable state file: finished attacks are recorded after each attack and
        skipped by a later run with the same file. The file is bound to every setting that changes
        an attack's outcome (:meth:`AutoAttackAdapter.settings_key`: norm, eps, version, attacks,
        seed, batch size, n_iter, n_restarts, n_queries, n_targets, the number and shape of the
        inputs) plus ``state_key``; a file written for anything else is refused
        (:class:`AttackStateError`) naming the settings that differ.
    state_key (dict): what else the state file is bound to, computed by the caller (advtrain
        passes the SHA-256 of the model's weights and of the data, and the precision).
    load_state, save_state (callables): ``load_state(path) -> dict`` and ``save_state(obj, path)``;
        default ``torch.load(weights_only=True)`` and a write-then-rename ``torch.save``.
    n_iter (int): iterations of APGD / APGD-T / FAB (AutoAttack uses 100; fewer is weaker).
    n_restarts (int): restarts of APGD-CE/DLR, FAB and Square (the version's default otherwise).
    n_queries (int): Square queries (AutoAttack uses 5000).
    n_targets (int): target classes of APGD-T and FAB-T (AutoAttack uses 9; APGD-T 5 for L1).

Examples::

    >>> result = AutoAttackAdapter(norm="Linf", eps=8/255, version="standard").run(model, x, y)
    >>> result.per_attack        # {'clean': 0.91, 'apgd-ce': 0.58, 'apgd-t': 0.56, ...}
    >>> result.checks            # pyautoattack's diagnostics (probabilities instead of logits, ...)

Bad arguments raise :class:`attacks.AttackError` (:class:`UnknownChoiceError` for an unknown
name); this module imports nothing from any trainer. Attacks, checks and their messages are pyautoattack's. The adapter calls pyautoattack's
``run_standard_evaluation`` once per attack, on the points still robust, which gives exact
per-attack accuracies and timings and lets it keep its own state file: pyautoattack 0.2.0's own
resume is unusable (its JSON state stores the attack set as a string, so reloading always fails
with "different set of attacks"; and a restored run leaves ``y_adv`` undefined).
Once no point is robust, the remaining attacks are recorded with accuracy 0.0 and 0 seconds
(pyautoattack would leave them out of its dictionary).
"""
from __future__ import annotations

import logging
import math
import numbers
import sys
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from .autoattack_state import (STATE_FORMAT, AttackStateError, check_state_key,  # noqa: F401
                               pack_state, torch_load, torch_save, unpack_state)
from .base import NORMS, AttackError, check_inputs, flat_norm, model_mode, rounding_slack, unknown

ATTACK_NAMES = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
VERSIONS = ("standard", "plus", "rand", "custom")
AA_NORMS = NORMS  # AutoAttack runs every threat model (L1: its standard version, use_largereps)
_LOGGER = "auto-attack.advtrain"


class UnknownChoiceError(AttackError):
    """A name (norm, version, attack) that is not one of the choices."""


def _unknown(kind: str, name, choices) -> UnknownChoiceError:
    return unknown(kind, name, choices, UnknownChoiceError)


def check_settings(*, norm="Linf", eps=8 / 255, version="standard", attacks=None, seed=0,
                   batch_size=500, **budget) -> Optional[list]:
    """Validate AutoAttack's settings (one-line :class:`AttackError`); the attack list or None."""
    if norm not in AA_NORMS:
        raise _unknown("AutoAttack norm", norm, AA_NORMS)
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 <= eps < math.inf:
        raise AttackError(f"AutoAttack eps must be a finite number >= 0, got {eps!r}; e.g. 8/255")
    if version not in VERSIONS:
        raise _unknown("AutoAttack version", version, VERSIONS)
    for name, value in (("batch_size", batch_size), *budget.items()):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise AttackError(f"AutoAttack {name} must be a positive integer, got {value!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise AttackError(f"AutoAttack seed must be an integer or None, got {seed!r}")
    return _check_attacks(version, attacks)


def _check_attacks(version: str, attacks) -> Optional[list]:
    if version != "custom":
        if attacks is not None:
            raise AttackError(f"AutoAttack attacks={list(attacks)!r} needs version='custom' (version "
                              f"{version!r} fixes its own attacks); drop attacks or set version='custom'")
        return None
    if isinstance(attacks, str) or not attacks:
        raise AttackError("AutoAttack version='custom' needs attacks=[...], a list from: "
                          + ", ".join(ATTACK_NAMES))
    for name in attacks:
        if name not in ATTACK_NAMES:
            raise _unknown("AutoAttack attack", name, ATTACK_NAMES)
    if len(set(attacks)) != len(attacks):
        raise AttackError(f"AutoAttack attacks {list(attacks)!r} repeat a name; list each once")
    return list(attacks)


@dataclass
class AAResult:
    """Outcome of :meth:`AutoAttackAdapter.run` (tensors on the device of the inputs)."""

    x_adv: Tensor                       #: adversarial inputs (x where no attack succeeded)
    y_adv: Tensor                       #: predictions on x_adv
    robust: Tensor                      #: bool per example: prediction on x_adv == y
    clean: Tensor                       #: bool per example: prediction on x == y
    per_attack: "OrderedDict[str, float]"  #: 'clean' and each attack -> robust accuracy after it
    seconds: dict                       #: seconds per attack and 'total'
    checks: list                        #: warning messages of pyautoattack's checks
    version: str
    attacks: list
    #: pyautoattack's debug lines; one sub-run per attack, so its accuracies are relative to
    #: the points still robust before that attack
    log: list = field(default_factory=list)

    @property
    def clean_accuracy(self) -> float:
        return self.clean.float().mean().item()

    @property
    def robust_accuracy(self) -> float:
        return self.robust.float().mean().item()


class _Capture(logging.Handler):
    """Collects pyautoattack's log records: warnings -> checks, everything -> log."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.checks: list[str] = []
        self.log: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        self.log.append(msg)
        if record.levelno >= logging.WARNING:
            self.checks.append(msg)


class AutoAttackAdapter:
    """AutoAttack (pyautoattack) with exact per-attack results; see the module docstring."""

    def __init__(self, norm: str = "Linf", eps: float = 8 / 255, version: str = "standard",
                 attacks: Optional[list] = None, seed: Optional[int] = 0, batch_size: int = 500,
                 device="cpu", state_path=None, n_iter: Optional[int] = None,
                 n_queries: Optional[int] = None, progress: bool = False, *,
                 n_restarts: Optional[int] = None, n_targets: Optional[int] = None,
                 state_key: Optional[dict] = None, load_state: Callable = torch_load,
                 save_state: Callable = torch_save):
        self.attacks = check_settings(norm=norm, eps=eps, version=version, attacks=attacks,
                                      seed=seed, batch_size=batch_size, n_iter=n_iter,
                                      n_restarts=n_restarts, n_queries=n_queries,
                                      n_targets=n_targets)
        self.norm, self.eps, self.version, self.seed = norm, float(eps), version, seed
        self.batch_size, self.device = batch_size, device
        self.budget = {"n_iter": n_iter, "n_restarts": n_restarts, "n_queries": n_queries,
                       "n_targets": n_targets}
        self.state_path = None if state_path is None else Path(state_path)
        self.state_key, self._load, self._save = dict(state_key or {}), load_state, save_state
        self.progress = progress  # one line on stderr after each attack (runs take hours on GPUs)

    # ------------------------------------------------------------------ running
    def run(self, model: nn.Module, x: Tensor, y: Tensor) -> AAResult:
        """Evaluate ``model`` on ``(x, y)``; the model is in eval mode during the run only."""
        x, y = check_inputs(x, y)
        capture = _Capture()
        logger = logging.getLogger(_LOGGER)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.addHandler(capture)
        try:
            with model_mode(model, "eval"), _fork_rng(self.device), \
                    warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = self._run(model, x, y, logger, capture)
        finally:
            logger.removeHandler(capture)
        _sort_warnings(caught, result.checks)
        return result

    def _run(self, model, x, y, logger, capture) -> AAResult:
        adversary = self.adversary(model, logger)
        names = list(adversary.attacks_to_run)
        key = self.settings_key(x, names)
        state = self._load_state(x, y, key) or self._fresh_state(model, x, y)
        for name in names:
            if name not in state["per_attack"]:
                self._say(f"{name}: running on {int(state['robust'].sum())} points still robust ...")
                self._run_one(adversary, name, x, y, state, capture)
                self._say(f"{name}: robust accuracy {state['per_attack'][name]:.2%} "
                          f"({state['seconds'][name]:.0f} s)")
                state["checks"] = _unique(state["checks"] + capture.checks)
                self._save_state(state, x, key)
        from pyautoattack import checks

        checks.check_square_sr(dict(state["per_attack"]), logger=logger)
        robust = self._predict(model, state["x_adv"]) == y
        seconds = dict(state["seconds"], total=sum(state["seconds"].values()))
        all_checks = _unique(state["checks"] + capture.checks + self._ball_check(x, state["x_adv"]))
        return AAResult(state["x_adv"], state["y_adv"], robust, state["clean"],
                        OrderedDict(state["per_attack"]), seconds, all_checks, self.version,
                        names, capture.log)

    def _say(self, line: str) -> None:
        if self.progress:
            print(f"[autoattack] {line}", file=sys.stderr, flush=True)

    def adversary(self, model, logger: Optional[logging.Logger] = None):
        """pyautoattack's ``AutoAttack`` for ``model`` with this adapter's settings and budget."""
        from pyautoattack.autoattack import AutoAttack

        custom = self.version == "custom"
        adv = AutoAttack(model, attacks=list(self.attacks) if custom else None,
                         device=self.device, eps=self.eps, norm=self.norm, seed=self.seed,
                         version=self.version)
        adv.verbose = logger is not None
        if logger is not None:
            adv.logger = adv.apgd.logger = adv.apgd_targeted.logger = logger
        n_iter, n_restarts = self.budget["n_iter"], self.budget["n_restarts"]
        if n_iter is not None:
            for apgd in (adv.apgd, adv.apgd_targeted):
                apgd.n_iter = apgd.n_iter_orig = n_iter
                apgd.n_iter_2 = max(int(0.22 * n_iter), 1)
                apgd.n_iter_min = max(int(0.06 * n_iter), 1)
                apgd.size_decr = max(int(0.03 * n_iter), 1)
            adv.fab.n_iter = n_iter
        if n_restarts is not None:  # FAB-T still runs one restart per target (pyautoattack)
            adv.apgd.n_restarts = adv.fab.n_restarts = adv.square.n_restarts = n_restarts
        if self.budget["n_queries"] is not None:
            adv.square.n_queries = self.budget["n_queries"]
        if self.budget["n_targets"] is not None:
            adv.apgd_targeted.n_target_classes = adv.fab.n_target_classes = self.budget["n_targets"]
        return adv

    @staticmethod
    def attack_batch(adversary, name: str, x: Tensor, y: Tensor) -> Tensor:
        """One batch of attack ``name``, set up exactly as pyautoattack's own loop sets it up."""
        if name not in _BATCH:
            raise _unknown("AutoAttack attack", name, ATTACK_NAMES)
        return _BATCH[name](adversary, x, y)

    def _run_one(self, adversary, name, x, y, state, capture) -> None:
        """One pyautoattack run of attack ``name`` on the points still robust; update ``state``."""
        idx = state["robust"].nonzero().flatten()
        start = time.perf_counter()
        if idx.numel():
            adversary.attacks_to_run = [name]
            x_sub, y_sub = x[idx].contiguous(), y[idx].contiguous()
            x_adv_sub, y_adv_sub = adversary.run_standard_evaluation(
                x_sub, y_sub, batch_size=self.batch_size)
            fooled = y_adv_sub.to(y.device) != y_sub
            hit = idx[fooled]
            state["x_adv"][hit] = x_adv_sub[fooled].to(x.device, x.dtype)
            state["y_adv"][hit] = y_adv_sub[fooled].to(y.device)
            state["robust"][hit] = False
        state["seconds"][name] = time.perf_counter() - start
        state["per_attack"][name] = state["robust"].float().mean().item()

    def _fresh_state(self, model, x, y) -> dict:
        pred = self._predict(model, x)
        clean = pred == y
        return {"x_adv": x.clone(), "y_adv": pred, "clean": clean, "robust": clean.clone(),
                "per_attack": OrderedDict(clean=clean.float().mean().item()), "seconds": {},
                "checks": []}

    @torch.no_grad()
    def _predict(self, model, x: Tensor) -> Tensor:
        preds = [model(x[i:i + self.batch_size].to(self.device)).argmax(1).to(x.device)
                 for i in range(0, x.shape[0], self.batch_size)]
        return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long, device=x.device)

    def _ball_check(self, x: Tensor, x_adv: Tensor) -> list:
        if x.numel() == 0:
            return []
        dist = flat_norm(x_adv - x, self.norm)
        worst = dist.max().item()
        slack = rounding_slack(self.norm, x[0].numel(), x.dtype)
        if worst > self.eps * (1 + 1e-5) + 1e-5 + slack or x_adv.min() < 0 or x_adv.max() > 1:
            return [f"adversarial examples leave the {self.norm} ball or [0,1]: max distance "
                    f"{worst:.6g} for eps {self.eps:.6g}"]
        return []

    # ------------------------------------------------------------------ state file
    def settings_key(self, x: Tensor, names: list) -> dict:
        """Every adapter setting that changes the outcome, plus the caller's ``state_key``."""
        key = {"norm": self.norm, "eps": self.eps, "version": self.version,
               "attacks": ",".join(names), "seed": self.seed, "batch_size": self.batch_size,
               "n_ex": int(x.shape[0]), "shape": list(x.shape[1:]), **self.budget}
        return {**key, **self.state_key}

    def _save_state(self, state: dict, x: Tensor, key: dict) -> None:
        if self.state_path is not None:
            self._save(pack_state(state, x, key), self.state_path)

    def _load_state(self, x: Tensor, y: Tensor, key: dict) -> Optional[dict]:
        if self.state_path is None or not self.state_path.exists():
            return None
        saved = self._load(self.state_path)
        check_state_key(self.state_path, saved, key)
        return unpack_state(saved, x, y)

    def __repr__(self) -> str:
        return (f"AutoAttackAdapter(norm={self.norm!r}, eps={self.eps!r}, version={self.version!r}, "
                f"attacks={self.attacks!r}, seed={self.seed!r}, batch_size={self.batch_size})")


def _apgd(loss: str):
    def run(adv, x, y):
        adv.apgd.loss = loss
        adv.apgd.seed = adv.get_seed()
        return adv.apgd.perturb(x, y)
    return run


def _fab(targeted: bool):
    def run(adv, x, y):
        adv.fab.targeted = targeted
        if targeted:
            adv.fab.n_restarts = 1
        adv.fab.seed = adv.get_seed()
        return adv.fab.perturb(x, y)
    return run


def _seeded(attr: str):
    def run(adv, x, y):
        attack = getattr(adv, attr)
        attack.seed = adv.get_seed()
        return attack.perturb(x, y)
    return run


#: attack name -> one batch, as ``AutoAttack.run_standard_evaluation`` runs it
_BATCH = {"apgd-ce": _apgd("ce"), "apgd-dlr": _apgd("dlr"), "apgd-t": _seeded("apgd_targeted"),
          "fab": _fab(False), "fab-t": _fab(True), "square": _seeded("square")}


def _fork_rng(device):
    """Restore the global RNG afterwards: pyautoattack calls ``torch.manual_seed(seed)``."""
    dev = torch.device(device)
    cuda = [dev.index or 0] if dev.type == "cuda" and torch.cuda.is_available() else []
    return torch.random.fork_rng(devices=cuda)


def _sort_warnings(caught, checks: list) -> None:
    """pyautoattack's ``warnings.warn`` messages join ``checks``; others are re-issued."""
    for w in caught:
        if "pyautoattack" in str(w.filename):
            if str(w.message) not in checks:
                checks.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _unique(items: list) -> list:
    return list(dict.fromkeys(items))

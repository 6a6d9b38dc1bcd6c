r"""AutoAttack in the paper "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks" (Croce & Hein, 2020), run through PyPI's ``pyautoattack``.

Robust accuracy :math:`\frac1n\sum_i 1[\arg\max f(x'_i) = y_i]` after the attacks of a version run in
sequence, each on the points still robust (standard: APGD-CE, APGD-T, FAB-T, Square).

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
        skipped by a later run with the same file. The file is bound to the model (SHA-256 of its
        state_dict), the inputs and labels (SHA-256), norm, eps, version, attacks, seed and the
        number of examples; a file written for anything else is refused with one line.
    n_iter (int): *tests/debugging only*: iterations of APGD / APGD-T / FAB (AutoAttack uses 100).
    n_queries (int): *tests/debugging only*: Square queries (AutoAttack uses 5000).

Examples::

    >>> result = AutoAttackAdapter(norm="Linf", eps=8/255, version="standard").run(model, x, y)
    >>> result.per_attack        # {'clean': 0.91, 'apgd-ce': 0.58, 'apgd-t': 0.56, ...}
    >>> result.checks            # pyautoattack's diagnostics (probabilities instead of logits, ...)

Attacks, checks and their messages are pyautoattack's. The adapter calls pyautoattack's
``run_standard_evaluation`` once per attack, on the points still robust, which gives exact
per-attack accuracies and timings and lets it keep its own state file: pyautoattack 0.2.0's own
resume is unusable (its JSON state stores the attack set as a string, so reloading always fails
with "different set of attacks"; and a restored run leaves ``y_adv`` undefined).
Once no point is robust, the remaining attacks are recorded with accuracy 0.0 and 0 seconds
(pyautoattack would leave them out of its dictionary).
"""
from __future__ import annotations

import logging
import sys
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

from advtrain.errors import CheckpointError, InputError, unknown

from .base import check_nonnegative, check_inputs, flat_norm, model_mode

ATTACK_NAMES = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
VERSIONS = ("standard", "plus", "rand", "custom")
AA_NORMS = ("Linf", "L2", "L1")
STATE_FORMAT = "advtrain-autoattack-state-2"
_LOGGER = "auto-attack.advtrain"


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
                 n_queries: Optional[int] = None, progress: bool = False):
        if norm not in AA_NORMS:
            raise unknown("AutoAttack norm", norm, AA_NORMS)
        check_nonnegative("eps", eps)
        if version not in VERSIONS:
            raise unknown("AutoAttack version", version, VERSIONS)
        self.attacks = _check_attacks(version, attacks)
        for name, value in (("batch_size", batch_size), ("n_iter", n_iter), ("n_queries", n_queries)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise InputError(f"AutoAttack {name} must be a positive integer, got {value!r}")
        if seed is not None and not isinstance(seed, int):
            raise InputError(f"AutoAttack seed must be an integer or None, got {seed!r}")
        self.norm, self.eps, self.version, self.seed = norm, float(eps), version, seed
        self.batch_size, self.device = batch_size, device
        self.state_path = None if state_path is None else Path(state_path)
        self.n_iter, self.n_queries = n_iter, n_queries
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
        adversary = self._adversary(model, logger)
        names = list(adversary.attacks_to_run)
        key = self._key(model, x, y, names) if self.state_path is not None else None
        state = self._load_state(x, y, key)
        if state is None:
            state = self._fresh_state(model, x, y)
        for name in names:
            if name not in state["per_attack"]:
                if self.progress:
                    print(f"[autoattack] {name}: running on {int(state['robust'].sum())} points "
                          "still robust ...", file=sys.stderr, flush=True)
                self._run_one(adversary, name, x, y, state, capture)
                if self.progress:
                    print(f"[autoattack] {name}: robust accuracy {state['per_attack'][name]:.2%} "
                          f"({state['seconds'][name]:.0f} s)", file=sys.stderr, flush=True)
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

    def _adversary(self, model, logger):
        from pyautoattack.autoattack import AutoAttack

        custom = self.version == "custom"
        adversary = AutoAttack(model, attacks=list(self.attacks) if custom else None,
                               device=self.device, eps=self.eps, norm=self.norm, seed=self.seed,
                               version=self.version)
        adversary.verbose = True
        adversary.logger = adversary.apgd.logger = adversary.apgd_targeted.logger = logger
        if self.n_iter is not None:
            for apgd in (adversary.apgd, adversary.apgd_targeted):
                apgd.n_iter = apgd.n_iter_orig = self.n_iter
                apgd.n_iter_2 = max(int(0.22 * self.n_iter), 1)
                apgd.n_iter_min = max(int(0.06 * self.n_iter), 1)
                apgd.size_decr = max(int(0.03 * self.n_iter), 1)
            adversary.fab.n_iter = self.n_iter
        if self.n_queries is not None:
            adversary.square.n_queries = self.n_queries
        return adversary

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
        dist = flat_norm(x_adv - x, "Linf" if self.norm == "Linf" else "L2") if self.norm != "L1" \
            else (x_adv - x).abs().reshape(x.shape[0], -1).sum(1)
        worst = dist.max().item()
        if worst > self.eps * (1 + 1e-5) + 1e-5 or x_adv.min() < 0 or x_adv.max() > 1:
            return [f"adversarial examples leave the {self.norm} ball or [0,1]: max distance "
                    f"{worst:.6g} for eps {self.eps:.6g}"]
        return []

    # ------------------------------------------------------------------ state file
    def _save_state(self, state: dict, x: Tensor, key: Optional[dict]) -> None:
        if self.state_path is None:
            return
        from advtrain.atomic import atomic_save

        hit = (state["x_adv"] != x).reshape(x.shape[0], -1).any(1).nonzero().flatten()
        atomic_save({
            "format": STATE_FORMAT, "key": key, "done": list(state["per_attack"]),
            "accuracy": list(state["per_attack"].values()), "seconds": dict(state["seconds"]),
            "checks": list(state["checks"]), "clean": state["clean"].cpu(),
            "robust": state["robust"].cpu(), "y_adv": state["y_adv"].cpu(), "changed": hit.cpu(),
            "x_changed": state["x_adv"][hit].cpu(),
        }, self.state_path)

    def _load_state(self, x: Tensor, y: Tensor, key: Optional[dict]) -> Optional[dict]:
        if self.state_path is None or not self.state_path.exists():
            return None
        from advtrain.safeload import load_state_file

        saved = load_state_file(self.state_path)
        if saved.get("format") != STATE_FORMAT or not isinstance(saved.get("key"), dict):
            raise CheckpointError(f"{self.state_path}: not an AutoAttack state file of this advtrain "
                                  "version; delete it or pass another state path")
        differ = [k for k in key if saved["key"].get(k) != key[k]]
        if differ:
            raise CheckpointError(f"{self.state_path}: state of another evaluation (different "
                                  f"{', '.join(differ)}); delete it or pass another state path")
        x_adv = x.clone()
        x_adv[saved["changed"].to(x.device)] = saved["x_changed"].to(x.device, x.dtype)
        return {"x_adv": x_adv, "y_adv": saved["y_adv"].to(y.device),
                "clean": saved["clean"].to(y.device), "robust": saved["robust"].to(y.device),
                "per_attack": OrderedDict(zip(saved["done"], saved["accuracy"])),
                "seconds": dict(saved["seconds"]), "checks": list(saved["checks"])}

    def _key(self, model: nn.Module, x: Tensor, y: Tensor, names: list) -> dict:
        """What a state file belongs to: the model's weights, the data subset and every setting."""
        from advtrain.safeload import state_digest

        return {"model": state_digest(model.state_dict()), "data": _data_digest(x, y),
                "norm": self.norm, "eps": self.eps, "version": self.version,
                "attacks": ",".join(names), "seed": self.seed, "n_ex": int(x.shape[0]),
                "shape": list(x.shape[1:])}

    def __repr__(self) -> str:
        return (f"AutoAttackAdapter(norm={self.norm!r}, eps={self.eps!r}, version={self.version!r}, "
                f"attacks={self.attacks!r}, seed={self.seed!r}, batch_size={self.batch_size})")


def _check_attacks(version: str, attacks) -> Optional[list]:
    if version != "custom":
        if attacks is not None:
            raise InputError(f"AutoAttack attacks={attacks!r} needs version='custom' (version "
                             f"{version!r} fixes its own attacks); drop attacks or set version='custom'")
        return None
    if isinstance(attacks, str) or not attacks:
        raise InputError("AutoAttack version='custom' needs attacks=[...], a list from: "
                         + ", ".join(ATTACK_NAMES))
    for name in attacks:
        if name not in ATTACK_NAMES:
            raise unknown("AutoAttack attack", name, ATTACK_NAMES)
    if len(set(attacks)) != len(attacks):
        raise InputError(f"AutoAttack attacks {list(attacks)!r} repeat a name; list each once")
    return list(attacks)


def _data_digest(x: Tensor, y: Tensor) -> str:
    """SHA-256 of the inputs and labels (exact: which images, in which order)."""
    from advtrain.safeload import state_digest

    return state_digest({"x": x, "y": y})


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


"""AutoAttack sharded over ``torchrun`` ranks, bit-for-bit equal to the single-process run.

Why not "each rank attacks its shard": AutoAttack does *not* treat examples independently. Every
``perturb`` call re-seeds the global RNG and draws the random start for the whole batch, so example
``i``'s noise depends on its position in its batch; APGD/FAB/Square restarts continue only on the
batch's still-robust subset (positions shift again); and after each attack the next one re-batches
the examples that are still robust, so its batch boundaries depend on which examples fell earlier
— across the whole data set, not per shard. Independent shards would therefore give a
different (equally valid, but not identical) robust accuracy. docs/DISTRIBUTED.md shows an example.

What this module does instead (batch-synchronous sharding), with ``b`` the batch size and ``W``
ranks:

1. clean pass: rank ``r`` classifies the contiguous shard ``shard_range(N, W, r, align=b)`` —
   whole single-process batches — and the predictions are summed over ranks;
2. for each attack ``a`` of the suite: ``R_a`` = indices still robust (identical on all ranks),
   cut into the single-process batches ``R_a[kb:(k+1)b]``; rank ``r`` runs batches
   ``k = r, r+W, r+2W, ...`` with pyautoattack's own attack objects and seed
   (``AutoAttackAdapter.adversary`` / ``attack_batch``); fooled flags and
   adversarial labels are summed over ranks, so every rank holds the global state again.

Each batch therefore sees exactly the inputs, seed and batch composition of
``AutoAttack.run_standard_evaluation(x, y, batch_size=b)``, so flags, per-attack accuracies and
the adversarial examples match the single-process run (same device type and deterministic
kernels). Rank ``r`` keeps a resumable state file ``<state_path>.rank{r}`` (tensors only), bound to
the adapter's settings key, ``EvalSettings.bind`` and the number of ranks.
"""
from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional

import torch

from advtrain import distributed as D
from advtrain.errors import InputError
from advtrain.eval.settings import EvalSettings, user_errors
from attacks.autoattack import STATE_FORMAT, AAResult, AutoAttackAdapter


@dataclass
class ShardedAAResult(AAResult):
    """``attacks.AAResult`` merged over the ranks, plus how many examples each attack broke."""

    counts: dict = field(default_factory=dict)  #: examples each attack broke
    world_size: int = 1


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def run_checks(adv, x, y, batch_size) -> list:
    """AutoAttack's pre-attack diagnostics on the first batch (rank 0), as a list of messages."""
    from pyautoattack import checks

    handler = _ListHandler()
    log = logging.getLogger("advtrain.aa-checks")
    log.addHandler(handler)
    log.propagate = False
    try:
        xb, yb = x[:batch_size], y[:batch_size]
        if adv.version != "rand":
            checks.check_randomized(adv.get_logits, xb, yb, bs=batch_size, logger=log)
        n_cls = checks.check_range_output(adv.get_logits, xb, logger=log)
        checks.check_dynamic(adv.model, xb, False, logger=log)
        checks.check_n_classes(n_cls, adv.attacks_to_run, adv.apgd_targeted.n_target_classes,
                               adv.fab.n_target_classes, logger=log)
    finally:
        log.removeHandler(handler)
    return handler.messages


def clean_predictions(model, x, batch_size) -> torch.Tensor:
    """argmax predictions of all N examples; each rank classifies its aligned contiguous shard."""
    pred = torch.zeros(len(x), dtype=torch.long, device=x.device)
    mine = D.shard_range(len(x), align=batch_size)
    with torch.no_grad():
        for i in range(mine.start, mine.stop, batch_size):
            j = min(i + batch_size, mine.stop)
            pred[i:j] = model(x[i:j]).max(dim=1)[1]
    return D.all_reduce_sum_(pred)


def _state_file(state_path, r: int) -> Optional[str]:
    return None if state_path is None else f"{os.fspath(state_path)}.rank{r}"


def load_state(path, key) -> Optional[dict]:
    """This rank's state file, or None; a file of another evaluation raises :class:`CheckpointError`
    naming the settings that differ (the adapter's own check)."""
    if path is None or not os.path.exists(path):
        return None
    from advtrain.eval.settings import load_state_file
    from attacks.autoattack import check_state_key

    state = load_state_file(path)
    with user_errors():
        check_state_key(path, state, key)
    return state


def _common_stage(state) -> int:
    """Number of attacks finished on *every* rank (a crash may leave ranks one stage apart)."""
    return int(D.all_reduce_scalar(len(state["done"]) if state else 0, "min", dtype=torch.long))


def attack_stage(adv, name, x, y, flags, y_adv, batch_size) -> tuple:
    """Run attack ``name`` on this rank's share of the still-robust batches; merge over ranks.

    Returns ``(fooled_idx, x_fooled)`` for the examples *this rank* broke; ``flags`` and ``y_adv``
    are updated in place with the global result.
    """
    robust_idx = torch.nonzero(flags, as_tuple=False).flatten()
    b = int(batch_size)
    n_batches = -(-len(robust_idx) // b)
    fooled = torch.zeros_like(flags)
    y_new = torch.zeros_like(y_adv)
    mine_idx, mine_x = [], []
    for k in range(D.rank(), n_batches, D.world_size()):
        idx = robust_idx[k * b:(k + 1) * b]
        x_b, y_b = x[idx].clone(), y[idx].clone()
        x_a = AutoAttackAdapter.attack_batch(adv, name, x_b, y_b)
        out = adv.get_logits(x_a).max(dim=1)[1]
        hit = ~y_b.eq(out)
        fooled[idx[hit]] = True
        y_new[idx[hit]] = out[hit]
        mine_idx.append(idx[hit])
        mine_x.append(x_a[hit].detach())
    D.all_reduce_sum_([fooled, y_new])
    flags &= ~fooled
    y_adv[fooled] = y_new[fooled]
    if not mine_idx:
        return torch.zeros(0, dtype=torch.long, device=x.device), x[:0].clone()
    return torch.cat(mine_idx), torch.cat(mine_x)


def run_autoattack_sharded(model, x, y, settings: EvalSettings, *, device="cpu",
                           state_path=None) -> ShardedAAResult:
    """AutoAttack on ``(x, y)`` split over the ranks of the process group; see the module doc.

    Every rank must pass the same ``x, y`` and model weights; every rank returns the merged result.
    """
    if settings.seed is None:
        raise InputError("sharded AutoAttack needs a fixed seed (seed=None draws a time-based "
                         "seed per rank); pass --seed")
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # like the adapter: the caller's RNG untouched
        return _run_sharded(model, x, y, settings, device, state_path)


def _run_sharded(model, x, y, settings: EvalSettings, device, state_path) -> ShardedAAResult:
    model.eval()
    bound = settings.bind(model, x, y) if state_path is not None else {}
    adapter = AutoAttackAdapter(**settings.adapter_kwargs(), device=str(device),
                                state_key={**bound, "world_size": D.world_size()})
    adv = adapter.adversary(model)
    suite = list(adv.attacks_to_run)
    key = adapter.settings_key(x, suite)
    path = _state_file(state_path, D.rank())
    state = load_state(path, key)
    checks = D.broadcast_object(run_checks(adv, x, y, settings.batch_size) if D.is_main() else None)
    with torch.no_grad():
        pred = clean_predictions(model, x, settings.batch_size)
    clean_flags = pred.eq(y)
    flags, y_adv, x_adv = clean_flags.clone(), pred.clone(), x.clone()
    stage = _common_stage(state)
    if stage:
        flags, y_adv = _restore(state, stage, x_adv)
    hist = _truncate(state or _fresh_history(key), stage)
    per_attack = OrderedDict(clean=clean_flags.float().mean().item())
    per_attack.update({k: hist["per_attack"][k] for k in hist["done"]})
    counts, seconds = {k: hist["counts"][k] for k in hist["done"]}, {}
    for name in suite[stage:]:
        n_before = int(flags.sum())
        t0 = time.time()
        idx, xs = attack_stage(adv, name, x, y, flags, y_adv, settings.batch_size)
        x_adv[idx] = xs
        seconds[name] = _max_over_ranks(time.time() - t0)
        per_attack[name] = flags.float().mean().item()
        counts[name] = n_before - int(flags.sum())
        hist = _record(hist, name, flags, y_adv, idx, xs, per_attack[name], counts[name])
        if path is not None:
            from advtrain.io.atomic import atomic_save
            atomic_save(hist, path)
    x_adv = _gather_adv(x, x_adv, hist["idx"], clean_flags & ~flags)
    seconds["total"] = sum(seconds.values())
    return ShardedAAResult(x_adv=x_adv, y_adv=y_adv, robust=flags, clean=clean_flags,
                           per_attack=per_attack, seconds=seconds,
                           checks=list(checks or []) + _square_check(per_attack),
                           version=settings.version, attacks=suite, counts=counts,
                           world_size=D.world_size())


def _fresh_history(key: dict) -> dict:
    return {"format": STATE_FORMAT, "key": key, "done": [], "flags": [], "y_adv": [], "idx": [],
            "x": [], "stage": [], "per_attack": {}, "counts": {}}


def _square_check(per_attack) -> list:
    """pyautoattack's "Square beat the white-box attacks" check, as messages."""
    from pyautoattack import checks as aa_checks

    square = _ListHandler()
    log = logging.getLogger("advtrain.aa-checks")
    log.addHandler(square)
    try:
        aa_checks.check_square_sr(dict(per_attack), logger=log)
    finally:
        log.removeHandler(square)
    return square.messages


def _max_over_ranks(value: float) -> float:
    return float(D.all_reduce_scalar(value, "max"))


def _record(hist, name, flags, y_adv, idx, xs, acc, count) -> dict:
    k = len(hist["done"])
    hist["done"].append(name)
    hist["flags"].append(flags.cpu().clone())
    hist["y_adv"].append(y_adv.cpu().clone())
    hist["idx"].append(idx.cpu())
    hist["x"].append(xs.cpu())
    hist["stage"].append(k)
    hist["per_attack"][name], hist["counts"][name] = acc, count
    return hist


def _truncate(hist, stage) -> dict:
    for key in ("done", "flags", "y_adv", "idx", "x", "stage"):
        hist[key] = hist[key][:stage]
    return hist


def _restore(state, stage, x_adv):
    """Global flags and labels after ``stage`` attacks, and this rank's adversarial examples."""
    for idx, xs in zip(state["idx"][:stage], state["x"][:stage]):
        x_adv[idx.to(x_adv.device)] = xs.to(x_adv.device)
    return (state["flags"][stage - 1].to(x_adv.device).clone(),
            state["y_adv"][stage - 1].to(x_adv.device).clone())


def _gather_adv(x, x_adv, own_idx, fooled) -> torch.Tensor:
    """Every rank's adversarial examples on every rank (exact: each fooled index has one writer)."""
    if not D.is_initialized():
        return x_adv
    own = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for idx in own_idx:
        own[idx.to(x.device)] = True
    mask = own.view(-1, *[1] * (x.dim() - 1))
    merged = D.all_reduce_sum_(torch.where(mask, x_adv, torch.zeros_like(x_adv)))
    return torch.where(fooled.view_as(mask), merged, x)

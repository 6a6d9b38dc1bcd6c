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
   ``k = r, r+W, r+2W, ...`` with pyautoattack's own attack objects and seed; fooled flags and
   adversarial labels are summed over ranks, so every rank holds the global state again.

Each batch therefore sees exactly the inputs, seed and batch composition of
``AutoAttack.run_standard_evaluation(x, y, batch_size=b)``, so flags, per-attack accuracies and
the adversarial examples match the single-process run (same device type and deterministic
kernels). Rank ``r`` keeps a resumable state file ``<state_path>.rank{r}`` (tensors only).
"""
from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from advtrain import distributed as D
from advtrain.errors import CheckpointError, InputError
from attacks.autoattack import AAResult


@dataclass
class ShardedAAResult(AAResult):
    """``attacks.AAResult`` merged over the ranks, plus how many examples each attack broke."""

    counts: dict = field(default_factory=dict)  #: examples each attack broke
    world_size: int = 1


def build_adversary(model, *, norm, eps, version, attacks, seed, device, n_iter=None,
                    n_queries=None):
    """pyautoattack's ``AutoAttack`` configured exactly as ``attacks.AutoAttackAdapter`` does."""
    from attacks import AutoAttackAdapter

    adapter = AutoAttackAdapter(norm=norm, eps=eps, version=version, attacks=attacks, seed=seed,
                                device=str(device), n_iter=n_iter, n_queries=n_queries)
    log = logging.getLogger("advtrain.aa-sharded")
    log.propagate = False
    adv = adapter._adversary(model, log)
    adv.verbose = False
    return adv


def perturb(adv, name: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One batch of attack ``name``: the same settings pyautoattack's loop applies before a batch."""
    if name in ("apgd-ce", "apgd-dlr"):
        adv.apgd.loss = "ce" if name == "apgd-ce" else "dlr"
        adv.apgd.seed = adv.get_seed()
        return adv.apgd.perturb(x, y)
    if name == "apgd-t":
        adv.apgd_targeted.seed = adv.get_seed()
        return adv.apgd_targeted.perturb(x, y)
    if name in ("fab", "fab-t"):
        adv.fab.targeted = name == "fab-t"
        if name == "fab-t":
            adv.fab.n_restarts = 1
        adv.fab.seed = adv.get_seed()
        return adv.fab.perturb(x, y)
    if name == "square":
        adv.square.seed = adv.get_seed()
        return adv.square.perturb(x, y)
    raise InputError(f"unknown AutoAttack attack {name!r}")


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


def _fingerprint(n, batch_size, seed, attacks, eps, norm) -> dict:
    return {"n_ex": int(n), "world_size": D.world_size(), "batch_size": int(batch_size),
            "seed": int(seed), "attacks": list(attacks), "eps": float(eps), "norm": norm}


def load_state(path, fingerprint) -> Optional[dict]:
    """This rank's state file, or None; a file of another run raises :class:`CheckpointError`."""
    if path is None or not os.path.exists(path):
        return None
    from advtrain.safeload import load_state_file

    state = load_state_file(path)
    saved = state.get("fingerprint")
    if saved != fingerprint:
        differ = [k for k in fingerprint if not isinstance(saved, dict) or saved.get(k) != fingerprint[k]]
        raise CheckpointError(f"{path}: state of a different evaluation (different "
                              f"{', '.join(differ) or 'format'}); delete it or use the same "
                              "model, data, settings and ranks")
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
        x_a = perturb(adv, name, x_b, y_b)
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


def run_autoattack_sharded(model, x, y, *, norm="Linf", eps=8 / 255, version="standard",
                           attacks: Optional[Sequence[str]] = None, batch_size=500, seed=0,
                           device="cpu", state_path=None, n_iter=None,
                           n_queries=None) -> ShardedAAResult:
    """AutoAttack on ``(x, y)`` split over the ranks of the process group; see the module doc.

    Every rank must pass the same ``x, y`` and model weights; every rank returns the merged result.
    ``n_iter``/``n_queries`` shorten the attacks exactly as the adapter does (tests only).
    """
    if seed is None:
        raise InputError("sharded AutoAttack needs a fixed seed (seed=None draws a time-based "
                         "seed per rank); pass --seed")
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # like the adapter: the caller's RNG untouched
        return _run_sharded(model, x, y, norm=norm, eps=eps, version=version, attacks=attacks,
                            batch_size=batch_size, seed=seed, device=device,
                            state_path=state_path, n_iter=n_iter, n_queries=n_queries)


def _run_sharded(model, x, y, *, norm, eps, version, attacks, batch_size, seed, device,
                 state_path, n_iter, n_queries) -> ShardedAAResult:
    model.eval()
    adv = build_adversary(model, norm=norm, eps=eps, version=version, attacks=attacks, seed=seed,
                          device=device, n_iter=n_iter, n_queries=n_queries)
    suite = list(adv.attacks_to_run)
    fp = _fingerprint(len(x), batch_size, seed, suite, eps, norm)
    if state_path is not None:  # bind the state to the model and the data subset too
        from advtrain.safeload import state_digest

        fp.update(model=state_digest(model.state_dict()), version=version,
                  data=state_digest({"x": x, "y": y}))
    path = _state_file(state_path, D.rank())
    state = load_state(path, fp)
    checks = D.broadcast_object(run_checks(adv, x, y, batch_size) if D.is_main() else None)
    with torch.no_grad():
        pred = clean_predictions(model, x, batch_size)
    seconds = {}
    clean_flags = pred.eq(y)
    flags, y_adv, x_adv = clean_flags.clone(), pred.clone(), x.clone()
    per_attack, counts = OrderedDict(clean=clean_flags.float().mean().item()), {}
    stage = _common_stage(state)
    if stage:
        flags, y_adv = _restore(state, stage, x_adv)
    hist = state if state else {"done": [], "flags": [], "y_adv": [], "idx": [], "x": [],
                                 "stage": [], "fingerprint": fp, "per_attack": {}, "counts": {}}
    hist = _truncate(hist, stage)
    per_attack.update({k: hist["per_attack"][k] for k in hist["done"]})
    counts.update({k: hist["counts"][k] for k in hist["done"]})
    for name in suite[stage:]:
        n_before = int(flags.sum())
        t0 = time.time()
        idx, xs = attack_stage(adv, name, x, y, flags, y_adv, batch_size)
        x_adv[idx] = xs
        seconds[name] = _max_over_ranks(time.time() - t0)
        per_attack[name] = flags.float().mean().item()
        counts[name] = n_before - int(flags.sum())
        hist = _record(hist, name, flags, y_adv, idx, xs, per_attack[name], counts[name])
        if path is not None:
            from advtrain.atomic import atomic_save
            atomic_save(hist, path)
    x_adv = _gather_adv(x, x_adv, hist["idx"], clean_flags & ~flags)
    from pyautoattack import checks as aa_checks
    square = _ListHandler()
    log = logging.getLogger("advtrain.aa-checks")
    log.addHandler(square)
    aa_checks.check_square_sr(dict(per_attack), logger=log)
    log.removeHandler(square)
    seconds["total"] = sum(seconds.values())
    return ShardedAAResult(x_adv=x_adv, y_adv=y_adv, robust=flags, clean=clean_flags,
                           per_attack=per_attack, seconds=seconds,
                           checks=list(checks or []) + square.messages, version=version,
                           attacks=suite, counts=counts, world_size=D.world_size())


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


# ---------------------------------------------------------------- low-precision evaluation guard

class AutocastModel(torch.nn.Module):
    """``model`` run under ``torch.autocast(dtype)``; logits returned in float32."""

    def __init__(self, model: torch.nn.Module, dtype=torch.bfloat16):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x):
        with torch.autocast(x.device.type, dtype=self.dtype):
            return self.model(x).float()


def evaluate_low_precision(model, x, y, *, guard_n: int = 100, guard_seed: int = 0,
                           lowp_model=None, max_gap: float = 0.0, **kwargs) -> dict:
    """``advtrain.evaluate`` in bf16, guarded by an fp32 re-evaluation of a random subset.

    The full evaluation runs on ``lowp_model`` (default ``AutocastModel(model)``, CUDA only).
    Then ``guard_n`` examples drawn with ``guard_seed`` are evaluated again in fp32 with the same
    settings; with ``r_lp``/``r_32`` the robust flags of the subset in both precisions::

        gap = |mean(r_lp) - mean(r_32)|,   disagree = sum(r_lp != r_32)

    ``result["sanity"]["precision"]`` records both, and a ``precision-gap`` flag is added when
    ``gap > max_gap`` or ``disagree > 0``: the card's sidecar then says to report fp32 instead.
    """
    from advtrain.evaluation import evaluate

    device = torch.device(kwargs.get("device") or next(model.parameters()).device)
    if lowp_model is None:
        if device.type != "cuda":
            raise InputError("precision bf16 evaluation needs a CUDA device; evaluate in fp32 on "
                             "CPU (the default)")
        lowp_model = AutocastModel(model)
    want_adv = kwargs.pop("return_adv", False)
    kwargs["return_adv"] = True
    out = evaluate(lowp_model, x, y, **kwargs)
    g = torch.Generator().manual_seed(guard_seed)
    idx = torch.randperm(len(y), generator=g)[:min(guard_n, len(y))].sort().values
    ref = evaluate(model, x[idx], y[idx], **dict(kwargs, sanity=False, state_path=None))
    y_sub = y[idx].cpu()
    r_lp, r_32 = out["y_adv"][idx].cpu() == y_sub, ref["y_adv"].cpu() == y_sub
    report = {"precision": "bf16", "guard_n": int(len(idx)), "guard_seed": guard_seed,
              "robust_lowp": r_lp.float().mean().item(), "robust_fp32": r_32.float().mean().item(),
              "disagree": int((r_lp != r_32).sum())}
    report["gap"] = abs(report["robust_lowp"] - report["robust_fp32"])
    out["sanity"]["precision"] = report
    if report["gap"] > max_gap or report["disagree"]:
        from advtrain.checks import flag

        out["flags"].append(flag("precision-gap",
                                 f"bf16 and fp32 robust flags differ on {report['disagree']} of "
                                 f"{report['guard_n']} re-checked examples (robust "
                                 f"{report['robust_lowp']:.2%} vs {report['robust_fp32']:.2%}); "
                                 "report the fp32 evaluation"))
    if not want_adv:
        out.pop("x_adv", None), out.pop("y_adv", None)
    return out

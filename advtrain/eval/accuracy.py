"""The one accuracy loop: clean or attacked accuracy of a model on tensors, batch by batch.

Used by every evaluation: the AutoAttack evaluation's clean pass and PGD-K
(:mod:`advtrain.eval.evaluator`, ``advtrain.eval.evaluator.accuracy`` is its public name), the
sanity checks (:mod:`advtrain.eval.sanity`), the eps sweep (:mod:`advtrain.eval.sweep`: its PGD
restarts are the ``attack``), the common corruptions (:mod:`advtrain.eval.corruptions`) and the
trainer's per-epoch test. Batches move to the model's device, the model is in eval mode during the
loop only, and with ``seed`` the attack's random start is drawn from that seed without touching the
caller's RNG. Callers reach it as ``accuracy.correct`` / ``accuracy.accuracy`` (module attributes),
so a test can replace it with a spy.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from tqdm.auto import tqdm


def correct(model, x, y, *, batch_size: int = 500, attack: Optional[Callable] = None,
            progress: bool = False, desc: Optional[str] = None,
            seed: Optional[int] = None,
            on_logits: Optional[Callable[[torch.Tensor], None]] = None) -> torch.Tensor:
    """Per example (bool, on the model's device): ``model`` predicts ``y`` on ``x`` (or on
    ``attack(model, x, y)``). ``on_logits`` sees every batch's logits (e.g. to count non-finite
    ones)."""
    device = _device(model)
    label = desc or ("clean" if attack is None else type(attack).__name__)
    out = [torch.zeros(0, dtype=torch.bool, device=device)]
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [],
                                   enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            for i in tqdm(range(0, len(x), batch_size), desc=label, disable=not progress,
                          leave=False):
                xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
                if attack is not None:
                    xb = attack(model, xb, yb)
                with torch.no_grad():
                    logits = model(xb)
                if on_logits is not None:
                    on_logits(logits)
                out.append(logits.argmax(1) == yb)
    finally:
        model.train(was_training)
    return torch.cat(out)


def accuracy(model, x, y, *, batch_size: int = 500, attack: Optional[Callable] = None,
             progress: bool = True, desc: Optional[str] = None, seed: Optional[int] = None) -> float:
    """Fraction of ``y`` predicted correctly on ``x`` (or on ``attack(model, x, y)``); see
    :func:`correct`."""
    hits = correct(model, x, y, batch_size=batch_size, attack=attack, progress=progress,
                   desc=desc, seed=seed)
    return hits.sum().item() / max(len(x), 1)


def _device(model) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")

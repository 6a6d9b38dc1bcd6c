"""The parts of a training run and the state each one owns (timm's pattern).

:class:`Parts` names what :func:`advtrain.train.setup.build_parts` builds. Every stateful part has
``state_dict()`` / ``load_state_dict()`` and is saved under its own name (:func:`stateful`):

- ``model``, ``optimizer``, ``objective`` (torch's own state dicts; the objective's holds e.g. the
  class prior of GKL/IKL and LBGAT's natural model);
- ``ema``: :class:`advtrain.train.ema.EMA` (``shadow`` weights and ``updates`` counter);
- ``scaler``: fp16's ``torch.amp.GradScaler`` (scale, growth tracker);
- ``progress``: :class:`Progress`, the loop position (epoch, batch = loader position, step), the
  metric rows, the in-epoch sums, the best epoch, the catastrophic-overfitting guard's state and the
  per-step trace of ``curves.png``;
- ``rng``: :class:`RNGState`, the torch / numpy / Python generators.

AWP holds nothing between steps (its proxy is refreshed from the model at every call), so it has
no entry. How these states map onto the keys of the checkpoint file is
:func:`advtrain.train.checkpoint.pack` / :func:`advtrain.train.checkpoint.unpack`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn as nn

from advtrain.train import checkpoint as ck
from advtrain import distributed as D

#: columns of the per-step trace (one row per ``trace_every`` optimizer steps, means over them)
TRACE = ("step", "epoch", "loss", "acc_adv", "lr", "eps_t")


@dataclass
class Parts:
    """Everything the loop uses, built once per run (see ``trainer_setup.build_parts``)."""

    device: torch.device
    model: nn.Module
    objective: nn.Module
    optimizer: torch.optim.Optimizer
    loader: Any
    num_classes: int
    test: Optional[tuple]  # (x, y) fixed test subset or None
    holdout: Optional[tuple]  # (x, y) held-out training images or None
    awp: Any  # advtrain.train.awp.AWP or None
    ema: Any  # advtrain.train.ema.EMA or None
    autocast: Callable[[], Any]  # context manager factory (bf16 autocast or a no-op)
    teacher_check: Optional[str] = None  # one line: what the teacher check measured
    scaler: Any = None  # torch.amp.GradScaler (precision fp16) or None


def _empty_running() -> Dict[str, Any]:
    return {"sums": {}, "count": 0, "seconds": 0.0, "skipped_batches": 0}


@dataclass
class Progress:
    """Where the loop is and what it measured so far."""

    epoch: int = 0  # completed epochs
    batch: int = 0  # batches done in the running epoch (the loader position)
    step: int = 0  # optimizer steps
    history: List[Dict[str, Any]] = field(default_factory=list)  # metrics.csv rows
    running: Dict[str, Any] = field(default_factory=_empty_running)  # in-epoch sums
    epoch_rng: Optional[Dict[str, Any]] = None  # RNG at the start of the running epoch
    best: Optional[Dict[str, Any]] = None  # {"epoch", "holdout_pgd", ...} of best.pt
    guard: Optional[Dict[str, Any]] = None  # catastrophic-overfitting guard (advtrain.train.guard)
    trace: List[List[float]] = field(default_factory=list)  # rows of TRACE
    pending: Dict[str, float] = field(default_factory=dict)  # sums of the trace row being built
    batches_per_epoch: int = 1  # len(loader): places a trace row within its epoch

    def end_epoch(self, epoch: int) -> None:
        self.epoch, self.batch, self.running, self.epoch_rng = epoch, 0, _empty_running(), None

    def add_trace(self, terms: Dict[str, float], lr: float, eps_t: float, every: int) -> None:
        """Accumulate one step; every ``every`` steps append the mean row to ``trace``."""
        p = self.pending
        for k, v in (("loss", terms.get("loss")), ("acc_adv", terms.get("acc_adv"))):
            if v is not None:
                p[k] = p.get(k, 0.0) + v
                p["n_" + k] = p.get("n_" + k, 0) + 1
        p["n"] = p.get("n", 0) + 1
        if p["n"] >= every:
            self.flush_trace(lr, eps_t)

    def flush_trace(self, lr: float, eps_t: float) -> None:
        p = self.pending
        if not p.get("n"):
            return
        mean = [p[k] / p["n_" + k] if p.get("n_" + k) else float("nan") for k in ("loss", "acc_adv")]
        frac = self.epoch + self.batch / max(self.batches_per_epoch, 1)
        self.trace.append([float(self.step), frac, *mean, lr, eps_t])
        self.pending = {}

    def state_dict(self) -> Dict[str, Any]:
        state = {"epoch": self.epoch, "batch": self.batch, "step": self.step,
                 "running": dict(self.running), "history": list(self.history),
                 "trace": torch.tensor(self.trace, dtype=torch.float64).reshape(-1, len(TRACE))}
        if self.batch > 0:
            state["epoch_rng"] = self.epoch_rng
        if self.best is not None:
            state["best"] = dict(self.best)
        if self.guard is not None:
            state["guard"] = dict(self.guard)
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.epoch, self.batch, self.step = state["epoch"], state["batch"], state["step"]
        self.history, self.running = list(state["history"]), dict(state["running"])
        self.epoch_rng, self.best = state.get("epoch_rng"), state.get("best")
        self.guard = state.get("guard")
        trace = state.get("trace")  # absent in checkpoints of earlier releases
        self.trace = trace.tolist() if isinstance(trace, torch.Tensor) else []
        self.pending = {}


class RNGState:
    """The global generators as a part; ``saved`` keeps the loaded state for a mid-epoch resume."""

    def __init__(self):
        self.saved: Optional[Dict[str, Any]] = None

    def state_dict(self) -> Dict[str, Any]:
        return ck.rng_state()

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.saved = state
        ck.set_rng_state(state)


class _CPUCopy:
    """A module's state as detached CPU copies (a checkpoint must not alias live tensors)."""

    def __init__(self, module: nn.Module):
        self.module = module

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return ck.cpu_state(D.unwrap(self.module).state_dict())

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        D.unwrap(self.module).load_state_dict(state)


def stateful(parts: Parts, progress: Progress, rng: RNGState) -> Dict[str, Any]:
    """``{name: part}`` of every part with state, in load order (rng last: loading the others
    must not move the generators after they are restored)."""
    named: Dict[str, Any] = {"model": _CPUCopy(parts.model), "optimizer": parts.optimizer,
                             "objective": _CPUCopy(parts.objective)}
    if parts.ema is not None:
        named["ema"] = parts.ema
    if parts.scaler is not None:  # the loss scale and its growth counter
        named["scaler"] = parts.scaler
    named.update(progress=progress, rng=rng)
    return named


def save_states(named: Dict[str, Any]) -> Dict[str, Any]:
    return {name: part.state_dict() for name, part in named.items()}


def load_states(named: Dict[str, Any], states: Dict[str, Any]) -> None:
    for name, part in named.items():
        if name in states:
            part.load_state_dict(states[name])

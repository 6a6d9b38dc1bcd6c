r"""One optimizer step of the training loop, over ``optim.accum_steps`` micro-batches.

An epoch's batches are cut into groups of ``A = optim.accum_steps`` consecutive loader batches
(positions 0..A-1, A..2A-1, ...); each group is one optimizer step. For every micro-batch, in the
order of SPEC 2.5::

    x_adv = objective.perturb(model, x, y)            # attack on the current (unstepped) weights
    diff = awp.perturb(objective, x, x_adv, y)        # AWP from epoch awp.warmup on
    loss, terms = objective.loss(model, x, x_adv, y)
    (loss / n).backward()                             # n = the group's size; .grad accumulates
    awp.restore(diff)                                 # all but the group's last micro-batch

then ``optimizer.step()`` (gradients zeroed before the group's first backward; the gradient norm
clipped to ``optim.clip_grad_norm`` and, in fp16, the loss scaled by the gradient scaler: see
``Stepper._optimizer_step``), the last AWP
restore, and one EMA update. With ``A = 1`` this is exactly the single-batch step of SPEC 2.5.

What the accumulated step equals (docs/DESIGN.md, README "Recipes at scale"):

- The gradient is the mean of the micro-batch gradients. For a loss that is a batch mean (CE,
  TRADES, MART, IKL-AT, GKL-AT with ``gamma = 1``) and micro-batches of equal size it is the
  gradient of the whole group as one batch of ``A * data.batch_size`` images, up to float rounding.
  Where it is not: BatchNorm normalises with each micro-batch's own statistics (and updates its
  running statistics once per micro-batch); GKL-AT with ``gamma != 1`` divides its wMSE by a sum of
  weights over the (micro-)batch, so the mean of per-micro-batch ratios replaces the ratio of sums;
  a smaller last micro-batch (``data.drop_last: false``) weighs as much as a full one.
- The attack, the AWP perturbation and the objective's state updates (the GKL/IKL class prior
  accumulates per micro-batch, as it did per batch) are per micro-batch. AWP perturbs from the same
  weights for every micro-batch (the optimizer has not stepped) with that micro-batch's direction,
  and each perturbation is removed before the next one is made; the last one stays on through
  the optimizer step, so weight decay acts on the perturbed weights as in SPEC 2.4.
- Under DDP the gradient all-reduce runs once per step: the non-final micro-batches run inside
  ``model.no_sync()``; the objective's extra parameters (LBGAT) are averaged before the step.
- An epoch whose batch count is not a multiple of ``A`` ends with a shorter group that still
  steps, its micro-batch losses divided by its own size (the mean over the group, as
  ``drop_last: false`` does for a short last batch).
- ``nan_policy: skip`` skips the whole step: a non-finite micro-batch ends the group's work (its
  remaining micro-batches are read, not used), no optimizer step, and the model's and objective's
  buffers (BN statistics, class prior) go back to where the group began; ``stop`` stops at once.
- Everything counted in steps counts optimizer steps: ``Progress.step``, EMA updates and its DM
  warm-up, ``run.checkpoint_every_steps`` (a checkpoint is only written between groups, so a
  mid-epoch resume starts at a group boundary and is bit-identical). The momentum and eps
  schedules are per epoch; the lr per epoch, or per optimizer step for the per-update schedules
  (``advtrain.config.schedules.lr_at_update``).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

import torch

from advtrain import distributed as D
from advtrain.train.nonfinite import (NonFiniteError, decided_together, finite_params, first_nonfinite,
                                restore_buffers, snapshot_buffers)


def steps_per_epoch(batches: int, accum_steps: int) -> int:
    """Optimizer steps in an epoch of ``batches`` loader batches (a short last group steps too)."""
    return -(-batches // accum_steps)


@dataclass
class Group:
    """The micro-batches of one optimizer step, as they are done."""

    size: int  # micro-batches in this group
    done: int = 0
    sums: Dict[str, float] = field(default_factory=dict)  # of each term over the micro-batches
    bad: Optional[str] = None  # the non-finite term that skips this step
    saved: Optional[list] = None  # buffers at the group's start (nan_policy: skip)
    diff: Optional[Dict[str, torch.Tensor]] = None  # AWP perturbation on through the step

    @property
    def complete(self) -> bool:
        return self.done == self.size


class Stepper:
    """Runs micro-batches and optimizer steps on ``parts`` (see the module docstring).

    ``nan_message(epoch, what)`` is the one-line message of a stopped run (the trainer knows the
    last checkpoint).
    """

    def __init__(self, parts, cfg, nan_message: Callable[[int, str], str]):
        self.parts, self.accum = parts, cfg.optim.accum_steps
        self.channels_last, self.skip = cfg.model.channels_last, cfg.nan_policy == "skip"
        self.nan_message = nan_message
        self.clip = cfg.optim.clip_grad_norm

    def group(self, position: int, batches: int) -> Group:
        """The group starting at loader position ``position`` of an epoch of ``batches``."""
        return Group(size=min(self.accum, batches - position))

    def step(self, batches, e: int) -> Optional[Dict[str, float]]:
        """One optimizer step over the micro-batches ``[(x, y), ...]`` (as :meth:`finish`)."""
        g = Group(size=len(batches))
        for x, y in batches:
            self.micro_batch(g, x, y, e)
        return self.finish(g, e)

    def micro_batch(self, g: Group, x: torch.Tensor, y: torch.Tensor, e: int) -> None:
        """Forward and backward of one micro-batch of group ``g`` in (1-indexed) epoch ``e``."""
        g.done += 1
        if g.bad is not None:  # the step is skipped already: nothing more to compute
            return
        p = self.parts
        x, y = x.to(p.device, non_blocking=True), y.to(p.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with p.autocast():
            x_adv = p.objective.perturb(D.unwrap(p.model), x, y)
        p.model.train()
        if g.done == 1 and self.skip:
            g.saved = snapshot_buffers(p.model, p.objective)
        final = g.complete
        with contextlib.nullcontext() if final else no_sync(p.model):
            with p.autocast():  # AWP's proxy forwards and backward in the main step's precision
                diff = p.awp.perturb(p.objective, x, x_adv, y) if p.awp and p.awp.active(e) else None
                loss, terms = p.objective.loss(p.model, x, x_adv, y)
            g.bad = decided_together(first_nonfinite(loss, terms))  # DDP: same on every rank
            if g.bad is None:
                if g.done == 1:
                    p.optimizer.zero_grad(set_to_none=True)
                scaled = loss / g.size if g.size > 1 else loss
                (p.scaler.scale(scaled) if p.scaler is not None else scaled).backward()
        if diff is not None and (final and g.bad is None):
            g.diff = diff  # removed after the optimizer step (SPEC 2.4)
        elif diff is not None:
            p.awp.restore(diff)
        if g.bad is not None and not self.skip:
            raise NonFiniteError(self.nan_message(e, g.bad))
        if g.bad is None:
            for k, v in terms.items():
                g.sums[k] = g.sums.get(k, 0.0) + float(v)

    def finish(self, g: Group, e: int) -> Optional[Dict[str, float]]:
        """The optimizer step of a complete group: its mean terms, or None when it was skipped."""
        p = self.parts
        if g.bad is not None:
            restore_buffers(g.saved)
            return None
        D.average_grads_(p.objective.extra_parameters())  # e.g. LBGAT's natural model
        self._optimizer_step()
        if g.diff is not None:
            p.awp.restore(g.diff)
        if not finite_params(p.optimizer):
            raise NonFiniteError(self.nan_message(e, "weights after the optimizer step"))
        if p.ema is not None:
            p.ema.update(D.unwrap(p.model), e)
        return {k: v / g.size for k, v in g.sums.items()}


    def _optimizer_step(self) -> None:
        """``optimizer.step()``, after clipping the gradient norm (``optim.clip_grad_norm``); with
        fp16's gradient scaler (timm's ``NativeScaler`` order): ``unscale_`` before clipping, then
        ``scaler.step`` -- which skips the update when a gradient is inf/NaN (the same on every DDP
        rank: the gradients were all-reduced) -- and ``scaler.update()`` (the scale halves after an
        overflow, doubles after 2000 clean steps). The EMA still updates after a skipped step, as in
        timm / ARES / revisiting-at."""
        p = self.parts
        if self.clip is not None:
            if p.scaler is not None:
                p.scaler.unscale_(p.optimizer)
            params = [q for group in p.optimizer.param_groups for q in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.clip)
        if p.scaler is None:
            p.optimizer.step()
            return
        p.scaler.step(p.optimizer)
        p.scaler.update()


def no_sync(model: torch.nn.Module):
    """``DistributedDataParallel.no_sync()`` of the DDP inside ``model`` (through a
    ``torch.compile`` wrapper), a no-op context without DDP."""
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            return model.no_sync()
        inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            return contextlib.nullcontext()
        model = inner

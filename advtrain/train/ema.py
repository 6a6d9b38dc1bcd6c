r"""In-loop exponential moving average of the weights (SPEC 5.3 done properly, and the DM WA of SPEC 6).

From the first update in epoch ``start_epoch`` on, after every optimizer step::

    theta_ema <- tau * theta_ema + (1 - tau) * theta        (floating-point entries)

The first update *copies* the weights (no aliasing of live tensors, unlike the reference). Integer
buffers (``num_batches_tracked``) are copied, never averaged, so the EMA state dict loads into the
model as is. With ``dm_warmup_steps = S`` (DeepMind / DM-Improves-AT recipe) the decay is 0 (a copy)
for the first ``S`` updates, then ``min(tau, (1 + d) / (10 + d))`` with ``d`` = updates since the
warm-up, and BN buffers are copied from the raw model instead of averaged.

Example::

    ema = EMA(model, decay=0.9996, start_epoch=150)
    ...; optimizer.step(); ema.update(model, epoch)
    model_ema.load_state_dict(ema.state_dict()["shadow"])
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
import torch.nn as nn

from advtrain.errors import InputError


class EMA:
    """Exponential moving average of a model's state dict (kept on the model's device)."""

    def __init__(self, model: nn.Module, decay: float = 0.9996, start_epoch: int = 1,
                 dm_warmup_steps: Optional[int] = None):
        if not 0.0 <= decay <= 1.0:
            raise InputError(f"EMA decay {decay} must be in [0, 1] (e.g. 0.9996 or 0.995)")
        self.decay = float(decay)
        self.start_epoch = int(start_epoch)
        self.dm_warmup_steps = dm_warmup_steps
        self.buffer_names = {name for name, _ in model.named_buffers()}
        self.device = next(iter(model.state_dict().values()), torch.empty(0)).device
        self.shadow: Optional[Dict[str, torch.Tensor]] = None
        self.updates = 0

    def current_decay(self) -> float:
        """Decay of the next update (``updates`` already done)."""
        if self.dm_warmup_steps is None:
            return self.decay
        if self.updates < self.dm_warmup_steps:
            return 0.0
        d = self.updates - self.dm_warmup_steps
        return min(self.decay, (1.0 + d) / (10.0 + d))

    @torch.no_grad()
    def update(self, model: nn.Module, epoch: int) -> None:
        """One EMA step after an optimizer step of (1-indexed) ``epoch``."""
        if epoch < self.start_epoch:
            return
        state = model.state_dict()
        if self.shadow is None:
            self.shadow = {k: v.detach().clone() for k, v in state.items()}
            self.updates = 1
            return
        decay = self.current_decay()
        copy_buffers = self.dm_warmup_steps is not None
        for name, value in state.items():
            avg = self.shadow[name]
            if not avg.is_floating_point() or (copy_buffers and name in self.buffer_names):
                avg.copy_(value)
            else:
                avg.mul_(decay).add_(value.detach(), alpha=1.0 - decay)
        self.updates += 1

    def state_dict(self) -> Dict[str, Any]:
        """``{"shadow": model-compatible state dict (CPU copies) or {}, "updates": n}``."""
        shadow = {k: v.detach().to("cpu", copy=True) for k, v in (self.shadow or {}).items()}
        return {"shadow": shadow, "updates": self.updates}

    def load_state_dict(self, state: Dict[str, Any], device=None) -> None:
        """Inverse of :meth:`state_dict`; tensors go to ``device`` (default: the model's)."""
        device = self.device if device is None else device
        shadow = state.get("shadow") or {}
        self.shadow = {k: v.to(device, copy=True) for k, v in shadow.items()} or None
        self.updates = int(state.get("updates", 0))

    def copy_to(self, model: nn.Module) -> bool:
        """Load the averaged weights into ``model``; False when no update happened yet."""
        if self.shadow is None:
            return False
        model.load_state_dict(self.shadow)
        return True

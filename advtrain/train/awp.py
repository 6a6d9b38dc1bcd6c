r"""Adversarial weight perturbation (Wu et al., NeurIPS 2020, "Adversarial Weight Perturbation Helps
Robust Generalization"), SPEC §2.4 and §4.2.

Before the main forward of an iteration (epochs ``e >= warmup``, 1-indexed), with ``L`` the
objective's own loss evaluated on a proxy copy of the model (``objective.awp_loss``, train mode, the
method state untouched)::

    d_l = grad_{W_l} L                                 (one plain ascent step; its lr cancels below)
    v_l = ||W_l||_F * d_l / (||d_l||_F + 1e-20)
    W_l <- W_l + gamma * v_l                           for every parameter whose name contains
                                                       "weight" and has >= 2 dims (conv kernels,
                                                       linear weights; not BN affine, not biases)

so each perturbed layer moves by exactly ``gamma * ||W_l||``. The trainer calls :meth:`AWP.perturb`
under the same autocast as the main step (bf16 runs: the proxy passes in bf16, the weights and
``v_l`` in fp32). The main step then runs at the perturbed
point and :meth:`AWP.restore` subtracts the same tensors. The proxy is one persistent copy of the
model, refreshed with ``load_state_dict`` (parameters *and* BN buffers) at every call; its BN
running-statistics updates are thrown away, the model's buffers are never touched. Gradients are
taken with ``torch.autograd.grad`` w.r.t. the proxy's parameters only, so no ``.grad`` of the model
or of the objective (LBGAT's natural model) is touched. A ``DataParallel``/``DistributedDataParallel``
wrapper is unwrapped: under DDP the proxy gradients are averaged over processes
(``advtrain.distributed.all_reduce_mean_``), so the direction is the whole global batch's, as with the
reference's single-process ``DataParallel``.

Example (TRADES-AWP / IKL-AT: gamma 5e-3, warm-up 10; AT-AWP: gamma 1e-2, warm-up 0)::

    awp = AWP(model, gamma=0.005, warmup=10)
    if awp.active(epoch):
        diff = awp.perturb(objective, x, x_adv, y)
    loss, terms = objective.loss(model, x, x_adv, y)
    optimizer.zero_grad(); loss.backward(); optimizer.step()
    if awp.active(epoch):
        awp.restore(diff)
"""
from __future__ import annotations

import copy
from typing import Dict, Optional

import torch
from torch import Tensor, nn

from advtrain.distributed import all_reduce_mean_
from advtrain.errors import InputError

_EPS = 1e-20


def perturbed_names(model: nn.Module):
    """Names of the parameters AWP perturbs: name contains "weight" and at least 2 dims."""
    return [n for n, p in model.named_parameters() if "weight" in n and p.dim() >= 2]


class AWP:
    """Adversarial weight perturbation of ``model`` by relative size ``gamma`` from epoch ``warmup``."""

    def __init__(self, model: nn.Module, gamma: float = 0.005, warmup: int = 10):
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma >= 0:
            raise InputError(f"AWP gamma={gamma!r} must be a number >= 0 (0.005 for TRADES/IKL-AT, 0.01 for AT-AWP)")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise InputError(f"AWP warmup={warmup!r} must be an integer >= 0 (first epoch with AWP, 1-indexed)")
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module  # perturb the shared weights; each process ascends its own shard
        self.model = model
        self.gamma = float(gamma)
        self.warmup = warmup
        self.names = perturbed_names(model)
        self._proxy: Optional[nn.Module] = None

    def active(self, epoch: int) -> bool:
        """Whether AWP runs in (1-indexed) ``epoch``: ``gamma > 0`` and ``epoch >= warmup``."""
        return self.gamma > 0 and epoch >= self.warmup

    def _fresh_proxy(self) -> nn.Module:
        """The persistent proxy, loaded with the model's current parameters and buffers."""
        if self._proxy is None:
            self._proxy = copy.deepcopy(self.model)
        self._proxy.load_state_dict(self.model.state_dict())
        self._proxy.train()
        return self._proxy

    def perturb(self, objective, x: Tensor, x_adv: Tensor, y: Tensor) -> Dict[str, Tensor]:
        """Add ``gamma * v_l`` to each perturbed weight of the model; returns ``{name: gamma * v_l}``."""
        proxy = self._fresh_proxy()
        params = dict(proxy.named_parameters())
        targets = [n for n in self.names if params[n].requires_grad]
        with torch.enable_grad():
            loss = objective.awp_loss(proxy, x, x_adv, y)
            grads = torch.autograd.grad(loss, [params[n] for n in targets], allow_unused=True)
        grads = all_reduce_mean_(list(grads))  # DDP: the global batch's direction (no-op otherwise)
        diff = {}
        with torch.no_grad():
            for name, grad in zip(targets, grads):
                if grad is None:
                    continue
                weight = self.model.get_parameter(name)
                step = self.gamma * weight.norm() * grad / (grad.norm() + _EPS)
                weight.add_(step)
                diff[name] = step
        return diff

    def restore(self, diff: Dict[str, Tensor]) -> None:
        """Undo :meth:`perturb`: subtract the same tensors."""
        with torch.no_grad():
            for name, step in diff.items():
                self.model.get_parameter(name).sub_(step)

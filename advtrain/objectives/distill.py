r"""Robust knowledge distillation: what ``ard``, ``rslad`` and ``gkl_kd`` share (SPEC §12).

A distillation objective holds a frozen teacher ``T`` next to the student being trained:

- the teacher is kept in eval mode with ``requires_grad=False`` and is *not* a submodule, so it is
  neither trained, nor switched to train mode by ``objective.train()``, nor saved in the objective's
  ``state_dict()`` (a checkpoint stays the student's size; resuming loads the teacher from the
  config again); ``objective.to(device)`` still moves it;
- its logits ``T(x)`` on the natural batch are computed once per batch, under ``no_grad``, and shared
  by the attack (``perturb``), the loss and AWP's proxy loss: the cache is keyed on the batch tensor
  itself, so the one extra pass per step is the teacher forward;
- :class:`TeacherTarget` is the attack loss ``loss_fn(logits_adv, y, T(x))``: it replaces the
  student's natural logits of a TRADES-style attack by the teacher's.

Each loss divergence below is a batch mean of ``KL(softmax(T(x)/τ) ‖ softmax(S(·)/τ))`` (teacher
first), written :func:`teacher_kl`.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advtrain.errors import InputError
from advtrain.objectives.base import DKL_ATTACK, Objective

#: SPEC §12: the distillation papers attack with PGD-10, step 2/255, in the 8/255 Linf ball in every
#: epoch (no radius ramp): ARD goldblum/AdversariallyRobustDistillation main.py ``config``; RSLAD
#: zibojia/RSLAD resnet18_rslad_cifar10.py ``rslad_inner_loss`` (epsilon 8/255, step 2/255, 10 steps)
KD_ATTACK = {**DKL_ATTACK, "schedule": "fixed", "steps": 10, "step_size": 2 / 255, "eps": 8 / 255}
#: RSLAD's optimiser (zibojia/RSLAD resnet18_rslad_cifar10.py): SGD lr 0.1, momentum 0.9, wd 2e-4,
#: 300 epochs, lr x0.1 after epochs 215, 260, 285 (1-indexed milestones 216/261/286: an epoch e >= m
#: runs the lower lr)
RSLAD_OPTIM = {"lr": 0.1, "momentum": 0.9, "weight_decay": 2e-4, "schedule": "piecewise",
               "milestones": [216, 261, 286], "lr_gamma": 0.1, "epochs": 300}

#: config section that supplies the teacher (see :mod:`advtrain.train.teacher`)
TEACHER_HINT = ("teacher: {robustbench: NAME, model_dir: checkpoints} or teacher: {checkpoint: PATH, "
                "arch: ARCH}")


def teacher_kl(logits_student: Tensor, logits_teacher: Tensor, temperature: float = 1.0) -> Tensor:
    r""":math:`\frac1B\sum_i KL(softmax(t_i/τ) ‖ softmax(s_i/τ))`, the teacher held fixed (no τ²)."""
    log_q = F.log_softmax(logits_student / temperature, dim=1)
    p = F.softmax(logits_teacher.detach() / temperature, dim=1)
    return F.kl_div(log_q, p, reduction="batchmean")


def freeze(teacher: nn.Module) -> nn.Module:
    """The teacher in eval mode with every parameter's ``requires_grad`` off (the one ``freeze``)."""
    from advtrain.hub.loader import freeze as frozen

    if not isinstance(teacher, nn.Module):
        raise InputError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
    return frozen(teacher)


class TeacherTarget:
    """Attack loss ``fn(logits_adv, y, T(x))``, with ``T(x)`` read from ``target()`` at call time."""

    needs_nat = False  # the attack must not spend a forward on the student's natural logits

    def __init__(self, fn: Callable[[Tensor, Tensor, Tensor], Tensor],
                 target: Callable[[], Optional[Tensor]]):
        self.fn, self.target = fn, target

    def __call__(self, logits_adv: Tensor, y: Tensor, logits_nat: Optional[Tensor] = None) -> Tensor:
        t = self.target()
        if t is None:
            raise InputError("a distillation attack runs inside objective.perturb(model, x, y), which "
                             "supplies the teacher's logits; call that instead of objective.attack")
        return self.fn(logits_adv, y, t)


class DistillObjective(Objective):
    """Base class: holds the frozen teacher and its per-batch logits."""

    needs_teacher = True

    def __init__(self, options, attack, *, teacher: Optional[nn.Module] = None, **kwargs):
        super().__init__(options, attack, **kwargs)
        if teacher is None:
            raise InputError(f"objective {self.name!r} distils from a teacher; add {TEACHER_HINT} "
                             "to the config (or pass teacher=MODEL)")
        object.__setattr__(self, "teacher", freeze(teacher))  # deliberately not a submodule
        self._cached = None
        self._attack_target: Optional[Tensor] = None

    def _apply(self, fn, *args, **kwargs):
        self.teacher._apply(fn, *args, **kwargs)  # .to(device) / .double() move the teacher too
        return super()._apply(fn, *args, **kwargs)

    def teacher_logits(self, x: Tensor) -> Tensor:
        """``T(x)`` (float32 or the input's float type, no grad); one forward per batch tensor."""
        c = self._cached
        if c is not None and c[0] is x and c[1] == x._version:
            return c[2]
        self.teacher.eval()
        with torch.no_grad():
            t = self.teacher(x)
        t = t.to(torch.promote_types(t.dtype, torch.float32)).detach()
        if t.dim() != 2 or t.shape[0] != x.shape[0] or t.shape[1] != self.num_classes:
            raise InputError(f"teacher returns logits of shape {tuple(t.shape)} for a batch of "
                             f"{x.shape[0]}; expected ({x.shape[0]}, {self.num_classes}): use a teacher "
                             "trained on this dataset")
        self._cached = (x, x._version, t)
        return t

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """The attack, with the teacher's logits of ``x`` available to its loss."""
        self._attack_target = self.teacher_logits(x)
        try:
            return super().perturb(model, x, y)
        finally:
            self._attack_target = None

    def teacher_target(self, fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> TeacherTarget:
        """An attack loss ``fn(logits_adv, y, T(x))`` for :meth:`make_attack`."""
        return TeacherTarget(fn, lambda: self._attack_target)

    def extra_repr(self) -> str:
        return f"teacher={type(self.teacher).__name__}, " + super().extra_repr()

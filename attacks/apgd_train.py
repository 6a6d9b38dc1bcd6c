r"""APGD-CE as a training attack (Singh, Croce, Hein, "Revisiting Adversarial Training for ImageNet",
NeurIPS 2023: 2-step APGD-CE at ε = 4/255), running AutoAttack's own APGD code.

What ``nmndeep/revisiting-at`` executes (``autopgd_train_clean.apgd_train``, SPEC §13.4), with
``P(v) = clamp(min(max(v, x−ε), x+ε), 0, 1)`` and ``s = 2ε``::

    x0 = x (no random start);  L0 = CE(f(x0)), g0
    x1 = P(x0 + s·sign(g0))                                  (momentum 0 at the first step)
    z  = P(x1 + s·sign(g1));  x2 = P(x1 + 0.75(z − x1) + 0.25(x1 − x0))
    return, per example, the point of {x0, x1, x2} with the largest CE (strictly larger replaces)

and for ``steps > 2`` APGD's checkpoints (step halving on oscillation, restart from the best point).
This class runs pyautoattack's ``APGDAttack.attack_single_run`` with ``x_init = x``: the same
iteration, the same step-size schedule (``n_iter_2 = max(⌊0.22·n⌋, 1)``, ``n_iter_min``,
``size_decr``) and the same best-loss selection, which includes the start point. Nothing is
re-implemented here; this module only binds the model of the call and the budget.

The attack loss ``ce`` is the reference's criterion ``F.cross_entropy(logits, y, reduction='none')``
(autopgd_train_clean.py:113, 149), which reads hard labels and soft targets alike: revisiting-at hands
it timm's mixup/cutmix targets with the label smoothing already inside (main.py:604-607, 965-966,
989). Here ``y`` may be hard labels or B×K soft targets, and the option ``label_smoothing`` ``s``
smooths them as timm's ``mixup_target`` does, ``(1 − s)·y + s/K`` (= ``F.cross_entropy(...,
label_smoothing=s)``), so the attack sees the reference's target when the objective's mixed targets
come unsmoothed (advtrain applies the training loss's smoothing in the loss). pyautoattack computes
the loss through its hook for a model that returns its own logits, per-example loss and input
gradient (``is_tf_model``), with the iteration unchanged; its accuracy bookkeeping reads the
targets' largest class, as the reference's ``y.max(1)[1]`` (autopgd_train_clean.py:194-197).

Differences from the reference, by design: pyautoattack's
``attack_single_run`` draws (and then discards, since ``x_init`` is given) one uniform tensor of the
input's shape from the global generator, so the training RNG stream differs from a run without it
(reproducible and resumable all the same). The model is in ``eval`` mode by default
(``base_model.eval()`` in main.py:279-289).

Examples::

    >>> APGDTrain(eps=4/255, steps=2)(model, x, y)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Attack, AttackError, AttackOptions
from .options import check_budget, check_setting, setting

LOSSES = ("ce", "dlr")


@dataclass(frozen=True)
class APGDTrainOptions(AttackOptions):
    """APGD's options: the norm (Linf, L2), the mode, eval as revisiting-at (main.py:279-289), and
    the label smoothing of the CE attack loss's target (revisiting-at: timm Mixup's 0.1, main.py:604-607)."""

    label_smoothing: float = setting(0.0, min=0.0, lt=1.0)


class _SoftCE:
    """pyautoattack's hook for a model that computes its own loss (``is_tf_model``): ``model``'s
    logits, the per-example CE against ``target`` (hard or soft, smoothed by ``smoothing``) and its
    input gradient, the reference's ``criterion_indiv`` and ``torch.autograd.grad(loss.sum(), x)``."""

    def __init__(self, model: nn.Module, target: Tensor, smoothing: float):
        self.model, self.target, self.smoothing = model, target, smoothing

    def get_logits_loss_grad_xent(self, x: Tensor, _labels: Tensor):
        with torch.enable_grad():
            x = x.detach().requires_grad_()
            logits = self.model(x)
            loss = F.cross_entropy(logits, self.target, reduction="none", label_smoothing=self.smoothing)
            grad = torch.autograd.grad(loss.sum(), x)[0]
        return logits.detach(), loss.detach(), grad.detach()

    def predict(self, x: Tensor) -> Tensor:
        return self.model(x)


class APGDTrain(Attack):
    """APGD (pyautoattack's code) from the clean input, best-loss point returned; ``steps`` iterations."""

    Options = APGDTrainOptions

    def __init__(self, eps: float = 4 / 255, steps: int = 2, norm: str = "Linf", loss="ce",
                 bn_mode: str = "eval", label_smoothing: float = 0.0):
        super().__init__(eps, norm=norm, bn_mode=bn_mode)
        self.label_smoothing = check_setting(APGDTrainOptions, "label_smoothing", label_smoothing,
                                             "attack label_smoothing")
        check_budget(eps, 0.0, steps)
        if steps < 1:
            raise AttackError(f"APGD needs steps >= 1, got {steps!r}; revisiting-at trains with 2")
        if loss not in LOSSES:
            raise AttackError(f"APGD training loss must be one of {', '.join(LOSSES)}, got {loss!r}; "
                              "use it with an objective whose attack loss is ce (e.g. objective ce)")
        if loss != "ce" and label_smoothing:
            raise AttackError(f"APGD label_smoothing smooths the ce loss's target; loss {loss!r} takes "
                              "none: set label_smoothing 0")
        self.steps, self.loss = steps, loss

    def set_budget(self, eps: float, step_size: float, steps: int) -> None:
        """Radius and iterations of one epoch; APGD sets its own step size (2ε, halved on
        oscillation), so ``step_size`` is not used."""
        check_budget(eps, step_size, steps)
        if steps < 1:
            raise AttackError(f"APGD needs steps >= 1, got {steps!r}; set attack.steps: 2")
        self.eps, self.steps = float(eps), int(steps)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        from pyautoattack.autopgd_base import APGDAttack

        if self.loss == "ce":  # hard or soft targets, smoothed: the loss through pyautoattack's hook
            target, labels = y, (y.argmax(1) if y.dim() == 2 else y)
            apgd = APGDAttack(_SoftCE(model, target, self.label_smoothing), n_iter=self.steps,
                              norm=self.norm, n_restarts=1, eps=self.eps, loss="ce", device=x.device,
                              is_tf_model=True)
        else:
            labels = y
            apgd = APGDAttack(model, n_iter=self.steps, norm=self.norm, n_restarts=1, eps=self.eps,
                              loss=self.loss, device=x.device)
        apgd.init_hyperparam(x)
        with torch.enable_grad():
            best, _acc, _loss, _adv = apgd.attack_single_run(x, labels, x_init=x)
        return best.detach()

"""The ``Objective`` contract shared by every training method.

An objective owns the two halves of one adversarial-training step and any state the method keeps:

- ``perturb(model, x, y) -> x_adv``: the inner maximisation (``self.attack``: the training attack the
  config names, built by :meth:`Objective.make_attack` from :data:`attacks.TRAINING_ATTACKS`; the
  trainer hands it each epoch's radius, step size and step count with ``set_attack_budget``);
- ``loss(model, x, x_adv, y, *, update_state=True) -> (loss, terms)``: the outer minimisation, with
  one train-mode forward of ``x_adv`` and then of ``x`` (adversarial first, SPEC §2.5; a method whose
  reference code differs says so: PGD-AT forwards ``x_adv`` only, MART ``x`` first); ``terms`` maps
  every loss term's name to a detached scalar (plus ``acc_adv``, the train adversarial accuracy);
- ``awp_loss(model, x, x_adv, y)``: the loss AWP ascends on its proxy (the objective's own loss with
  ``update_state=False`` unless a method documents otherwise, SPEC §2.4);
- ``on_epoch_end(reduce=None)`` and ``extra_parameters()`` for stateful methods.

Method state (the GKL class prior, LBGAT's natural model) is made of submodules and buffers, so it is
saved and resumed with ``state_dict()`` and moved with ``objective.to(device)``. Options: each class
names a frozen :class:`ObjectiveOptions` dataclass (its ``Options``) in its own file, holding every
option's default and rule plus the method's recommended attack and optimiser; the config validator is
the only place that checks them.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from attacks.registry import build_training_attack

Terms = Dict[str, torch.Tensor]


def opt(default: Any, **rule: Any) -> Any:
    """An option field with its default and its value rule, read by the config validator
    (:func:`advtrain.config.check.check_objective`): ``min``/``max`` (inclusive), ``gt``/``lt``
    (exclusive), ``choices`` (a tuple), ``arch`` (a model name)."""
    return field(default=default, metadata=rule)


NONNEG = {"min": 0}
POSITIVE = {"gt": 0}

#: the trainer-wide attack: PGD (``attacks.TRAINING_ATTACKS["pgd"]``) under DKL's executed schedule
#: (SPEC §3: K = 5, eta = eps_t/2, eps ramp) at 8/255 in Linf, from x + 0.001 N(0, I), model in eval
#: mode (DKL ``train_trades_*.py``); steps / step_size act only under ``schedule: fixed``. No recipe
#: sets ``ramp``: left out, it follows the schedule the config ends up with
#: (``advtrain.config.schedules.default_ramp``: on for executed/staged, off for fixed)
DKL_ATTACK: Dict[str, Any] = {"name": "pgd", "eps": 8 / 255, "norm": "Linf", "schedule": "executed",
                              "steps": 10, "step_size": 2 / 255, "init": "normal", "bn_mode": "eval"}


@dataclass(frozen=True)
class ObjectiveOptions:
    """Options every objective accepts; each objective subclasses this in its own file.

    Fields are the ``objective:`` keys with their defaults; ``ATTACK`` (the ``attack:`` section) and
    ``OPTIM`` (``optim:`` entries that differ from the trainer-wide ones, DKL's) are the method's
    recommended recipe, used for every entry a config leaves out.
    """

    label_smoothing: float = opt(0.0, min=0, lt=1)  # of the CE terms (DM recipe: 0.1)

    ATTACK: ClassVar[Dict[str, Any]] = DKL_ATTACK
    OPTIM: ClassVar[Dict[str, Any]] = {}

    @classmethod
    def defaults(cls, dataset: Optional[str] = None) -> Dict[str, Any]:
        """Every option with its default for ``dataset`` (a subclass changes dataset-specific ones)."""
        return {f.name: f.default for f in dataclasses.fields(cls)}


@contextlib.contextmanager
def frozen_bn_stats(module: nn.Module, enabled: bool = True):
    """Train-mode forwards of ``module`` that use batch statistics but record nothing.

    BatchNorm layers stop tracking running statistics for the duration (as the attacks'
    ``"train_frozen"`` mode), so buffers and ``num_batches_tracked`` stay as they were and the
    autograd graph never sees an in-place buffer update.
    """
    layers = [m for m in module.modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats] if enabled else []
    try:
        for m in layers:
            m.track_running_stats = False
        yield
    finally:
        for m in layers:
            m.track_running_stats = True


def adv_accuracy(logits_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction of adversarial inputs classified correctly (the logged train accuracy); soft
    targets (mixup/cutmix, B×K) count their largest class, as timm's accuracy on mixed batches."""
    if y.ndim == 2:
        y = y.argmax(1)
    return (logits_adv.detach().argmax(1) == y).float().mean()


class Objective(nn.Module):
    """Base class: attack construction and the default hooks.

    Subclasses set ``name`` and ``Options`` (their :class:`ObjectiveOptions` subclass), build
    ``self.attack`` via :meth:`make_attack` and implement :meth:`loss`. They receive resolved
    values (``options``: an ``Options`` instance; ``attack``: the resolved ``attack:`` section, an
    :class:`advtrain.config.AttackConfig`) and check nothing: the config validator did
    (:func:`advtrain.config.build_objective` runs the same validator for library callers).
    """

    name: str = ""
    two_view: bool = False
    Options: ClassVar[type] = ObjectiveOptions

    def __init__(self, options: ObjectiveOptions, attack: Any, *, num_classes: int,
                 dataset: Optional[str] = None):
        super().__init__()
        self.dataset = dataset
        self.num_classes = num_classes
        self.options = options
        self.attack_settings = attack
        self.label_smoothing = options.label_smoothing

    def make_attack(self, loss: Any):
        """The training attack of this objective (``attack.name`` in the resolved attack settings,
        from :data:`attacks.TRAINING_ATTACKS`) with its options, its full budget and an attack ``loss``."""
        a = self.attack_settings
        return build_training_attack(a.name, a.options, loss=loss, eps=a.eps, step_size=a.step_size,
                                     steps=a.steps)

    def set_attack_budget(self, eps: float, step_size: float, steps: int) -> None:
        """Radius, step size and number of steps of the inner maximisation (set per epoch from a
        :class:`advtrain.config.schedules.AttackBudget`: ``set_attack_budget(*budget)``), handed to
        the attack's one budget method, which checks them."""
        self.attack.set_budget(eps, step_size, steps)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Adversarial inputs for ``model`` (the attack switches and restores the model's mode)."""
        return self.attack(model, x, y).detach()

    def ce(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross entropy with this objective's label smoothing (mass spread over all classes)."""
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)

    def loss(self, model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, *,
             update_state: bool = True) -> Tuple[torch.Tensor, Terms]:
        raise NotImplementedError

    def awp_loss(self, model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss AWP ascends on its proxy: the training loss, without touching method state."""
        return self.loss(model, x, x_adv, y, update_state=False)[0]

    def on_epoch_end(self, reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> None:
        """End-of-epoch state update (nothing for stateless methods)."""

    def extra_parameters(self) -> List[nn.Parameter]:
        """Trainable parameters the optimiser must update besides the model's ([] by default)."""
        return []

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in sorted(dataclasses.asdict(self.options).items()))


def finish_terms(loss: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, **terms: torch.Tensor) -> Terms:
    """Detached copies of all terms plus the total ``loss`` and ``acc_adv``."""
    out = {k: v.detach() for k, v in terms.items()}
    out["loss"] = loss.detach()
    out["acc_adv"] = adv_accuracy(logits_adv, y)
    return out

"""The ``Objective`` contract shared by every training method.

An objective owns the two halves of one adversarial-training step and any state the method keeps:

- ``perturb(model, x, y) -> x_adv``: the inner maximisation (a :class:`attacks.PGD` in ``self.attack``;
  the trainer sets its radius, step size and step count each epoch with ``set_attack_budget``);
- ``loss(model, x, x_adv, y, *, update_state=True) -> (loss, terms)``: the outer minimisation, with
  one train-mode forward of ``x_adv`` and then of ``x`` (adversarial first, SPEC §2.5; a method whose
  reference code differs says so: PGD-AT forwards ``x_adv`` only, MART ``x`` first); ``terms`` maps
  every loss term's name to a detached scalar (plus ``acc_adv``, the train adversarial accuracy);
- ``awp_loss(model, x, x_adv, y)``: the loss AWP ascends on its proxy (the objective's own loss with
  ``update_state=False`` unless a method documents otherwise, SPEC §2.4);
- ``on_epoch_end(reduce=None)`` and ``extra_parameters()`` for stateful methods.

Method state (the GKL class prior, LBGAT's natural model) is made of submodules and buffers, so it is
saved and resumed with ``state_dict()`` and moved with ``objective.to(device)``. Options are validated at construction: every class lists
its accepted keyword arguments with defaults in ``defaults(dataset)``.
"""
from __future__ import annotations

import contextlib
from fractions import Fraction
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from advtrain.errors import InputError, unknown

Terms = Dict[str, torch.Tensor]

#: options every objective accepts (attack budget, attack kind, label smoothing of the CE terms)
COMMON_DEFAULTS: Dict[str, Any] = {
    "eps": 8 / 255,
    "step_size": 2 / 255,
    "steps": 10,
    "norm": "Linf",
    "attack_init": "normal",
    "bn_mode": "eval",
    "label_smoothing": 0.0,
}

_CHOICES = {
    "norm": ("Linf", "L2"),
    "attack_init": ("uniform", "normal", "none"),
    "bn_mode": ("eval", "train", "train_frozen"),
    "attack_loss": ("ce", "cw", "kl"),
}
_NONNEGATIVE = ("eps", "step_size", "beta", "alpha", "gamma", "aug_weight",
                "attack_alpha", "attack_beta", "attack_gamma", "adv_weight", "nat_weight")
_POSITIVE = ("prior_T", "loss_T", "kl_scale")
_BOOLS = ("use_prior", "two_view")


def _as_float(key: str, value: Any) -> float:
    """A number, or a fraction string such as ``"8/255"``."""
    if isinstance(value, bool):
        raise InputError(f"objective option {key}={value!r} must be a number, not a boolean")
    if isinstance(value, str):
        try:
            return float(Fraction(value.strip()))
        except (ValueError, ZeroDivisionError):
            raise InputError(f"objective option {key}={value!r} is not a number; write e.g. 0.031 or 8/255") from None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"objective option {key}={value!r} is not a number") from None


def validate_options(name: str, defaults: Dict[str, Any], given: Dict[str, Any]) -> Dict[str, Any]:
    """Merge ``given`` over ``defaults``; unknown keys and out-of-range values raise user errors."""
    given = {k: v for k, v in given.items() if v is not None}  # None: keep the default
    for key in given:
        if key not in defaults:
            raise unknown(f"option of objective {name!r}", key, defaults)
    opts = {**defaults, **given}
    for key, value in opts.items():
        opts[key] = _check_one(key, value)
    return opts


def _check_one(key: str, value: Any) -> Any:
    if key in _CHOICES:
        if value not in _CHOICES[key]:
            raise unknown(f"{key}", value, _CHOICES[key])
        return value
    if key in _BOOLS:
        if not isinstance(value, bool):
            raise InputError(f"objective option {key}={value!r} must be true or false")
        return value
    if key == "steps":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InputError(f"objective option steps={value!r} must be an integer >= 0")
        return value
    if key == "natural_arch":
        if not isinstance(value, str) or not value:
            raise InputError(f"objective option natural_arch={value!r} must be a model name such as 'resnet-18'")
        return value
    number = _as_float(key, value)
    if number != number:  # NaN
        raise InputError(f"objective option {key} is NaN; give a finite number")
    if key in _NONNEGATIVE and number < 0:
        raise InputError(f"objective option {key}={number} must be >= 0")
    if key in _POSITIVE and number <= 0:
        raise InputError(f"objective option {key}={number} must be > 0")
    if key == "label_smoothing" and not 0 <= number < 1:
        raise InputError(f"objective option label_smoothing={number} must be in [0, 1)")
    if key == "prior_momentum" and not 0 < number <= 1:
        raise InputError(f"objective option prior_momentum={number} must be in (0, 1]")
    return number


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
    """Fraction of adversarial inputs classified correctly (the logged train accuracy)."""
    return (logits_adv.detach().argmax(1) == y).float().mean()


class Objective(nn.Module):
    """Base class: attack construction, option handling and the default hooks.

    Subclasses set ``name`` and ``DEFAULTS`` (their own options, merged over ``COMMON_DEFAULTS``),
    build ``self.attack`` via :meth:`make_attack` and implement :meth:`loss`.
    """

    name: str = ""
    two_view: bool = False
    DEFAULTS: Dict[str, Any] = {}

    def __init__(self, *, dataset: Optional[str] = None, num_classes: int = 10, **kwargs: Any):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise InputError(f"num_classes={num_classes!r} must be an integer >= 2")
        self.dataset = dataset
        self.num_classes = num_classes
        self.options = validate_options(self.name, self.defaults(dataset), kwargs)
        self.label_smoothing = self.options["label_smoothing"]

    @classmethod
    def defaults(cls, dataset: Optional[str] = None) -> Dict[str, Any]:
        """Accepted keyword arguments and their defaults (for ``dataset`` when they depend on it)."""
        return {**COMMON_DEFAULTS, **cls.DEFAULTS}

    def make_attack(self, loss: Any):
        """The PGD attack of this objective from the common options and an attack ``loss``."""
        from attacks import PGD

        o = self.options
        return PGD(eps=o["eps"], alpha=o["step_size"], steps=o["steps"], norm=o["norm"], loss=loss,
                   init=o["attack_init"], bn_mode=o["bn_mode"])

    def set_attack_budget(self, eps: float, alpha: float, steps: int) -> None:
        """Radius, step size and number of steps of the inner maximisation (set per epoch)."""
        self.attack.eps, self.attack.alpha, self.attack.steps = float(eps), float(alpha), int(steps)

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
        return ", ".join(f"{k}={v!r}" for k, v in sorted(self.options.items()))


def finish_terms(loss: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, **terms: torch.Tensor) -> Terms:
    """Detached copies of all terms plus the total ``loss`` and ``acc_adv``."""
    out = {k: v.detach() for k, v in terms.items()}
    out["loss"] = loss.detach()
    out["acc_adv"] = adv_accuracy(logits_adv, y)
    return out

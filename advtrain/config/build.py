"""Objects built from settings checked by the config's own validator, for library callers.

Example::

    from advtrain.config import build_objective
    obj = build_objective("trades", dataset="cifar10", num_classes=10, beta=6.0, steps=5)
"""
from __future__ import annotations

from typing import Any, Optional

from advtrain.errors import InputError
from advtrain.objectives import Objective, objective_class

#: build_objective's keyword names of the attack settings (``attack:`` section key in the config)
_ATTACK_KWARGS = {"attack_name": "name", "eps": "eps", "step_size": "step_size", "steps": "steps",
                  "norm": "norm", "attack_init": "init", "bn_mode": "bn_mode"}


def build_objective(name: str, *, dataset: Optional[str] = None, num_classes: int = 10,
                    **kwargs: Any) -> Objective:
    """The objective called ``name`` (see ``OBJECTIVES``), for library callers.

    ``kwargs``: the objective's options, the attack settings ``attack_name, eps, step_size, steps,
    norm, attack_init, bn_mode`` (None keeps a default; the rest of the attack is the objective's
    recommended one, at its full budget in every call: the trainer's per-epoch schedule is the
    caller's) and the objects a method takes (``teacher``, ``natural_model``). Checked by the same
    validator as a config (:func:`advtrain.config.resolve_attack`, :mod:`advtrain.config.check`)."""
    from advtrain.config.attack import resolve_attack
    from advtrain.config.check import check_objective

    cls = objective_class(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise InputError(f"num_classes={num_classes!r} must be an integer >= 2")
    objects = {k: kwargs.pop(k) for k in ("teacher", "natural_model") if k in kwargs}
    given = {_ATTACK_KWARGS[k]: kwargs.pop(k) for k in list(kwargs) if k in _ATTACK_KWARGS}
    options = check_objective(cls.Options, name, kwargs, dataset)
    attack = resolve_attack(given, cls.Options.ATTACK)
    return cls(options, attack, dataset=dataset, num_classes=num_classes, **objects)

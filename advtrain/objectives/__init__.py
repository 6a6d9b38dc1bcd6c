"""Training objectives: one class per method, looked up by name.

``OBJECTIVES`` maps each name to its class; each class names its frozen options dataclass
(``OBJECTIVES[name].Options``, in the method's own file) holding every option's default and rule and
the method's recommended attack (``Options.ATTACK``) and optimiser (``Options.OPTIM``). The config
loader (:func:`advtrain.config.from_dict`) validates and resolves them once; the trainer builds the
objective from the resolved values. ``build_objective(name, *, dataset, num_classes, **options)`` is
the same for library callers: it runs the same validator. The contract is documented in
:mod:`advtrain.objectives.base`.

Example::

    from advtrain.objectives import build_objective
    obj = build_objective("trades", dataset="cifar10", num_classes=10, beta=6.0, steps=5)
"""
from __future__ import annotations

import types
from typing import Any, Dict, Optional, Type

from advtrain.errors import InputError, unknown
from advtrain.objectives.ard import ARD
from advtrain.objectives.base import Objective
from advtrain.objectives.gkl_at import GKLAT
from advtrain.objectives.gkl_kd import GKLKD
from advtrain.objectives.ikl_at import IKLAT
from advtrain.objectives.lbgat import LBGAT
from advtrain.objectives.mart import MART
from advtrain.objectives.pgd_at import PGDAT
from advtrain.objectives.rslad import RSLAD
from advtrain.objectives.trades import TRADES

OBJECTIVES: Dict[str, Type[Objective]] = {
    cls.name: cls for cls in (PGDAT, TRADES, MART, LBGAT, IKLAT, GKLAT, ARD, RSLAD, GKLKD)
}
#: objectives that distil from a frozen teacher (the config's ``teacher:`` section)
DISTILLATION = tuple(n for n, cls in OBJECTIVES.items() if getattr(cls, "needs_teacher", False))
#: build_objective's keyword names of the attack settings (``attack:`` section key in the config)
_ATTACK_KWARGS = {"eps": "eps", "step_size": "step_size", "steps": "steps", "norm": "norm",
                  "attack_init": "init", "bn_mode": "bn_mode"}

__all__ = ["Objective", "OBJECTIVES", "DISTILLATION", "build_objective", "objective_defaults"]


def _class(name: str) -> Type[Objective]:
    if name not in OBJECTIVES:
        raise unknown("objective", name, OBJECTIVES)
    return OBJECTIVES[name]


def objective_defaults(name: str, dataset: Optional[str] = None) -> Dict[str, Any]:
    """Accepted options of objective ``name`` and their defaults for ``dataset``."""
    return _class(name).Options.defaults(dataset)


def build_objective(name: str, *, dataset: Optional[str] = None, num_classes: int = 10,
                    **kwargs: Any) -> Objective:
    """The objective called ``name`` (see ``OBJECTIVES``), for library callers.

    ``kwargs``: the objective's options, the attack settings ``eps, step_size, steps, norm,
    attack_init, bn_mode`` (None keeps a default; the rest of the attack is the objective's
    recommended one, at its full budget in every call: the trainer's per-epoch schedule is the
    caller's) and the objects a method takes (``teacher``, ``natural_model``). Checked by the same
    validator as a config (:mod:`advtrain.config_check`)."""
    from advtrain.config_check import check_attack, check_objective
    from advtrain.config_types import coerce

    cls = _class(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise InputError(f"num_classes={num_classes!r} must be an integer >= 2")
    objects = {k: kwargs.pop(k) for k in ("teacher", "natural_model") if k in kwargs}
    given = {_ATTACK_KWARGS[k]: kwargs.pop(k) for k in list(kwargs) if k in _ATTACK_KWARGS}
    options = check_objective(cls.Options, name, kwargs, dataset)
    attack = {**cls.Options.ATTACK, **{k: v for k, v in given.items() if v is not None}}
    for key in ("eps", "step_size"):
        attack[key] = coerce(attack[key], Optional[float], f"attack.{key}", {"eps": True})
    attack["steps"] = coerce(attack["steps"], int, "attack.steps")
    attack = types.SimpleNamespace(**attack)
    check_attack(attack)
    return cls(options, attack, dataset=dataset, num_classes=num_classes, **objects)


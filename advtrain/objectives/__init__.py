"""Training objectives: one class per method, looked up by name.

``build_objective(name, *, dataset, num_classes, **options)`` builds one; ``OBJECTIVES`` maps each
name to its class, and ``OBJECTIVES[name].defaults(dataset)`` lists the accepted options with their
defaults (the config schema validates keys against it). The contract is documented in
:mod:`advtrain.objectives.base`.

Example::

    from advtrain.objectives import build_objective
    obj = build_objective("trades", dataset="cifar10", num_classes=10, beta=6.0)
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Type

from advtrain.errors import unknown
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

__all__ = ["Objective", "OBJECTIVES", "DISTILLATION", "build_objective", "objective_defaults"]


def objective_defaults(name: str, dataset: Optional[str] = None) -> Dict[str, Any]:
    """Accepted options of objective ``name`` and their defaults for ``dataset``."""
    if name not in OBJECTIVES:
        raise unknown("objective", name, OBJECTIVES)
    return OBJECTIVES[name].defaults(dataset)


def build_objective(name: str, *, dataset: Optional[str] = None, num_classes: int = 10,
                    **kwargs: Any) -> Objective:
    """The objective called ``name`` (see ``OBJECTIVES``) with validated options."""
    if name not in OBJECTIVES:
        raise unknown("objective", name, OBJECTIVES)
    return OBJECTIVES[name](dataset=dataset, num_classes=num_classes, **kwargs)

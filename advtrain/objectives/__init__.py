"""Training objectives: one class per method, looked up by name.

``OBJECTIVES`` maps each name to its class; each class names its frozen options dataclass
(``OBJECTIVES[name].Options``, in the method's own file) holding every option's default and rule and
the method's recommended attack (``Options.ATTACK``) and optimiser (``Options.OPTIM``). The config
loader (:func:`advtrain.config.from_dict`) validates and resolves them once; the trainer builds the
objective from the resolved values; library callers use
:func:`advtrain.config.build_objective`, which runs the same validator. The contract is documented
in :mod:`advtrain.objectives.base`.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Type

from advtrain.errors import unknown
from advtrain.objectives.ard import ARD
from advtrain.objectives.base import Objective
from advtrain.objectives.ce import CE
from advtrain.objectives.gkl_at import GKLAT
from advtrain.objectives.gkl_kd import GKLKD
from advtrain.objectives.ikl_at import IKLAT
from advtrain.objectives.lbgat import LBGAT
from advtrain.objectives.mart import MART
from advtrain.objectives.pgd_at import PGDAT
from advtrain.objectives.rslad import RSLAD
from advtrain.objectives.trades import TRADES

OBJECTIVES: Dict[str, Type[Objective]] = {
    cls.name: cls for cls in (CE, PGDAT, TRADES, MART, LBGAT, IKLAT, GKLAT, ARD, RSLAD, GKLKD)
}
#: objectives that distil from a frozen teacher (the config's ``teacher:`` section)
DISTILLATION = tuple(n for n, cls in OBJECTIVES.items() if getattr(cls, "needs_teacher", False))

__all__ = ["Objective", "OBJECTIVES", "DISTILLATION", "objective_class", "objective_defaults"]


def objective_class(name: str) -> Type[Objective]:
    if name not in OBJECTIVES:
        raise unknown("objective", name, OBJECTIVES)
    return OBJECTIVES[name]


def objective_defaults(name: str, dataset: Optional[str] = None) -> Dict[str, Any]:
    """Accepted options of objective ``name`` and their defaults for ``dataset``."""
    return objective_class(name).Options.defaults(dataset)

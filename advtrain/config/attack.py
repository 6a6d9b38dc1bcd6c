"""The ``attack:`` section of a training config: :class:`AttackConfig` (the typed, resolved section)
and :func:`resolve_attack` (the section as written -> resolved, checked once).

The section names a training attack (``name``, a key of :data:`attacks.TRAINING_ATTACKS`, default
``pgd``); its budget and schedule keys are the same for every attack, its other keys are that attack's
own options, read from its class (``TRAINING_ATTACKS[name].Options``: types, defaults, rules).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from attacks import TRAINING_ATTACKS
from attacks.options import option_names
from attacks.registry import DEFAULT as DEFAULT_ATTACK

from advtrain.config.check import check_attack
from advtrain.config.schedules import default_ramp
from advtrain.config.types import EPS, build_section
from advtrain.errors import InputError, unknown


@dataclass(frozen=True)
class AttackConfig:
    """Training attack: ``name`` (a key of :data:`attacks.TRAINING_ATTACKS`, default ``pgd``), its
    budget and schedule (these fields, the same for every attack) and ``options``: the attack's
    own settings, an instance of its ``Options`` dataclass (PGD: ``norm``, ``init``, ``bn_mode``),
    written flat in the YAML (``attack: {name: pgd, eps: 8/255, init: normal}``) and read here as
    ``cfg.attack.options.init`` (or ``cfg.attack.init``).

    ``schedule`` (:mod:`advtrain.config.schedules`): executed (reference: K=5, eta=eps_t/2), staged,
    fixed (``steps``, ``step_size``). An entry left out (or ``null``) is the objective's
    (``OBJECTIVES[name].Options.ATTACK``, the one source of attack defaults; its attack-specific
    entries only when the config runs the attack it names) or the attack's own default;
    :func:`from_dict` fills every one, so the config, and the ``config.yaml`` of a run, show the
    attack the run actually used.
    """

    name: str = DEFAULT_ATTACK
    eps: Optional[float] = field(default=None, metadata=EPS)
    schedule: Optional[str] = None  # executed | staged | fixed
    ramp: Optional[bool] = None  # eps_t = eps*e/E; left out: on for executed/staged, off for fixed
    steps: Optional[int] = None  # used by the fixed schedule
    step_size: Optional[float] = field(default=None, metadata=EPS)  # used by the fixed schedule
    options: Any = None  # TRAINING_ATTACKS[name].Options(...), resolved by from_dict

    def __getattr__(self, key: str):
        """``cfg.attack.norm``: the attack's own options read through (typed, resolved)."""
        options = self.__dict__.get("options")
        if key.startswith("__") or options is None or key not in option_names(type(options)):
            raise AttributeError(f"{type(self).__name__} has no attribute {key!r}")
        return getattr(options, key)


#: the ``attack:`` keys every training attack takes (its own options come from its class)
ATTACK_COMMON = tuple(f.name for f in dataclasses.fields(AttackConfig) if f.name != "options")


def resolve_attack(written: Any, recipe: Dict[str, Any]) -> AttackConfig:
    """The resolved ``attack:`` section: the ``written`` entries (None keeps a default) over the
    objective's ``recipe`` (``Options.ATTACK``) over the attack's own defaults.

    The recipe names its attack (``name``, default pgd); run with another attack, only its budget
    and schedule entries apply (its attack-specific ones, e.g. PGD's ``init``, would not mean the same).
    A key is checked against ``attack.name``'s class: an option of another attack is refused naming
    that attack. Types and key names here, ranges and choices by :func:`check_attack`, once."""
    if written is None:
        written = {}
    if not isinstance(written, dict):
        raise InputError(f"config section 'attack' must be a mapping, got {type(written).__name__}; "
                         "e.g. attack: {name: pgd, eps: 8/255}")
    written = {k: v for k, v in written.items() if v is not None}
    recipe_name = recipe.get("name", DEFAULT_ATTACK)
    name = build_section(AttackConfig, {"name": written.get("name", recipe_name)}, "attack.").name
    if name not in TRAINING_ATTACKS:
        raise unknown("training attack (attack.name)", name, TRAINING_ATTACKS)
    options_cls = TRAINING_ATTACKS[name].Options
    accepted = ATTACK_COMMON + option_names(options_cls)
    for key in written:
        if key in accepted:
            continue
        owners = [n for n, c in TRAINING_ATTACKS.items() if key in option_names(c.Options)]
        if owners:
            raise InputError(f"config key 'attack.{key}' is an option of attack {owners[0]!r}, not of "
                             f"attack {name!r}; remove it or set attack.name: {owners[0]}")
        raise unknown("config key", f"attack.{key}", [f"attack.{k}" for k in accepted])
    applies = recipe if recipe_name == name else {k: v for k, v in recipe.items() if k in ATTACK_COMMON}
    merged = {**applies, **written, "name": name}
    section = build_section(AttackConfig, {k: merged[k] for k in ATTACK_COMMON if k in merged}, "attack.")
    options = build_section(options_cls, {k: merged[k] for k in option_names(options_cls) if k in merged},
                            "attack.")
    missing = [f"attack.{k}" for k in ATTACK_COMMON if k != "ramp" and getattr(section, k) is None]
    if missing:
        raise InputError(f"config section 'attack' leaves {', '.join(missing)} unset and the objective "
                         "names no default; set them")
    if section.ramp is None:
        section = dataclasses.replace(section, ramp=default_ramp(section.schedule))
    section = dataclasses.replace(section, options=options)
    check_attack(section)
    return section

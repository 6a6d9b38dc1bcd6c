"""How an attack declares its options: a frozen dataclass of fields made with :func:`setting`.

Each attack class names its options dataclass (``PGD.Options``): every option's type (the field's
annotation), default and rule live there, once. The attack checks them in its constructor with
:func:`check_setting`; advtrain's config validator reads the same dataclass (types and keys of the
``attack:`` section) and the same rules (through :func:`check_setting`), so a new attack brings its
options with it and nothing outside its file lists them.

Rules (field metadata): ``choices`` (a tuple), ``min`` / ``max`` (inclusive), ``gt`` / ``lt``
(exclusive), ``integer`` (an int, not a bool), ``eps`` (a radius-like number that a config may write
as ``8/255``). The budget (radius, step size, steps) is not an option: it is handed to the attack by
:meth:`attacks.Attack.set_budget` (checked there by :func:`check_budget`).

Example::

    @dataclass(frozen=True)
    class MyOptions:
        norm: str = setting("Linf", choices=NORMS)
        restarts: int = setting(1, integer=True, min=1)
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from typing import Any, Optional


class AttackError(ValueError):
    """A user mistake in an attack's settings or inputs; the message is one line naming the fix."""


def unknown(kind: str, name, choices, error: type = AttackError) -> AttackError:
    """'unknown <kind> 'x'; did you mean 'y'? choices: ...' as an ``error`` (an :class:`AttackError`)."""
    names = sorted(str(c) for c in choices)
    close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.5)
    hint = (" did you mean " + " or ".join(repr(c) for c in close) + "?") if close else ""
    return error(f"unknown {kind} {name!r};{hint} choices: {', '.join(names)}")


def setting(default: Any, **rule: Any) -> Any:
    """An option field with its default and its rule (see the module docstring)."""
    return dataclasses.field(default=default, metadata=rule)


def option_names(options_cls) -> tuple:
    """The option keys an attack's options dataclass declares, in order."""
    return tuple(f.name for f in dataclasses.fields(options_cls))


def option_choices(options_cls, name: str) -> Optional[tuple]:
    """The ``choices`` rule of option ``name`` of ``options_cls`` (None: no such option or rule)."""
    for f in dataclasses.fields(options_cls):
        if f.name == name:
            return f.metadata.get("choices")
    return None


def check_setting(options_cls, name: str, value: Any, key: str = "") -> Any:
    """``value`` checked against the rule of option ``name`` of ``options_cls``; returns it.

    ``key`` names the setting in the message (default ``"attack <name>"``; the config passes
    ``"attack.<name>"``). Raises :class:`AttackError` (one line) on a violation."""
    fields = {f.name: f for f in dataclasses.fields(options_cls)}
    if name not in fields:
        raise unknown(f"option of {options_cls.__name__}", name, fields)
    rule, key = fields[name].metadata, key or f"attack {name}"
    if "choices" in rule:
        if value not in rule["choices"]:
            raise unknown(key, value, rule["choices"])
        return value
    if "integer" in rule or any(r in rule for r in ("min", "max", "gt", "lt", "eps")):
        kind = numbers.Integral if rule.get("integer") else numbers.Real
        if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
            what = "an integer" if rule.get("integer") else "a finite number"
            raise AttackError(f"{key} must be {what}, got {value!r}")
    for bound, ok, word in (("min", lambda v, b: v >= b, ">="), ("max", lambda v, b: v <= b, "<="),
                            ("gt", lambda v, b: v > b, ">"), ("lt", lambda v, b: v < b, "<")):
        if bound in rule and not ok(value, rule[bound]):
            raise AttackError(f"{key} = {value!r} must be {word} {rule[bound]}")
    return value


def check_nonnegative(name: str, value, *, integer: bool = False) -> None:
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
        what = "an integer" if integer else "a finite number"
        raise AttackError(f"attack {name} must be {what} >= 0, got {value!r}")
    if value < 0:
        raise AttackError(f"attack {name} must be >= 0, got {value!r}; use e.g. {name}=8/255")


def check_budget(eps, step_size, steps) -> None:
    """The budget every training attack accepts: radius ``eps`` >= 0, ``step_size`` >= 0 and an
    integer number of ``steps`` >= 0 (an attack that takes no steps ignores the last two)."""
    check_nonnegative("eps", eps)
    check_nonnegative("step_size", step_size)
    check_nonnegative("steps", steps, integer=True)

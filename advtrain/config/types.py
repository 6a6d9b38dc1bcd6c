"""Structure and types of config values: a (frozen) dataclass built from a YAML mapping, scalars
coerced to their annotation, eps as ``8/255``. Used by :mod:`advtrain.config.check` (ranges and
choices) and by :func:`advtrain.config.build_objective`; imports nothing of advtrain but its errors.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

from advtrain.errors import InputError, unknown
from advtrain.utils import parse_eps

#: marker in field metadata: the value is an eps-like float that also accepts "8/255"
EPS = {"eps": True}


def build_section(cls, raw: Any, prefix: str):
    """Instantiate dataclass ``cls`` from mapping ``raw``; unknown keys and bad types refused."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        where = prefix.rstrip(".") or "config"
        raise InputError(f"config section {where!r} must be a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            raise unknown("config key", f"{prefix}{key}", [prefix + k for k in fields])
    kwargs = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        kwargs[name] = coerce(raw[name], hints[name], prefix + name, f.metadata)
    return cls(**kwargs)


def coerce(value: Any, tp: Any, key: str, meta=None) -> Any:
    """Check ``value`` against annotation ``tp`` (converting int->float, '8/255'->float)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], key, meta)
    if meta and meta.get("eps"):
        try:
            return parse_eps(value, None)  # the norm's range: config.check.check_attack
        except InputError as e:
            raise InputError(f"config key {key!r}: {e}") from None
    if dataclasses.is_dataclass(tp):
        return build_section(tp, value, key + ".")
    if origin in (list, typing.List):
        if not isinstance(value, (list, tuple)):
            raise _type_error(key, value, "a list")
        return [coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin in (dict, typing.Dict):
        if not isinstance(value, dict):
            raise _type_error(key, value, "a mapping")
        return dict(value)
    return _scalar(value, tp, key)


def _scalar(value: Any, tp: Any, key: str) -> Any:
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _type_error(key, value, "true or false")
        return value
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(key, value, "an integer")
        return value
    if tp is float:
        return to_float(value, key)
    if tp is str:
        if not isinstance(value, str):
            raise _type_error(key, value, "a string")
        if "\x00" in value:
            raise InputError(f"config key {key!r} = {value!r} contains a NUL byte; remove it")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} for {key}")  # programming error


def to_float(value: Any, key: str) -> float:
    if isinstance(value, bool):
        raise _type_error(key, value, "a number")
    out = None
    if isinstance(value, (int, float)):
        out = float(value) if abs(value) < 1e308 else math.inf  # huge ints overflow float()
    elif isinstance(value, str):  # YAML 1.1 reads "5e-4" as a string
        try:
            out = float(value)
        except ValueError:
            pass
    if out is None:
        raise _type_error(key, value, "a number")
    if not math.isfinite(out):
        raise InputError(f"config key {key!r} = {short(value)} is not a finite number; give a finite value")
    return out


def _type_error(key: str, value: Any, expected: str) -> InputError:
    return InputError(f"config key {key!r} must be {expected}, got {short(value)} ({type(value).__name__})")


def short(value: Any) -> str:
    """``repr`` cut to one short line (a 10,000-digit integer would fill the terminal, and Python
    refuses to print one of more than 4,300 digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<an integer of {value.bit_length()} bits>"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))  # as written: "beta = -1", not "-1.0"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

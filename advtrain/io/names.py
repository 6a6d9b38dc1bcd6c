"""The one rule for names that become file names (cards, exports, runs)."""
from __future__ import annotations

import re
from typing import Any

from advtrain.errors import InputError

__all__ = ["MODEL_NAME_MAX", "MODEL_NAME_RE", "SIDECAR_SUFFIX", "check_model_name"]

#: a name that becomes a file name (card, export, run): RobustBench ids such as
#: ``Cui2023Decoupled_WRN-34-10``; no separators, no leading dot, bounded length
MODEL_NAME_RE = re.compile(r"[A-Za-z0-9_+\-][A-Za-z0-9._+\-]*")
MODEL_NAME_MAX = 128
#: ``<name>.advtrain.json``: advtrain's description beside a RobustBench file (a card or an export)
SIDECAR_SUFFIX = ".advtrain.json"


def check_model_name(name: Any, what: str = "--name") -> str:
    """Return ``name`` if it is a safe file-name id, else raise a one-line :class:`InputError`.

    Allowed: 1 to 128 characters from ``A-Z a-z 0-9 . _ + -``, not starting with a dot (so no
    ``..``, no hidden file, no path separator, no NUL byte). ``what`` names the option in the message
    (``"--name"``, ``"run.name"``, ...).
    """
    text = name if isinstance(name, str) else str(name)
    if isinstance(name, str) and len(text) <= MODEL_NAME_MAX and MODEL_NAME_RE.fullmatch(text):
        return text
    shown = repr(text) if len(text) <= 60 else repr(text[:60]) + "..."
    if not isinstance(name, str):
        why = f"is a {type(name).__name__}, not a string"
    elif not text:
        why = "is empty"
    elif len(text) > MODEL_NAME_MAX:
        why = f"is {len(text)} characters long (at most {MODEL_NAME_MAX})"
    elif any(not re.fullmatch(r"[A-Za-z0-9._+\-]", c) for c in text):
        bad = sorted({c for c in text if not re.fullmatch(r"[A-Za-z0-9._+\-]", c)})
        why = "contains " + ", ".join(repr(c) for c in bad[:5])
    else:
        why = "starts with a dot"
    raise InputError(f"{what} {shown} {why}; use 1-{MODEL_NAME_MAX} characters from A-Z a-z 0-9 . _ + - "
                     "not starting with a dot, e.g. Author2024Word_WRN-34-10")

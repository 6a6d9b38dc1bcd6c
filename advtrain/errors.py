"""User-facing errors.

Every mistake a user can make (a bad config value, an unknown name, a checkpoint of another
architecture, a pickled file) raises a subclass of :class:`AdvtrainError` whose message is one line
naming the problem and the fix. The CLI prints that line and exits with status 2; programming errors
are *not* caught and keep their traceback.
"""
from __future__ import annotations

import difflib
from typing import Iterable


class AdvtrainError(Exception):
    """Base class of errors caused by user input; the message is shown as is."""

    def __str__(self) -> str:  # KeyError would otherwise wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class InputError(AdvtrainError, ValueError):
    """A value is invalid (out of range, wrong shape, wrong type)."""


class UnknownNameError(AdvtrainError, KeyError):
    """A name (model, objective, dataset, config key, ...) is not one of the valid choices."""


class CheckpointError(AdvtrainError, ValueError):
    """A checkpoint cannot be read safely or does not fit the model."""


class DataError(AdvtrainError, ValueError):
    """A dataset is missing, corrupt or of the wrong format."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' did you mean 'x'?' for the closest choices, or '' when none is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=3, cutoff=0.5)
    if not close:
        return ""
    return " did you mean " + " or ".join(repr(c) for c in close) + "?"


def unknown(kind: str, name: str, choices: Iterable[str]) -> UnknownNameError:
    """Build the standard 'unknown <kind>' error: the bad name, close matches and all choices."""
    choices = sorted(str(c) for c in choices)
    return UnknownNameError(
        f"unknown {kind} {name!r};{did_you_mean(name, choices)} choices: {', '.join(choices)}"
    )

"""The range of every numeric command-line option, declared with the option (argparse ``type=``):
a value outside it is the parser's one-line error before any work, never an overflow traceback
deep inside torch or numpy (``--subset-seed 2**64``) or a loop that never ends (``--sweep-steps
10**12``). Finer rules stay with their owners (AutoAttack's budget in ``attacks.autoattack``)."""
from __future__ import annotations

import argparse

from advtrain.config.check import MAX_SEED

#: an image count (--n-ex), a batch size, an attack's steps or restarts
MAX_COUNT = 10 ** 9
MAX_STEPS = 10 ** 6


def int_in(low: int, high: int):
    """An argparse ``type`` accepting integers in ``[low, high]``."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except (TypeError, ValueError):
            value = None
        if value is None or not low <= value <= high:
            shown = text if len(text) <= 30 else text[:30] + "..."
            raise argparse.ArgumentTypeError(f"{shown} is not an integer in [{low}, {high}]")
        return value

    parse.__name__ = "integer"
    return parse


SEED = int_in(0, MAX_SEED)
COUNT = int_in(1, MAX_COUNT)
STEPS = int_in(1, MAX_STEPS)

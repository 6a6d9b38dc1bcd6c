"""``python -m advtrain.data.npz_convert IN.npz OUT.npz``: re-save a compressed npz uncompressed.

Streams member by member (never the whole file in memory), so the result can be memory-mapped by
:func:`advtrain.data.npz.read_npz`; ``OUT`` appears complete or not at all.
"""
from __future__ import annotations

import os
import sys

from advtrain.data.npz import convert_npz, read_npz
from advtrain.errors import DataError


def main(argv=None) -> int:
    """``python -m advtrain.data.npz_convert IN.npz OUT.npz``: re-save a compressed npz uncompressed, streaming."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m advtrain.data.npz_convert IN.npz OUT.npz", file=sys.stderr)
        return 2
    if os.path.exists(args[1]):
        print(f"advtrain.data.npz_convert: error: {args[1]} exists; choose a new output path", file=sys.stderr)
        return 2
    try:
        convert_npz(args[0], args[1])
        read_npz(args[1])
    except DataError as e:
        print(f"advtrain.data.npz_convert: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args[1]} (uncompressed; memory-mappable)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

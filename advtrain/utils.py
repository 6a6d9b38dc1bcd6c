"""Small shared helpers for evaluation and export: eps formatting, device choice, package versions.

``format_eps(8/255) == "8/255"`` (the form RobustBench cards use).
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Optional, Union

import torch

from advtrain.errors import InputError


def format_eps(eps: float) -> str:
    """RobustBench's spelling of eps: ``"8/255"`` when eps*255 is a whole number, else a decimal."""
    k = eps * 255
    if eps > 0 and abs(k - round(k)) < 1e-6:
        return f"{int(round(k))}/255"
    frac = Fraction(eps).limit_denominator(1000)
    if abs(float(frac) - eps) < 1e-9 and frac.denominator <= 10:
        return f"{float(frac):g}"
    return f"{eps:g}"


def parse_device(device: Union[str, torch.device, None], flag: str = "--device") -> Optional[torch.device]:
    """None for ``"auto"``/None, else the device ``device`` names; only CPU and CUDA are supported
    (``mps``, ``xla``, ``meta``, ... are refused with one line). Needs no GPU: config load uses it."""
    if device is None or str(device) == "auto":
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise InputError(f"{flag} {str(device)!r} is not supported; advtrain runs on auto, cpu, cuda "
                         "or cuda:N")
    return dev


def resolve_device(device: Union[str, torch.device, None], flag: str = "--device") -> torch.device:
    """``"auto"``/None -> cuda when available, else cpu; a CPU or CUDA device otherwise, which
    must be present (one line otherwise)."""
    dev = parse_device(device, flag)
    if dev is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"{flag} {str(device)!r} requested but CUDA is not available; use {flag} cpu "
                         "or auto")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"{flag} {str(device)!r} but only {torch.cuda.device_count()} CUDA device(s) "
                         f"are visible; use cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return dev


def package_versions() -> dict:
    """Versions of the packages a result depends on (``None`` when one is not installed)."""
    from importlib import metadata

    out = {}
    for dist in ("torch", "torchvision", "pyautoattack", "robustbench", "advtrain", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def git_commit() -> Optional[str]:
    """The advtrain source tree's git commit (``+dirty`` when modified), or None outside git."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


_EPS_FIX = "give a number like 0.0314 or a fraction like 8/255"


def parse_eps(value: Union[str, float, int]) -> float:
    """``"8/255"`` / ``"0.0314"`` / ``0.0314`` -> float in [0, 1]; anything else -> InputError."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InputError(f"invalid eps {value!r}; {_EPS_FIX}")
    try:
        if isinstance(value, str) and "/" in value:
            num, den = value.strip().split("/", 1)
            out = float(num) / float(den)
        else:
            out = float(value.strip() if isinstance(value, str) else value)
    except (ValueError, ZeroDivisionError, OverflowError):
        raise InputError(f"invalid eps {value!r}; {_EPS_FIX}") from None
    if not math.isfinite(out) or out < 0 or out > 1:
        raise InputError(f"eps {value!r} = {out:g} is outside [0, 1]; images live in [0, 1] (e.g. 8/255)")
    return out


#: resolution of every PNG figure advtrain writes (journals ask for >= 150 dpi)
FIGURE_DPI = 150
#: the formats of every figure advtrain writes: raster for screens and the report, vector for papers
FIGURE_FORMATS = ("png", "svg")


def new_figure(figsize=(4.2, 3.0)):
    """A matplotlib ``Figure`` on its own Agg canvas: no pyplot, no backend switch, so plotting
    from a notebook or a GUI session leaves the user's interpreter as it was."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def figure_bytes(fig, fmt: str = "png", dpi: int = FIGURE_DPI) -> bytes:
    """``fig`` as PNG (at ``dpi``) or SVG/PDF (vector) bytes, for the caller's atomic writer."""
    import io

    buf = io.BytesIO()
    meta = {"Date": None} if fmt == "svg" else {}  # the same figure gives the same bytes
    fig.savefig(buf, format=fmt, dpi=dpi, metadata=meta or None)
    return buf.getvalue()


def show_progress(requested: bool) -> bool:
    """Whether to draw a progress bar: asked for, and the bar's stream (stderr) is a terminal, or
    a notebook shows it. Redirected to a log file or in CI a bar would write thousands of
    carriage-return updates (megabytes per run); there the one line per epoch is the record."""
    import sys

    if not requested:
        return False
    try:
        if sys.stderr is not None and sys.stderr.isatty():
            return True
    except (AttributeError, ValueError):  # a closed or foreign stream
        return False
    return "ipykernel" in sys.modules  # tqdm.auto draws a widget there

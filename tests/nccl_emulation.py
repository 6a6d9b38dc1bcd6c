"""NCCL's device rule emulated on Gloo/CPU (a test helper, not a test module).

Under ``backend="nccl"`` a collective accepts only CUDA tensors; a CPU tensor fails at once with
"No backend type associated with device type cpu". On a machine without a GPU the run device is
the CPU, so a tensor built on the host by mistake (``torch.tensor([n])`` with no ``device=``) looks
exactly like one built on the run device. :class:`HostTracker` tells them apart: it is a
``TorchFunctionMode`` that marks every tensor which *would be on the host in a CUDA run*, and
:func:`checked_collectives` wraps the ``torch.distributed`` collectives so that a marked tensor
raises :class:`HostTensorInCollective` instead of entering the collective.

Which tensors are marked (the run device, ``torch.device("cpu")`` here, plays the GPU):

* made by a factory (``torch.tensor``, ``zeros``, ``arange``, ``frombuffer``, ...) with no
  ``device=`` or with ``device`` given as the *string* ``"cpu"`` — on a GPU run those are host
  tensors; a ``torch.device`` object (``self.device``, ``x.device``, ``collective_device()``) is
  taken to be the run device;
* ``t.cpu()`` and ``t.to("cpu")`` (string);
* the result of any other torch function whose tensor inputs are all marked (a host tensor stays on
  the host through ``.to(dtype)``, ``.clone()``, arithmetic, indexing, ...).

``t.to(<torch.device>)`` / ``t.to(other_tensor)`` unmarks the result (that is how data reaches the
GPU); an op with at least one unmarked tensor input gives an unmarked result (on a GPU it would run
there). In-place ops keep the mark of the tensor they modify. The rule errs towards *not* marking
(a ``torch.device("cpu")`` object or a ``torch.load`` result counts as on the device), so a failure
always names a real host tensor. DDP's own collectives run in C++ and are not checked (they use the
parameters' device, which is right on every backend).
"""
from __future__ import annotations

import contextlib
import sys
import traceback
import weakref

import torch
import torch.distributed as dist
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors
from torch.utils._pytree import tree_flatten

_FACTORIES = set(_device_constructors()) | {torch.frombuffer}

#: the tensor collectives of torch.distributed (positional/keyword tensors and lists of tensors)
COLLECTIVES = ("all_reduce", "broadcast", "reduce", "all_gather", "all_gather_into_tensor",
               "reduce_scatter", "reduce_scatter_tensor", "all_to_all", "all_to_all_single",
               "gather", "scatter", "send", "recv", "isend", "irecv")


class HostTensorInCollective(RuntimeError):
    """A tensor that would live on the host in a CUDA run entered a collective (NCCL refuses it)."""


class HostTracker(TorchFunctionMode):
    """Marks the tensors that would be on the host in a CUDA run (see the module doc)."""

    def __init__(self):
        super().__init__()
        self._host = {}
        self.origin = {}

    # -- the mark
    def is_host(self, t) -> bool:
        ref = self._host.get(id(t))
        return ref is not None and ref() is t

    def _mark(self, t) -> None:
        f = sys._getframe(2)  # the caller of the torch function (for the error message)
        self.origin[id(t)] = f"{f.f_code.co_filename}:{f.f_lineno}"
        key = id(t)
        self._host[key] = weakref.ref(t, lambda _r, k=key, h=self._host: h.pop(k, None)
                                      if h.get(k) is _r else None)

    def _unmark(self, t) -> None:
        self._host.pop(id(t), None)

    # -- the rule
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not isinstance(out, torch.Tensor):
            return out
        name = getattr(func, "__name__", "")
        if func in _FACTORIES and not (args and isinstance(args[0], torch.Tensor)):
            if _host_device(kwargs.get("device")):
                self._mark(out)
            return out
        if name == "cpu":
            return self._moved(args[0], out, host=True)
        if name == "to" or name == "cuda":
            target = _to_target(args[1:], kwargs)
            if isinstance(target, torch.Tensor):
                return self._moved(args[0], out, host=self.is_host(target))
            if target is not None:
                return self._moved(args[0], out, host=_host_device(target, explicit=True))
            # dtype-only conversion: same side as the input (the rule below)
        if name.endswith("_") and not name.endswith("__") or "out" in kwargs:
            return out  # in place: the modified tensor keeps its mark
        if name in ("__get__", "__set__"):
            return out  # attribute access (.grad, .data): an existing tensor keeps its mark
        tensors = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        if tensors and all(self.is_host(t) for t in tensors):
            self._mark(out)
        return out

    def _moved(self, src, out, host: bool):
        """The result of a device move; a no-op move returns a fresh view so ``src`` keeps its mark."""
        if out is src and self.is_host(src) != host:
            out = out.view_as(out)
        (self._mark if host else self._unmark)(out)
        return out

    def check(self, where: str, tensors) -> None:
        for t in tensors:
            if self.is_host(t):
                raise HostTensorInCollective(
                    f"dist.{where}: a host tensor (shape {tuple(t.shape)}, {t.dtype}) entered a "
                    f"collective; NCCL accepts only CUDA tensors. Made at {self.origin.get(id(t))}; called from:\n"
                    + "".join(traceback.format_stack(limit=8)[:-2]))


def _host_device(device, explicit: bool = False) -> bool:
    """A host device: none given (factories use the CPU default) or the *string* 'cpu'."""
    if device is None:
        return not explicit
    return isinstance(device, str) and device.split(":")[0] == "cpu"


def _to_target(args, kwargs):
    """The device (or tensor) a ``Tensor.to`` / ``Tensor.cuda`` call moves to; None for dtype-only."""
    if "device" in kwargs:
        return kwargs["device"]
    if "other" in kwargs:
        return kwargs["other"]
    for a in args:
        if isinstance(a, (str, torch.device, torch.Tensor)):
            return a
    return None


@contextlib.contextmanager
def checked_collectives():
    """Every ``torch.distributed`` tensor collective refuses host tensors; yields the tracker."""
    tracker = HostTracker()
    saved = {name: getattr(dist, name) for name in COLLECTIVES}

    def wrap(name, real):
        def collective(*args, **kwargs):
            flat = tree_flatten((args, kwargs))[0]
            tracker.check(name, [a for a in flat if isinstance(a, torch.Tensor)])
            return real(*args, **kwargs)
        return collective

    for name, real in saved.items():
        setattr(dist, name, wrap(name, real))
    try:
        with tracker:
            yield tracker
    finally:
        for name, real in saved.items():
            setattr(dist, name, real)

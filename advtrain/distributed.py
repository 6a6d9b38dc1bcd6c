"""Helpers for multi-process training and evaluation under ``torchrun`` (DDP).

``torchrun --nproc_per_node N -m advtrain train CONFIG`` starts N processes and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in each. :func:`init_from_env`
reads them and joins the process group (NCCL on CUDA, Gloo on CPU); without them every helper here is
a no-op, so single-process code paths need no ``if distributed`` branches::

    info = init_from_env(device)            # rank 0 of 1 when not under torchrun
    model = wrap_ddp(model.to(info.device), info.device, sync_bn=cfg.sync_bn)
    ...
    prior.end_epoch(reduce=all_reduce_sum_) # sums the class-prior accumulators over ranks
    if is_main(): save_checkpoint(...)
    cleanup()

Gradient averaging. DDP averages gradients over ranks: with the same number ``b`` of examples per
rank and a per-rank *mean* loss, ``(1/W) sum_r grad L_r = grad (1/(W b)) sum_i l_i``, i.e. exactly
the gradient of one process on the global batch of ``W b`` examples (what must match for this to
hold is listed in docs/DISTRIBUTED.md). Parameters trained outside the DDP wrapper (LBGAT's natural
model, a submodule of the objective) are averaged with :func:`average_grads_` after ``backward``.

Objects are exchanged as JSON (never pickled), so only JSON-serialisable values can be broadcast.
"""
from __future__ import annotations

import atexit
import gc
import json
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import torch
import torch.distributed as dist

from advtrain.errors import AdvtrainError, InputError

Tensors = Union[torch.Tensor, Sequence[torch.Tensor], Mapping[str, torch.Tensor]]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``, its ``local_rank`` and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: Optional[str]


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise InputError(f"environment variable {name}={value!r} is not an integer; "
                         "launch with torchrun or unset it") from None


def local_device(device: Union[str, torch.device], local_rank: int) -> torch.device:
    """The device of this rank: ``cuda`` becomes ``cuda:<local_rank>``; other devices unchanged."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", local_rank)
    return device


#: torchrun's variables that describe one process of a group (all set, or none)
LAUNCH_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
#: seconds a process waits at the rendezvous for the others (environment variable, default 600)
RENDEZVOUS_ENV = "ADVTRAIN_RENDEZVOUS_TIMEOUT"
RENDEZVOUS_DEFAULT_S = 600.0
MAX_WORLD = 1 << 16
_UNSET = "unset WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT for one process"


class RendezvousError(InputError):
    """This process could not meet the others: its own error, printed by every rank."""

    every_rank = True


def check_launch_env() -> None:
    """The launch environment as a whole, before any rendezvous: leftover or hand-set torchrun
    variables that cannot describe a process group are one line at once (a partial set would be a
    traceback from ``init_process_group``, an impossible one a wait until the timeout)."""
    given = {k: os.environ[k] for k in LAUNCH_VARS + ("LOCAL_WORLD_SIZE",)
             if os.environ.get(k) not in (None, "")}
    if not given:
        return
    num = {k: _env_int(k, 0) for k in given if k != "MASTER_ADDR"}
    world = num.get("WORLD_SIZE", 1)
    if not 1 <= world <= MAX_WORLD:
        raise InputError(f"WORLD_SIZE={world} must be in [1, {MAX_WORLD}]; launch with torchrun "
                         f"or {_UNSET}")
    if not launched():
        if num.get("RANK", 0) != 0 or num.get("LOCAL_RANK", 0) != 0:
            raise InputError(f"RANK={given.get('RANK', 0)} / LOCAL_RANK={given.get('LOCAL_RANK', 0)}"
                             f" but WORLD_SIZE={given.get('WORLD_SIZE', 'unset')} (one process); "
                             f"leftover torchrun variables: {_UNSET}")
        return
    missing = [k for k in LAUNCH_VARS if k not in given]
    if missing:
        shown = " ".join(f"{k}={given[k]}" for k in LAUNCH_VARS if k in given)
        raise InputError(f"{shown} but {', '.join(missing)} not set: a partial torchrun "
                         f"environment; launch with 'torchrun --nproc_per_node N -m advtrain ...' "
                         f"or {_UNSET}")
    rank, local = num["RANK"], num["LOCAL_RANK"]
    if not 0 <= rank < world:
        raise InputError(f"RANK={rank} is not in [0, WORLD_SIZE={world}); {_UNSET} or launch with "
                         "torchrun")
    if not 0 <= local <= rank:
        raise InputError(f"LOCAL_RANK={local} with RANK={rank}: a local rank is in [0, RANK]; "
                         f"{_UNSET} or launch with torchrun")
    if "LOCAL_WORLD_SIZE" in num and not local < num["LOCAL_WORLD_SIZE"] <= world:
        raise InputError(f"LOCAL_WORLD_SIZE={num['LOCAL_WORLD_SIZE']} with LOCAL_RANK={local} and "
                         f"WORLD_SIZE={world} is impossible; {_UNSET} or launch with torchrun")
    if not 1 <= num["MASTER_PORT"] <= 65535:
        raise InputError(f"MASTER_PORT={num['MASTER_PORT']} is not a TCP port (1-65535); "
                         f"{_UNSET} or launch with torchrun")


def rendezvous_timeout() -> float:
    """Seconds to wait for the other ranks at the rendezvous (``ADVTRAIN_RENDEZVOUS_TIMEOUT``)."""
    value = os.environ.get(RENDEZVOUS_ENV)
    if value in (None, ""):
        return RENDEZVOUS_DEFAULT_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not 1 <= seconds <= 86400:  # NaN fails too
        raise InputError(f"{RENDEZVOUS_ENV}={value!r} must be seconds in [1, 86400]")
    return seconds


def _rendezvous_store(rank: int, world: int):
    """The TCP store of a hand-set environment (no torchrun agent), created with the rendezvous
    timeout: a rank whose partners never come is one line after that, not a 30-minute wait."""
    import socket
    import time

    wait = rendezvous_timeout()
    addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    deadline = time.monotonic() + wait
    try:
        if rank != 0:  # wait for rank 0's store here: torch's client logs a C++ trace on timeout
            while True:
                try:
                    socket.create_connection((addr, port), timeout=1.0).close()
                    break
                except OSError:
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"nothing listens at {addr}:{port}") from None
                    time.sleep(0.2)
        left = max(1.0, deadline - time.monotonic())
        return dist.TCPStore(addr, port, world, rank == 0, timedelta(seconds=left),
                             multi_tenant=True)
    except (RuntimeError, OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise RendezvousError(f"rank {rank} of {world} did not meet the other ranks at {addr}:{port} "
                         f"within {wait:g} s ({first}); start all {world} processes (torchrun "
                         f"--nproc_per_node N -m advtrain ...) or {_UNSET}") from None


def init_from_env(device: Union[str, torch.device] = "cpu", *, init_method: Optional[str] = None,
                  timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group described by torchrun's environment; a no-op for one process.

    The environment is checked first (:func:`check_launch_env`). The backend is NCCL when
    ``device`` is CUDA, Gloo otherwise. Under torchrun the agent's rendezvous is used; a hand-set
    environment meets in a store that waits at most :func:`rendezvous_timeout` seconds. Calling it
    again after the group exists just returns the current :class:`DistInfo`.
    """
    check_launch_env()
    world = _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    dev = local_device(device, local_rank)
    if not launched():
        return DistInfo(0, 1, 0, dev, None)
    rank = _env_int("RANK", 0)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise InputError(f"device {str(device)!r} requested but CUDA is not available; "
                             "use run.device=cpu (Gloo) or a machine with GPUs")
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        timeout = timedelta(seconds=timeout_s)
        if init_method is None and "TORCHELASTIC_RUN_ID" not in os.environ:
            dist.init_process_group(backend, store=_rendezvous_store(rank, world), rank=rank,
                                    world_size=world, timeout=timeout)
        else:
            dist.init_process_group(backend, init_method=init_method or "env://", rank=rank,
                                    world_size=world, timeout=timeout)
        if not _EXIT_HOOK:
            _EXIT_HOOK.append(atexit.register(_cleanup_at_exit))
    return DistInfo(rank, world, local_rank, dev, backend)


def is_initialized() -> bool:
    """True when a process group with more than one member (or one started by torchrun) is active."""
    return dist.is_available() and dist.is_initialized() and (dist.get_world_size() > 1
                                                               or launched())


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """True on the process that logs and writes files (rank 0)."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if is_initialized():
        dev = collective_device()
        if dev.type == "cuda":  # NCCL: name the device instead of letting it guess from the rank
            dist.barrier(device_ids=[dev.index])
        else:
            dist.barrier()


def cleanup() -> None:
    """Leave the process group if one was joined, while the interpreter is fully alive.

    ``gc.collect()`` first: a trainer is a reference cycle that holds the DDP wrapper, whose reducer
    holds the process group, so ``destroy_process_group`` alone would leave the group's C++ worker
    threads to be torn down during interpreter finalisation (a rank that finished its work can then
    abort with "terminate called without an active exception", and torchrun reports a failed run).
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


_EXIT_HOOK: list = []  # the at-exit destroy, registered once per process


def _cleanup_at_exit() -> None:
    """Registered by :func:`init_from_env` for a Gloo group: destroy it before interpreter
    teardown. Not for NCCL: its destroy may wait for the other ranks, and a rank leaving on an error
    must exit, not wait (the CLI destroys an NCCL group itself after a command that succeeded)."""
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "gloo":
        cleanup()


def _as_list(tensors: Tensors) -> list:
    if isinstance(tensors, torch.Tensor):
        return [tensors]
    if isinstance(tensors, Mapping):
        return list(tensors.values())
    return list(tensors)


def all_reduce_sum_(tensors: Tensors) -> Tensors:
    """Sum tensors over ranks in place and return the argument (no-op for one process).

    Accepts a tensor, a sequence or a dict of tensors, so it can be passed as the ``reduce`` callable
    of ``ClassPrior.end_epoch`` / ``Objective.on_epoch_end``. Boolean tensors are summed as integers
    and written back as ``sum > 0`` (a logical or).
    """
    if not is_initialized():
        return tensors
    for t in _as_list(tensors):
        if t.dtype == torch.bool:
            buf = t.to(collective_device(), torch.int32)
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            t.copy_(buf > 0)
        else:
            _all_reduce_(t, dist.ReduceOp.SUM)
    return tensors


def collective_device() -> torch.device:
    """The device whose tensors the process group's collectives accept.

    ``cuda:<current device>`` under NCCL (it refuses CPU tensors: "No backend type associated with
    device type cpu"), the CPU under Gloo and when not distributed. Every collective of this
    package goes through a helper that builds its buffers there or copies them there and back.
    """
    if is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_reduce_(t: torch.Tensor, op) -> torch.Tensor:
    """``dist.all_reduce(t, op)`` in place, through a copy on :func:`collective_device` if needed."""
    dev = collective_device()
    if t.device == dev:
        dist.all_reduce(t, op=op)
        return t
    buf = t.to(dev)
    dist.all_reduce(buf, op=op)
    t.copy_(buf)
    return t


def all_reduce_scalar(value: float, op: str = "sum", dtype=torch.float64) -> float:
    """``value`` reduced over ranks (``op`` "sum", "max" or "min"); ``value`` itself for one process."""
    if not is_initialized():
        return value
    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
    t = torch.tensor([value], dtype=dtype, device=collective_device())
    dist.all_reduce(t, op=ops[op])
    return t.item()


def ranks_where(flag: bool) -> list:
    """The ranks on which ``flag`` is true, known on every rank (a collective: call it on all).

    Used for decisions that must be the same everywhere, e.g. skipping a batch whose loss is
    non-finite on one rank: a rank that skipped ``backward`` alone would leave the others waiting
    in DDP's gradient all-reduce. ``[0]`` or ``[]`` for one process.
    """
    if not is_initialized():
        return [0] if flag else []
    votes = torch.zeros(world_size(), dtype=torch.int32, device=collective_device())
    votes[rank()] = int(bool(flag))
    dist.all_reduce(votes, op=dist.ReduceOp.SUM)
    return [r for r, v in enumerate(votes.tolist()) if v]


def launch_rank() -> int:
    """torchrun's ``RANK`` (0 when not launched), known before the process group exists."""
    return _env_int("RANK", 0) if launched() else 0


def average_grads_(params: Iterable[torch.nn.Parameter]) -> None:
    """Replace each ``.grad`` by its mean over ranks (for parameters not wrapped in DDP).

    A parameter without a gradient on this rank contributes zeros, so every rank issues the same
    collectives in the same order.
    """
    if not is_initialized():
        return
    n = world_size()
    for p in params:
        if not p.requires_grad:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        _all_reduce_(p.grad, dist.ReduceOp.SUM)
        p.grad.div_(n)


def broadcast_object(obj: Any = None, src: int = 0) -> Any:
    """Rank ``src``'s JSON-serialisable ``obj`` on every rank (returned unchanged for one process)."""
    if not is_initialized():
        return obj
    dev = collective_device()  # NCCL: both tensors on this rank's GPU
    payload = json.dumps(obj).encode() if rank() == src else b""
    size = torch.tensor([len(payload)], dtype=torch.long, device=dev)
    dist.broadcast(size, src)
    buf = torch.zeros(int(size.item()), dtype=torch.uint8, device=dev)
    if rank() == src:
        buf.copy_(torch.frombuffer(bytearray(payload), dtype=torch.uint8).to(dev))
    dist.broadcast(buf, src)
    return json.loads(bytes(buf.cpu().tolist()).decode())


def wrap_ddp(model: torch.nn.Module, device: Union[str, torch.device], sync_bn: bool = False,
             **ddp_kwargs) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` when distributed, else ``model`` itself.

    ``sync_bn=True`` converts every BatchNorm to ``SyncBatchNorm`` first (statistics over the
    global batch; CUDA only — PyTorch's SyncBatchNorm has no CPU kernel). DDP broadcasts rank 0's
    parameters and buffers at construction, so load/resume weights before wrapping.
    """
    device = torch.device(device)
    if sync_bn and device.type != "cuda" and is_initialized():
        raise InputError("sync_bn=true needs CUDA (PyTorch's SyncBatchNorm has no CPU kernel); "
                         "set sync_bn=false for CPU/Gloo runs (each rank then normalises its "
                         "own slice of the batch)")
    if not is_initialized():
        return model
    if sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids, **ddp_kwargs)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DDP / DataParallel / ``torch.compile`` wrappers; ``model`` otherwise.

    Attacks and checkpoints use the unwrapped module: attacks only differentiate w.r.t. the input,
    and state-dict keys then carry no ``module.`` / ``_orig_mod.`` prefix.
    """
    while True:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, torch.nn.Module):
            model = model._orig_mod
        else:
            return model


def maybe_compile(model: torch.nn.Module, enabled: bool, device: Union[str, torch.device]):
    """``torch.compile(model)`` when ``enabled`` (config ``compile: true``), else ``model``.

    Refused on CPU: compilation there needs a C++ toolchain and gains little for these models.
    """
    if not enabled:
        return model
    if torch.device(device).type != "cuda":
        raise InputError("compile=true is only supported on CUDA devices; set compile=false on CPU")
    return torch.compile(model)


def launched() -> bool:
    """True when started by torchrun with more than one process (``WORLD_SIZE`` > 1), or by
    ``torchrun --nproc_per_node 1`` (one rank, but the DDP/NCCL code paths: bench/gpu_check.sh)."""
    world = _env_int("WORLD_SIZE", 1)
    return world > 1 or (world == 1 and "TORCHELASTIC_RUN_ID" in os.environ)


def local_rank() -> int:
    """torchrun's ``LOCAL_RANK`` (0 when not set)."""
    return _env_int("LOCAL_RANK", 0)


def per_rank_batch(global_batch: int) -> int:
    """Per-process batch size for a *global* ``data.batch_size`` (must divide evenly)."""
    n = world_size()
    if global_batch % n:
        raise InputError(f"data.batch_size={global_batch} is the global batch and must be divisible "
                         f"by the {n} processes; use a multiple of {n}")
    return global_batch // n


def all_reduce_mean_(tensors: Sequence[Optional[torch.Tensor]]) -> Sequence[Optional[torch.Tensor]]:
    """Average tensors over ranks in place (``None`` entries skipped: same on every rank)."""
    if is_initialized():
        n = world_size()
        for t in tensors:
            if t is not None:
                _all_reduce_(t, dist.ReduceOp.SUM)
                t.div_(n)
    return tensors


#: buffer names that hold BatchNorm running statistics (timm's ``distribute_bn`` selects by these)
BN_STATS = ("running_mean", "running_var")


def reduce_bn_stats_(model: torch.nn.Module, shadow: Optional[dict] = None) -> int:
    """All-reduce-mean of every BatchNorm running mean / variance of ``model`` (and of the same
    entries of an EMA ``shadow`` state dict) over the ranks, in place: ARES' ``dist_bn: reduce``
    (timm ``distribute_bn(model, world_size, reduce=True)``) after each epoch. Afterwards every rank
    holds the same buffers, so rank 0's epoch checkpoint is the state of every rank. Returns the
    number of tensors reduced (0 without a process group)."""
    if not is_initialized():
        return 0
    tensors = [b for name, b in unwrap(model).named_buffers() if name.rsplit(".", 1)[-1] in BN_STATS]
    if shadow:
        tensors += [v for k, v in sorted(shadow.items()) if k.rsplit(".", 1)[-1] in BN_STATS]
    all_reduce_mean_(tensors)
    return len(tensors)


def prepare_on_main(lead, follow):
    """Run ``lead()`` -> ``(cfg, run_dir, state)`` on rank 0, then ``follow(run_dir)`` elsewhere.

    Rank 0 creates (or checks) the run directory first, so the others never race it; a user error
    on rank 0 is re-raised on every rank instead of leaving them waiting.
    """
    if not is_initialized():
        return lead()
    result, message = None, None
    if is_main():
        try:
            result = lead()
        except AdvtrainError as e:
            message = str(e)
    shared = broadcast_object({"run_dir": result[1] if result else None, "error": message})
    if shared["error"] is not None:
        raise InputError(shared["error"])
    return result if is_main() else follow(shared["run_dir"])


def shard_range(n: int, world: Optional[int] = None, r: Optional[int] = None,
                align: int = 1) -> range:
    """Contiguous indices ``[start, stop)`` of the ``r``-th of ``world`` shards of ``n`` items.

    Shard boundaries are multiples of ``align`` (e.g. the evaluation batch size), so a shard is a
    union of whole batches of the single-process run; earlier shards get the extra blocks.
    """
    world = world_size() if world is None else world
    r = rank() if r is None else r
    if align < 1:
        raise InputError(f"align={align} must be >= 1")
    blocks = -(-n // align)
    per, extra = divmod(blocks, world)
    first = r * per + min(r, extra)
    last = first + per + (1 if r < extra else 0)
    return range(min(first * align, n), min(last * align, n))

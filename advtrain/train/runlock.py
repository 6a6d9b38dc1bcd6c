"""One ``advtrain train`` per run directory: an exclusive lock on ``RUN_DIR/train.lock``.

The lock is an ``fcntl.flock`` on that file, held from before the first write until training returns.
The kernel drops it when the holding process exits for any reason (crash, ``kill -9``), so a lock left
by a dead process is never honoured: the file stays behind, but it only locks while a live process
holds it. The holder's PID is written into the file for the message a second process prints::

    advtrain train: error: run directory runs/x is in use by another 'advtrain train' (pid 4242); ...
"""
from __future__ import annotations

import errno
import fcntl
import os
import warnings
from typing import Optional

from advtrain.errors import InputError

LOCK = "train.lock"
#: files a run directory holds before its first checkpoint (a new run may take such a directory over)
SETUP_FILES = ("config.yaml", LOCK)


class RunLock:
    """``RunLock(run_dir).acquire()`` or refuse with one line; ``release()`` (idempotent) frees it."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, LOCK)
        self.fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _pid_in(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise in_use_error(self.run_dir, holder) from None
            warnings.warn(f"{self.path}: cannot lock ({e.strerror}); nothing stops a second "
                          "'advtrain train' from writing this run directory", stacklevel=2)
            return self  # a file system without locks (some network mounts): run unlocked
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def holder(run_dir: str) -> Optional[int]:
    """PID of the live process holding ``run_dir``'s lock (0 if unknown), None when it is free."""
    try:
        fd = os.open(os.path.join(run_dir, LOCK), os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        return _pid_in(fd) if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES) else None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def in_use_error(run_dir: str, pid: Optional[int]) -> InputError:
    who = f" (pid {pid})" if pid else ""
    return InputError(f"run directory {run_dir} is in use by another 'advtrain train'{who}; wait for "
                      "it to finish or stop it, or choose another run.name / --run-dir")


def holds_run(run_dir: str) -> bool:
    """True when ``run_dir`` holds more than a run's setup files (a checkpoint, metrics, ...)."""
    if not os.path.isdir(run_dir):
        return False
    return any(name not in SETUP_FILES and not (name.startswith(".") and name.endswith(".tmp"))
               for name in os.listdir(run_dir))


def lock_new_run_dir(run_dir: str) -> RunLock:
    """Create ``run_dir`` and lock it for a new run; refuse if another run took it meanwhile."""
    os.makedirs(run_dir, exist_ok=True)
    lock = RunLock(run_dir).acquire()
    if holds_run(run_dir):
        lock.release()
        raise InputError(f"run directory {run_dir!r} already exists; continue it with --resume "
                         f"{run_dir}, or choose another run.name / --run-dir")
    return lock


def _pid_in(fd: int) -> int:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0

"""Shared pytest fixtures: offline, CPU, deterministic, small."""
from __future__ import annotations

import os
import sys

import pytest
import torch

os.environ.setdefault("ADVTRAIN_OFFLINE", "1")  # tests never touch the network

# A few test modules reuse a sibling folder's module-level helpers (e.g. tests/train/test_ddp_*.py
# take free_port/tiny_net from tests/core/test_distributed.py): make every test folder importable,
# so a file run alone finds them as well as the whole suite does. Test module names are unique.
_TESTS = os.path.dirname(os.path.abspath(__file__))
for _folder in sorted(os.listdir(_TESTS)):
    _path = os.path.join(_TESTS, _folder)
    if os.path.isdir(_path) and not _folder.startswith((".", "_")) and _path not in sys.path:
        sys.path.append(_path)

SHARED_CIFAR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10-jpeg")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def shared_cifar10_dir():
    """../shared/data/cifar10-jpeg when present (real CIFAR-10 images as npz), else skip."""
    if not os.path.isfile(os.path.join(SHARED_CIFAR, "test.npz")):
        pytest.skip("../shared/data/cifar10-jpeg not present")
    return os.path.abspath(SHARED_CIFAR)


@pytest.fixture(autouse=True, scope="session")
def _test_threads():
    """Intra-op threads per test process: ``ADVTRAIN_TEST_THREADS`` (default 1). One thread by
    default because the tensors here are tiny, and two threads per process oversubscribe the 2-core
    CI machine as soon as a test starts worker processes (DDP, CLI subprocesses);
    ``sh/test_matrix.sh`` also runs the suite with 2 to check no result depends on the count."""
    raw = os.environ.get("ADVTRAIN_TEST_THREADS", "1")
    if not raw.isdigit() or int(raw) < 1:
        raise pytest.UsageError(f"ADVTRAIN_TEST_THREADS={raw!r} must be a positive integer such as 1 or 2")
    threads = torch.get_num_threads()
    torch.set_num_threads(int(raw))
    yield
    torch.set_num_threads(threads)

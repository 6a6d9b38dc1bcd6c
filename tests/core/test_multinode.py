"""Two "nodes" on one machine: two torchrun agents (``--nnodes 2 --nproc_per_node 1 --rdzv_backend
c10d``, Gloo) train a timm model on an ImageFolder; one node is SIGKILLed mid-run and both resume
from the shared run directory to the weights of an uninterrupted two-node run (issue 18)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml

from advtrain.train import checkpoint as ck
from folder_helpers import folder_config
from trainer_helpers import states_equal

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")
LIMIT = 300  # seconds: a hung rendezvous fails the test instead of the suite


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _agents(cfg_path, run_dir, nodes_dir, resume=False):
    """Start the two torchrun agents (own sessions and working directories); returns the Popens."""
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", ADVTRAIN_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    args = ["--resume", str(run_dir)] if resume else [str(cfg_path), "--run-dir", str(run_dir)]
    procs = []
    for node in range(2):
        cwd = nodes_dir / f"node{node}"
        cwd.mkdir(parents=True, exist_ok=True)
        cmd = [TORCHRUN, "--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend", "c10d",
               "--rdzv_endpoint", f"localhost:{port}", "--rdzv_id", "advtrain-test", "--max_restarts", "0",
               "-m", "advtrain", "train", *args]
        procs.append(subprocess.Popen(cmd, cwd=cwd, env=env, start_new_session=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def _wait(procs, limit=LIMIT):
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=limit)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                _kill(q)
            pytest.fail(f"torchrun agents still running after {limit} s")
    return [p.returncode for p in procs], outs


def _descendants(pid: int) -> list:
    """Child processes of ``pid``, recursively (torchrun starts its workers in their own sessions)."""
    out = []
    for task in os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}/task") else []:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids = [int(k) for k in f.read().split()]
        except OSError:
            continue
        for kid in kids:
            out += [kid, *_descendants(kid)]
    return out


def _kill(p):
    """SIGKILL a node: its torchrun agent and every process it started."""
    if p.poll() is None:
        for pid in [*_descendants(p.pid), p.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    p.communicate()


@pytest.mark.slow
def test_two_node_torchrun_trains_and_resumes_after_a_node_is_killed(tmp_path):
    # a BatchNorm-free timm model: rank 1's BN running statistics are not in rank 0's checkpoint, so
    # a BN model resumes under DDP to slightly different weights (use sync_bn for exact resume)
    cfg = folder_config(tmp_path / "cfg", "trades", optim={"epochs": 3}, model={"arch": "timm:test_vit"},
                        data={"batch_size": 10, "test_subset": 4}, eval={"test_pgd_steps": 0})
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    ref_dir, run_dir = tmp_path / "shared" / "ref", tmp_path / "shared" / "run"

    codes, outs = _wait(_agents(cfg_path, ref_dir, tmp_path / "ref_nodes"))
    assert codes == [0, 0], outs[0][-3000:] + outs[1][-3000:]

    procs = _agents(cfg_path, run_dir, tmp_path / "run_nodes")
    deadline = time.time() + LIMIT
    while not (run_dir / "epoch_1.pt").exists() and time.time() < deadline and procs[1].poll() is None:
        time.sleep(0.05)
    _kill(procs[1])  # node 1 dies (agent and its worker); node 0 must fail instead of hanging
    codes, _ = _wait(procs[:1], limit=120)
    assert codes[0] != 0
    stopped = ck.load(os.path.join(run_dir, "last.pt"))["epoch"]
    assert 1 <= stopped < 3

    codes, outs = _wait(_agents(None, run_dir, tmp_path / "resume_nodes", resume=True))
    assert codes == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    ref, got = ck.load(os.path.join(ref_dir, "last.pt")), ck.load(os.path.join(run_dir, "last.pt"))
    assert got["epoch"] == ref["epoch"] == 3
    assert states_equal(ref["model"], got["model"])
    # one writer, on the shared path: nothing lands in either node's working directory
    for nodes in ("ref_nodes", "run_nodes", "resume_nodes"):
        assert not any(f for _, _, f in os.walk(tmp_path / nodes))

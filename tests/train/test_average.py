"""Post-hoc per-epoch average (SPEC 5.4): equals the direct formula; CLI; refusals."""
from __future__ import annotations

import os

import pytest
import torch

from advtrain.train import checkpoint as ck
from advtrain.cli import main
from advtrain.errors import InputError
from advtrain.train.average import average_path, average_run, average_states


def _fake_run(folder, epochs=4):
    """epoch_{e}.pt with random float weights, a float64 entry and an integer counter."""
    gen = torch.Generator().manual_seed(0)
    states = []
    for e in range(1, epochs + 1):
        sd = {"w": torch.randn(3, 4, generator=gen), "bn.running_var": torch.rand(4, generator=gen),
              "d": torch.randn(2, generator=gen, dtype=torch.float64),
              "bn.num_batches_tracked": torch.tensor(10 * e)}
        ck.save({"model": sd, "arch": "wrn-10-1", "dataset": "cifar10", "num_classes": 10,
                 "config": {"x": 1}, "optimizer": {}, "epoch": e}, ck.epoch_path(folder, e))
        states.append(sd)
    return states


@pytest.mark.parametrize("tau,start,end", [(0.9, 1, 4), (0.5, 2, 4), (0.0, 1, 3), (0.9, 3, 3)])
def test_average_equals_direct_formula(tmp_path, tau, start, end):
    states = _fake_run(tmp_path)
    out = average_run(str(tmp_path), tau=tau, start=start, end=end)
    assert out == average_path(str(tmp_path), tau, start, end)
    assert os.path.basename(out) == f"average_tau{tau:g}_{start}_{end}.pt"
    got = torch.load(out, weights_only=True)
    for key in ("w", "bn.running_var", "d"):
        direct = tau ** (end - start) * states[start - 1][key].double()
        for i in range(start + 1, end + 1):
            direct = direct + (1 - tau) * tau ** (end - i) * states[i - 1][key].double()
        assert got["model"][key].dtype == states[0][key].dtype
        assert torch.allclose(got["model"][key].double(), direct, atol=1e-6, rtol=1e-6), key
    assert int(got["model"]["bn.num_batches_tracked"]) == 10 * end  # integers from the last epoch
    assert got["model"]["bn.num_batches_tracked"].dtype == torch.long
    assert (got["arch"], got["dataset"], got["num_classes"]) == ("wrn-10-1", "cifar10", 10)
    assert got["average"] == {"tau": tau, "start": start, "end": end, "source": "model"}
    assert "optimizer" not in got


def test_average_states_tau_zero_is_last():
    a = {"w": torch.ones(2)}
    b = {"w": torch.full((2,), 3.0)}
    assert torch.equal(average_states([a, b], 0.0)["w"], b["w"])


def test_average_cli_default_end_and_errors(tmp_path, capsys):
    _fake_run(tmp_path, epochs=3)
    assert main(["average", str(tmp_path), "--tau", "0.9"]) == 0
    assert os.path.isfile(os.path.join(tmp_path, "average_tau0.9_1_3.pt"))
    assert "wrote" in capsys.readouterr().out
    assert main(["average", str(tmp_path), "--end", "5"]) == 2
    assert "missing [4, 5]" in capsys.readouterr().err
    with pytest.raises(InputError, match="tau"):
        average_run(str(tmp_path), tau=1.0)
    with pytest.raises(InputError, match="not found"):
        average_run(str(tmp_path / "nope"))

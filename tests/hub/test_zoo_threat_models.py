"""RobustBench's threat models against advtrain's: the zoo tables are the norms RobustBench's own
``ThreatModel`` enum has (no L1: no leaderboard, no table); an L1 model exports in advtrain's own
hub format, and ``--format robustbench --threat-model L1`` is one line that writes nothing."""
from __future__ import annotations

import json

import pytest
import torch

from advtrain.cli import main
from advtrain.hub import zoo
from advtrain.models import create_model
from attacks import NORMS


def test_zoo_threat_models_are_robustbenchs_norms():
    from robustbench.model_zoo.enums import ThreatModel

    theirs = {t.value for t in ThreatModel}
    assert zoo.ZOO_THREAT_MODELS == tuple(n for n in NORMS if n in theirs)
    assert zoo.NO_LEADERBOARD == tuple(n for n in NORMS if n not in theirs) == ("L1",)


def _ckpt(tmp_path):
    torch.manual_seed(0)
    model = create_model("wrn-10-1", dataset="cifar10")
    path = tmp_path / "tiny.pt"
    torch.save({"model": model.state_dict(), "ema": None, "arch": "wrn-10-1", "dataset": "cifar10",
                "num_classes": 10, "config": {}}, path)
    return path


def test_l1_robustbench_export_is_refused_and_hub_export_works(tmp_path, capsys):
    ckpt = _ckpt(tmp_path)
    rc = main(["export", str(ckpt), "--name", "Me2026Tiny_WRN-10-1", "--dataset", "cifar10",
               "--threat-model", "L1", "--model-dir", str(tmp_path / "checkpoints")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "RobustBench has no L1 threat model" in err and "--format hub" in err
    assert not (tmp_path / "checkpoints").exists()
    out = tmp_path / "hub"
    rc = main(["export", str(ckpt), "--name", "Me2026Tiny_WRN-10-1", "--dataset", "cifar10",
               "--threat-model", "L1", "--format", "hub", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert "(L1 threat model)" in (out / "README.md").read_text()
    assert json.loads((out / "config.json").read_text())["arch"] == "wrn-10-1"


def test_l1_zoo_model_is_one_line(tmp_path):
    from advtrain.errors import InputError
    from advtrain.hub.loader import load_zoo

    with pytest.raises(InputError, match="RobustBench has no L1 threat model") as e:
        load_zoo("Me2026Tiny_WRN-10-1", dataset="cifar10", threat_model="L1", model_dir=tmp_path)
    assert "\n" not in str(e.value)

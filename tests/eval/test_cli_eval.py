"""``advtrain eval`` / ``advtrain export`` end to end: tiny checkpoint, generated npz data."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from advtrain.cli import main
from advtrain.models import create_model

REPO = Path(__file__).resolve().parents[2]
N = 8


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A trainer-format wrn-10-1 checkpoint and an npz whose labels are its predictions."""
    tmp = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    model = create_model("wrn-10-1", dataset="cifar10").eval()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(N, 32, 32, 3), dtype=np.uint8)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        labels = model(x).argmax(1).numpy()
    np.savez(tmp / "test.npz", image=images, label=labels)
    ckpt = {"model": model.state_dict(), "ema": None, "arch": "wrn-10-1", "dataset": "cifar10",
            "num_classes": 10, "config": {}}
    torch.save(ckpt, tmp / "tiny.pt")
    torch.save(create_model("wrn-10-1", dataset="cifar100").state_dict(), tmp / "c100.pt")
    return tmp


def fast_args(tmp):
    return ["--dataset", "cifar10", "--data-npz", str(tmp / "test.npz"), "--n-ex", str(N),
            "--version", "custom", "--attacks", "apgd-ce", "--n-iter", "2", "--batch-size",
            str(N), "--sanity-n", "4", "--sanity-steps", "1", "--quiet", "--out",
            str(tmp / "model_info")]


def test_eval_in_process_writes_card_and_sidecar(setup, capsys):
    from robustbench.utils import ModelInfo

    from advtrain.io.safeload import file_sha256

    rc = main(["eval", str(setup / "tiny.pt"), *fast_args(setup), "--name", "Tiny_WRN-10-1",
               "--save-adv", str(setup / "adv.pt"), "--pgd-steps", "1", "--title", "A Title",
               "--venue", "NeurIPS 2024"])
    out = capsys.readouterr().out
    assert rc == 0, out
    card = setup / "model_info" / "cifar10" / "Linf" / "Tiny_WRN-10-1.json"
    assert f"card: {card}" in out and "clean 100.00%" in out
    data = json.loads(card.read_text())
    assert data.pop("unreliable") is False  # RobustBench's own cards carry it; ModelInfo does not
    info = ModelInfo(**data)
    assert info.clean_acc == "100.00" and info.eps == "8/255"
    assert info.architecture == "WideResNet-10-1"
    assert (info.name, info.venue, info.additional_data) == ("A Title", "NeurIPS 2024", False)
    side = json.loads(card.with_suffix(".advtrain.json").read_text())
    assert side["checkpoint"]["sha256"] == file_sha256(setup / "tiny.pt")
    assert side["n_ex"] == N and side["seed"] == 0 and side["arch"] == "wrn-10-1"
    assert float(info.autoattack_acc) == pytest.approx(100 * side["robust_acc"], abs=0.006)
    assert set(side["sanity"]["pgd"]) == {"pgd-1", "pgd-2", "pgd-1x2"} and side["pgd_steps"] == 1
    # 8 images cannot cover 10 classes: said in the sidecar (issue 16.7), not an attack problem
    assert [f["code"] for f in side["flags"]] == ["partial-classes"]
    assert side["data"]["classes_seen"] == len(set(side_labels(setup))) < 10
    assert side["data"]["source"] == "npz" and side["data"]["test_images"] == N
    assert side["data"]["sha256"] == file_sha256(setup / "test.npz")
    adv = torch.load(setup / "adv.pt", weights_only=True)
    assert adv["x_adv"].shape == (N, 3, 32, 32) and adv["y_adv"].shape == (N,)


def side_labels(setup):
    return np.load(setup / "test.npz")["label"].tolist()


def test_eval_subprocess(setup):
    cmd = [sys.executable, "-m", "advtrain", "eval", str(setup / "tiny.pt"), *fast_args(setup),
           "--name", "Sub", "--no-sanity", "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "ADVTRAIN_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    side = json.loads((setup / "model_info/cifar10/Linf/Sub.advtrain.json").read_text())
    assert "-m advtrain eval" not in side["command"] and "--name Sub" in side["command"]


def one_line_error(capsys, argv, needle):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert needle in err, err
    return err


@pytest.mark.parametrize("extra, needle", [
    (["--eps", "eight"], "invalid eps"),
    (["--eps", "-0.1"], "outside [0, 1]"),
    (["--eps", "8"], "outside [0, 1]"),
    (["--n-ex", "100"], "8 images"),
    (["--version", "fast"], "choices: custom, plus, rand, standard"),
    (["--norm", "Linf2"], "did you mean 'Linf'"),
    (["--arch", "wrn-16-1"], "missing keys"),
])
def test_eval_bad_inputs_one_line(setup, capsys, extra, needle):
    one_line_error(capsys, ["eval", str(setup / "tiny.pt"), *fast_args(setup), *extra], needle)


def test_eval_wrong_num_classes_names_shapes(setup, capsys):
    err = one_line_error(capsys, ["eval", str(setup / "c100.pt"), *fast_args(setup), "--arch",
                                  "wrn-10-1"], "shape")
    assert "(100, 64)" in err or "100" in err


def test_eval_missing_zoo_checkpoint(setup, capsys):
    one_line_error(capsys, ["eval", "--robustbench-name", "Cui2023Decoupled_WRN-34-10",
                            "--model-dir", str(setup / "zoo"), *fast_args(setup)],
                   "downloading is not attempted")


class Payload:
    """Unpickling this object would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


@pytest.mark.parametrize("cmd", ["eval", "export"])
def test_pickled_checkpoint_refused(setup, capsys, tmp_path, cmd):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": Payload(marker)}, evil)
    if cmd == "eval":
        argv = ["eval", str(evil), *fast_args(setup)]
    else:
        argv = ["export", str(evil), "--name", "X", "--dataset", "cifar10", "--model-dir",
                str(tmp_path / "zoo"), "--arch", "wrn-10-1"]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not marker.exists()


def test_export_cli_non_zoo_and_safetensors(setup, capsys, tmp_path):
    rc = main(["export", str(setup / "tiny.pt"), "--name", "Tiny_WRN-10-1", "--dataset",
               "cifar10", "--model-dir", str(tmp_path), "--safetensors"])
    out = capsys.readouterr().out
    assert rc == 0 and "not in RobustBench" in out
    pt = tmp_path / "cifar10" / "Linf" / "Tiny_WRN-10-1.pt"
    sd = torch.load(pt, weights_only=True)
    ref = torch.load(setup / "tiny.pt", weights_only=True)["model"]
    assert all(torch.equal(sd[k], v) for k, v in ref.items()) and set(sd) == set(ref)
    assert pt.with_suffix(".safetensors").is_file()


def test_eval_script_usage():
    proc = subprocess.run(["bash", str(REPO / "sh" / "eval_autoattack.sh")], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "usage:" in proc.stderr


def test_eval_robustbench_name_uses_local_file(setup, capsys, monkeypatch, tmp_path):
    """--robustbench-name: zoo constructor + <model_dir>/<dataset>/Linf/<name>.pt, no download."""
    from advtrain.hub import zoo as zoo

    name = "Fake2026Tiny_WRN-10-1"
    entry = {"model": lambda: create_model("wrn-10-1", dataset="cifar10"), "gdrive_id": "none"}
    monkeypatch.setattr(zoo, "zoo_entry", lambda n, d, t: entry if n == name else None)
    path = tmp_path / "cifar10" / "Linf" / f"{name}.pt"
    path.parent.mkdir(parents=True)
    ref = torch.load(setup / "tiny.pt", weights_only=True)["model"]
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.items()}}, path)
    rc = main(["eval", "--robustbench-name", name, "--model-dir", str(tmp_path),
               *fast_args(setup), "--no-sanity"])
    assert rc == 0, capsys.readouterr().err
    card = json.loads((setup / "model_info/cifar10/Linf" / f"{name}.json").read_text())
    assert card["architecture"] == "WideResNet-10-1" and card["clean_acc"] == "100.00"


def test_eval_defaults_to_the_test_data_of_the_training_config(setup, capsys, monkeypatch):
    """No --data-root/--data-npz: the checkpoint's config.data.test_npz is used (sh/ scripts)."""
    monkeypatch.setenv("ADVTRAIN_OFFLINE", "1")
    monkeypatch.delenv("ADVTRAIN_DATA", raising=False)
    ckpt = torch.load(setup / "tiny.pt", weights_only=True)
    ckpt["config"] = {"data": {"root": None, "test_npz": str(setup / "test.npz")}}
    torch.save(ckpt, setup / "with_config.pt")
    args = fast_args(setup)
    i = args.index("--data-npz")
    del args[i:i + 2]
    rc = main(["eval", str(setup / "with_config.pt"), *args, "--name", "FromConfig", "--no-sanity",
               "--subset", "random"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert f"test data from the checkpoint's training config: {setup / 'test.npz'}" in cap.err
    side = json.loads((setup / "model_info" / "cifar10" / "Linf" / "FromConfig.advtrain.json")
                      .read_text())
    assert side["n_ex"] == N and side["clean_acc"] == 1.0   # labels are the model's predictions
    # a plain state_dict records nothing: without data, the one-line offline error
    rc = main(["eval", str(setup / "c100.pt"), "--dataset", "cifar100", "--arch",
               "wrn-10-1", "--name", "NoData", "--no-sanity", "--quiet"])
    assert rc == 2 and "no local cifar100 test data" in capsys.readouterr().err


def test_own_export_by_name_and_by_file_without_arch(setup, capsys, tmp_path):
    """Issue 19.2: right after ``advtrain export``, eval by --robustbench-name and by file work
    (the export's sidecar records the architecture), as the distillation teacher does."""
    ck = tmp_path / "ck"
    name = "Me2026Own_WRN-10-1"
    assert main(["export", str(setup / "tiny.pt"), "--name", name, "--dataset", "cifar10",
                 "--model-dir", str(ck)]) == 0
    capsys.readouterr()
    rc = main(["eval", "--robustbench-name", name, "--model-dir", str(ck), *fast_args(setup),
               "--no-sanity"])
    assert rc == 0, capsys.readouterr().err
    card = json.loads((setup / "model_info/cifar10/Linf" / f"{name}.json").read_text())
    assert card["architecture"] == "WideResNet-10-1" and card["clean_acc"] == "100.00"
    rc = main(["eval", str(ck / "cifar10" / "Linf" / f"{name}.pt"), *fast_args(setup),
               "--no-sanity", "--name", "ByFile"])
    assert rc == 0, capsys.readouterr().err
    side = json.loads((setup / "model_info/cifar10/Linf/ByFile.advtrain.json").read_text())
    assert side["arch"] == "wrn-10-1" and side["clean_acc"] == 1.0


def test_arch_accepts_parsed_wrn_names_and_lists_them(setup, capsys):
    """--arch takes the registry's names and its wrn-D-W patterns; a bad one lists both."""
    rc = main(["eval", str(setup / "tiny.pt"), *fast_args(setup), "--no-sanity", "--arch",
               "wrn-10-1", "--name", "ArchGiven"])
    assert rc == 0, capsys.readouterr().err
    err = one_line_error(capsys, ["eval", str(setup / "tiny.pt"), *fast_args(setup), "--arch",
                                  "wideresnet"], "unknown model 'wideresnet'")
    assert "wrn-<depth>-<width>" in err and "wrn-34-10" in err
    assert "wrn-<depth>-<width>" in subprocess.run(
        [sys.executable, "-m", "advtrain", "eval", "--help"], capture_output=True, text=True,
        cwd=REPO).stdout


def test_bad_choice_is_one_line_with_did_you_mean():
    """Issue 19.4: ``eval --dataset cifar-10`` prints one line, not the usage block."""
    proc = subprocess.run([sys.executable, "-m", "advtrain", "eval", "x.pt", "--dataset",
                           "cifar-10"], capture_output=True, text=True, cwd=REPO)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "did you mean 'cifar10'" in lines[0] and "usage:" not in proc.stderr


def test_eps_as_typed_is_kept_with_a_note(setup, capsys):
    """Issue 19.3: --eps 0.031 is evaluated as 0.031, said in one line not to be 8/255."""
    rc = main(["eval", str(setup / "tiny.pt"), *fast_args(setup), "--no-sanity", "--eps", "0.031",
               "--name", "Eps031"])
    err = capsys.readouterr().err
    assert rc == 0 and "eps 0.031 is not 8/255 (0.03137)" in err
    card = json.loads((setup / "model_info/cifar10/Linf/Eps031.json").read_text())
    side = json.loads((setup / "model_info/cifar10/Linf/Eps031.advtrain.json").read_text())
    assert card["eps"] == "0.031" and side["eps"] == 0.031


def test_best_pt_evaluates_the_weights_it_was_chosen_on(setup, capsys, tmp_path):
    """Issue 16.7: best.pt scored with EMA -> eval uses its EMA weights by default, and says so."""
    ref = torch.load(setup / "tiny.pt", weights_only=True)
    ema = {k: (v * 0 if k.endswith("fc.weight") else v) for k, v in ref["model"].items()}
    best = dict(ref, ema=ema, best={"epoch": 1, "weights": "ema", "holdout_pgd": 0.1})
    torch.save(best, tmp_path / "best.pt")
    rc = main(["eval", str(tmp_path / "best.pt"), *fast_args(setup), "--no-sanity", "--name",
               "BestEma"])
    err = capsys.readouterr().err
    assert rc == 0 and "chosen on its EMA weights" in err
    side = json.loads((setup / "model_info/cifar10/Linf/BestEma.advtrain.json").read_text())
    assert side["weights"] == "ema" and side["clean_acc"] < 1.0  # fc zeroed: not the raw model
    rc = main(["eval", str(tmp_path / "best.pt"), *fast_args(setup), "--no-sanity", "--name",
               "BestRaw", "--weights", "model"])
    assert rc == 0
    side = json.loads((setup / "model_info/cifar10/Linf/BestRaw.advtrain.json").read_text())
    assert side["weights"] == "model" and side["clean_acc"] == 1.0


def test_data_provenance_flags(setup, capsys, tmp_path):
    """Issue 16.7: evaluating a checkpoint on its own training file, or a run that trained on its
    test file, is flagged in the sidecar (not only on stderr); the card stays 'unreliable': false."""
    ckpt = torch.load(setup / "tiny.pt", weights_only=True)
    npz = str(setup / "test.npz")
    ckpt["config"] = {"data": {"root": None, "train_npz": npz, "test_npz": npz}}
    torch.save(ckpt, tmp_path / "on_test.pt")
    rc = main(["eval", str(tmp_path / "on_test.pt"), *fast_args(setup), "--no-sanity", "--name",
               "OnTest"])
    assert rc == 0, capsys.readouterr().err
    side = json.loads((setup / "model_info/cifar10/Linf/OnTest.advtrain.json").read_text())
    codes = [f["code"] for f in side["flags"]]
    assert codes == ["eval-on-train-images", "trained-on-test-images", "partial-classes"]
    card = json.loads((setup / "model_info/cifar10/Linf/OnTest.json").read_text())
    assert card["unreliable"] is False

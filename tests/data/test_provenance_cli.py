"""Issue 16.7 "where the numbers came from", through the command line: the card's sidecar names the
distillation teacher (file and SHA-256) a checkpoint records; ``train --resume`` refuses a teacher
file that changed; ``eval RUN/best.pt`` says which weights it evaluated and of which file; two
``advtrain average`` runs whose settings differ only past ``:g`` write two files.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/: shared helpers
from helpers import snapshot  # noqa: E402
from trainer_helpers import one_thread, tiny_config  # noqa: E402


def cli(argv) -> tuple:
    """``(exit status, stdout, stderr)`` of ``advtrain ARGV`` run in-process."""
    from advtrain.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), one_thread():
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """(run directory stopped after epoch 1 of a gkl_kd run, its teacher file)."""
    from advtrain.models import create_model
    from advtrain.train.loop import fit

    root = tmp_path_factory.mktemp("distilled")
    teacher = root / "teacher.pt"
    torch.manual_seed(3)
    torch.save(create_model("wrn-10-1", dataset="cifar10").state_dict(), teacher)
    raw = tiny_config(str(root), objective={"name": "gkl_kd"},
                      teacher={"checkpoint": str(teacher), "arch": "wrn-10-1"})
    with one_thread():
        run = fit(raw, run_dir=str(root / "run"), stop_after=1)
    return Path(run), teacher


def _eval(ckpt, out, name, *extra):
    return ["eval", ckpt, "--dataset", "cifar10", "--n-ex", "8", "--version", "custom", "--attacks", "apgd-ce",
            "--n-iter", "1", "--batch-size", "8", "--no-sanity", "--quiet", "--device", "cpu",
            "--out", out, "--name", name, *extra]


def _sidecar(out, name) -> dict:
    return json.loads((Path(out) / "cifar10" / "Linf" / f"{name}.advtrain.json").read_text())


def test_sidecar_names_the_teacher_of_a_distilled_checkpoint(distilled, tmp_path):
    run, teacher = distilled
    rc, _, err = cli(_eval(run / "last.pt", tmp_path, "Distilled"))  # data from the run's config
    assert rc == 0, err
    side = _sidecar(tmp_path, "Distilled")
    # as every path of a sidecar: relative to the card's folder or the file name (issue 24.5)
    card_dir = Path(tmp_path) / "cifar10" / "Linf"
    rel = os.path.relpath(teacher, card_dir)
    expected = rel if rel.split(os.sep).count("..") <= 3 else os.path.basename(teacher)
    assert side["teacher"] == {"file": expected, "sha256": sha256(teacher)}
    assert side["checkpoint"]["sha256"] == sha256(run / "last.pt")


def test_sidecar_of_a_checkpoint_without_teacher_says_none(tmp_path):
    from helpers import make_npz, tiny_checkpoint

    ckpt, npz = tiny_checkpoint(tmp_path / "plain.pt"), make_npz(tmp_path / "t.npz")
    rc, _, err = cli(_eval(ckpt, tmp_path, "Plain", "--data-npz", npz))
    assert rc == 0, err
    assert _sidecar(tmp_path, "Plain")["teacher"] is None


def test_resume_through_the_cli_refuses_a_changed_teacher_even_with_force(distilled, tmp_path):
    from advtrain.models import create_model

    src_run, src_teacher = distilled
    run = tmp_path / "run"
    shutil.copytree(src_run, run)
    original = src_teacher.read_bytes()
    torch.manual_seed(4)  # another initialisation: another teacher in the same file
    torch.save(create_model("wrn-10-1", dataset="cifar10").state_dict(), src_teacher)
    try:
        before = snapshot(run)
        for extra in ([], ["--force"]):
            rc, _, err = cli(["train", "--resume", run, *extra])
            lines = [ln for ln in err.splitlines() if ln.startswith("advtrain ")]
            assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
            assert f"the teacher file {src_teacher} changed since the run started" in lines[0]
            assert snapshot(run) == {k: v for k, v in before.items()}  # nothing trained/written
    finally:
        src_teacher.write_bytes(original)
    rc, _, err = cli(["train", "--resume", run])  # the original teacher back: the run finishes
    assert rc == 0, err
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 2


def test_eval_of_a_real_best_pt_says_which_weights_and_file(tmp_path):
    from advtrain.train.loop import fit

    raw = tiny_config(str(tmp_path), data={"holdout": 4}, ema={"enabled": True, "decay": 0.5},
                      optim={"epochs": 1},
                      eval={"test_pgd_steps": 1, "holdout_every": 1, "holdout_pgd_steps": 1})
    with one_thread():
        run = Path(fit(raw, run_dir=str(tmp_path / "run")))
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["best"]["weights"] == "ema"  # scored on EMA weights: eval must use those
    rc, _, err = cli(_eval(run / "best.pt", tmp_path / "cards", "Best"))
    assert rc == 0, err
    assert "chosen on its EMA weights" in err
    side = _sidecar(tmp_path / "cards", "Best")
    assert side["weights"] == "ema" and side["checkpoint"]["sha256"] == sha256(run / "best.pt")


def test_two_averages_whose_tau_print_alike_do_not_replace_each_other(distilled, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(distilled[0], run)
    rc, out_a, err = cli(["average", run, "--tau", "0.9", "--end", "1"])
    assert rc == 0, err
    first = {p.name: sha256(p) for p in run.glob("average_*.pt")}
    rc, out_b, err = cli(["average", run, "--tau", "0.9000001", "--end", "1"])
    assert rc == 0, err
    assert f"{0.9000001:g}" == f"{0.9:g}"  # the reason the name needs more than :g
    names = sorted(p.name for p in run.glob("average_*.pt"))
    assert len(names) == 2 and out_a.split("wrote ")[1] != out_b.split("wrote ")[1]
    assert {k: sha256(run / k) for k in first} == first  # the first average is untouched
    for out, tau in ((out_a, 0.9), (out_b, 0.9000001)):
        written = out.split("wrote ")[1].strip()
        assert torch.load(written, weights_only=True)["average"]["tau"] == tau


def test_report_marks_a_sidecar_without_a_true_verdict_partial(tmp_path):
    """``full_standard: "no"`` (text, truthy) is not advtrain's verdict: the row is partial, never
    shown as a full standard evaluation."""
    folder = tmp_path / "mi" / "cifar10" / "Linf"
    folder.mkdir(parents=True)
    for name, verdict in (("Text", "no"), ("Real", True)):
        (folder / f"{name}.json").write_text(json.dumps({"clean_acc": "90.00",
                                                         "autoattack_acc": "50.00"}))
        (folder / f"{name}.advtrain.json").write_text(json.dumps({"full_standard": verdict}))
    rc, _, err = cli(["report", tmp_path / "mi"])
    assert rc == 0, err
    rows = {ln.split("|")[1].strip(): ln for ln in (tmp_path / "mi" / "report.md").read_text()
            .splitlines() if ln.startswith("| Text") or ln.startswith("| Real")}
    assert rows["Text"].rstrip(" |").replace("\\:", ":").endswith("partial: not full standard")
    assert rows["Real"].rstrip(" |").endswith("full")

"""One loader for every model file: teacher, eval, export, average and resume get the same bad files
and give the same one-line refusal (issue 15 "Done when", issue 16 point 1).

Each bad file is a trainer-format checkpoint (so every entry point accepts its form) carrying one
defect: a pickled payload, a NaN weight, a float weight stored as integers, or a recorded
architecture far too large to build (built for real, WRN-1000-100 would need ~500 GB: the loader
must compare shapes on the meta device first; those cases run the CLI as a subprocess under a 6 GB
address-space limit, so a regression fails instead of exhausting the machine). A bad ``.advtrain.json`` sidecar is fed to
the entry points that read sidecars (teacher, eval, export; average and resume never read one).
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/: shared helpers
from helpers import make_npz, write_pickle_bomb  # noqa: E402
from trainer_helpers import tiny_config  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
HUGE = "wrn-1000-100"


def _trainer_ckpt(path: Path, *, arch="wrn-10-1", edit=None) -> Path:
    from advtrain.train.checkpoint import FORMAT
    from advtrain.models import create_model

    sd = create_model("wrn-10-1", dataset="cifar10").state_dict()
    if edit is not None:
        edit(sd)
    torch.save({"format": FORMAT, "model": sd, "arch": arch, "dataset": "cifar10",
                "num_classes": 10, "epoch": 1}, path)
    return path


def _nan(sd):
    sd["conv1.weight"][0, 0, 0, 0] = float("nan")


def _int(sd):
    sd["conv1.weight"] = sd["conv1.weight"].round().long()


def _bomb(path: Path) -> Path:
    from advtrain.train.checkpoint import FORMAT

    return write_pickle_bomb(path, path.with_name("PWNED"), wrap=lambda p: {
        "format": FORMAT, "model": {"conv1.weight": torch.zeros(1)}, "arch": "wrn-10-1",
        "evil": p})


#: bad file -> (maker, the clause every entry point's one line must contain)
BAD = {
    "pickle": (_bomb, "refused to load: the file contains pickled Python objects"),
    "nan": (lambda p: _trainer_ckpt(p, edit=_nan), "model.conv1.weight holds 1 NaN/Inf values"),
    "int-stored": (lambda p: _trainer_ckpt(p, edit=_int),
                   "conv1.weight is stored as torch.int64 but the model's is torch.float32"),
    "huge-arch": (lambda p: _trainer_ckpt(p, arch=HUGE), f"does not fit {HUGE}"),
}


def _limit_memory():  # a regression that builds the huge architecture fails instead of swapping
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))


def cli(argv, cwd, sub: bool = False) -> tuple:
    """(exit status, the ``advtrain ...`` lines, stderr); in-process unless ``sub`` (a real
    subprocess under a 6 GB address-space limit, for the huge architecture)."""
    if not sub:
        import contextlib
        import io

        from advtrain.cli import main

        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(argv)
        text = err.getvalue()
        return rc, [ln for ln in text.splitlines() if ln.startswith("advtrain ")], text
    env = {**os.environ, "PYTHONPATH": str(REPO), "ADVTRAIN_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "advtrain", *argv], capture_output=True, text=True,
                         cwd=cwd, env=env, timeout=300, preexec_fn=_limit_memory)
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("advtrain ")]
    return out.returncode, lines, out.stderr


def _train_config(tmp: Path, teacher: dict) -> str:
    cfg = tiny_config(str(tmp / "data"), objective={"name": "ard"}, teacher=teacher,
                      run={"out_dir": str(tmp / "runs")})
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _run_dir(tmp: Path, bad: Path, name: str) -> Path:
    run = tmp / "run"
    run.mkdir()
    cfg = tiny_config(str(tmp / "data"), run={"out_dir": str(tmp / "runs")})
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    os.replace(bad, run / name)
    return run


def _entry(kind: str, tmp: Path, bad: Path) -> list:
    """The command line that hands ``bad`` to entry point ``kind``."""
    if kind == "teacher":
        return ["train", _train_config(tmp, {"checkpoint": str(bad)})]
    if kind == "eval":
        return ["eval", str(bad), "--dataset", "cifar10", "--data-npz",
                str(make_npz(tmp / "test.npz")), "--n-ex", "8", "--out", str(tmp / "cards")]
    if kind == "export":
        return ["export", str(bad), "--name", "Me2026Bad_WRN-10-1", "--dataset", "cifar10",
                "--model-dir", str(tmp / "md")]
    if kind == "average":
        return ["average", str(_run_dir(tmp, bad, "epoch_1.pt")), "--end", "1"]
    return ["train", "--resume", str(_run_dir(tmp, bad, "last.pt"))]  # resume


ENTRIES = ("teacher", "eval", "export", "average", "resume")


@pytest.mark.parametrize("bad", sorted(BAD))
@pytest.mark.parametrize("entry", ENTRIES)
def test_every_entry_point_refuses_the_same_bad_file_the_same_way(entry, bad, tmp_path):
    make, clause = BAD[bad]
    path = make(tmp_path / "bad.pt")
    argv = _entry(entry, tmp_path, path)
    before = sorted(p.name for p in tmp_path.iterdir())
    rc, lines, err = cli(argv, tmp_path, sub=bad == "huge-arch")
    assert rc == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and ": error: " in lines[0], err
    assert clause in lines[0], lines[0]
    assert not (tmp_path / "PWNED").exists()
    assert not (tmp_path / "runs").exists() and not (tmp_path / "md").exists()
    assert not (tmp_path / "cards").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def _bad_sidecar(folder: Path, name="Me2026Side_WRN-10-1", **fields) -> Path:
    """A plain-state_dict export with a sidecar whose fields are ``fields`` over the good ones."""
    from advtrain.models import create_model

    folder.mkdir(parents=True, exist_ok=True)
    pt = folder / f"{name}.pt"
    torch.save(create_model("wrn-10-1", dataset="cifar10").state_dict(), pt)
    info = {"name": name, "arch": "wrn-10-1", "dataset": "cifar10", "threat_model": "Linf", **fields}
    (folder / f"{name}.advtrain.json").write_text(json.dumps(info))
    return pt


SIDECARS = {
    "case": ({"dataset": "CIFAR10"},
             "dataset 'CIFAR10' is not one of cifar10, cifar100, imagenet (case matters)"),
    "options": ({"options": {"image_size": "224"}},
                "options must map num_classes / image_size to positive integers"),
    "type": ({"arch": 34}, "not strings: ['arch']"),
    "unknown-field": ({"epochs": "3"}, "unknown fields ['epochs']"),
    "huge-arch": ({"arch": HUGE}, None),  # refused by the shape check: see below
}


@pytest.mark.parametrize("defect", sorted(SIDECARS))
@pytest.mark.parametrize("entry", ("teacher", "teacher-robustbench", "eval", "export"))
def test_a_bad_sidecar_is_one_line_everywhere(entry, defect, tmp_path):
    fields, clause = SIDECARS[defect]
    md = tmp_path / "zoo"
    pt = _bad_sidecar(md / "cifar10" / "Linf", **fields)
    clause = clause or f"does not fit {HUGE}"
    if entry == "teacher-robustbench":
        argv = ["train", _train_config(tmp_path, {"robustbench": pt.stem, "model_dir": str(md)})]
    else:
        argv = _entry(entry, tmp_path, pt)
    rc, lines, err = cli(argv, tmp_path, sub=defect == "huge-arch")
    assert rc == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and clause in lines[0], err
    assert str(pt.with_suffix(".advtrain.json")) in lines[0] or defect == "huge-arch", lines[0]


def test_a_good_file_loads_through_every_path_and_gives_its_digest(tmp_path):
    """The positive side: the same loader accepts the intact file, and its digest is the file's."""
    import hashlib

    from advtrain.hub.loader import freeze, load_model_file

    path = _trainer_ckpt(tmp_path / "ok.pt")
    loaded = load_model_file(path, dataset="cifar10")
    assert loaded.arch == "wrn-10-1" and loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    model = freeze(loaded.model)
    assert not model.training and not any(p.requires_grad for p in model.parameters())

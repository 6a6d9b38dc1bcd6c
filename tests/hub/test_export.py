"""advtrain.hub.export: checkpoint loading and the RobustBench model_dir round trip (offline)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from advtrain.hub import export as export
from advtrain.hub.loader import load_model_file, load_zoo
from advtrain.errors import CheckpointError, InputError
from advtrain.models import create_model


def test_zoo_roundtrip_wrn34_10_cifar10(tmp_path):
    model = create_model("wrn-34-10", dataset="cifar10")
    path = export.to_robustbench(model, "Cui2023Decoupled_WRN-34-10", "cifar10", "Linf", tmp_path)
    assert path == tmp_path / "cifar10" / "Linf" / "Cui2023Decoupled_WRN-34-10.pt"
    sd = torch.load(path, weights_only=True)
    assert set(sd) == set(model.state_dict())
    # the eval CLI's --robustbench-name path: zoo architecture + the local file, no download
    zoo = load_zoo("Cui2023Decoupled_WRN-34-10", dataset="cifar10", model_dir=tmp_path).model
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(zoo(x), model.eval()(x))


@pytest.mark.slow
def test_zoo_roundtrip_wrn28_10_silu_cifar100(tmp_path):
    from robustbench.utils import load_model

    model = create_model("wrn-28-10-silu", dataset="cifar100")
    path = export.to_robustbench(model, "Cui2023Decoupled_WRN-28-10", "cifar100", "Linf",
                                 tmp_path)
    loaded = load_model("Cui2023Decoupled_WRN-28-10", model_dir=tmp_path, dataset="cifar100",
                        threat_model="Linf")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
    assert path.is_file()


def test_wrong_arch_for_zoo_name_is_refused_and_removed(tmp_path):
    model = create_model("wrn-10-1", dataset="cifar10")
    with pytest.raises(CheckpointError, match="Cui2023Decoupled_WRN-34-10") as e:
        export.to_robustbench(model, "Cui2023Decoupled_WRN-34-10", "cifar10", "Linf", tmp_path)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "cifar10" / "Linf" / "Cui2023Decoupled_WRN-34-10.pt").exists()


def test_non_zoo_name_writes_file_and_hint(tmp_path):
    model = create_model("wrn-10-1", dataset="cifar100")
    path = export.to_robustbench(model, "Me2026Tiny_WRN-10-1", "cifar100", "L2", tmp_path)
    sd = torch.load(path, weights_only=True)
    fresh = create_model("wrn-10-1", dataset="cifar100")
    fresh.load_state_dict(sd, strict=True)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), model.eval()(x))
    hint = export.registration_hint(path, "Me2026Tiny_WRN-10-1", "cifar100", "L2")
    assert "not in RobustBench" in hint and "register_model_dir" in hint
    assert json.loads(export.meta_path(tmp_path, "Me2026Tiny_WRN-10-1", "cifar100", "L2")
                      .read_text())["arch"] == "wrn-10-1"
    with pytest.raises(InputError, match="already exists"):
        export.to_robustbench(model, "Me2026Tiny_WRN-10-1", "cifar100", "L2", tmp_path)


def _trainer_ckpt(tmp_path, ema=True, **over):
    model = create_model("wrn-10-1", dataset="cifar10")
    sd = model.state_dict()
    ema_sd = {k: v + 1 if v.is_floating_point() else v for k, v in sd.items()} if ema else None
    ckpt = {"model": sd, "ema": ema_sd, "arch": "wrn-10-1", "dataset": "cifar10",
            "num_classes": 10, "config": {}, **over}
    path = tmp_path / "ckpt.pt"
    torch.save(ckpt, path)
    return path, sd, ema_sd


def test_model_from_trainer_checkpoint_picks_weights(tmp_path):
    path, sd, ema_sd = _trainer_ckpt(tmp_path)
    loaded = load_model_file(path, dataset="cifar10")
    model = loaded.model
    assert loaded.arch == "wrn-10-1" and not model.training
    assert all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())
    model = load_model_file(path, dataset="cifar10", weights="ema").model
    key = next(k for k, v in ema_sd.items() if v.is_floating_point())
    assert torch.equal(model.state_dict()[key], ema_sd[key])


def test_load_model_file_errors(tmp_path):
    path, sd, _ = _trainer_ckpt(tmp_path, ema=False)
    with pytest.raises(CheckpointError, match="no 'ema' weights"):
        load_model_file(path, dataset="cifar10", weights="ema")
    with pytest.raises(InputError, match="--dataset cifar10"):
        load_model_file(path, dataset="cifar100")
    plain = tmp_path / "plain.pt"
    torch.save(sd, plain)
    with pytest.raises(InputError, match="--arch"):
        load_model_file(plain, dataset="cifar10")
    with pytest.raises(CheckpointError) as e:
        load_model_file(plain, dataset="cifar10", arch="wrn-16-1")
    assert "\n" not in str(e.value) and "keys" in str(e.value)
    with pytest.raises(CheckpointError, match="shape"):
        load_model_file(plain, dataset="cifar100", arch="wrn-10-1")


def test_load_zoo_never_downloads(tmp_path):
    with pytest.raises(CheckpointError, match="not attempted") as e:
        load_zoo("Cui2023Decoupled_WRN-34-10", dataset="cifar10", model_dir=tmp_path)
    assert str(tmp_path / "cifar10" / "Linf" / "Cui2023Decoupled_WRN-34-10.pt") in str(e.value)
    assert not any(tmp_path.iterdir())
    with pytest.raises(KeyError, match="did you mean"):
        load_zoo("Cui2023Decoupled_WRN-34-1O", dataset="cifar10", model_dir=tmp_path)


def test_non_zoo_export_loads_through_robustbench_in_a_fresh_interpreter(tmp_path):
    """register_model_dir + robustbench.utils.load_model, in a process that never exported."""
    model = create_model("wrn-10-1", dataset="cifar10").eval()
    export.to_robustbench(model, "Me2026Tiny_WRN-10-1", "cifar10", "Linf", tmp_path)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(model(x), tmp_path / "ours.pt")
    code = (
        "import torch, advtrain.hub.export as e, robustbench.utils as u\n"
        f"d = {str(tmp_path)!r}\n"
        "assert e.register_model_dir(d) == ['Me2026Tiny_WRN-10-1']\n"
        "m = u.load_model('Me2026Tiny_WRN-10-1', model_dir=d, dataset='cifar10', threat_model='Linf')\n"
        "x = torch.load(d + '/x.pt', weights_only=True)\n"
        "with torch.no_grad():\n"
        "    assert torch.equal(m(x), torch.load(d + '/ours.pt', weights_only=True))\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_register_refuses_real_zoo_names():
    with pytest.raises(InputError, match="already a RobustBench"):
        export.register_robustbench("Cui2023Decoupled_WRN-34-10", "wrn-10-1", "cifar10", "Linf")


def _export_argv(ckpt, model_dir, *extra):
    return ["export", str(ckpt), "--name", "Me2026Tiny_WRN-10-1", "--dataset", "cifar10",
            "--model-dir", str(model_dir), "--safetensors", *extra]


def test_sigterm_between_the_export_files_then_rerun_without_overwrite(tmp_path):
    """A real SIGTERM after the description is renamed into place, before the .pt: the rerun sees
    no export (the .pt is renamed last) and completes it without --overwrite."""
    import os
    import signal
    from pathlib import Path

    from helpers import tiny_checkpoint

    ckpt = tiny_checkpoint(tmp_path / "c.pt")
    model_dir = tmp_path / "md"
    code = f"""
import os, signal, sys
import advtrain.io.atomic as atomic
real = os.replace
def replace(src, dst):
    real(src, dst)
    if str(dst).endswith(".advtrain.json"):
        os.kill(os.getpid(), signal.SIGTERM)
atomic.os.replace = replace
from advtrain.cli import main
sys.exit(main({_export_argv(ckpt, model_dir)!r}))
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env=env)
    assert out.returncode == -signal.SIGTERM, out.stderr
    folder = model_dir / "cifar10" / "Linf"
    assert (folder / "Me2026Tiny_WRN-10-1.advtrain.json").exists()
    assert not (folder / "Me2026Tiny_WRN-10-1.pt").exists()
    from advtrain.cli import main

    assert main(_export_argv(ckpt, model_dir)) == 0  # no --overwrite needed
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["Me2026Tiny_WRN-10-1.advtrain.json", "Me2026Tiny_WRN-10-1.pt",
                     "Me2026Tiny_WRN-10-1.safetensors"]
    sd = torch.load(ckpt, weights_only=True)["model"]
    assert all(torch.equal(v, sd[k]) for k, v in torch.load(folder / names[1],
                                                             weights_only=True).items())
    assert main(_export_argv(ckpt, model_dir)) == 2  # now complete: refused without --overwrite


def test_export_onto_a_full_disk_is_one_line_and_the_rerun_succeeds(tmp_path, capsys):
    from helpers import tiny_checkpoint

    from advtrain.cli import main

    ckpt = tiny_checkpoint(tmp_path / "c.pt")
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root?)")
    try:
        assert main(_export_argv(ckpt, small)) == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "No space left on device" in err
        assert str(small / "cifar10" / "Linf") in err and "needs about" in err
        import re

        sd = torch.load(ckpt, weights_only=True)["model"]
        weights = sum(v.numel() * v.element_size() for v in sd.values())  # .pt and .safetensors
        need = float(re.search(r"needs about ([0-9.]+) KiB", err).group(1)) * 1024
        assert 2 * weights <= need <= 2 * weights + 64 * 1024, (need, weights)
        assert list((small / "cifar10" / "Linf").iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=False)
    assert main(_export_argv(ckpt, small)) == 0  # the same folder, now on the big disk

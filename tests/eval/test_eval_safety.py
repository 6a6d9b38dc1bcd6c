"""Issue #10, evaluation side: names confined to their folder, outputs never overwrite inputs,
umask-honouring atomic writes, bounded ``.pt`` loads, broken weights refused at every loader, exact
robust-above-clean, non-finite logits blocking the card, outputs validated before any work.

(The one-line CLI messages of the same inputs are in tests/cli/test_bad_input.py.)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/: shared helpers
from helpers import make_npz, tiny_checkpoint  # noqa: E402

from advtrain.train import checkpoint as ck  # noqa: E402
from advtrain.io import atomic as atomic  # noqa: E402
from advtrain.models import convert  # noqa: E402
from advtrain.io import names as names  # noqa: E402
from advtrain.io import paths  # noqa: E402
from advtrain.io import safeload as safeload  # noqa: E402
from advtrain.errors import CheckpointError, InputError  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- names
@pytest.mark.parametrize("name", ["Cui2023Decoupled_WRN-34-10", "a", "x.y", "A+B-c_1.2",
                                  "9" * 128, "Standard"])
def test_model_name_accepts_robustbench_ids(name):
    assert names.check_model_name(name, "--name") == name


@pytest.mark.parametrize("name, why", [
    ("", "is empty"), (".hidden", "starts with a dot"), ("..", "starts with a dot"),
    ("../x", "contains '/'"), ("/abs/x", "contains '/'"), ("a\\b", "contains '\\\\\\\\'"),
    ("a\0b", "contains '\\\\x00'"), ("a b", "contains ' '"), ("é", "contains 'é'"),
    ("a" * 129, "129 characters long"), (None, "not a string")])
def test_model_name_refuses_paths_and_odd_names(name, why):
    with pytest.raises(InputError, match=why) as err:
        names.check_model_name(name, "run.name")
    assert str(err.value).startswith("run.name ") and "\n" not in str(err.value)


def test_every_robustbench_zoo_name_is_a_valid_name():
    from robustbench.model_zoo import model_dicts

    zoo = [n for per_ds in model_dicts.values() for table in per_ds.values() for n in table]
    assert len(zoo) > 100
    for name in zoo:
        names.check_model_name(name)


# ----------------------------------------------------------------------------- outputs vs inputs
def test_check_outputs_sees_links(tmp_path):
    src = tmp_path / "in.pt"
    src.write_bytes(b"x")
    os.symlink(src, tmp_path / "soft.pt")
    os.link(src, tmp_path / "hard.pt")
    for out in (src, tmp_path / "soft.pt", tmp_path / "hard.pt", tmp_path / "sub" / ".." / "in.pt"):
        with pytest.raises(InputError, match="same file as CHECKPOINT"):
            paths.check_outputs({"--save-adv": out}, {"CHECKPOINT": src})
    with pytest.raises(InputError, match="--state-path .* same file as --save-adv"):
        paths.check_outputs({"--save-adv": tmp_path / "o.pt", "--state-path": tmp_path / "o.pt"}, {})
    paths.check_outputs({"--save-adv": tmp_path / "other.pt", "x": None}, {"CHECKPOINT": src})


def test_outputs_are_checked_before_loading_data(tmp_path, monkeypatch):
    """A bad --name / --save-adv is refused before the test data is read (and long before
    AutoAttack): loading data here would fail the test."""
    from advtrain import data
    from advtrain.cli import main

    def no_data(*a, **k):
        raise AssertionError("test data loaded before the outputs were validated")

    monkeypatch.setattr(data, "load_test_arrays", no_data)
    ckpt = tiny_checkpoint(tmp_path / "m.pt")
    base = ["eval", str(ckpt), "--dataset", "cifar10", "--data-npz", str(tmp_path / "t.npz"),
            "--out", str(tmp_path / "cards"), "--device", "cpu", "--quiet"]
    assert main(base + ["--name", "../x"]) == 2
    assert main(base + ["--save-adv", str(ckpt)]) == 2
    assert not (tmp_path / "cards").exists()


def test_second_default_card_is_refused_then_overwritten_on_request(tmp_path, capsys):
    """runs/a/last.pt and runs/b/last.pt share the default card name 'last': the second evaluation
    is refused (the first card stays) unless --overwrite."""
    from advtrain.cli import main

    npz = make_npz(tmp_path / "t.npz")
    cards = tmp_path / "cards"
    args = ["--dataset", "cifar10", "--data-npz", str(npz), "--n-ex", "4", "--version", "custom",
            "--attacks", "apgd-ce", "--n-iter", "1", "--batch-size", "4", "--no-sanity",
            "--quiet", "--device", "cpu", "--out", str(cards)]
    torch.manual_seed(0)
    a = tiny_checkpoint((tmp_path / "a").mkdir() or tmp_path / "a" / "last.pt")
    b = tiny_checkpoint((tmp_path / "b").mkdir() or tmp_path / "b" / "last.pt")
    assert main(["eval", str(a), *args]) == 0
    card = cards / "cifar10" / "Linf" / "last.json"
    side = card.with_name("last.advtrain.json")
    first = (card.read_bytes(), side.read_bytes())
    assert main(["eval", str(b), *args]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (card.read_bytes(), side.read_bytes()) == first
    assert main(["eval", str(b), *args, "--overwrite"]) == 0
    from advtrain.io.safeload import file_sha256

    recorded = json.loads(side.read_text())["checkpoint"]  # b, by its hash (no absolute path)
    assert recorded == {"path": "../../../b/last.pt", "sha256": file_sha256(b)}
    assert file_sha256(a) != file_sha256(b)


# ----------------------------------------------------------------------------- file modes
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic.atomic_save({"w": torch.zeros(2)}, tmp_path / "a.pt")
        atomic.atomic_write_text(tmp_path / "a.json", "{}\n")
        atomic.save_safetensors({"w": torch.zeros(2)}, tmp_path / "a.safetensors")
        atomic.atomic_save({"w": torch.ones(2)}, tmp_path / "a.pt")  # replacing keeps the rule
    finally:
        os.umask(old)
    for f in ("a.pt", "a.json", "a.safetensors"):
        assert (tmp_path / f).stat().st_mode & 0o777 == mode, f
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.pt", "a.safetensors"]


# ----------------------------------------------------------------------------- bounded loads
_LOAD_BOUNDED = textwrap.dedent("""
    import resource, sys
    import torch  # imported before the limit: its libraries are mapped already
    from advtrain.errors import CheckpointError
    from advtrain.io.safeload import load_state_file
    vm = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (vm + (768 << 20), resource.RLIM_INFINITY))
    try:
        load_state_file(sys.argv[1])
    except CheckpointError as e:
        print("refused:", e)
    # VmHWM, the peak RSS of this process image (ru_maxrss would include the parent's RSS at
    # fork time, inherited across exec, which depends on which tests ran before)
    hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")][0].split()[1]
    print("maxrss_mb", int(hwm) // 1024)
""")


def _craft(path: Path, zip_format: bool, numel: int = 70000, claim: int = 2 ** 30) -> Path:
    """A .pt of one float storage of ``numel`` whose pickle declares ``claim`` elements (4 GiB)."""
    torch.save({"w": torch.zeros(numel)}, path, _use_new_zipfile_serialization=zip_format)
    data = path.read_bytes()
    if zip_format:
        import zipfile

        with zipfile.ZipFile(path) as zf:
            records = [(i, zf.read(i)) for i in zf.infolist()]
        with zipfile.ZipFile(path, "w") as zf:
            for info, blob in records:
                if info.filename.endswith("data.pkl"):
                    blob = _claim(blob, numel, claim)
                zf.writestr(info, blob)
    else:
        path.write_bytes(_claim(data, numel, claim))
    return path


def _claim(blob: bytes, numel: int, claim: int) -> bytes:
    old = b"J" + numel.to_bytes(4, "little")  # BININT: the storage's numel comes first
    assert old in blob
    return blob.replace(old, b"J" + claim.to_bytes(4, "little"), 1)


@pytest.mark.parametrize("zip_format", [False, True], ids=["legacy", "zip"])
def test_declared_storage_larger_than_the_file_is_refused_without_allocating(tmp_path, zip_format):
    """The address space is capped at +768 MiB: allocating the declared 4 GiB would fail with a
    MemoryError/RuntimeError instead of the one-line refusal; peak RSS stays bounded."""
    path = _craft(tmp_path / "big.pt", zip_format)
    assert path.stat().st_size < 1 << 20
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _LOAD_BOUNDED, str(path)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "refused:" in proc.stdout and "nothing was allocated" in proc.stdout, proc.stdout
    rss = int(proc.stdout.split("maxrss_mb")[1])
    assert rss < 1500  # bounded: far below the 4 GiB the file claims


@pytest.mark.parametrize("zip_format", [False, True], ids=["legacy", "zip"])
def test_honest_checkpoints_still_load(tmp_path, zip_format):
    sd = {"a": torch.arange(70000, dtype=torch.float32), "b": torch.ones(3, dtype=torch.int64),
          "c": torch.zeros(2, 2, dtype=torch.float16)}
    sd["view"] = sd["a"][10:20]  # a view shares the storage: declared once
    torch.save(sd, tmp_path / "ok.pt", _use_new_zipfile_serialization=zip_format)
    back = safeload.load_state_file(tmp_path / "ok.pt")
    assert all(torch.equal(back[k], sd[k]) for k in sd)


# ----------------------------------------------------------------------------- broken weights
def _trainer_checkpoint(path, spoil):
    from advtrain.models import create_model

    sd = create_model("wrn-10-1", dataset="cifar10").state_dict()
    spoil(sd)
    ck.save({"model": sd, "arch": "wrn-10-1", "dataset": "cifar10", "num_classes": 10}, path)
    return path


@pytest.mark.parametrize("spoil, needle", [
    (lambda sd: sd["fc.bias"].__setitem__(0, float("inf")), "model.fc.bias holds 1 NaN/Inf"),
    (lambda sd: sd.__setitem__("fc.weight", sd["fc.weight"].round().to(torch.int64)),
     "fc.weight is stored as torch.int64"),
    (lambda sd: sd.__setitem__("bn1.weight", sd["bn1.weight"] > 0), "bn1.weight is stored as torch.bool"),
    (lambda sd: sd.__setitem__("fc.bias", sd["fc.bias"].to(torch.complex64)), "complex dtype"),
])
def test_training_checkpoint_loader_refuses_broken_weights(tmp_path, spoil, needle):
    """checkpoint.load is what ``train --resume`` and ``average`` read through."""
    path = _trainer_checkpoint(tmp_path / "last.pt", spoil)
    with pytest.raises(CheckpointError, match=needle):
        ck.load(str(path))


def test_integer_buffers_stay_integers(tmp_path):
    path = _trainer_checkpoint(tmp_path / "last.pt", lambda sd: None)
    assert ck.load(str(path))["model"]["bn1.num_batches_tracked"].dtype == torch.int64


def test_load_weights_refuses_integer_float_weights():
    model = nn.Linear(3, 2)
    sd = {"weight": torch.zeros(2, 3, dtype=torch.int64), "bias": torch.zeros(2)}
    with pytest.raises(CheckpointError, match="weight is stored as torch.int64"):
        convert.load_weights(model, sd, name="x.pt")
    assert not torch.equal(model.weight, torch.zeros(2, 3))  # nothing was copied


# ----------------------------------------------------------------------------- evaluation flags
class _Fixed(nn.Module):
    """Predicts class 0 for every image: correct exactly where y == 0."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        out = x.flatten(1)[:, :10] * 1e-3 + self.w  # in the graph, far below the margin of 1
        return out + torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 10)


def test_eps_zero_raises_no_robust_above_clean_flag():
    """n = 3 with one correct image: float32(1/3) > 1/3, which the old float comparison flagged."""
    from advtrain.eval.evaluator import evaluate

    n, correct = 3, 1
    assert float(np.float32(correct / n)) > correct / n  # the trap is set
    x = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2])
    res = evaluate(_Fixed(), x, y, eps=0.0, version="custom", attacks=["apgd-ce"], n_iter=1,
                   batch_size=3, sanity=False, progress=False, device="cpu")
    assert res["clean_acc"] == res["robust_acc"] == correct / n
    assert [f["code"] for f in res["flags"]] == []


def test_robust_above_clean_compares_counts():
    from advtrain.eval import sanity as checks

    assert checks.evaluation_flags(1 / 3, float(np.float32(1 / 3)), {}, counts=(1, 1)) == []
    codes = [f["code"] for f in checks.evaluation_flags(0.5, 0.5, {}, counts=(4, 5))]
    assert codes == ["robust-above-clean"]


class _Overflow(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.full((1,), 3e38))

    def forward(self, x):
        return x.flatten(1)[:, :10] * self.w * 10  # finite weights, logits overflow to inf


def test_non_finite_logits_flag_blocks_the_card(tmp_path):
    from advtrain.eval.cards import CardInfo, write_card
    from advtrain.eval.evaluator import evaluate

    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)) + 0.01
    y = torch.zeros(4, dtype=torch.long)
    res = evaluate(_Overflow(), x.clamp(max=1), y, eps=1 / 255, version="custom",
                   attacks=["apgd-ce"], n_iter=1, batch_size=4, sanity=False, progress=False,
                   device="cpu")
    assert "non-finite-logits" in [f["code"] for f in res["flags"]]
    with pytest.raises(InputError, match=r"card not written: \[non-finite-logits\]"):
        write_card(res, CardInfo(name="m", dataset="cifar10", threat_model="Linf",
                                 architecture="x"), out_dir=tmp_path)
    assert not any(tmp_path.rglob("*.json"))


def test_persistent_id_that_is_not_a_storage_is_refused_unread(tmp_path):
    """The scan reads opcodes only: a foreign persistent id is refused before torch.load."""
    import io as _io
    import pickle

    class Foreign(pickle.Pickler):
        def persistent_id(self, obj):
            return ("module", "os") if obj == "X" else None

    buf = _io.BytesIO()
    Foreign(buf, protocol=2).dump({"a": "X"})
    (tmp_path / "p.pt").write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError, match="persistent id that is not a torch tensor storage"):
        safeload.load_state_file(tmp_path / "p.pt")

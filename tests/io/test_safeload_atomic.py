"""Tests of the safe loader, atomic writer and key conversion (advtrain.io.safeload/atomic, models.convert): refusing pickles, atomic writes, reference-format filtering, mismatch messages."""
from __future__ import annotations

import os
import pickle

import pytest
import torch
from torch import nn

from advtrain.io import atomic as atomic
from advtrain.models import convert
from advtrain.io import safeload as safeload
from advtrain.errors import CheckpointError


def _tiny():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 30 * 30, 10))


class _Payload:
    """Unpickling this would create a marker file: the loader must never run it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _Boom:
    def __reduce__(self):
        raise RuntimeError("serialisation failed midway")


# --------------------------------------------------------------------------- loading
def test_pickled_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(2), "x": _Payload(str(marker))}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused to load.*weights_only=True.*state_dict"):
        safeload.load_state_file(path)
    assert not marker.exists()
    with pytest.raises(CheckpointError):
        convert.load_weights(_tiny(), path)
    assert not marker.exists()


def test_plain_pickle_file_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"x": _Payload(str(marker))}, fh)
    with pytest.raises(CheckpointError):
        safeload.load_state_file(path)
    assert not marker.exists()


def test_missing_directory_truncated_and_garbage(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        safeload.load_state_file(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="directory"):
        safeload.load_state_file(tmp_path)
    good = tmp_path / "good.pt"
    torch.save(_tiny().state_dict(), good)
    data = good.read_bytes()
    for name, payload in [("trunc.pt", data[: len(data) // 2]), ("garbage.pt", b"\x00not a checkpoint" * 10),
                          ("empty.pt", b""), ("bad.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{")]:
        bad = tmp_path / name
        bad.write_bytes(payload)
        with pytest.raises(CheckpointError) as info:
            safeload.load_state_file(bad)
        assert "\n" not in str(info.value) and name in str(info.value)


def test_top_level_must_be_a_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.ones(1)], path)
    with pytest.raises(CheckpointError, match="expected a dict"):
        safeload.load_state_file(path)


def test_state_dict_and_metadata_round_trip(tmp_path):
    model = _tiny()
    path = tmp_path / "sub" / "ckpt.pt"
    atomic.atomic_save({"model": model.state_dict(), "epoch": 3, "config": {"lr": 0.1, "name": "x"}}, path)
    obj = safeload.load_state_file(path)
    assert obj["epoch"] == 3 and obj["config"]["name"] == "x"
    other = _tiny()
    convert.load_weights(other, path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, other.state_dict()[k])


def test_safetensors_round_trip(tmp_path):
    model = _tiny()
    path = tmp_path / "w.safetensors"
    atomic.save_safetensors(model.state_dict(), path, metadata={"arch": "tiny"})
    loaded = safeload.load_state_file(path)
    assert set(loaded) == set(model.state_dict())
    other = convert.load_weights(_tiny(), path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, other.state_dict()[k])
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []
    renamed = tmp_path / "w.pt"  # recognised by content, whatever the extension
    renamed.write_bytes(path.read_bytes())
    assert set(safeload.load_state_file(renamed)) == set(loaded)


# --------------------------------------------------------------------------- atomic writes
def test_atomic_save_keeps_old_file_when_serialisation_fails(tmp_path):
    path = tmp_path / "last.pt"
    atomic.atomic_save({"epoch": torch.tensor(1)}, path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="midway"):
        atomic.atomic_save({"epoch": torch.tensor(2), "bad": _Boom()}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.pt"]


def test_atomic_save_keeps_old_file_when_write_dies_halfway(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic.atomic_save({"epoch": torch.tensor(1)}, path)
    before = path.read_bytes()

    def half_then_die(obj, fh):
        fh.write(before[: len(before) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(atomic.torch, "save", half_then_die)
    with pytest.raises(OSError, match="disk full"):
        atomic.atomic_save({"epoch": torch.tensor(2)}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.pt"]


def test_atomic_write_text_and_sha256(tmp_path):
    path = tmp_path / "a" / "b" / "card.json"
    atomic.atomic_write_text(path, '{"x": 1}\n')
    assert path.read_text() == '{"x": 1}\n'
    first = safeload.file_sha256(path)
    atomic.atomic_write_text(path, '{"x": 2}\n')
    assert safeload.file_sha256(path) != first and len(first) == 64
    assert sorted(os.listdir(path.parent)) == ["card.json"]


# --------------------------------------------------------------------------- filtering
@pytest.mark.parametrize("wrapper", [None, "state_dict", "model_state_dict", "model"])
@pytest.mark.parametrize("prefix", ["", "module.", "module.0."])
def test_filter_unwraps_and_strips(wrapper, prefix):
    sd = _tiny().state_dict()
    raw = {prefix + k: v for k, v in sd.items()}
    obj = raw if wrapper is None else {wrapper: raw, "epoch": 7, "optimizer": {"lr": 0.1}}
    out = convert.filter_state_dict(obj, sd.keys())
    assert list(out) == list(sd)
    other = convert.load_weights(_tiny(), obj)
    assert torch.equal(other.state_dict()["3.weight"], sd["3.weight"])


def test_filter_drops_sub_block_only_when_model_has_none():
    obj = {"block1.w": torch.ones(1), "sub_block1.w": torch.ones(1), "step": 3, "note": "x"}
    assert set(convert.filter_state_dict(obj, ["block1.w"])) == {"block1.w"}
    assert set(convert.filter_state_dict(obj, ["block1.w", "sub_block1.w"])) == {"block1.w", "sub_block1.w"}
    assert set(convert.filter_state_dict(obj)) == {"block1.w", "sub_block1.w"}  # non-tensors dropped


def test_mismatch_message_names_keys_and_shapes():
    model = _tiny()
    sd = dict(model.state_dict())
    sd["3.weight"] = torch.zeros(100, 4 * 30 * 30)
    sd["3.bias"] = torch.zeros(100)
    del sd["1.running_mean"]
    sd["extra.weight"] = torch.zeros(1)
    before = model.state_dict()["3.weight"].clone()
    with pytest.raises(CheckpointError) as info:
        convert.load_weights(model, sd)
    msg = str(info.value)
    assert "\n" not in msg
    assert "1.running_mean" in msg and "extra.weight" in msg
    assert "3.weight: checkpoint (100, 3600) vs model (10, 3600)" in msg
    assert "num_classes" in msg
    assert torch.equal(model.state_dict()["3.weight"], before)  # nothing copied


def test_non_strict_ignores_missing_but_not_shapes():
    model = _tiny()
    sd = {k: v for k, v in model.state_dict().items() if k.startswith("3.")}
    convert.load_weights(_tiny(), sd, strict=False)
    sd["3.bias"] = torch.zeros(5)
    with pytest.raises(CheckpointError, match="3.bias"):
        convert.load_weights(_tiny(), sd, strict=False)


# --------------------------------------------------------------------------- full disks, multi-file outputs
@pytest.fixture
def small_fs(tmp_path):
    """A real 64 KiB tmpfs (root only); skipped where mounting is not permitted."""
    import subprocess

    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root?); the fault-injection test covers it")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def _assert_disk_full(exc, folder):
    import errno

    assert exc.errno == errno.ENOSPC and exc.filename == str(folder)
    assert "needs about" in exc.strerror and "free in this folder" in exc.strerror
    assert "\n" not in str(exc)


@pytest.mark.parametrize("kind", ["torch", "safetensors", "text"])
def test_full_disk_for_real_is_one_enospc_line_and_keeps_earlier_files(small_fs, kind):
    atomic.atomic_write_text(small_fs / "earlier.json", '{"epoch": 1}\n')
    big = torch.zeros(100_000)  # 400 KB into 64 KiB
    write = {"torch": lambda: atomic.atomic_save({"w": big}, small_fs / "big.pt"),
             "safetensors": lambda: atomic.save_safetensors({"w": big}, small_fs / "big.st"),
             "text": lambda: atomic.atomic_write_text(small_fs / "big.txt", "x" * 400_000)}[kind]
    with pytest.raises(OSError) as e:  # torch's zip writer raises RuntimeError underneath
        write()
    _assert_disk_full(e.value, small_fs)
    assert "390.6 KiB" in e.value.strerror or "390.7 KiB" in e.value.strerror or kind == "text"
    assert sorted(os.listdir(small_fs)) == ["earlier.json"]  # no temp file left
    assert (small_fs / "earlier.json").read_text() == '{"epoch": 1}\n'


def test_zip_writer_runtime_error_on_a_full_disk_is_one_enospc_line(tmp_path, monkeypatch):
    """Fault injection at the write call: the OS refuses after 1 KB, torch turns it into a
    RuntimeError ("unexpected pos"), the writer must still report the full disk."""
    from helpers import small_disk

    small_disk(monkeypatch)
    with pytest.raises(OSError) as e:
        atomic.atomic_save({"w": torch.zeros(10_000)}, tmp_path / "x.pt")
    _assert_disk_full(e.value, tmp_path)
    assert "39.1 KiB" in e.value.strerror  # 10 000 float32 = 40 000 bytes
    assert os.listdir(tmp_path) == []


def test_commit_files_writes_all_or_nothing(tmp_path):
    out = {tmp_path / "m.pt": lambda fh: torch.save({"w": torch.ones(2)}, fh),
           tmp_path / "m.json": '{"arch": "x"}\n', tmp_path / "m.bin": b"\x00\x01"}
    atomic.commit_files(out, primary=tmp_path / "m.pt")
    assert torch.equal(safeload.load_state_file(tmp_path / "m.pt")["w"], torch.ones(2))
    assert (tmp_path / "m.json").read_text() == '{"arch": "x"}\n'
    assert (tmp_path / "m.bin").read_bytes() == b"\x00\x01"
    before = {p: p.read_bytes() for p in out}

    def boom(fh):
        fh.write(b"half")
        raise RuntimeError("serialisation failed midway")

    with pytest.raises(RuntimeError, match="midway"):  # the second file fails: nothing changes
        atomic.commit_files({tmp_path / "m.json": "new\n", tmp_path / "m.pt": boom},
                            primary=tmp_path / "m.pt")
    assert {p: p.read_bytes() for p in out} == before
    assert sorted(os.listdir(tmp_path)) == ["m.bin", "m.json", "m.pt"]
    with pytest.raises(ValueError, match="primary"):
        atomic.commit_files({tmp_path / "a": "x"}, primary=tmp_path / "b")


def test_commit_files_on_a_full_disk_leaves_nothing(small_fs):
    with pytest.raises(OSError) as e:
        atomic.commit_files({small_fs / "m.json": "x" * 30_000,
                             small_fs / "m.pt": lambda fh: torch.save({"w": torch.zeros(20_000)}, fh)},
                            primary=small_fs / "m.pt")
    _assert_disk_full(e.value, small_fs)
    assert os.listdir(small_fs) == []

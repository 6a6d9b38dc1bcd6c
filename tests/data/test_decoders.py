"""Every decoder error is one line naming the file, from any process (issue 23.4), and the npz
cache reads what the source holds (issue 23.7): a real decompression-bomb PNG header, a real
truncated JPEG read by real DataLoader worker processes, a compressed npz member whose header asks
for more than the archive could hold, a cache file changed in place."""
from __future__ import annotations

import io
import os
import struct
import sys
import zipfile
import zlib

import numpy as np

from advtrain.data import npz as npz_module
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from folder_helpers import make_image_folder  # noqa: E402

from advtrain.data.imagefolder import build_folder_train_loader, load_folder_test  # noqa: E402
from advtrain.data.npz import read_npz  # noqa: E402
from advtrain.errors import DataError  # noqa: E402


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(path, side: int = 100_000) -> None:
    """A valid PNG of a few dozen bytes whose header declares side x side RGB pixels (10^10: far
    over PIL's decompression-bomb limit)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat)
                + _chunk(b"IEND", b""))


def _one_line(e) -> str:
    text = str(e.value)
    assert len(text.splitlines()) == 1, text
    assert "Traceback" not in text and "DataLoader worker" not in text, text
    return text


def test_decompression_bomb_png_is_one_line_naming_the_file(tmp_path):
    root = make_image_folder(tmp_path / "d", n_classes=2, per_class=(1, 1), size=16)
    bomb = os.path.join(root, "val", "c01", "bomb.png")
    bomb_png(bomb)
    with pytest.raises(DataError) as e:  # eval's reader
        load_folder_test(root, image_size=16)
    assert bomb in _one_line(e) and "too large to decode" in str(e.value)
    train_bomb = os.path.join(root, "train", "c00", "bomb.png")
    bomb_png(train_bomb)
    loader = build_folder_train_loader(root, num_classes=2, image_size=16, batch_size=4)
    with pytest.raises(DataError) as e:  # training's reader
        list(loader)
    assert train_bomb in _one_line(e)


def _truncate(path) -> None:
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


@pytest.mark.parametrize("workers", [0, 1])
def test_truncated_jpeg_in_worker_processes_is_one_line(tmp_path, workers):
    """With data.workers >= 1 the error comes from a real worker process: still one line."""
    root = make_image_folder(tmp_path / "d", n_classes=2, per_class=(2, 2), size=16)
    bad = os.path.join(root, "train", "c01", "1.jpg")
    _truncate(bad)
    loader = build_folder_train_loader(root, num_classes=2, image_size=16, batch_size=2,
                                       workers=workers)
    with pytest.raises(DataError) as e:
        list(loader)
    text = _one_line(e)
    assert text.startswith(bad + ": cannot decode image"), text
    bad_val = os.path.join(root, "val", "c00", "0.jpg")
    _truncate(bad_val)
    with pytest.raises(DataError) as e:
        load_folder_test(root, image_size=16, workers=workers)
    assert _one_line(e).startswith(bad_val)


def test_truncated_jpeg_in_training_cli_with_workers(tmp_path, capsys):
    """``advtrain train`` with data.workers: 1 on a tree holding a truncated JPEG."""
    import yaml

    from advtrain.cli import main
    from folder_helpers import folder_config

    cfg = folder_config(tmp_path, "pgd_at", data={"workers": 1}, optim={"epochs": 1})
    bad = os.path.join(cfg["data"]["root"], "train", "c03", "2.jpg")
    _truncate(bad)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and bad in err[0] and "cannot decode image" in err[0], err


# ----------------------------------------------------------------------------- compressed npz
def _npy_header(shape, dtype="|u1") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue()


def _zip(path, members: dict) -> str:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return str(path)


def test_compressed_member_declaring_more_than_it_holds(tmp_path, monkeypatch):
    """A few hundred bytes whose image.npy header declares 2^26 images (206 GB): refused from
    the header, before numpy allocates anything."""
    path = _zip(tmp_path / "bomb.npz", {
        "image.npy": _npy_header((2 ** 26, 32, 32, 3)) + b"\0" * 3072,
        "label.npy": _npy_header((2 ** 26,), "<i8") + b"\0" * 8})
    called = []
    monkeypatch.setattr(np, "load", lambda *a, **k: called.append(a) or pytest.fail("np.load"))
    with pytest.raises(DataError, match="its header declares 206158430") as e:
        read_npz(path)
    assert path in str(e.value) and not called


def test_compressed_member_larger_than_deflate_could_expand(tmp_path, monkeypatch):
    """A consistent header and directory that claim more than the compressed bytes could hold."""
    from advtrain.data import npz

    shape = (64, 32, 32, 3)
    good = tmp_path / "good.npz"
    np.savez_compressed(good, image=np.zeros(shape, np.uint8), label=np.zeros(64, np.int64))
    monkeypatch.setattr(npz, "DEFLATE_MAX_RATIO", 1)  # zeros compress ~1000:1: now "impossible"
    with pytest.raises(DataError, match="is corrupt"):
        read_npz(str(good))


def test_cache_changed_in_place_is_made_again(tmp_path, capfd):
    """The decompressed copy is verified: one changed in place (labels 0 -> 1) is not read."""
    src = tmp_path / "c.npz"
    images = np.arange(8 * 3072, dtype=np.int64).astype(np.uint8).reshape(8, 32, 32, 3)
    np.savez_compressed(src, image=images, label=np.zeros(8, np.int64))
    cache = tmp_path / "cache"
    cache.mkdir()
    _, y = read_npz(str(src), cache_dir=str(cache))
    assert y.tolist() == [0] * 8
    (copy,) = [p for p in cache.iterdir() if p.suffix == ".npz"]
    np.savez(copy, image=images, label=np.ones(8, np.int64))  # same name, other labels
    capfd.readouterr()
    x, y = read_npz(str(src), cache_dir=str(cache))
    assert y.tolist() == [0] * 8 and np.array_equal(np.asarray(x), images)
    assert "making it again" in capfd.readouterr().err
    npz_module._NOTICES.clear()  # a new run: its notice is printed again (once per run)
    _, y = read_npz(str(src), cache_dir=str(cache))  # the remade copy is reused
    assert y.tolist() == [0] * 8 and "(verified)" in capfd.readouterr().err

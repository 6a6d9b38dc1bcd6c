"""Tests of the device-side training loader (advtrain.data.augment), the compressed-npz cache and the
data provenance record. Tiny data in tmp dirs; CPU only (the CUDA path differs only in the device)."""
from __future__ import annotations

import hashlib
import importlib
import os
import threading

import numpy as np
import pytest
import torch

from advtrain.data import npz as npz_module

from advtrain.data import build_train_loader, crop_flip_batch, derive_seed, provenance, read_npz, set_loader_epoch
from advtrain.data.augment import crop_flip_params
from advtrain.data.npz_convert import main as convert_main
from advtrain.errors import DataError

prov_module = importlib.import_module("advtrain.data.provenance")  # the package exports the function


def _write_npz(path, n, seed=0, compressed=False, label=None):
    image = np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    label = np.arange(n, dtype=np.int64) % 10 if label is None else label
    (np.savez_compressed if compressed else np.savez)(path, image=image, label=label)
    return str(path), image


def _reference_crop_flip(img_hwc: np.ndarray, top: int, left: int, flip: bool) -> np.ndarray:
    """RandomCrop(32, padding=4) + flip + ToTensor of one HWC uint8 image, written out in numpy."""
    padded = np.zeros((40, 40, 3), dtype=np.uint8)
    padded[4:36, 4:36] = img_hwc
    out = padded[top:top + 32, left:left + 32]
    if flip:
        out = out[:, ::-1]
    return (out.transpose(2, 0, 1).astype(np.float64) / 255.0).astype(np.float32)


def _epoch(loader, epoch):
    set_loader_epoch(loader, epoch)
    return list(loader)


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))


# ---------------------------------------------------------------- the batched op
def test_batched_crop_flip_matches_per_image_reference():
    images = np.random.default_rng(1).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    top, left, flip = crop_flip_params(torch.Generator().manual_seed(5), 64)
    assert {int(t) for t in top} <= set(range(9)) and len(set(top.tolist())) > 4
    assert 10 < int(flip.sum()) < 54
    out = crop_flip_batch(torch.from_numpy(images), top, left, flip).float().div_(255.0)
    assert out.shape == (64, 3, 32, 32)
    for k in range(64):
        want = _reference_crop_flip(images[k], int(top[k]), int(left[k]), bool(flip[k]))
        assert np.array_equal(out[k].numpy(), want), k


def test_loader_batches_are_the_reference_augmentation(tmp_path):
    """Batch b of epoch e = reference crop+flip of its images with draws seeded by (seed, e, b)."""
    path, images = _write_npz(tmp_path / "train.npz", 20)
    kw = dict(train_npz=path, batch_size=8, seed=3)
    plain = _epoch(build_train_loader("cifar10", augment="none", **kw), 2)
    aug = _epoch(build_train_loader("cifar10", augment="basic", **kw), 2)
    for b, ((xp, yp), (xa, ya)) in enumerate(zip(plain, aug)):
        assert torch.equal(yp, ya)
        top, left, flip = crop_flip_params(torch.Generator().manual_seed(derive_seed(3, 2, b)), 8)
        for k in range(len(ya)):
            hwc = np.round(xp[k].numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
            want = _reference_crop_flip(hwc, int(top[k]), int(left[k]), bool(flip[k]))
            assert np.array_equal(xa[k].numpy(), want)


# ---------------------------------------------------------------- reproducibility
@pytest.mark.parametrize("augment", ["basic", "autoaugment"])
def test_same_batches_for_0_and_2_workers(tmp_path, augment):
    path, _ = _write_npz(tmp_path / "train.npz", 24)
    kw = dict(train_npz=path, batch_size=8, seed=4, augment=augment)
    serial, parallel = build_train_loader("cifar10", **kw), build_train_loader("cifar10", workers=2, **kw)
    assert not parallel.pin
    if augment == "autoaugment":  # per-image views: persistent worker processes
        assert parallel.processes.num_workers == 2 and parallel.processes.persistent_workers
    else:  # plain gathers: reader threads of this process, nothing crosses a process boundary
        assert parallel.processes is None
        readers = {"serial": _record_readers(serial), "parallel": _record_readers(parallel)}
    for e in (1, 2):  # the persistent workers see the new epoch
        a, b = _epoch(serial, e), _epoch(parallel, e)
        assert _same(a, b)
    assert not torch.equal(_epoch(serial, 1)[0][0], _epoch(serial, 2)[0][0])
    if augment == "basic":
        assert readers["serial"] and set(readers["serial"]) == {(os.getpid(), True)}
        assert readers["parallel"] and set(readers["parallel"]) == {(os.getpid(), False)}


def _record_readers(loader):
    """(pid, is main thread) of every batch read of ``loader``, appended as it reads."""
    seen, read = [], loader.dataset.__getitems__
    loader.dataset.__getitems__ = lambda keys: seen.append(
        (os.getpid(), threading.current_thread() is threading.main_thread())) or read(keys)
    return seen


@pytest.mark.parametrize("augment", ["basic", "autoaugment"])  # reader threads / worker processes
def test_resume_mid_epoch_gives_the_same_batches(tmp_path, augment):
    path, _ = _write_npz(tmp_path / "train.npz", 40)
    kw = dict(train_npz=path, batch_size=8, seed=2, augment=augment)
    run = build_train_loader("cifar10", **kw)
    _epoch(run, 1)
    full = _epoch(run, 2)
    torch.manual_seed(1234)  # a resumed process has another global RNG state
    resumed = build_train_loader("cifar10", workers=2, **kw)  # fresh process, epoch 2, from batch 3
    set_loader_epoch(resumed, 2)
    it = iter(resumed)
    for _ in range(3):
        next(it)
    assert _same(list(it), full[3:])
    reads = []  # iter_from: the same batches, the skipped ones never read
    direct = build_train_loader("cifar10", **kw)
    real_read = direct.dataset.__getitems__
    direct.dataset.__getitems__ = lambda keys: reads.append(keys) or real_read(keys)
    set_loader_epoch(direct, 2)
    assert _same(list(direct.iter_from(3)), full[3:]) and len(reads) == len(full) - 3
    assert _same(list(direct), full)  # the next plain iteration starts at batch 0 again


def test_two_simulated_ranks_split_the_single_process_batches(tmp_path):
    """Mixing sampler: rank k's augmented batch is slice k of what one process with 2x batch makes."""
    real, _ = _write_npz(tmp_path / "train.npz", 32)
    gen, _ = _write_npz(tmp_path / "gen.npz", 20, seed=9)
    kw = dict(train_npz=real, synthetic_npz=gen, synthetic_fraction=0.5, seed=6, augment="basic")
    single = _epoch(build_train_loader("cifar10", batch_size=8, **kw), 1)
    ranks = [_epoch(build_train_loader("cifar10", batch_size=4, rank=r, world_size=2, workers=w, **kw), 1)
             for r, w in ((0, 0), (1, 2))]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 4
    for b, (x, y) in enumerate(single):
        assert torch.equal(torch.cat([ranks[0][b][0], ranks[1][b][0]]), x)
        assert torch.equal(torch.cat([ranks[0][b][1], ranks[1][b][1]]), y)


def test_ddp_shards_reproducible_and_disjoint(tmp_path):
    path, _ = _write_npz(tmp_path / "train.npz", 20)
    kw = dict(train_npz=path, batch_size=4, seed=1, world_size=2)
    for r in range(2):
        a = _epoch(build_train_loader("cifar10", rank=r, **kw), 3)
        b = _epoch(build_train_loader("cifar10", rank=r, workers=2, **kw), 3)
        assert _same(a, b)
    shards = [_epoch(build_train_loader("cifar10", rank=r, augment="none", **kw), 3) for r in range(2)]
    keys = [{bytes(img.numpy()) for x, _ in s for img in x} for s in shards]
    assert not keys[0] & keys[1] and len(keys[0] | keys[1]) == 20


def test_pinned_memory_follows_the_device(tmp_path):
    path, _ = _write_npz(tmp_path / "train.npz", 8)
    assert build_train_loader("cifar10", train_npz=path, device="cuda").pin
    assert not build_train_loader("cifar10", train_npz=path, device="cpu").pin
    assert not build_train_loader("cifar10", train_npz=path, device="cuda", pin_memory=False).pin


# ---------------------------------------------------------------- compressed npz
def test_compressed_npz_cache_is_memory_mapped(tmp_path, monkeypatch, capfd):
    path, images = _write_npz(tmp_path / "c.npz", 30, compressed=True)
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("ADVTRAIN_NPZ_CACHE", str(cache))
    x, y = read_npz(path, num_classes=10, limit=1000)  # the limit no longer matters: nothing is read whole
    assert isinstance(x, np.memmap) and x.filename.startswith(str(cache))
    assert np.array_equal(np.asarray(x), images) and y.tolist() == (np.arange(30) % 10).tolist()
    assert "decompressed it once" in capfd.readouterr().err
    (copy,) = [n for n in os.listdir(cache) if n.endswith(".npz")]
    mtime = os.stat(cache / copy).st_mtime_ns
    monkeypatch.setattr(npz_module, "_NOTICES", set())  # a new run: the notice is printed again
    x2, _ = read_npz(path)
    assert isinstance(x2, np.memmap) and os.stat(cache / copy).st_mtime_ns == mtime  # reused, not rewritten
    assert "memory-mapping its decompressed copy" in capfd.readouterr().err
    loader = build_train_loader("cifar10", train_npz=path, batch_size=10, workers=2, augment="none")
    got = torch.cat([xb for xb, _ in _epoch(loader, 0)])
    want = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    assert sorted(map(bytes, got.numpy())) == sorted(map(bytes, want.numpy()))


def test_compressed_npz_cache_folder_must_exist(tmp_path, monkeypatch):
    path, _ = _write_npz(tmp_path / "c.npz", 4, compressed=True)
    monkeypatch.setenv("ADVTRAIN_NPZ_CACHE", str(tmp_path / "absent"))
    with pytest.raises(DataError, match="ADVTRAIN_NPZ_CACHE=.*absent is not a directory"):
        read_npz(path)


def test_convert_command(tmp_path, capsys):
    path, images = _write_npz(tmp_path / "c.npz", 6, compressed=True)
    out = str(tmp_path / "u.npz")
    assert convert_main([path, out]) == 0
    x, _ = read_npz(out)
    assert isinstance(x, np.memmap) and np.array_equal(np.asarray(x), images)
    assert convert_main([path, out]) == 2  # never overwrites
    assert "exists" in capsys.readouterr().err
    assert convert_main([str(tmp_path / "missing.npz"), str(tmp_path / "v.npz")]) == 2
    assert not os.path.exists(tmp_path / "v.npz")


# ---------------------------------------------------------------- provenance
def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_provenance_of_npz_and_synthetic(tmp_path, monkeypatch):
    real, _ = _write_npz(tmp_path / "train.npz", 8)
    gen, _ = _write_npz(tmp_path / "gen.npz", 8, seed=2)
    p = provenance("cifar10", npz=real, synthetic_npz=[gen], synthetic_fraction=0.7, subset=[4, 1], seed=5,
                   holdout=2)
    assert p["source"] == "npz" and p["files"][0]["sha256"] == _sha(real)
    assert p["files"][0]["bytes"] == os.path.getsize(real)
    assert p["synthetic"]["files"][0]["sha256"] == _sha(gen) and p["synthetic"]["fraction"] == 0.7
    assert p["subset"]["mode"] == "indices" and p["subset"]["n"] == 2
    assert p["subset"]["indices_sha256"] == hashlib.sha256(np.array([4, 1], dtype=np.int64).tobytes()).hexdigest()
    assert (p["seed"], p["holdout"], p["split"]) == (5, 2, "train")
    assert provenance("cifar10", npz=real, subset=3)["subset"] == {"mode": "first", "n": 3}
    assert provenance("cifar10", npz=real)["subset"] == {"mode": "all"}


def test_provenance_hashes_once_per_file_version(tmp_path, monkeypatch):
    path, _ = _write_npz(tmp_path / "train.npz", 8)
    calls = []
    real_hash = prov_module.file_sha256
    monkeypatch.setattr(prov_module, "file_sha256", lambda p: calls.append(p) or real_hash(p))
    first = provenance("cifar10", npz=path)["files"][0]["sha256"]
    assert provenance("cifar10", npz=path)["files"][0]["sha256"] == first and len(calls) == 1
    _write_npz(tmp_path / "train.npz", 8, seed=3)
    os.utime(path, ns=(1, 1))  # a changed file (new mtime) is hashed again
    assert provenance("cifar10", npz=path)["files"][0]["sha256"] == _sha(path) != first and len(calls) == 2


@pytest.mark.parametrize("folder,kind,names", [
    ("cifar-10-batches-bin", "binary folder", [f"data_batch_{i}.bin" for i in range(1, 6)]),
    ("cifar-10-batches-py", "python-pickle folder", [f"data_batch_{i}" for i in range(1, 6)]),
])
def test_provenance_of_cifar_folders(tmp_path, monkeypatch, folder, kind, names):
    monkeypatch.delenv("ADVTRAIN_DATA", raising=False)
    os.makedirs(tmp_path / folder)
    for k, name in enumerate(names):
        (tmp_path / folder / name).write_bytes(bytes([k]) * (10 + k))
    p = provenance("cifar10", root=str(tmp_path), seed=0)
    assert p["source"] == kind
    assert [os.path.basename(f["path"]) for f in p["files"]] == names
    assert [f["sha256"] for f in p["files"]] == [_sha(tmp_path / folder / n) for n in names]

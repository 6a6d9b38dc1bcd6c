"""Tests of advtrain.data: sources (CIFAR binary, npz memory-mapped, torchvision refusal), validation,
augmentation, two-view batches, seeding, the mixing sampler and the loaders. Tiny data in tmp dirs."""
from __future__ import annotations

import math
import os
import pickle
import random
from collections import Counter

import numpy as np
import pytest
import torch

from advtrain.data import (ArrayDataset, MixedSampler, build_train_loader, load_holdout_arrays,
                           load_test_arrays, random_crop_flip, read_npz, resolve_source, set_loader_epoch)
from advtrain.errors import DataError, InputError, UnknownNameError


def _images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _write_npz(path, n=16, compressed=False, seed=0, **arrays):
    arrays.setdefault("image", _images(n, seed))
    arrays.setdefault("label", np.arange(n, dtype=np.int64) % 10)
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return str(path), arrays


def _write_binary(folder, names, n, n_label_bytes, seed=0):
    """Write CIFAR binary files; return {name: (images HWC, label bytes)}."""
    os.makedirs(folder, exist_ok=True)
    out = {}
    for k, name in enumerate(names):
        x = _images(n, seed + k)
        lab = np.random.default_rng(seed + 100 + k).integers(0, 10, (n, n_label_bytes), dtype=np.uint8)
        chw = x.transpose(0, 3, 1, 2).reshape(n, -1)
        np.concatenate([lab, chw], axis=1).tofile(os.path.join(folder, name))
        out[name] = (x, lab)
    return out


@pytest.fixture
def offline_env(monkeypatch):
    monkeypatch.setenv("ADVTRAIN_OFFLINE", "1")
    monkeypatch.delenv("ADVTRAIN_DATA", raising=False)


# ---------------------------------------------------------------- sources
def test_cifar10_binary_folder(tmp_path, offline_env):
    folder = tmp_path / "cifar-10-batches-bin"
    train = _write_binary(folder, [f"data_batch_{i}.bin" for i in range(1, 6)], 3, 1)
    test = _write_binary(folder, ["test_batch.bin"], 5, 1, seed=50)
    src = resolve_source("cifar10", "train", root=str(tmp_path))
    assert src.kind == "binary"
    x, y = src.load()
    want_x = np.concatenate([train[f"data_batch_{i}.bin"][0] for i in range(1, 6)])
    want_y = np.concatenate([train[f"data_batch_{i}.bin"][1][:, 0] for i in range(1, 6)])
    assert x.shape == (15, 32, 32, 3) and x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(x, want_x)
    np.testing.assert_array_equal(y, want_y)
    xt, yt = load_test_arrays("cifar10", root=str(tmp_path), n_ex=4)
    assert xt.shape == (4, 3, 32, 32) and xt.dtype == torch.float32
    np.testing.assert_allclose(xt.numpy(), test["test_batch.bin"][0][:4].transpose(0, 3, 1, 2) / 255.0, atol=1e-7)
    assert yt.tolist() == test["test_batch.bin"][1][:4, 0].tolist()


def test_cifar100_binary_uses_fine_label(tmp_path, offline_env):
    folder = tmp_path / "cifar-100-binary"
    written = _write_binary(folder, ["train.bin", "test.bin"], 4, 2)
    x, y = resolve_source("cifar100", "test", root=str(tmp_path)).load()
    np.testing.assert_array_equal(x, written["test.bin"][0])
    np.testing.assert_array_equal(y, written["test.bin"][1][:, 1])


def test_cifar_binary_truncated(tmp_path, offline_env):
    folder = tmp_path / "cifar-10-batches-bin"
    _write_binary(folder, ["test_batch.bin"], 3, 1)
    path = folder / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="test_batch.bin"):
        load_test_arrays("cifar10", root=str(tmp_path))


def test_torchvision_folder_is_md5_checked_not_unpickled(tmp_path, offline_env):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                 "test_batch", "batches.meta"]:
        (folder / name).write_bytes(pickle.dumps(Evil()))
    src = resolve_source("cifar10", "test", root=str(tmp_path))
    assert src.kind == "torchvision"
    with pytest.raises(DataError, match="md5"):
        src.load()
    assert not marker.exists()


def test_stored_npz_is_memory_mapped(tmp_path):
    path, arrays = _write_npz(tmp_path / "s.npz", n=24)
    x, y = read_npz(path, num_classes=10)
    assert isinstance(x, np.memmap)
    np.testing.assert_array_equal(np.asarray(x), arrays["image"])
    np.testing.assert_array_equal(y, arrays["label"])
    ds = ArrayDataset(x, y)
    blob = pickle.dumps(ds)  # travels as a file reference, not as the pixels
    assert len(blob) < arrays["image"].nbytes // 10
    clone = pickle.loads(blob)
    assert isinstance(clone.images, np.memmap)
    assert torch.equal(clone[5][0], ds[5][0]) and clone[5][1] == ds[5][1]


def test_compressed_npz_small_loads_large_refused(tmp_path, monkeypatch, capfd):
    monkeypatch.delenv("ADVTRAIN_NPZ_CACHE", raising=False)
    path, arrays = _write_npz(tmp_path / "c.npz", n=8, compressed=True)
    x, y = read_npz(path, num_classes=10)
    assert not isinstance(x, np.memmap)
    np.testing.assert_array_equal(x, arrays["image"])
    assert "reading it into memory" in capfd.readouterr().err  # never silently
    with pytest.raises(DataError, match=r"np\.savez, not np\.savez_compressed") as err:
        read_npz(path, num_classes=10, limit=1000)
    assert "ADVTRAIN_NPZ_CACHE" in str(err.value) and "advtrain.data.npz_convert" in str(err.value)


@pytest.mark.parametrize("case", ["missing_key", "dtype", "shape", "label_range", "negative_label",
                                  "length", "float_labels", "objects", "truncated", "not_zip", "absent"])
@pytest.mark.parametrize("compressed", [False, True])
def test_invalid_npz(tmp_path, case, compressed):
    path = str(tmp_path / "bad.npz")
    n = 8
    kwargs = {
        "dtype": dict(image=_images(n).astype(np.float32)),
        "shape": dict(image=_images(n).transpose(0, 3, 1, 2).copy()),
        "label_range": dict(label=np.full(n, 10)),
        "negative_label": dict(label=np.full(n, -1)),
        "length": dict(label=np.zeros(n - 1, dtype=np.int64)),
        "float_labels": dict(label=np.zeros(n, dtype=np.float32)),
        "objects": dict(label=np.array([{"a": 1}] * n, dtype=object)),
    }.get(case, {})
    if case == "missing_key":
        (np.savez_compressed if compressed else np.savez)(path, images=_images(n), label=np.zeros(n))
    elif case != "absent":
        _write_npz(path, n=n, compressed=compressed, **kwargs)
    if case == "truncated":
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
    if case == "not_zip":
        with open(path, "wb") as f:
            f.write(b"not a zip file at all" * 10)
    with pytest.raises(DataError) as info:
        read_npz(path, num_classes=10)
    assert path in str(info.value) and "\n" not in str(info.value)


def test_stored_member_with_lying_header(tmp_path):
    """A stored member whose .npy header claims more data than the zip entry holds is never mapped."""
    path, _ = _write_npz(tmp_path / "t.npz", n=16)
    with open(path, "rb") as f:
        data = f.read()
    assert data.count(b"(16, 32, 32, 3)") == 1
    with open(path, "wb") as f:
        f.write(data.replace(b"(16, 32, 32, 3)", b"(96, 32, 32, 3)"))
    with pytest.raises(DataError, match="corrupt"):
        read_npz(path, num_classes=10)


def test_offline_and_missing_names_the_options(tmp_path, offline_env):
    with pytest.raises(DataError) as info:
        resolve_source("cifar10", "train", root=str(tmp_path))
    msg = str(info.value)
    for option in ("--data-root", "cifar-10-batches-bin", "cifar-10-batches-py", "--data-npz", "ADVTRAIN_DATA"):
        assert option in msg
    with pytest.raises(DataError, match="ADVTRAIN_OFFLINE"):
        resolve_source("cifar100", "test")


def test_env_directory_and_unknown_names(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVTRAIN_OFFLINE", "1")
    monkeypatch.setenv("ADVTRAIN_DATA", str(tmp_path))
    _write_npz(tmp_path / "test.npz", n=6)
    src = resolve_source("cifar10", "test")
    assert src.kind == "npz" and src.path == str(tmp_path / "test.npz")
    x, y = load_test_arrays("cifar10", n_ex=6)
    assert x.shape == (6, 3, 32, 32) and 0.0 <= x.min() and x.max() <= 1.0
    with pytest.raises(InputError, match="6 images"):
        load_test_arrays("cifar10", n_ex=7)
    with pytest.raises(UnknownNameError, match="did you mean 'cifar10'"):
        resolve_source("cifar-10", "test")
    with pytest.raises(UnknownNameError, match="split"):
        resolve_source("cifar10", "valid")


# ---------------------------------------------------------------- augmentation
def test_random_crop_flip_is_a_shifted_window():
    img = torch.from_numpy(_images(1)[0]).permute(2, 0, 1).contiguous()
    padded = torch.nn.functional.pad(img, (4, 4, 4, 4))
    windows = {(t, l, f) for t in range(9) for l in range(9) for f in (0, 1)}
    seen = set()
    for s in range(40):
        torch.manual_seed(s)
        out = random_crop_flip(img)
        assert out.shape == img.shape and out.dtype == torch.uint8
        match = [w for w in windows if torch.equal(
            out, padded[:, w[0]:w[0] + 32, w[1]:w[1] + 32].flip(-1) if w[2] else padded[:, w[0]:w[0] + 32, w[1]:w[1] + 32])]
        assert match, "output is not a crop (optionally flipped) of the zero-padded image"
        seen.update(match)
    assert len({m[2] for m in seen}) == 2 and len(seen) > 10


def test_array_dataset_reads_uint8_batches(tmp_path):
    x, y = _images(6), np.arange(6) % 10
    plain = ArrayDataset(x, y)
    img, label = plain[2]
    assert img.dtype == torch.uint8 and img.shape == (3, 32, 32) and label == 2
    assert torch.equal(img, torch.from_numpy(x[2]).permute(2, 0, 1))
    sub = ArrayDataset(x, y, indices=[5, 0])
    images, labels, views = sub.__getitems__((3, [0, 1]))
    assert len(sub) == 2 and views is None
    assert np.array_equal(images, x[[5, 0]]) and labels.tolist() == [5, 0]


def test_autoaugment_view_ignores_global_rng():
    """A two-view sample's AutoAugment view is fixed by (seed, epoch, image), whatever the global RNGs."""
    x, y = _images(4), np.zeros(4, dtype=np.int64)
    ds = ArrayDataset(x, y, two_view=True, seed=7)
    first = ds.__getitems__((0, [1, 2]))[2]
    np.random.seed(123), random.seed(9), torch.manual_seed(5)
    state = torch.get_rng_state()
    assert np.array_equal(ds.__getitems__((0, [2, 1]))[2], first[::-1])
    assert torch.equal(torch.get_rng_state(), state)  # the global torch RNG was not touched
    assert not np.array_equal(ds.__getitems__((1, [1, 2]))[2], first)  # epochs differ


def test_two_view_batches(tmp_path):
    path, arrays = _write_npz(tmp_path / "train.npz", n=12)
    kw = dict(train_npz=path, batch_size=6, seed=1)
    two = build_train_loader("cifar10", augment="autoaugment", **kw)
    basic = build_train_loader("cifar10", augment="basic", **kw)
    assert two.two_view and not basic.two_view
    for loader in (two, basic):
        set_loader_epoch(loader, 2)
    (x2, y2), (xb, yb) = next(iter(two)), next(iter(basic))
    assert x2.shape == (12, 3, 32, 32) and y2.shape == (12,) and y2.dtype == torch.int64
    assert torch.equal(y2[:6], y2[6:]) and torch.equal(y2[:6], yb)
    assert torch.equal(x2[:6], xb)  # first half = the basic pipeline, same draws
    assert not torch.equal(x2[6:], x2[:6])
    assert 0.0 <= x2.min() and x2.max() <= 1.0


# ---------------------------------------------------------------- seeding and loaders
def _batches(loader, epochs=(0, 1)):
    out = []
    for e in epochs:
        set_loader_epoch(loader, e)
        out.extend(loader)
    return out


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))


def test_loader_reproducible_across_runs_and_workers(tmp_path):
    path, _ = _write_npz(tmp_path / "train.npz", n=20)
    kw = dict(train_npz=path, batch_size=8, augment="basic")
    ref = _batches(build_train_loader("cifar10", seed=0, **kw))
    torch.manual_seed(999)  # the global RNG must not matter
    assert _same(ref, _batches(build_train_loader("cifar10", seed=0, **kw)))
    assert _same(ref, _batches(build_train_loader("cifar10", seed=0, workers=2, **kw)))
    assert not _same(ref, _batches(build_train_loader("cifar10", seed=1, **kw)))
    assert len(ref) == 2 * math.ceil(20 / 8)
    assert not torch.equal(ref[0][0], ref[3][0])  # epochs differ


def test_holdout_subset_and_ddp_shards(tmp_path):
    path, arrays = _write_npz(tmp_path / "train.npz", n=20)
    loader = build_train_loader("cifar10", train_npz=path, augment="none", batch_size=64, holdout=4, subset=8)
    (x, y), = list(loader)
    want = torch.from_numpy(arrays["image"][4:12]).permute(0, 3, 1, 2).float() / 255
    assert sorted(map(bytes, x.numpy())) == sorted(map(bytes, want.numpy()))
    xh, yh = load_holdout_arrays("cifar10", 4, npz=path)
    assert torch.equal(xh, torch.from_numpy(arrays["image"][:4]).permute(0, 3, 1, 2).float() / 255)
    ranks = [build_train_loader("cifar10", train_npz=path, augment="none", batch_size=4, holdout=4,
                                rank=r, world_size=2) for r in range(2)]
    seen = [torch.cat([b[0] for b in loader]).flatten(1) for loader in ranks]
    keys = [set(map(bytes, s.numpy())) for s in seen]
    assert not keys[0] & keys[1] and len(keys[0] | keys[1]) == 16
    with pytest.raises(InputError, match="holdout"):
        build_train_loader("cifar10", train_npz=path, holdout=20)
    with pytest.raises(UnknownNameError, match="augment"):
        build_train_loader("cifar10", train_npz=path, augment="autoaug")


# ---------------------------------------------------------------- mixing sampler
def test_mixed_sampler_composition_and_cycling():
    n_real, n_gen, bs = 10, 3, 8
    sampler = MixedSampler(n_real, n_gen, bs, 0.7, seed=0, epoch_images=50)
    batches = list(sampler)
    assert len(batches) == len(sampler) == math.ceil(50 / bs)
    g = int(0.7 * bs)
    real_stream = []
    for b in batches:
        assert len(b) == bs
        gen = [i for i in b if i >= n_real]
        assert len(gen) == g and all(i < n_real + n_gen for i in gen)
        real_stream.extend(sorted(i for i in b if i < n_real))
    all_gen = Counter(i for b in batches for i in b if i >= n_real)
    assert max(all_gen.values()) > 1  # drawn with replacement
    real_total = Counter(real_stream)  # the real set cycles: every image used ~equally often
    assert set(real_total) == set(range(n_real)) and max(real_total.values()) - min(real_total.values()) <= 1
    assert MixedSampler(n_real, n_gen, bs, seed=0).__len__() == math.ceil(n_real / bs)


def test_mixed_sampler_deterministic_and_epochs():
    s = MixedSampler(40, 100, 16, 0.5, seed=3)
    a = list(s)
    assert a == list(MixedSampler(40, 100, 16, 0.5, seed=3))
    s.set_epoch(1)
    assert list(s) != a
    assert list(MixedSampler(40, 100, 16, 0.5, seed=4)) != a


@pytest.mark.parametrize("world_size", [2, 3])
def test_mixed_sampler_rank_shards(world_size):
    bs = 6
    single = list(MixedSampler(50, 200, bs * world_size, 0.7, seed=5))
    shards = [list(MixedSampler(50, 200, bs, 0.7, seed=5, rank=r, world_size=world_size))
              for r in range(world_size)]
    assert all(len(s) == len(single) for s in shards)
    for k, whole in enumerate(single):
        parts = [s[k] for s in shards]
        assert all(len(p) == bs for p in parts)
        assert sorted(sum(parts, [])) == sorted(whole)
        reals = [{i for i in p if i < 50} for p in parts]
        assert all(not (reals[i] & reals[j]) for i in range(world_size) for j in range(i + 1, world_size))


def test_mixed_sampler_errors():
    with pytest.raises(InputError, match="fraction"):
        MixedSampler(10, 10, 8, 1.5)
    with pytest.raises(InputError, match="synthetic"):
        MixedSampler(10, 0, 8, 0.7)
    with pytest.raises(InputError, match="rank"):
        MixedSampler(10, 10, 8, 0.7, rank=2, world_size=2)


def test_loader_with_synthetic_npz(tmp_path):
    real, _ = _write_npz(tmp_path / "train.npz", n=16)
    gen1, _ = _write_npz(tmp_path / "gen1.npz", n=10, seed=1, label=np.full(10, 7))
    gen2, _ = _write_npz(tmp_path / "gen2.npz", n=10, seed=2, label=np.full(10, 7))
    loader = build_train_loader("cifar10", train_npz=real, synthetic_npz=[gen1, gen2], synthetic_fraction=0.5,
                                batch_size=8, seed=0)
    batches = _batches(loader, epochs=(0,))
    assert len(batches) == math.ceil(16 / 8)
    for x, y in batches:
        assert x.shape == (8, 3, 32, 32)
    ranks = [build_train_loader("cifar10", train_npz=real, synthetic_npz=gen1, batch_size=4, seed=0,
                                rank=r, world_size=2) for r in range(2)]
    assert all(len(r) == math.ceil(16 / 8) for r in ranks)


# ---------------------------------------------------------------- real data (when present)
def test_shared_cifar10_smoke(shared_cifar10_dir, monkeypatch):
    monkeypatch.setenv("ADVTRAIN_DATA", shared_cifar10_dir)
    x, y = load_test_arrays("cifar10", n_ex=16)
    assert x.shape == (16, 3, 32, 32) and y.dtype == torch.int64 and int(y.max()) < 10
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.05
    loader = build_train_loader("cifar10", root=shared_cifar10_dir, subset=32, batch_size=16)
    xb, yb = next(iter(loader))
    assert xb.shape == (16, 3, 32, 32) and len(set(yb.tolist())) > 1


def test_cifar100_npz_with_only_ten_labels_warns(tmp_path):
    path, _ = _write_npz(tmp_path / "test.npz", n=1000)
    with pytest.warns(UserWarning, match="CIFAR-10"):
        resolve_source("cifar100", "test", npz=path).load()

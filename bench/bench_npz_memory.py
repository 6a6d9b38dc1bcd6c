"""Peak memory of the real training loader over a large uncompressed npz (memory-mapped members).

Writes an ``np.savez``-layout file (members ``image`` N x 32 x 32 x 3 uint8 and ``label`` int64,
stored, not compressed) of ``--n`` random images (1M = 3.07 GB) into a temporary directory, streaming
it in chunks so the generator itself stays small; checks the free disk space first. Then, in a fresh
subprocess per case, it builds ``advtrain.data.build_train_loader`` as rank 0 of ``--world`` and
iterates ``--batches`` batches, reporting the process's *anonymous* resident memory (``RssAnon``:
what the loader itself allocates) after imports, after building and after iterating, the
file-backed part (``RssFile``: mapped pages of the npz, shared with the page cache and reclaimable)
and the peak RSS (``ru_maxrss``, both kinds)::

    plain:  the npz as train_npz        -> DistributedSampler(rank 0 of world)
    mixed:  an 8192-image real npz + the big npz as synthetic_npz -> MixedSampler(rank 0 of world)

A loader that read the file into RAM would show anonymous memory of at least the file size. The
file-backed part can approach the file size when the file is still in the page cache: the kernel
maps whole cached folios around each faulted image, which costs no memory of its own. Example::

    python bench/bench_npz_memory.py --n 1000000 --batches 20
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np

IMAGE_BYTES = 32 * 32 * 3


def write_member(zf: zipfile.ZipFile, name: str, shape, dtype, chunks) -> None:
    """Stream one ``.npy`` member (header, then the chunks) into the zip, stored uncompressed."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": tuple(shape)}
    with zf.open(name + ".npy", "w", force_zip64=True) as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        for chunk in chunks:
            fh.write(np.ascontiguousarray(chunk, dtype=dtype).tobytes())


def make_npz(path: str, n: int, chunk: int = 50_000, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        write_member(zf, "image", (n, 32, 32, 3), np.uint8,
                     (rng.integers(0, 256, (min(chunk, n - i), 32, 32, 3), dtype=np.uint8)
                      for i in range(0, n, chunk)))
        write_member(zf, "label", (n,), np.int64,
                     (np.arange(i, min(i + chunk, n)) % 10 for i in range(0, n, chunk)))


CHILD = r"""
import json, resource, sys, time
def mem():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    kb = lambda k: int(fields.get(k, "0 kB").split()[0]) / 1024
    return {"peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "anon": kb("RssAnon"), "file": kb("RssFile")}
from advtrain.data import build_train_loader
mode, big, small, world, batches, batch = sys.argv[1:7]
base = mem()
kw = dict(train_npz=big) if mode == "plain" else dict(train_npz=small, synthetic_npz=[big])
t0 = time.time()
loader = build_train_loader("cifar10", batch_size=int(batch), rank=0, world_size=int(world),
                            augment="basic", **kw)
built = mem()
for i, (x, y) in enumerate(loader):
    if i + 1 >= int(batches):
        break
print(json.dumps({"mode": mode, "imports": base, "built": built, "end": mem(),
                  "batches": i + 1, "batch": x.shape[0], "seconds": time.time() - t0,
                  "len_loader": len(loader)}))
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000, help="images in the big npz (1M = 3.07 GB)")
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--world", type=int, default=2, help="ranks of the sharded sampler (rank 0 runs)")
    p.add_argument("--dir", default=None, help="where to write the temporary npz (default: TMPDIR)")
    args = p.parse_args(argv)
    folder = tempfile.mkdtemp(prefix="advtrain-npz-", dir=args.dir)
    try:
        need = args.n * (IMAGE_BYTES + 8) + (1 << 30)
        free = shutil.disk_usage(folder).free
        print(f"disk: {free / 2**30:.1f} GiB free in {folder}, need {need / 2**30:.1f} GiB")
        if free < need:
            print(f"not enough disk space for --n {args.n}; use a smaller --n or --dir elsewhere")
            return 1
        big, small = os.path.join(folder, "big.npz"), os.path.join(folder, "real.npz")
        t0 = time.time()
        make_npz(big, args.n)
        make_npz(small, 8192, seed=1)
        size = os.path.getsize(big)
        print(f"wrote {args.n} images, {size / 2**30:.2f} GiB, in {time.time() - t0:.1f} s")
        for mode in ("plain", "mixed"):
            cmd = [sys.executable, "-c", CHILD, mode, big, small, str(args.world),
                   str(args.batches), str(args.batch)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(f"{mode:5s}: anonymous RSS {r['imports']['anon']:.0f} MB after imports -> "
                  f"{r['built']['anon']:.0f} MB built -> {r['end']['anon']:.0f} MB after "
                  f"{r['batches']} batches of {r['batch']} (rank 0 of {args.world}, "
                  f"{r['len_loader']} batches/epoch); file-backed RSS {r['end']['file']:.0f} MB; "
                  f"peak RSS {r['end']['peak']:.0f} MB; file {size / 2**20:.0f} MB; "
                  f"{r['seconds']:.1f} s")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

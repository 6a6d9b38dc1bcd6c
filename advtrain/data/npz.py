"""Read ``.npz`` image sets (keys ``image`` N×32×32×3 uint8, ``label`` N) without loading them whole.

This is the convention of the synthesized-data files (DM-Improves-AT, SPEC §6) and of
``../shared/data/cifar10-jpeg/{train,test}.npz``. ``np.load(path, mmap_mode='r')`` does *not* memory-map
members of an ``.npz``, so a 20M-image file would be decompressed into RAM. Instead, for members that
are *stored* (``np.savez``) we locate the member inside the zip archive, parse its ``.npy`` header and
build an ``np.memmap`` directly over the file: pages are read only when an image is indexed.
Members that are *compressed* (``np.savez_compressed``) cannot be mapped. With a cache folder
(``ADVTRAIN_NPZ_CACHE``, or ``cache_dir``) such a file is decompressed once, streaming, into an uncompressed
copy there, which is then memory-mapped (one line on stderr says so). Without one, files whose members
total at most :data:`COMPRESSED_LIMIT` bytes are read into memory (one line says so); larger ones are
refused with a line naming the cache variable and the conversion command
(``python -m advtrain.data.npz_convert IN.npz OUT.npz``).
Nothing is ever unpickled (object arrays are refused). Memory-mapped members are checked for size
against the zip directory and the file length, but their CRC is not verified (that would read them whole).
"""
from __future__ import annotations

import os
import shutil
import struct
import sys
import tokenize
import zipfile
import zlib
from typing import Optional, Tuple

import numpy as np

from advtrain.errors import DataError

#: compressed npz files larger than this (uncompressed bytes) are refused unless a cache folder is set
COMPRESSED_LIMIT = 2 << 30
#: environment variable naming the folder where compressed npz files are decompressed once
CACHE_ENV = "ADVTRAIN_NPZ_CACHE"

_LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # zip local file header: 30 bytes
_CHUNK = 1 << 22  # labels are range-checked in chunks so huge memmaps are never read at once


def _fix() -> str:
    return "re-create it with np.savez(path, image=uint8 N×32×32×3, label=int N)"


def _member_data_offset(f, info: zipfile.ZipInfo, path: str) -> int:
    """Byte offset of a member's data: after its local header, file name and extra field."""
    f.seek(info.header_offset)
    raw = f.read(_LOCAL_HEADER.size)
    if len(raw) != _LOCAL_HEADER.size or raw[:4] != b"PK\x03\x04":
        raise DataError(f"{path}: corrupt zip entry {info.filename!r}; {_fix()}")
    fields = _LOCAL_HEADER.unpack(raw)
    name_len, extra_len = fields[-2], fields[-1]
    return info.header_offset + _LOCAL_HEADER.size + name_len + extra_len


#: what numpy raises for a garbled ``.npy`` header (it parses the header text as a Python literal)
BAD_HEADER = (ValueError, SyntaxError, tokenize.TokenError)


def _map_stored(path: str, info: zipfile.ZipInfo) -> np.memmap:
    """np.memmap over the array data of an uncompressed ``.npy`` member."""
    with open(path, "rb") as f:
        member_start = _member_data_offset(f, info, path)
        f.seek(member_start)
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        except BAD_HEADER as e:
            raise DataError(f"{path}: member {info.filename!r} is not a valid .npy ({e}); {_fix()}") from None
        data_offset = f.tell()
    if dtype.hasobject:
        raise DataError(f"{path}: member {info.filename!r} holds Python objects (needs pickle, refused); {_fix()}")
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if data_offset - member_start + nbytes != info.file_size:
        raise DataError(f"{path}: member {info.filename!r} is corrupt (header does not match its size); {_fix()}")
    if data_offset + nbytes > os.path.getsize(path):
        raise DataError(f"{path}: file is truncated (member {info.filename!r} incomplete); re-copy or {_fix()}")
    if nbytes == 0:
        return np.zeros(shape, dtype)
    mm = np.memmap(path, dtype=dtype, mode="r", offset=data_offset, shape=tuple(shape),
                   order="F" if fortran else "C")
    mm._advtrain_spec = (path, data_offset, dtype.str, tuple(shape), "F" if fortran else "C")
    return mm


def _load_compressed(path: str, key: str) -> np.ndarray:
    """Decompress one member into memory (allow_pickle=False); the caller checked its size."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return z[key]
    except (*BAD_HEADER, OSError, EOFError, zlib.error, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: cannot read member {key!r} ({e}); re-copy the file or {_fix()}") from None


def _member(path: str, zf: zipfile.ZipFile, key: str) -> zipfile.ZipInfo:
    try:
        return zf.getinfo(key + ".npy")
    except KeyError:
        keys = sorted(n[:-4] if n.endswith(".npy") else n for n in zf.namelist())
        raise DataError(f"{path}: missing key {key!r} (found {keys}); {_fix()}") from None


def convert_npz(src: str, dst: str) -> None:
    """Write ``src``'s ``image``/``label`` members uncompressed to ``dst``, streaming (never whole in RAM).

    Written to a temporary file beside ``dst`` and renamed, so ``dst`` is complete or absent.
    """
    tmp = f"{dst}.partial-{os.getpid()}"
    try:
        with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zout:
            for key in ("image", "label"):
                info = _member(src, zin, key)
                with zin.open(info) as fin, zout.open(info.filename, "w", force_zip64=True) as fout:
                    shutil.copyfileobj(fin, fout, _CHUNK)
        os.replace(tmp, dst)
    except (OSError, zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise DataError(f"cannot decompress {src} into {dst} ({e}); free space there or pick another "
                        f"folder ({CACHE_ENV}=DIR), or re-copy {src}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


#: notices already printed in this process: a file read twice in one run (train and test
#: split, or the source check and the load) says so once
_NOTICES: set = set()


def _notice(path: str, text: str) -> None:
    key = os.path.realpath(path)
    if key not in _NOTICES:
        _NOTICES.add(key)
        print(text, file=sys.stderr)


def _cached_copy(path: str, cache_dir: str) -> str:
    """The uncompressed copy of ``path`` in ``cache_dir``, made on first use.

    The copy is named by the SHA-256 of the source's content (not its path, size or mtime), and a
    record beside it (``<copy>.sha256``) holds the copy's own SHA-256, taken when it was made. A
    copy is used only when it still has that hash; one changed in place (or without its record) is
    made again from the source, so what is read is always the source the sidecar names."""
    from advtrain.io.safeload import file_sha256

    source = file_sha256(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    cached = os.path.join(cache_dir, f"{stem}-{source[:16]}.npz")
    record = cached + ".sha256"
    if os.path.isfile(cached):
        try:
            with open(record, encoding="ascii") as f:
                expected = f.read().strip()
        except (OSError, UnicodeDecodeError):
            expected = None
        if expected is not None and file_sha256(cached) == expected:
            _notice(path, f"advtrain: {path} is compressed; memory-mapping its decompressed copy "
                          f"{cached} (verified)")
            return cached
        print(f"advtrain: the decompressed copy {cached} does not match the one made from {path} "
              "(changed since); making it again", file=sys.stderr)
    if not os.path.isdir(cache_dir):
        raise DataError(f"{CACHE_ENV}={cache_dir} is not a directory; create it or point it at one")
    convert_npz(path, cached)
    tmp = f"{record}.partial-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="ascii") as f:
            f.write(file_sha256(cached) + "\n")
        os.replace(tmp, record)
    except OSError as e:
        raise DataError(f"cannot write {record} ({e}); free space there or pick another folder "
                        f"({CACHE_ENV}=DIR)") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _notice(path, f"advtrain: {path} is compressed; decompressed it once into {cached} "
                  "(memory-mapped from there)")
    return cached


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB"


#: the most a deflate stream can expand (about 1032:1); a member that declares more than this times
#: its compressed size cannot hold what it says
DEFLATE_MAX_RATIO = 1032
_NPY_HEADER_MAX = 1 << 16  # numpy's own cap on a .npy header


def _check_compressed_member(path: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Before decompressing a member: its ``.npy`` header (read from the first bytes of the
    stream) declares ``shape * itemsize`` bytes, which must equal the zip directory's uncompressed
    size and fit what its compressed bytes could expand to. Otherwise numpy would be asked for
    memory the file cannot fill (a few bytes declaring terabytes)."""
    from io import BytesIO

    try:
        with zf.open(info) as stream:
            head = stream.read(_NPY_HEADER_MAX + 16)
        f = BytesIO(head)
        version = np.lib.format.read_magic(f)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read(f, max_header_size=_NPY_HEADER_MAX)
    except (*BAD_HEADER, OSError, EOFError, zlib.error, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: member {info.filename!r} is not a valid .npy ({e}); "
                        f"{_fix()}") from None
    if dtype.hasobject:
        raise DataError(f"{path}: member {info.filename!r} holds Python objects (needs pickle, "
                        f"refused); {_fix()}")
    declared = f.tell() + int(np.prod(shape, dtype=object)) * dtype.itemsize
    bound = info.compress_size * DEFLATE_MAX_RATIO + _NPY_HEADER_MAX
    if declared != info.file_size or declared > bound:
        raise DataError(f"{path}: member {info.filename!r} is corrupt (its header declares "
                        f"{declared} bytes; the archive holds {info.file_size} uncompressed, "
                        f"{info.compress_size} compressed); re-copy the file or {_fix()}")


def _read_compressed(path: str, zf: zipfile.ZipFile, limit: int, cache_dir: Optional[str]):
    """(images, labels) of a compressed npz: via the cache folder, in memory when small, else refused."""
    for k in ("image", "label"):
        info = _member(path, zf, k)
        if info.compress_type != zipfile.ZIP_DEFLATED:
            raise DataError(f"{path}: member {info.filename!r} uses zip compression type "
                            f"{info.compress_type}, not np.savez_compressed's deflate; {_fix()}")
        _check_compressed_member(path, zf, info)
    if cache_dir:
        return _read_members(_cached_copy(path, cache_dir), limit, None)
    size = sum(_member(path, zf, k).file_size for k in ("image", "label"))
    if size > limit:
        raise DataError(
            f"{path}: compressed (np.savez_compressed), {_mib(size)} decompressed: too large to read "
            f"into memory; set {CACHE_ENV}=DIR to decompress it once into DIR and memory-map it there, or "
            f"convert it: python -m advtrain.data.npz_convert {path} OUT.npz (np.savez, not np.savez_compressed)")
    _notice(path, f"advtrain: {path} is compressed; reading it into memory ({_mib(size)}; set "
                  f"{CACHE_ENV}=DIR to memory-map a decompressed copy instead)")
    return _load_compressed(path, "image"), _load_compressed(path, "label")


def _read_members(path: str, limit: int, cache_dir: Optional[str]):
    try:
        with zipfile.ZipFile(path) as zf:
            infos = [_member(path, zf, k) for k in ("image", "label")]
            if any(i.compress_type != zipfile.ZIP_STORED for i in infos):
                return _read_compressed(path, zf, limit, cache_dir)
            return tuple(_map_stored(path, info) for info in infos)
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise DataError(f"{path}: not a readable npz (truncated or corrupt: {e}); re-copy the file or "
                        f"{_fix()}") from None


def check_arrays(images, labels, path: str, num_classes: Optional[int] = None) -> np.ndarray:
    """Validate an (images, labels) pair; return labels as int64. Raises DataError naming ``path``."""
    if images.dtype != np.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (32, 32, 3):
        raise DataError(
            f"{path}: 'image' must be uint8 of shape N×32×32×3 (HWC), got {images.dtype} {tuple(images.shape)}; "
            f"{_fix()}"
        )
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: 'label' must be a 1-D integer array, got {labels.dtype} "
                        f"{tuple(labels.shape)}; {_fix()}")
    if len(labels) != len(images):
        raise DataError(f"{path}: {len(images)} images but {len(labels)} labels; {_fix()}")
    if len(labels) == 0:
        raise DataError(f"{path}: holds no images (0 entries); point at a file with data or {_fix()}")
    hi = num_classes if num_classes is not None else np.iinfo(np.int64).max
    for start in range(0, len(labels), _CHUNK):
        chunk = np.asarray(labels[start:start + _CHUNK])
        lo_v, hi_v = int(chunk.min()), int(chunk.max())
        if lo_v < 0 or hi_v >= hi:
            bad = lo_v if lo_v < 0 else hi_v
            raise DataError(f"{path}: label {bad} outside [0, {hi}); "
                            f"use labels 0..{hi - 1} for this dataset or pick the right --dataset")
    if labels.dtype == np.int64:
        return labels
    return np.asarray(labels, dtype=np.int64)


def read_npz(path: str, num_classes: Optional[int] = None, limit: int = COMPRESSED_LIMIT,
             cache_dir: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(images uint8 N×32×32×3, labels int64 N) from ``path``; stored members are np.memmap views.

    ``num_classes`` enables the label range check ``0 <= label < num_classes``. A compressed file is
    decompressed once into ``cache_dir`` (default: ``$ADVTRAIN_NPZ_CACHE``) and mapped from there, else
    read into memory up to ``limit`` bytes (see the module docstring).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such npz file; check the path (--data-npz / synthetic npz)")
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV) or None
    images, labels = _read_members(path, limit, cache_dir)
    return images, check_arrays(images, labels, path, num_classes)


def reopen(spec) -> np.memmap:
    """Re-create a memmap from the spec :func:`read_npz` attaches (used when a dataset is pickled)."""
    path, offset, dtype, shape, order = spec
    mm = np.memmap(path, dtype=np.dtype(dtype), mode="r", offset=offset, shape=shape, order=order)
    mm._advtrain_spec = spec
    return mm


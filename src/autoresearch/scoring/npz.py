"""Reading ``embeddings.npz`` as hostile input: every size is checked before a byte of data is read.

``np.load`` trusts the archive: a header may declare a shape of petabytes (the allocation fails or the
machine swaps), a member may inflate from kilobytes to gigabytes, an object array runs the pickle
machinery. Here the zip directory is read first and its declared sizes summed against a cap; then the
``.npy`` header of each member we need (magic, dtype, shape, read with ``numpy.lib.format`` without the
data) is checked against the query set (n rows, one per id in the hidden key), a dimension cap and the
dtypes a scorer accepts; only then is the data read, through a reader that stops at the declared size.

Every refusal is a ``BadEmbeddings`` whose message is the run's crash reason.
"""

from __future__ import annotations

import io
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from autoresearch.scoring.safeio import MiB, UnsafeOutput, open_output

EMBEDDINGS_FILE = "embeddings.npz"
ID_ARRAYS = ("image_ids", "caption_ids")
EMB_ARRAYS = ("image_emb", "caption_emb")


@dataclass(frozen=True)
class Limits:
    """Caps on what a run may submit. The defaults take 10,000 queries at width 4,096 in float32
    (330 MB uncompressed) with room to spare; ``max_bytes`` also bounds the compressed file."""

    max_bytes: int = 1024 * MiB      # uncompressed size of all members together, as the zip declares
    max_dim: int = 4096              # embedding width
    max_id_chars: int = 512          # length of one id
    max_members: int = 64            # entries in the archive


class BadEmbeddings(Exception):
    """Embeddings the tool will not score; the message says why."""


def _human(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= (1 << 30) else f"{n / MiB:.1f} MiB"


class _Bounded(io.RawIOBase):
    """A read-only view of a zip member that refuses to yield more than ``limit`` bytes in total."""

    def __init__(self, stream, limit: int, what: str) -> None:
        self._stream, self._left, self._what = stream, limit, what

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if self._left <= 0:
            return 0
        view = memoryview(buf)[: self._left]
        data = self._stream.read(len(view))
        if len(data) > len(view):
            raise BadEmbeddings(f"{self._what} inflates past its declared size")
        view[: len(data)] = data
        self._left -= len(data)
        return len(data)

    def read_exact(self, n: int) -> bytes:
        out = bytearray(n)
        view, got = memoryview(out), 0
        while got < n:
            k = self.readinto(view[got:])
            if k == 0:
                raise BadEmbeddings(f"{self._what} is truncated: {n - got} bytes of its data are missing")
            got += k
        return bytes(out)


def _header(stream: _Bounded, what: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = npy_format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = npy_format.read_array_header_2_0(stream)
        else:
            raise BadEmbeddings(f"{what} has .npy format version {version}; save plain arrays with np.savez")
    except BadEmbeddings:
        raise
    except (ValueError, EOFError, OSError, SyntaxError, TypeError) as exc:
        raise BadEmbeddings(f"{what} is not a valid .npy array: {exc}") from None
    return tuple(int(s) for s in shape), bool(fortran), np.dtype(dtype)


def _check_header(name: str, shape, dtype: np.dtype, n: int, limits: Limits) -> None:
    what = f"{name} in {EMBEDDINGS_FILE}"
    if dtype.hasobject:
        raise BadEmbeddings(f"{what} stores Python objects (pickled); ids must be saved as string arrays "
                            "and embeddings as numbers, never dtype=object")
    if name in ID_ARRAYS:
        if dtype.kind not in "US" or len(shape) != 1:
            raise BadEmbeddings(f"{name} must be a 1-D array of strings, got {dtype} with shape {shape}")
        chars = dtype.itemsize // (4 if dtype.kind == "U" else 1)
        if chars > limits.max_id_chars:
            raise BadEmbeddings(f"{name} holds strings of up to {chars} characters; ids are at most "
                                f"{limits.max_id_chars}")
        if shape[0] != n:
            raise BadEmbeddings(f"{name} has {shape[0]} entries, but the query set has {n} "
                                "(one per query, each exactly once)")
        return
    ids = "image_ids" if name == "image_emb" else "caption_ids"
    if dtype.kind not in "fiu" or dtype.itemsize > 8 or dtype.names is not None or len(shape) != 2:
        raise BadEmbeddings(f"{name} must be a numeric [n, d] array (float32 preferred) with one row per "
                            f"entry of {ids}; got {dtype} {shape}")
    if shape[0] != n:
        raise BadEmbeddings(f"{name} must be a numeric [n, d] array with one row per entry of {ids}; "
                            f"got {shape[0]} rows for the {n} queries")
    if not 1 <= shape[1] <= limits.max_dim:
        raise BadEmbeddings(f"{name} has dimension {shape[1]}; the scorer takes 1 to {limits.max_dim}")


def _open_members(zf: zipfile.ZipFile, limits: Limits) -> dict[str, zipfile.ZipInfo]:
    infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise BadEmbeddings(f"{EMBEDDINGS_FILE} has {len(infos)} entries; an .npz of embeddings has four")
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        twice = sorted({x for x in names if names.count(x) > 1})
        raise BadEmbeddings(f"{EMBEDDINGS_FILE} holds {twice[0]!r} more than once")
    declared = sum(i.file_size for i in infos)
    if declared > limits.max_bytes:
        raise BadEmbeddings(f"{EMBEDDINGS_FILE} declares {_human(declared)} of uncompressed data, over the "
                            f"{_human(limits.max_bytes)} cap (a zip bomb, or embeddings far too large)")
    members = {i.filename[:-4]: i for i in infos if i.filename.endswith(".npy")}
    absent = [a for a in (*ID_ARRAYS, *EMB_ARRAYS) if a not in members]
    if absent:
        raise BadEmbeddings(f"{EMBEDDINGS_FILE} lacks {', '.join(absent)} "
                            f"(has {', '.join(sorted(members)) or 'nothing'})")
    for name in (*ID_ARRAYS, *EMB_ARRAYS):
        info = members[name]
        if info.flag_bits & 0x1:
            raise BadEmbeddings(f"{name} in {EMBEDDINGS_FILE} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            # bzip2 and lzma inflate a whole block at once, so a reader cannot stop early
            raise BadEmbeddings(f"{name} in {EMBEDDINGS_FILE} uses compression method {info.compress_type}; "
                                "use np.savez or np.savez_compressed")
    return members


def _check_directory(fh, limits: Limits) -> None:
    """Refuse an archive with a huge central directory before ``zipfile`` builds an object per entry."""
    try:
        end = zipfile._EndRecData(fh)   # the end-of-directory record: entry count and directory size
        count, size = int(end[zipfile._ECD_ENTRIES_TOTAL]), int(end[zipfile._ECD_SIZE])
    except (AttributeError, IndexError, TypeError, ValueError, OSError):
        return                          # another zipfile implementation: the checks after parsing remain
    if count > limits.max_members or size > limits.max_members * 4096:
        raise BadEmbeddings(f"{EMBEDDINGS_FILE} has {count} entries in a {size}-byte directory; "
                            "an .npz of embeddings has four")


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, n: int, limits: Limits) -> np.ndarray:
    what = f"{name} in {EMBEDDINGS_FILE}"
    with zf.open(info) as raw:
        stream = _Bounded(raw, info.file_size, what)
        shape, fortran, dtype = _header(stream, what)
        _check_header(name, shape, dtype, n, limits)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > stream._left:
            raise BadEmbeddings(f"{what} declares {nbytes} bytes of data but its entry holds {stream._left}")
        data = stream.read_exact(nbytes)
    arr = np.frombuffer(data, dtype=dtype)
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)


def _as_ids(arr: np.ndarray, name: str) -> np.ndarray:
    try:
        out = arr.astype(str)
        out.tolist()            # code points beyond Unicode fail here, not later
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadEmbeddings(f"{name} are not valid text: {exc}") from None
    return out


def read_embeddings(out_dir: Path, n: int, limits: Limits = Limits()) -> dict[str, np.ndarray]:
    """The four arrays of ``out_dir/embeddings.npz`` for a query set of ``n``, or ``BadEmbeddings``."""
    try:
        fd = open_output(Path(out_dir), EMBEDDINGS_FILE, limits.max_bytes + 64 * MiB)
    except FileNotFoundError:
        raise BadEmbeddings(f"the run wrote no {EMBEDDINGS_FILE} in {out_dir}") from None
    except UnsafeOutput as exc:
        raise BadEmbeddings(str(exc)) from None
    with os.fdopen(fd, "rb") as fh:
        if not zipfile.is_zipfile(fh):
            raise BadEmbeddings(f"{EMBEDDINGS_FILE} is not a valid .npz file (not a zip archive)")
        _check_directory(fh, limits)
        try:
            with zipfile.ZipFile(fh) as zf:
                members = _open_members(zf, limits)
                arrays = {name: _read_member(zf, members[name], name, n, limits)
                          for name in (*ID_ARRAYS, *EMB_ARRAYS)}
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError,
                RuntimeError, ValueError) as exc:
            raise BadEmbeddings(f"{EMBEDDINGS_FILE} is not a valid .npz file: {exc}") from None
    if arrays["image_emb"].shape[1] != arrays["caption_emb"].shape[1]:
        raise BadEmbeddings(f"image_emb has dimension {arrays['image_emb'].shape[1]} but caption_emb "
                            f"{arrays['caption_emb'].shape[1]}")
    for name in ID_ARRAYS:
        arrays[name] = _as_ids(arrays[name], name)
    return arrays

"""Writing results: atomic files, deterministic ``.npz`` archives, unique output names.

Every write goes to a temporary file in the target folder and is renamed over the
target (:func:`os.replace`), so a reader (or a run killed midway) only ever sees a
missing file or a complete one. Equal inputs give byte-identical files.
"""

from __future__ import annotations

import contextlib
import enum
import io
import json
import os
import re
import shutil
import tempfile
import unicodedata
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

_TEMP_PREFIX = ".pfv-tmp-"


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], *, durable: bool = True) -> Iterator[BinaryIO]:
    """A binary file whose content replaces ``path`` only when the block ends without error.

    It is written under a temporary name beside the target, synced (``durable``), then renamed
    into place, so the target is either the old file, missing, or complete. Without ``durable``
    the rename still protects against a killed process; only a crash of the machine could
    leave the file empty, so files written that way must be followed by :func:`sync_all`
    before anything records them as done.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            if durable or not hasattr(os, "sync"):  # no sync_all for later: sync now
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename; returns the path."""
    with atomic_file(path, durable=durable) as f:
        f.write(data)
    return Path(path)


def sync_all(folder: str | os.PathLike[str]) -> None:
    """Flush the files written so far on ``folder``'s filesystem to disk: one call for many
    files written without ``durable`` (pictures), instead of a sync per file.

    Linux: ``syncfs`` of that filesystem alone; elsewhere ``os.sync`` of all. Where neither
    exists, :func:`atomic_file` syncs every file itself.
    """
    if not _syncfs(folder) and hasattr(os, "sync"):
        os.sync()


def _syncfs(folder: str | os.PathLike[str]) -> bool:
    from ._libc import function

    syncfs = function("syncfs")
    if syncfs is None:
        return False
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return False
    try:
        return syncfs(fd) == 0
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """UTF-8 text written as :func:`atomic_write_bytes` does."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not np.isfinite(obj):
        return None  # JSON has no NaN or Infinity
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    return obj


def json_text(obj: Any) -> str:
    """``obj`` as indented JSON text (NumPy values, paths and enums converted; NaN as null)."""
    return json.dumps(_jsonable(obj), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, json_text(obj))  # written atomically


def _npz_entry(zf: zipfile.ZipFile, key: str, header: dict[str, Any], blocks: Iterable[bytes | memoryview], deflate: bool) -> None:
    """One ``KEY.npy`` entry: a ``.npy`` header and the array's bytes, with a fixed timestamp
    (so equal arrays give equal archives)."""
    info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    with zf.open(info, "w", force_zip64=True) as out:
        if deflate:
            _faster_deflate(out)
        if _fits_v1(header):  # numpy writes format 1.0 unless the header is too long for it
            np.lib.format.write_array_header_1_0(out, header)
        else:
            np.lib.format.write_array_header_2_0(out, header)
        for block in blocks:
            out.write(block)


NPZ_DEFLATE_LEVEL = 1  # ISA-L's level of the deflated entries


def _faster_deflate(entry: Any) -> None:
    """Deflate a zip entry being written with ISA-L (``isal``): the same format, 8x faster than
    zlib's default level on pfv.npz's 8-bit maps for 15% more bytes (docs/PERFORMANCE.md).
    :mod:`zipfile` has no public hook for it: without the attribute or ``isal``, zlib writes."""
    try:
        from isal import isal_zlib
    except ImportError:
        return
    if getattr(entry, "_compressor", None) is not None:
        entry._compressor = isal_zlib.compressobj(NPZ_DEFLATE_LEVEL, isal_zlib.DEFLATED, -15)


def _array_entry(arr: np.ndarray) -> tuple[dict[str, Any], list[memoryview]]:
    arr = arr if arr.flags.c_contiguous else arr.copy(order="C")  # not ascontiguousarray: it makes a 0-d array 1-d
    if arr.dtype == object:
        raise TypeError("an array of dtype object; store strings as a fixed-width str array")
    header = {"descr": np.lib.format.dtype_to_descr(arr.dtype), "fortran_order": False, "shape": arr.shape}
    return header, [memoryview(arr.reshape(-1).view(np.uint8))] if arr.size else []  # the bytes, not copied


def _write_npz_to(raw: BinaryIO, arrays: Mapping[str, Any], deflate: Iterable[str]) -> None:
    packed = set(deflate)
    with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, value in arrays.items():
            header, blocks = value.entry() if isinstance(value, _Spooled) else _array_entry(np.asarray(value))
            _npz_entry(zf, key, header, blocks, key in packed)


def npz_bytes(arrays: Mapping[str, np.ndarray], *, deflate: Iterable[str] = ()) -> bytes:
    """A ``.npz`` archive readable by :func:`numpy.load` without pickle. Entries are stored
    uncompressed unless named in ``deflate`` (8-bit maps shrink several times, float maps by 10%
    for more time than the whole PFV computation); a fixed timestamp, unlike :func:`numpy.savez`,
    makes the same arrays give the same bytes with the same deflate library (ISA-L, else zlib)."""
    buf = io.BytesIO()
    _write_npz_to(buf, arrays, deflate)
    return buf.getvalue()


def write_npz(path: str | os.PathLike[str], arrays: Mapping[str, Any], *, deflate: Iterable[str] = ()) -> Path:
    """Write :func:`npz_bytes` atomically; values may also be :meth:`RowSpool.rows` of spooled arrays."""
    with atomic_file(path) as raw:
        _write_npz_to(raw, arrays, deflate)
    return Path(path)


def npz_row_blocks(path: str | os.PathLike[str], key: str, rows: int = 256) -> Iterator[np.ndarray]:
    """The array ``key`` of a ``.npz`` archive, ``rows`` rows (axis 0) at a time, read from the
    archive as a stream: a deflated entry is never inflated whole. ValueError when the entry
    is not a plain C-ordered array; KeyError when there is none."""
    with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        if fortran or dtype.hasobject or not shape:
            raise ValueError(f"{key!r} is not a C-ordered array of rows")
        tail = tuple(shape[1:])
        row_bytes = int(np.prod(tail, dtype=np.int64)) * dtype.itemsize
        for start in range(0, shape[0], rows):
            n = min(rows, shape[0] - start)
            data = f.read(n * row_bytes)
            if len(data) != n * row_bytes:
                raise ValueError(f"{key!r} ends before its last row")
            yield np.frombuffer(data, dtype=dtype).reshape(n, *tail)


class _Spooled:
    """The rows of one spooled array, read back block by block into an archive."""

    def __init__(self, name: str, dtype: np.dtype, shape: tuple[int, ...]):
        self.name, self.dtype, self.shape = name, dtype, shape

    def entry(self) -> tuple[dict[str, Any], Iterator[bytes]]:
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}

        def blocks() -> Iterator[bytes]:
            with open(self.name, "rb") as src:
                while block := src.read(1 << 22):
                    yield block

        return header, blocks()


class RowSpool:
    """Arrays that grow by rows (axis 0), spooled to temporary files, written as one ``.npz``.

    Memory stays bounded by one group however many groups a run has: each
    :meth:`append` writes its rows to a temporary file beside the target, and
    :func:`write_npz` of :meth:`rows` streams them into the archive, byte-identical to
    the archive of the concatenated arrays.
    """

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder = Path(folder)
        self._parts: dict[str, tuple[Any, np.dtype, tuple[int, ...], int]] = {}

    def append(self, key: str, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows)
        if rows.dtype == object:
            raise TypeError(f"array {key!r} has dtype object")
        if key not in self._parts:
            f = tempfile.NamedTemporaryFile(prefix=_TEMP_PREFIX, suffix=".tmp", dir=self.folder, delete=False)
            self._parts[key] = (f, rows.dtype, rows.shape[1:], 0)
        f, dtype, tail, n = self._parts[key]
        if rows.shape[1:] != tail or rows.dtype != dtype:
            raise ValueError(f"rows for {key!r} have shape {rows.shape[1:]} {rows.dtype}, earlier ones {tail} {dtype}")
        f.write(memoryview(rows.reshape(-1).view(np.uint8)) if rows.size else b"")  # no copy of the rows
        self._parts[key] = (f, dtype, tail, n + rows.shape[0])

    def keys(self) -> list[str]:
        return list(self._parts)

    def __len__(self) -> int:
        return len(self._parts)

    def count(self, key: str) -> int:
        """Rows of ``key`` so far (0 for a key never appended)."""
        return self._parts[key][3] if key in self._parts else 0

    def array(self, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``start:stop`` of ``key`` as a read-only memory-mapped array: its pages are
        the file's, so reading it adds nothing to the process's own memory."""
        f, dtype, tail, n = self._parts[key]
        f.flush()
        stop = n if stop is None else min(stop, n)
        rows = max(stop - start, 0)
        if rows == 0 or 0 in tail:
            return np.empty((rows, *tail), dtype=dtype)
        size = int(np.prod(tail, dtype=np.int64)) * dtype.itemsize
        return np.memmap(f.name, dtype=dtype, mode="r", offset=start * size, shape=(rows, *tail))

    def rows(self, key: str) -> _Spooled:
        """The spooled rows of ``key``, for :func:`write_npz`."""
        f, dtype, tail, n = self._parts[key]
        f.flush()
        return _Spooled(f.name, dtype, (n, *tail))

    def close(self) -> None:
        """Delete the temporary files (call when done, also after an error)."""
        for f, *_ in self._parts.values():
            try:
                f.close()
                os.unlink(f.name)
            except OSError:
                pass
        self._parts.clear()


def _fits_v1(header: dict[str, Any]) -> bool:
    return len(repr(header)) + 12 < 65536  # numpy writes format 1.0 unless the header is too long for it, then 2.0


_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]+")
NAME_BYTES = 200
"""Most UTF-8 bytes of an output base name: file systems allow 255 bytes per name, and the
longest ending added to it (``-N`` numbering, ``.overlay.png``) fits in the rest."""
_PART_BYTES = 120  # of a stem or a parent folder's name
_EXT_BYTES = 16


def _cut(text: str, limit: int, *, keep_end: bool = False) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes on a character boundary (its end kept with ``keep_end``)."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    if keep_end:
        return data[len(data) - limit :].decode("utf-8", "ignore")
    return data[:limit].decode("utf-8", "ignore")


def _safe(part: str, limit: int = _PART_BYTES) -> str:
    part = unicodedata.normalize("NFC", part)
    part = _UNSAFE.sub("_", part).strip()
    part = part.lstrip(".") or "_"
    return _cut(part, limit).rstrip() or "_"


def unique_names(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """One output base name per input file, unique (ignoring case) and deterministic.

    The name is the file's stem (``cat`` for ``photos/cat.jpg``). When several inputs
    share it, their parent folders are prefixed (``a__cat``, ``b__cat``) until they differ;
    then the extension is added (``cat_jpg``, ``cat_png``); a number as the last resort.
    Each name is at most :data:`NAME_BYTES` UTF-8 bytes (parts are cut in bytes, not
    characters). The names depend only on the list of paths and their order.
    """
    items = [Path(p) for p in paths]
    parents = [[_safe(x) for x in p.parent.parts if x not in ("", ".", "/", "\\") and not x.endswith((":", ":\\"))] for p in items]
    stems = [_safe(p.stem or p.name) for p in items]
    exts = [_safe(p.suffix.lstrip("."), _EXT_BYTES) if p.suffix else "" for p in items]

    def name_at(i: int, depth: int, with_ext: bool) -> str:
        parts = parents[i][len(parents[i]) - depth :] if depth else []
        base = stems[i] + (f"_{exts[i]}" if with_ext and exts[i] else "")
        if not parts:
            return base
        room = NAME_BYTES - len(base.encode("utf-8")) - 2  # the nearest folders are kept
        return _cut("__".join(parts), room, keep_end=True) + "__" + base

    def clashes(names: list[str]) -> list[list[int]]:
        groups: dict[str, list[int]] = {}
        for i, n in enumerate(names):
            groups.setdefault(n.casefold(), []).append(i)
        return [idx for idx in groups.values() if len(idx) > 1]

    names = list(stems)
    for _ in range(3):  # renaming one clash can, rarely, create another
        found = clashes(names)
        if not found:
            return names
        for idx in found:
            deepest = max(len(parents[i]) for i in idx)
            for with_ext in (False, True):
                for depth in range(0, deepest + 1):
                    cand = [name_at(i, depth, with_ext) for i in idx]
                    if len({c.casefold() for c in cand}) == len(cand):
                        break
                else:
                    continue
                break
            else:  # identical paths apart from case: numbered below
                cand = [names[i] for i in idx]
            for i, c in zip(idx, cand):
                names[i] = c
    used: set[str] = set()
    out = []
    for n in names:
        cand_name, k = n, 2
        while cand_name.casefold() in used:
            cand_name = f"{n}-{k}"
            k += 1
        used.add(cand_name.casefold())
        out.append(cand_name)
    return out


def clean_stale_temp_files(folder: str | os.PathLike[str], depth: int = 0) -> int:
    """Remove temporary files left by an interrupted write in ``folder`` and, ``depth``
    levels down, in its subfolders (hidden ones left out); returns how many."""
    removed = 0
    d = Path(folder)
    if not d.is_dir():
        return 0
    for p in d.iterdir():
        if p.name.startswith(_TEMP_PREFIX) and p.name.endswith(".tmp") and (p.is_file() or p.is_dir()):
            try:
                if p.is_dir() and not p.is_symlink():  # a run's spool of forward passes
                    shutil.rmtree(p)
                else:
                    p.unlink()
                removed += 1
            except OSError:
                pass
        elif depth > 0 and not p.name.startswith(".") and p.is_dir() and not p.is_symlink():
            removed += clean_stale_temp_files(p, depth - 1)
    return removed

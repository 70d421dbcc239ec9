"""The forward passes of a class plan's files on disk, taken back group by group.

A class plan (``--group-by class``) is known only once every file has run forward, and
each class group then needs the passes of its own files, scattered through the run.
:class:`PassSpool` appends each pass as it comes (E_L, the weighting maps S_l and the
model's outputs, one row per file, in the order the passes ran) to files in a temporary
folder inside the output folder, so nothing of a pass stays in memory; :meth:`PassSpool.passes`
then gives a group's rows back a few files at a time, read from the memory-mapped files,
to fill the group's ``GroupSpool``. The rows are copied unchanged, so the group's
decomposition is the one of the same passes held in memory.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np


class PassSpool:
    """Forward passes by input file (see the module docstring). Call :meth:`close` when
    done, also after an error; an interrupted run's folder is removed by the next run
    (``outputs.clean_stale_temp_files``)."""

    def __init__(self, outdir: str | Path) -> None:
        from ..outputs import _TEMP_PREFIX, RowSpool

        self.folder = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX, suffix=".tmp", dir=outdir))
        self.rows = RowSpool(self.folder)
        self.files: list[int] = []  # the input file of each row
        self.row_of: dict[int, int] = {}
        self.weight_count = 0
        self.input_hw: tuple[int, int] = (0, 0)
        self.xp: Any = np  # the array module of the passes, given back to the group's spool

    def __len__(self) -> int:
        return len(self.files)

    def add(self, fp: Any, files: Sequence[int]) -> None:
        """Append one forward pass (a ``decompose.ForwardPass``) of the input files ``files``."""
        from ..xp import array_module, to_host

        if fp.n != len(files):
            raise ValueError(f"a pass of {fp.n} images for {len(files)} files")
        if not self.files:
            self.xp, self.weight_count, self.input_hw = array_module(fp.activations), len(fp.weights), tuple(fp.input_hw)
        self.rows.append("E", to_host(fp.activations))
        for i, S in enumerate(fp.weights):
            self.rows.append(f"S{i}", to_host(S))
        for name, value in fp.outputs.items():
            self.rows.append(f"output/{name}", np.asarray(value))
        for f in files:
            self.row_of[int(f)] = len(self.files)
            self.files.append(int(f))

    def outputs(self) -> dict[str, np.ndarray]:
        """The model's outputs of every row, by name (memory-mapped)."""
        return {key.split("/", 1)[1]: self.rows.array(key) for key in self.rows.keys() if key.startswith("output/")}

    def passes(self, files: Sequence[int], size: int) -> Iterator[Any]:
        """The forward passes of the input files ``files``, in that order, ``size`` files per pass."""
        from ..decompose import ForwardPass
        from ..xp import to_backend

        keys = ["E", *(f"S{i}" for i in range(self.weight_count))]
        for start in range(0, len(files), max(1, size)):
            rows = np.asarray([self.row_of[int(f)] for f in files[start : start + size]], dtype=np.intp)
            maps = [to_backend(self._take(key, rows), self.xp) for key in keys]
            outputs = {key.split("/", 1)[1]: self._take(key, rows) for key in self.rows.keys() if key.startswith("output/")}
            yield ForwardPass(maps[0], maps[1:], outputs, self.input_hw)

    def _take(self, key: str, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` of ``key``, read from its memory-mapped file into memory."""
        lo, hi = int(rows.min()), int(rows.max()) + 1
        return np.ascontiguousarray(self.rows.array(key, lo, hi)[rows - lo]).view(np.ndarray)

    def close(self) -> None:
        """Delete the folder and everything in it."""
        self.rows.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PassSpool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

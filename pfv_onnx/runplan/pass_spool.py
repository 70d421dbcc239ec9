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

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..group_spool import FolderSpool


class PassSpool(FolderSpool):
    """Forward passes by input file (see the module docstring and :class:`FolderSpool`)."""

    def __init__(self, outdir: str | Path) -> None:
        super().__init__(outdir)
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

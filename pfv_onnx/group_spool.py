"""One group's forward passes spooled to disk, so a group of any size is decomposed in
bounded memory.

A :class:`GroupSpool` takes the forward passes of one group as they come: the rows of E_L
(``pca.observations``, or their projections when a basis is given: then nothing waits for
the decomposition), the weighting maps S_l and the model's outputs are appended to files in
a temporary folder inside the output folder, and the group-wide peaks (largest magnitudes
for the float-range checks, maxima for the hierarchical weighting) are kept as they come.
The decomposition (``decompose_spooled.decompose_spooled``) then reads the rows back memory-mapped:
their pages belong to the files, not to the process, and the kernel drops them as needed.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .outputs import _TEMP_PREFIX, RowSpool


def _max_peak(old: float, new: float) -> float:
    """The larger peak, NaN as soon as one part held a NaN (as the peak of the whole array)."""
    return math.nan if math.isnan(old) or math.isnan(new) else max(old, new)


class FolderSpool:
    """Rows appended to files in a temporary folder inside ``outdir`` (a :class:`RowSpool`).
    Call :meth:`close` when done, also after an error; an interrupted run's folder is removed
    by the next run (``outputs.clean_stale_temp_files``)."""

    def __init__(self, outdir: str | Path) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX, suffix=".tmp", dir=outdir))
        self.rows = RowSpool(self.folder)

    def outputs(self) -> dict[str, np.ndarray]:
        """The model's outputs of every row, by name (memory-mapped)."""
        return {key.split("/", 1)[1]: self.rows.array(key) for key in self.rows.keys() if key.startswith("output/")}

    def close(self) -> None:
        """Delete the folder and everything in it."""
        self.rows.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self):  # the spool itself, of its own class
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class GroupSpool(FolderSpool):
    """The forward passes of one group on disk (see the module docstring).

    ``basis``: a principal basis to project the rows onto as they come (then only the
    (rows, k) projections are kept, under ``"P"``; else the rows themselves, under ``"E"``).
    ``outdir``: the folder the temporary folder is made in (see :class:`FolderSpool`).
    """

    def __init__(self, outdir: str | Path, basis: Any = None) -> None:
        super().__init__(outdir)
        self.basis = basis
        self.n = 0
        self.input_hw: tuple[int, int] | None = None
        self.grid: tuple[int, int, int] | None = None  # E_L's (C, h, w)
        self.peaks: list[float] = []  # largest magnitude of E_L, then of each S_l
        self.maxima: list[float] = []  # the maximum of each S_l
        self.xp: Any = np  # the array module of the passes
        self._scratch = 0

    def __len__(self) -> int:
        return self.n

    def add(self, fp: Any) -> None:
        """Append one forward pass (a ``decompose.ForwardPass``)."""
        from . import float_range, pca
        from .xp import array_module, to_host

        E = fp.activations
        n, c, h, w = (int(v) for v in E.shape)
        if self.input_hw is None:
            self.input_hw, self.grid, self.xp = tuple(fp.input_hw), (c, h, w), array_module(E)  # type: ignore[assignment]
            self.peaks = [0.0] * (1 + len(fp.weights))
            self.maxima = [-math.inf] * len(fp.weights)
        elif tuple(fp.input_hw) != self.input_hw:
            raise InputError("all images of one decomposition must have the same input size")
        elif (c, h, w) != self.grid or len(fp.weights) != len(self.maxima):
            raise InputError("the forward passes of one decomposition come from different feature maps")
        self.peaks = [_max_peak(old, float_range.peak(a)) for old, a in zip(self.peaks, [E, *fp.weights])]
        self.maxima = [max(old, float(S.max())) for old, S in zip(self.maxima, fp.weights)]
        X = pca.observations(E)
        if self.basis is None:
            self.rows.append("E", to_host(X))
        else:
            self.rows.append("P", to_host(pca.project(X, self.basis)))
        for i, S in enumerate(fp.weights):
            self.rows.append(f"S{i}", to_host(S))
        for name, value in fp.outputs.items():
            self.rows.append(f"output/{name}", np.asarray(value))
        self.n += n

    def weights(self, start: int, stop: int) -> list[np.ndarray]:
        """The weighting maps S_l of images ``start:stop``, earliest first (memory-mapped)."""
        return [self.rows.array(f"S{i}", start, stop) for i in range(len(self.maxima))]

    def scratch(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A writable memory-mapped array in the spool's folder (``pca.fit``'s centred rows).

        Its disk space is reserved first, where the system can: a full disk is then an OSError
        here, not a SIGBUS when a page of the map is written later."""
        self._scratch += 1
        path = self.folder / f"{_TEMP_PREFIX}scratch-{self._scratch}.tmp"
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        with open(path, "wb") as f:
            if nbytes and hasattr(os, "posix_fallocate"):
                os.posix_fallocate(f.fileno(), 0, nbytes)
        return np.memmap(path, dtype=dtype, mode="r+" if nbytes else "w+", shape=shape)

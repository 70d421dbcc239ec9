"""Fitting a basis on Ray (optional extra ``ray``).

Each pass of ``basis.fit`` becomes a Ray Data ``map_batches`` over a callable class: every
actor holds one ``PFV`` (one onnxruntime session, on a GPU where the cluster has them),
reads its batches of images, and returns the partial statistics of each batch; the driver
merges them as they stream in (exact sums, see ``basis``), so its memory stays constant
too. The model file, and image files given by path, must be readable at the same path on
every node (a shared file system), since actors open them themselves.

The forward passes of ``pfv-onnx run --ray`` live in ``distributed_run`` and the joining of
a cluster in ``ray_cluster``; their public names are importable from here too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import basis as basis_mod
from .distributed_run import RunForward, RunImage, RunPass, gather_rows
from .errors import InputError, PfvError
from .ray_cluster import EXTRA, Cluster, import_ray

__all__ = ["EXTRA", "RunForward", "RunImage", "RunPass", "StatsPass", "fit", "gather_rows", "import_ray"]


class StatsPass:
    """Ray Data callable class: one PFV per actor; each batch in, its partial statistics out.

    ``stage`` is the pass (``basis.Stage``). A batch holds preprocessed images in a ``data``
    column, or file paths in a ``path`` column decoded here with ``preprocessing``;
    unreadable files are reported back, not fatal.
    """

    def __init__(
        self,
        model: str,
        options: dict[str, Any],
        stage: basis_mod.Stage,
        preprocessing: Any = None,
        max_pixels: int | None = None,
    ) -> None:
        from .pipeline import PFV

        self.pfv = PFV(model, **options)
        self.stage = stage
        self.preprocessing = preprocessing
        self.max_pixels = max_pixels

    def _images(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray | None, list[list[str]]]:
        if "data" in batch:
            return np.asarray(batch["data"], dtype=np.float32), []
        from . import inputs

        loaded, skipped = [], []
        for path in batch["path"]:
            try:
                limit = self.max_pixels or inputs.DEFAULT_MAX_PIXELS
                loaded.append(inputs.load_image(str(path), self.preprocessing, max_pixels=limit)[1])
            except PfvError as exc:
                skipped.append([str(path), " ".join(str(exc).split())])
        if not loaded:
            return None, skipped
        return inputs.stack_batch(loaded, self.preprocessing.layout), skipped

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images, skipped = self._images(batch)
        stats = self.stage.empty()
        if images is not None:
            self.stage.add(stats, self.pfv.forward(images))
        payload = np.empty(1, dtype=object)
        payload[0] = basis_mod.stats_to_bytes(stats)
        return {"stats": payload, "skipped": np.array([json.dumps(skipped)])}


def _dataset(ray: Any, images: Any, blocks: int) -> tuple[Any, int]:
    """A Ray dataset of preprocessed images (``data``) or of file paths (``path``), and its size."""
    if hasattr(images, "shape") and hasattr(images, "dtype"):
        arr = np.asarray(images)
        if arr.ndim != 4 or arr.shape[0] == 0:
            raise InputError(f"the images must be a non-empty 4-D batch, got shape {list(arr.shape)}")
        parts = [p for p in np.array_split(arr, min(blocks, arr.shape[0])) if p.shape[0]]
        return ray.data.from_numpy(parts), int(arr.shape[0])
    paths = [str(p) for p in images]
    if not paths:
        raise InputError("no images to fit on; give image files or folders")
    return ray.data.from_items([{"path": p} for p in paths], override_num_blocks=min(blocks, len(paths))), len(paths)


def _collect(ds: Any, on_rows: Callable[[int], None] | None) -> tuple[Any, list[tuple[str, str]]]:
    merged: Any = None
    skipped: list[tuple[str, str]] = []
    for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for data, skips in zip(out["stats"], out["skipped"]):
            part = basis_mod.stats_from_bytes(bytes(data))
            merged = part if merged is None else merged.merge(part)
            skipped.extend((str(p), str(r)) for p, r in json.loads(str(skips)))
            if on_rows is not None:
                on_rows(int(part.n_images))
    return merged, skipped


def fit(
    model: str | os.PathLike[str],
    images: np.ndarray | Sequence[str | os.PathLike[str]],
    *,
    k: int | None = None,
    preprocessing: Any = None,
    pfv_options: dict[str, Any] | None = None,
    address: str | None = None,
    batch_size: int = 32,
    actors: int | None = None,
    progress: Callable[[int], None] | None = None,
    max_pixels: int | None = None,
) -> tuple[basis_mod.FittedBasis, list[tuple[str, str]]]:
    """Fit a basis on Ray: ``(basis, skipped files)``, equal to ``basis.fit`` in one process.

    ``images``: a preprocessed NumPy batch in the model's layout, or image file paths read
    with ``preprocessing`` (an ``inputs.Preprocessing``). ``address``: a running cluster
    (``"auto"``, ``"ray://host:10001"``); without it, a cluster Ray is already connected to,
    ``RAY_ADDRESS``, or a new local one (shut down again at the end).
    """
    from .pipeline import PFV

    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    options = dict(pfv_options or {})
    model = str(Path(model).resolve())
    by_path = not (hasattr(images, "shape") and hasattr(images, "dtype"))
    if by_path and preprocessing is None:
        raise InputError("image files need a preprocessing (inputs.make_preprocessing) to become model inputs")
    # The driver only analyses the model (tensor names, hash) and checks the options early.
    driver = PFV(model, **{**options, "provider": "cpu"})
    k = driver.k if k is None else k
    cluster = Cluster(address, str(options.get("provider", "auto")), actors)
    try:
        ds, _ = _dataset(cluster.ray, images, blocks=max(2 * cluster.actors, 1))

        skipped: list[tuple[str, str]] = []

        def run(stage: basis_mod.Stage) -> Any:
            kwargs = {"model": model, "options": options, "stage": stage, "preprocessing": preprocessing, "max_pixels": max_pixels}
            merged, failed = _collect(cluster.map_batches(ds, StatsPass, kwargs, batch_size), progress)
            if stage.directions is None:  # files that fail are reported once, from the first pass
                skipped.extend(failed)
            return merged

        prep_dict = preprocessing.to_dict() if preprocessing is not None and hasattr(preprocessing, "to_dict") else preprocessing
        fitted = basis_mod.fit_passes(driver, run, k=k, preprocessing=prep_dict)
    finally:
        cluster.close()
    return fitted, skipped

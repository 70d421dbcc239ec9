"""Fitting a basis on Ray, for data sets that outgrow one machine (optional extra ``ray``).

Each pass of ``basis.fit`` becomes a Ray Data ``map_batches`` over a callable class: every
actor holds one ``PFV`` (one onnxruntime session, on a GPU where the cluster has them),
reads its batches of images, and returns the partial statistics of each batch; the driver
merges them as they stream in (exact sums, see ``basis``), so its memory stays constant
too. The model file, and image files given by path, must be readable at the same path on
every node (a shared file system), since actors open them themselves.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import basis as basis_mod
from .errors import DependencyError, InputError, PfvError

EXTRA = "ray"
_INSTALL = f"pip install 'pfv-onnx[{EXTRA}]'"


def import_ray() -> Any:
    """``ray`` with Ray Data, or a DependencyError that names the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise DependencyError(f"Ray is not installed ({exc}); install the extra with: {_INSTALL}") from None
    return ray


class StatsPass:
    """Ray Data callable class: one PFV per actor; each batch in, its partial statistics out.

    ``stage`` is ``"covariance"`` (first pass) or ``"projection"`` (second pass, which needs
    the first pass's ``directions`` and ``peaks``). A batch holds preprocessed images in a
    ``data`` column, or file paths in a ``path`` column decoded here with ``preprocessing``;
    unreadable files are reported back, not fatal.
    """

    def __init__(
        self,
        model: str,
        options: dict[str, Any],
        stage: str,
        preprocessing: Any = None,
        directions: Any = None,
        peaks: Any = None,
        max_pixels: int | None = None,
    ) -> None:
        from .pipeline import PFV

        self.pfv = PFV(model, **options)
        self.stage = stage
        self.preprocessing = preprocessing
        self.directions = directions
        self.peaks = peaks
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
        if self.stage == "covariance":
            stats: Any = basis_mod.CovarianceStats()
            if images is not None:
                stats.add(self.pfv.forward(images))
        else:
            stats = basis_mod.ProjectionStats()
            if images is not None:
                stats.add(self.pfv.forward(images), self.directions, self.peaks)
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


def _resources(ray: Any, provider: str, actors: int | None) -> tuple[int, dict[str, Any]]:
    """How many actors, and what each asks for: one GPU each where the cluster has GPUs."""
    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0)) if provider != "cpu" else 0
    if provider == "cuda" and gpus == 0:
        raise DependencyError("provider 'cuda' was asked for, but the Ray cluster has no GPU; use --provider cpu or auto")
    if gpus > 0:
        return actors or gpus, {"num_gpus": 1}
    return actors or max(1, int(res.get("CPU", 1))), {"num_cpus": 1}


def _quiet(ray: Any) -> None:
    ctx = ray.data.DataContext.get_current()
    for name in ("enable_progress_bars", "print_on_execution_start"):
        if hasattr(ctx, name):
            setattr(ctx, name, False)


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
    ray = import_ray()
    started_here = False
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        started_here = address is None and not os.environ.get("RAY_ADDRESS")
    try:
        _quiet(ray)
        n_actors, per_actor = _resources(ray, str(options.get("provider", "auto")), actors)
        ds, _ = _dataset(ray, images, blocks=max(2 * n_actors, 1))

        def run(stage: str, **extra: Any) -> tuple[Any, list[tuple[str, str]]]:
            mapped = ds.map_batches(
                StatsPass,
                fn_constructor_kwargs={
                    "model": model, "options": options, "stage": stage, "preprocessing": preprocessing,
                    "max_pixels": max_pixels, **extra,
                },  # fmt: skip
                batch_size=batch_size,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=n_actors),
                **per_actor,
            )
            return _collect(mapped, progress)

        cov, skipped = run("covariance")
        if cov is None or cov.empty:
            raise InputError("none of the images could be read; nothing to fit")
        directions = cov.principal(k)
        proj, _ = run("projection", directions=directions, peaks=np.asarray(cov.peaks))
        prep_dict = preprocessing.to_dict() if preprocessing is not None and hasattr(preprocessing, "to_dict") else preprocessing
        fitted = basis_mod.finish(driver, cov, directions, proj, preprocessing=prep_dict)
    finally:
        if started_here:
            ray.shutdown()
    return fitted, skipped

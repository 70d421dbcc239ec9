"""Fitting a basis, and running the forward passes of ``run``, on Ray (optional extra ``ray``).

Each pass of ``basis.fit`` becomes a Ray Data ``map_batches`` over a callable class: every
actor holds one ``PFV`` (one onnxruntime session, on a GPU where the cluster has them),
reads its batches of images, and returns the partial statistics of each batch; the driver
merges them as they stream in (exact sums, see ``basis``), so its memory stays constant
too. For ``pfv-onnx run --ray`` the actors decode, preprocess and run the forward passes
(:class:`RunPass`), and the driver gathers the feature maps back in input order
(:class:`RunForward`) to decompose, render and write them as a local run does. The model
file, and image files given by path, must be readable at the same path on every node (a
shared file system), since actors open them themselves.
"""

from __future__ import annotations

import json
import os
import pickle
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import basis as basis_mod
from .errors import DependencyError, InputError, PfvError, one_line

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


def _resources(ray: Any, provider: str, actors: int | None) -> tuple[int, dict[str, Any]]:
    """How many actors, and what each asks for: one GPU each where the cluster has GPUs."""
    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0)) if provider != "cpu" else 0
    if provider == "cuda" and gpus == 0:
        raise DependencyError("provider 'cuda' was asked for, but the Ray cluster has no GPU; use --provider cpu or auto")
    if gpus > 0:
        return actors or gpus, {"num_gpus": 1}
    return actors or max(1, int(res.get("CPU", 1))), {"num_cpus": 1}


def _connect(ray: Any, address: str | None) -> bool:
    """Connect to the cluster at ``address`` (else one already joined, ``RAY_ADDRESS`` or a new
    local one); True when a local cluster was started here and is to be shut down after."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    except ConnectionError as exc:
        where = address or os.environ.get("RAY_ADDRESS") or "local"
        raise InputError(f"cannot connect to the Ray cluster {where!r} ({' '.join(str(exc).split())}); check --ray ADDRESS") from None
    return address is None and not os.environ.get("RAY_ADDRESS")


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
    started_here = _connect(ray, address)
    try:
        _quiet(ray)
        n_actors, per_actor = _resources(ray, str(options.get("provider", "auto")), actors)
        ds, _ = _dataset(ray, images, blocks=max(2 * n_actors, 1))

        skipped: list[tuple[str, str]] = []

        def run(stage: basis_mod.Stage) -> Any:
            mapped = ds.map_batches(
                StatsPass,
                fn_constructor_kwargs={
                    "model": model, "options": options, "stage": stage, "preprocessing": preprocessing,
                    "max_pixels": max_pixels,
                },  # fmt: skip
                batch_size=batch_size,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=n_actors),
                **per_actor,
            )
            merged, failed = _collect(mapped, progress)
            if stage.directions is None:  # files that fail are reported once, from the first pass
                skipped.extend(failed)
            return merged

        prep_dict = preprocessing.to_dict() if preprocessing is not None and hasattr(preprocessing, "to_dict") else preprocessing
        fitted = basis_mod.fit_passes(driver, run, k=k, preprocessing=prep_dict)
    finally:
        if started_here:
            ray.shutdown()
    return fitted, skipped


# --------------------------------------------------------------------------- pfv-onnx run --ray


class RunPass:
    """Ray Data callable class for ``run``: one PFV per actor; a batch of image files in,
    decoded, preprocessed and run forward here, one row out.

    The row's ``part`` holds the pickled forward pass of the files that could be read
    (feature maps on the host, whatever device ran them) and, per file, its index in the
    run, size, decoding notes and seconds, or why it could not be read; a bad file is
    reported back, never fatal.
    """

    def __init__(self, model: str, options: dict[str, Any], preprocessing: Any, max_pixels: int) -> None:
        from .pipeline import PFV

        self.pfv = PFV(model, **options)
        self.preprocessing = preprocessing
        self.max_pixels = max_pixels

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from . import inputs
        from .xp import to_host

        records: list[dict[str, Any]] = []
        tensors = []
        for index, path in zip(batch["index"], batch["path"]):
            t0 = time.perf_counter()
            rec: dict[str, Any] = {"index": int(index)}
            try:
                img, x = inputs.load_image(str(path), self.preprocessing, max_pixels=self.max_pixels)
                tensors.append(x)
                rec.update(hw=(img.height, img.width), notes=list(img.notes))
            except PfvError as exc:
                rec["error"] = one_line(str(exc))
            except MemoryError:
                rec["error"] = "out of memory while reading the image"
            rec["seconds"] = time.perf_counter() - t0
            records.append(rec)
        part = None
        forward_s = 0.0
        if tensors:
            t0 = time.perf_counter()
            fp = self.pfv.forward(inputs.stack_batch(tensors, self.preprocessing.layout))
            part = {
                "decomposed": to_host(fp.decomposed),
                "weights": [to_host(w) for w in fp.weights],
                "outputs": {k: to_host(v) for k, v in fp.outputs.items()},
                "input_hw": tuple(fp.input_hw),
            }
            forward_s = time.perf_counter() - t0
        payload = np.empty(1, dtype=object)
        payload[0] = pickle.dumps({"records": records, "part": part, "forward_s": forward_s}, protocol=5)
        return {"part": payload}


@dataclass
class RunImage:
    """One input file of ``run --ray``, as the driver gets it back (in input order).

    ``part``: ``(forward pass of its actor batch, its row there)``, None when it could not
    be read (``error`` says why). ``seconds``: decoding time on the actor; ``forward_s``: its
    share of the batch's forward pass there.
    """

    index: int
    error: str | None = None
    hw: tuple[int, int] = (0, 0)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    forward_s: float = 0.0
    part: tuple[Any, int] | None = None


class RunForward:
    """The forward passes of ``run`` on Ray: an iterator of :class:`RunImage`, in input order.

    ``files[start:]`` go to a Ray Data ``map_batches`` over :class:`RunPass` in batches of
    ``batch_size``. Ray Data keeps the input order (``preserve_order``), so the driver holds
    at most one actor batch (:attr:`buffered`) however slow an early batch is: results that
    finish early wait in Ray's object store, under its own backpressure, not in the
    driver's memory. ``close()`` shuts down a local cluster started here.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        files: Sequence[str | os.PathLike[str]],
        *,
        preprocessing: Any,
        pfv_options: dict[str, Any] | None = None,
        address: str | None = None,
        batch_size: int = 16,
        actors: int | None = None,
        max_pixels: int | None = None,
        start: int = 0,
    ) -> None:
        from . import inputs

        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        self._end = len(files)
        self._next = start
        self._ready: dict[int, RunImage] = {}
        self._batches: Iterator[dict[str, np.ndarray]] | None = None
        self._ray = import_ray()
        self._started_here = False
        self.actors = 0
        if start >= self._end:
            return
        options = dict(pfv_options or {})
        self._started_here = _connect(self._ray, address)
        ray = self._ray
        _quiet(ray)
        self.actors, per_actor = _resources(ray, str(options.get("provider", "auto")), actors)
        n = self._end - start
        rows = [{"index": i, "path": str(Path(files[i]).resolve())} for i in range(start, self._end)]
        # About one block per batch, so that results come back batch by batch, not a whole block at a time.
        ds = ray.data.from_items(rows, override_num_blocks=max(1, min(n, -(-n // batch_size))))
        ds.context.execution_options.preserve_order = True  # this dataset's own copy of the context
        mapped = ds.map_batches(
            RunPass,
            fn_constructor_kwargs={
                "model": str(Path(model).resolve()), "options": options, "preprocessing": preprocessing,
                "max_pixels": max_pixels or inputs.DEFAULT_MAX_PIXELS,
            },  # fmt: skip
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.actors),
            **per_actor,
        )
        self._batches = iter(mapped.iter_batches(batch_size=None, batch_format="numpy"))

    @property
    def buffered(self) -> int:
        """Images whose results came back and wait on the driver for their turn."""
        return len(self._ready)

    def __iter__(self) -> RunForward:
        return self

    def __next__(self) -> RunImage:
        if self._next >= self._end:
            raise StopIteration
        while self._next not in self._ready:
            out = next(self._batches, None) if self._batches is not None else None
            if out is None:
                raise RuntimeError(f"Ray returned no result for file {self._next} of the run")
            for blob in out["part"]:
                self._add(pickle.loads(bytes(blob)))
        self._next += 1
        return self._ready.pop(self._next - 1)

    def _add(self, payload: dict[str, Any]) -> None:
        from .pipeline import ForwardPass

        part = payload["part"]
        fp = None
        if part is not None:
            fp = ForwardPass(decomposed=part["decomposed"], weights=list(part["weights"]), outputs=dict(part["outputs"]), input_hw=tuple(part["input_hw"]))
        good = [r for r in payload["records"] if "error" not in r]
        share = payload["forward_s"] / len(good) if good else 0.0
        row = 0
        for r in payload["records"]:
            if "error" in r:
                self._ready[r["index"]] = RunImage(r["index"], error=r["error"], seconds=r["seconds"])
                continue
            self._ready[r["index"]] = RunImage(
                r["index"], hw=tuple(r["hw"]), notes=list(r["notes"]), seconds=r["seconds"], forward_s=share, part=(fp, row)
            )
            row += 1

    def close(self) -> None:
        self._batches = None
        self._ready.clear()
        if self._started_here:
            self._started_here = False
            self._ray.shutdown()


def gather_rows(parts: Sequence[tuple[Any, int]]) -> Any:
    """One ``ForwardPass`` of the given ``(pass, row)`` pairs, rows in the order given.

    A whole pass is used as it is. Works on the host and on the device (NumPy or CuPy arrays).
    """
    from .pipeline import ForwardPass
    from .xp import array_module

    pieces: list[tuple[Any, list[int]]] = []
    for fp, row in parts:
        if pieces and pieces[-1][0] is fp:
            pieces[-1][1].append(row)
        else:
            pieces.append((fp, [row]))
    taken = []
    for fp, rows in pieces:
        if rows == list(range(fp.n)):
            taken.append(fp)
            continue
        taken.append(
            ForwardPass(
                decomposed=fp.decomposed[array_module(fp.decomposed).asarray(rows)],
                weights=[w[array_module(w).asarray(rows)] for w in fp.weights],
                outputs={k: v[np.asarray(rows)] for k, v in fp.outputs.items()}, input_hw=fp.input_hw,
            )
        )  # fmt: skip
    if len(taken) == 1:
        return taken[0]
    first = taken[0]
    xp = array_module(first.decomposed)
    return ForwardPass(
        decomposed=xp.concatenate([t.decomposed for t in taken]),
        weights=[array_module(first.weights[i]).concatenate([t.weights[i] for t in taken]) for i in range(len(first.weights))],
        outputs={k: np.concatenate([t.outputs[k] for t in taken]) for k in first.outputs},
        input_hw=first.input_hw,
    )

"""The forward passes of ``pfv-onnx run --ray`` (optional extra ``ray``).

The actors decode, preprocess and run the forward passes (:class:`RunPass`), and the
driver gathers the feature maps back in input order (:class:`RunForward`,
:func:`gather_rows`) to decompose, render and write them as a local run does. The model
file and the image files must be readable at the same path on every node (a shared file
system), since actors open them themselves.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, PfvError, one_line
from .ray_cluster import Cluster, import_ray


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
        self._cluster: Cluster | None = None
        self.actors = 0
        import_ray()  # a missing Ray is told even when nothing is left to run
        if start >= self._end:
            return
        options = dict(pfv_options or {})
        self._cluster = cluster = Cluster(address, str(options.get("provider", "auto")), actors)
        self.actors = cluster.actors
        n = self._end - start
        rows = [{"index": i, "path": str(Path(files[i]).resolve())} for i in range(start, self._end)]
        # About one block per batch, so that results come back batch by batch, not a whole block at a time.
        ds = cluster.ray.data.from_items(rows, override_num_blocks=max(1, min(n, -(-n // batch_size))))
        ds.context.execution_options.preserve_order = True  # this dataset's own copy of the context
        kwargs = {
            "model": str(Path(model).resolve()), "options": options, "preprocessing": preprocessing,
            "max_pixels": max_pixels or inputs.DEFAULT_MAX_PIXELS,
        }  # fmt: skip
        mapped = cluster.map_batches(ds, RunPass, kwargs, batch_size)
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
        from .decompose import ForwardPass

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
        if self._cluster is not None:
            self._cluster.close()


def gather_rows(parts: Sequence[tuple[Any, int]]) -> Any:
    """One ``ForwardPass`` of the given ``(pass, row)`` pairs, rows in the order given.

    A whole pass is used as it is. Works on the host and on the device (NumPy or CuPy arrays).
    """
    from .decompose import ForwardPass, concat

    pieces: list[tuple[Any, list[int]]] = []
    for fp, row in parts:
        if pieces and pieces[-1][0] is fp:
            pieces[-1][1].append(row)
        else:
            pieces.append((fp, [row]))
    taken = [fp if rows == list(range(fp.n)) else fp.take(rows) for fp, rows in pieces]
    if len(taken) == 1:
        return taken[0]
    first = taken[0]
    return ForwardPass(
        concat([t.activations for t in taken]),
        [concat([t.weights[i] for t in taken]) for i in range(len(first.weights))],
        {k: np.concatenate([t.outputs[k] for t in taken]) for k in first.outputs},
        first.input_hw,
    )

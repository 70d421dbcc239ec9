"""Reading the files of a run and running them forward, in input order.

Locally, a thread pool decodes a window of files ahead; with Ray, actors decode and run
the forward passes (:class:`pfv_onnx.distributed.RunForward`). Either way the run gets
:class:`Loaded` items in the order of the indices it asked for, a bad file as an item
with its reason.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PfvError, one_line

if TYPE_CHECKING:
    import numpy as np

    from ..inputs import DecodedImage, Preprocessing
    from ..pipeline import PFV


@dataclass
class Loaded:
    """One input file, read (``image``, ``tensor``) or not (``error``)."""

    index: int
    path: Path
    image: DecodedImage | None = None
    tensor: np.ndarray | None = None
    error: str | None = None
    seconds: float = 0.0
    hw: tuple[int, int] = (0, 0)
    notes: list[str] = field(default_factory=list)
    part: tuple[Any, int] | None = None  # --ray: (the forward pass its actor ran, its row there)


def load(index: int, path: Path, prep: Preprocessing, max_pixels: int) -> Loaded:
    """Decode and preprocess one file; a file that cannot be used gives its reason."""
    from ..inputs import decode_image, preprocess

    t0 = time.perf_counter()
    try:
        img = decode_image(path, max_pixels=max_pixels)
        tensor = preprocess(img.bgr, prep)
        return Loaded(index, path, img, tensor, seconds=time.perf_counter() - t0, hw=(img.height, img.width), notes=list(img.notes))
    except PfvError as exc:
        return Loaded(index, path, error=one_line(str(exc)), seconds=time.perf_counter() - t0)
    except MemoryError:
        return Loaded(index, path, error="out of memory while reading the image", seconds=time.perf_counter() - t0)


def quiet_opencv() -> None:
    """OpenCV's own warnings (a truncated file, ...) would break up the progress bar; each bad
    file is reported with its reason instead."""
    import cv2

    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # a build without the logging module
        pass


def prefetch(pool: Any, files: Sequence[Path], indices: Sequence[int], prep: Preprocessing, max_pixels: int, window: int) -> Iterator[Loaded]:
    """Decode ``files[i]`` for ``i`` in ``indices`` in the pool, ``window`` files ahead, and
    yield the results in that order."""
    pending: deque[Any] = deque()
    todo = iter(indices)
    more = True
    while more or pending:
        while more and len(pending) < window:
            i = next(todo, None)
            if i is None:
                more = False
                break
            pending.append(pool.submit(load, i, files[i], prep, max_pixels))
        if pending:
            yield pending.popleft().result()


def forward(pfv: PFV, layout: str, items: list[Loaded]) -> Any:
    """One forward pass over a batch of loaded images (the engine splits it for a fixed-batch model)."""
    from ..inputs import stack_batch

    if items and items[0].part is not None:  # --ray: gathered from the passes the actors ran
        from ..distributed import gather_rows

        fp = gather_rows([p.part for p in items])  # type: ignore[misc]
        for p in items:
            p.part = None
        return fp
    fp = pfv.forward(stack_batch([p.tensor for p in items], layout))
    for p in items:
        p.tensor = None
    return fp


def ray_loader(pfv: PFV, files: Sequence[Path], indices: Sequence[int], prep: Preprocessing, options: dict[str, Any], timings: dict[str, float]) -> Iterator[Loaded]:
    """--ray: ``files[i]`` for ``i`` in ``indices``, decoded and run forward on Ray actors, in that order.

    ``options``: ``address``, ``batch_size``, ``actors``, ``max_pixels`` and ``pfv`` (the
    PFV options each actor builds its PFV with).
    """
    from ..distributed import RunForward

    chosen = [files[i] for i in indices]
    source = RunForward(
        pfv.model_path, chosen, preprocessing=prep, pfv_options=options["pfv"], address=options.get("address"),
        batch_size=options["batch_size"], actors=options.get("actors"), max_pixels=options["max_pixels"],
    )  # fmt: skip
    try:
        for r in source:
            timings["forward_s"] += r.forward_s
            i = indices[r.index]
            yield Loaded(i, files[i], error=r.error, seconds=r.seconds, hw=r.hw, notes=r.notes, part=r.part)
    finally:
        source.close()

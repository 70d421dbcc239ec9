"""The component legend's arithmetic: where each component is strongest, and the image pixels under it.

For each principal component of a group, the cells of the feature map where its projection
(``components`` in pfv.npz) is largest and most negative are mapped back to the pixels of the
image under them; the page shows those patches as the two ends of the component.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PATCHES = 6  # legend patches per component and sign
PATCH_CELLS = 2.0  # a patch spans this many feature-map cells in each direction, centred on its cell


@dataclass(frozen=True)
class Patch:
    """One place of one image where a component is strong: image ``index`` within the group,
    feature-map cell (``y``, ``x``) and the component's value there."""

    index: int
    y: int
    x: int
    value: float


def select_patches(values: np.ndarray, count: int = PATCHES, sign: int = 1) -> list[Patch]:
    """The ``count`` places where ``sign * values`` is largest, one per image first.

    ``values``: (n, h, w), one component's projections over a group. The strongest place of
    each image is taken, the images ordered by it; when the group has fewer images than
    ``count``, further places follow, each at least two cells from those already taken in
    its image. Only places where ``sign * values > 0`` count (the other sign's end).
    """
    v = sign * np.asarray(values, dtype=np.float64)
    n, h, w = v.shape
    flat = v.reshape(n, -1)
    best = flat.argmax(axis=1)
    peak = flat[np.arange(n), best]
    order = np.argsort(-peak, kind="stable")
    chosen: list[Patch] = []
    for i in order[:count]:
        if peak[i] > 0:
            y, x = divmod(int(best[i]), w)
            chosen.append(Patch(int(i), y, x, float(sign * peak[i])))
    if len(chosen) < count:
        for pos in np.argsort(-v.ravel(), kind="stable"):
            if len(chosen) >= count:
                break
            i, rest = divmod(int(pos), h * w)
            y, x = divmod(rest, w)
            if v[i, y, x] <= 0:
                break
            if all(p.index != i or max(abs(p.y - y), abs(p.x - x)) >= 2 for p in chosen):
                chosen.append(Patch(i, y, x, float(sign * v[i, y, x])))
    return chosen


def patch_box(y: int, x: int, grid_hw: tuple[int, int], crop: Sequence[int], image_hw: tuple[int, int], cells: float = PATCH_CELLS) -> tuple[int, int, int, int]:
    """Pixels ``(x0, y0, x1, y1)`` of the original image under feature-map cell (y, x).

    ``crop``: the region of the image the model saw (``x0, y0, x1, y1``); the map's
    ``grid_hw`` cells tile it evenly (the resize stretches it to the model's input). The box
    is ``cells`` cells wide and high, centred on the cell's centre, moved inside the image
    when it would reach over an edge.
    """
    gh, gw = grid_hw
    bx0, by0, bx1, by1 = (float(v) for v in crop)
    ih, iw = image_hw
    cw, ch = (bx1 - bx0) / gw, (by1 - by0) / gh
    cx, cy = bx0 + (x + 0.5) * cw, by0 + (y + 0.5) * ch

    def span(centre: float, size: float, limit: int) -> tuple[int, int]:
        size = min(max(size, 1.0), float(limit))
        lo = min(max(centre - size / 2, 0.0), limit - size)
        a = int(math.floor(lo + 1e-9))
        b = int(math.ceil(lo + size - 1e-9))
        return a, max(b, a + 1)

    x0, x1 = span(cx, cells * cw, iw)
    y0, y1 = span(cy, cells * ch, ih)
    return x0, y0, x1, y1

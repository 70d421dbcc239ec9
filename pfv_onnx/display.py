"""An optional display of PFV maps in which weak regions go dark (not the published default).

The published colour scaling maps a weak or average projection to the neutral middle of
every channel, so a map is never dark and strong responses clip to a plateau at one sigma.
In this display the colour stays the published one and the brightness follows the weighted
magnitude (the Euclidean norm over the k components of the activation-weighted projection,
before any colour scaling), so weak regions go dark and the strongest place stands out.
On the bundled synthetic-shapes model its brightest point lies on an object more often than
the published map's most salient point (measured in docs/PERFORMANCE.md, tested in
tests/test_display.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

DARK_PERCENTILE = 99.0  # the weighted magnitude at this percentile of the batch is drawn at full brightness


def weighted_projection(pfv: Any, batch: Any, result: Any, *, hierarchical: bool | None = None) -> np.ndarray:
    """(N, k, H, W) activation-weighted projection of ``result``, before the colour scaling.

    ``result`` is ``pfv.explain(batch)``; the weighting maps come from one more forward pass
    over ``batch`` (the result does not keep them), weighted as ``pfv`` weights (flat or
    hierarchical).
    """
    from . import weighting
    from .xp import to_host

    hierarchical = pfv.hierarchical if hierarchical is None else hierarchical
    fp = pfv.forward(batch)
    comps = np.asarray(result.components, dtype=np.float32)
    weights = [np.asarray(to_host(w), dtype=np.float32) for w in fp.weights]
    mapped = weighting.hierarchical(comps, weights, fp.input_hw) if hierarchical else weighting.flat(comps, weights, fp.input_hw)
    return np.asarray(mapped, dtype=np.float64)


def weighted_magnitude(pfv: Any, batch: Any, result: Any, *, hierarchical: bool | None = None) -> np.ndarray:
    """(N, H, W) Euclidean norm over the k components of :func:`weighted_projection`."""
    return np.sqrt(np.square(weighted_projection(pfv, batch, result, hierarchical=hierarchical)).sum(axis=1))


def dark_where_weak(rgb: np.ndarray, magnitude: np.ndarray, percentile: float = DARK_PERCENTILE) -> np.ndarray:
    """Maps (N, H, W, k) in [0, 1] with their brightness following ``magnitude`` (N, H, W).

    Each pixel's colour is multiplied by ``magnitude / m`` clipped to [0, 1], where ``m`` is
    the batch's ``percentile``-th percentile of the magnitude: one scale for the whole batch,
    as the colours have. The result is a map in [0, 1], ready for the ``render`` helpers.
    """
    rgb = np.asarray(rgb, dtype=np.float32)
    mag = np.asarray(magnitude, dtype=np.float64)
    if mag.shape != rgb.shape[:3]:
        raise ValueError(f"magnitude {mag.shape} must be (N, H, W) of the maps {rgb.shape}")
    top = float(np.percentile(mag, percentile)) if mag.size else 0.0
    bright = np.clip(mag / top, 0.0, 1.0) if top > 0 else np.zeros_like(mag)
    return (rgb * bright[..., None].astype(np.float32)).astype(np.float32)

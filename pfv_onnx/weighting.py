"""Activation-weighted upsampling (flat and hierarchical) and batch colour scaling.

Arrays are (N, c, H, W) of one module (NumPy or CuPy); results are of the same module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import InputError
from .xp import array_module

_CV_MAX_CHANNELS = 128  # cv2.resize handles at most this many channels at once (OpenCV 5: 128, OpenCV 4: 512)


def resize_bilinear(x: Any, size: tuple[int, int]) -> Any:
    """Bilinear resize of (N, c, h, w) to (N, c, H, W) with half-pixel centres (edge values repeated).

    NumPy arrays go through OpenCV's INTER_LINEAR (vectorised over the batch by stacking images
    as channels); other arrays through ``resize_bilinear_gather``. Both follow PyTorch's
    ``interpolate(mode="bilinear", align_corners=False)``.
    """
    n, c, h, w = x.shape
    H, W = size
    if (h, w) == (H, W):
        return x
    if array_module(x) is not np:
        return resize_bilinear_gather(x, size)
    import cv2

    stacked = np.ascontiguousarray(x.reshape(n * c, h, w).transpose(1, 2, 0), dtype=np.float32)
    out = np.empty((n * c, H, W), dtype=np.float32)
    for start in range(0, n * c, _CV_MAX_CHANNELS):
        part = stacked[:, :, start : start + _CV_MAX_CHANNELS]
        r = cv2.resize(part, (W, H), interpolation=cv2.INTER_LINEAR)
        if r.ndim == 2:
            r = r[:, :, None]
        out[start : start + r.shape[2]] = r.transpose(2, 0, 1)
    return out.reshape(n, c, H, W)


def _axis_weights(xp, n_in: int, n_out: int):
    scale = n_in / n_out
    src = (xp.arange(n_out, dtype=xp.float64) + 0.5) * scale - 0.5
    src = xp.clip(src, 0.0, None)
    i0 = xp.minimum(xp.floor(src).astype(xp.int64), n_in - 1)
    i1 = xp.minimum(i0 + 1, n_in - 1)
    frac = (src - i0).astype(xp.float32)
    return i0, i1, frac


def resize_bilinear_gather(x: Any, size: tuple[int, int]) -> Any:
    """Array-module-generic bilinear resize with half-pixel centres (gathers and blends)."""
    xp = array_module(x)
    _, _, h, w = x.shape
    H, W = size
    y0, y1, fy = _axis_weights(xp, h, H)
    x0, x1, fx = _axis_weights(xp, w, W)
    rows = x[:, :, y0, :] * (1 - fy)[:, None] + x[:, :, y1, :] * fy[:, None]
    return (rows[:, :, :, x0] * (1 - fx) + rows[:, :, :, x1] * fx).astype(xp.float32)


def flat(P: Any, weights: Sequence[Any], size: tuple[int, int]) -> Any:
    """upsample(P) * sum_l upsample(S_l), the raw channel sums S_l (N, 1, H_l, W_l) unnormalised."""
    up = resize_bilinear(P, size)
    if not weights:
        return up
    A = resize_bilinear(weights[0], size)
    for S in weights[1:]:
        A = A + resize_bilinear(S, size)
    return up * A


def hierarchical(P: Any, weights: Sequence[Any], size: tuple[int, int], *, peaks: Sequence[float] | None = None) -> Any:
    """From the deepest weighting map to the earliest: P = upsample(P, to S_l) * S_l / max(S_l).

    The max is over the whole batch tensor, or ``peaks[l]`` when given (a fitted basis's maxima
    over a data set); a map whose max is not positive weights by zero.
    """
    xp = array_module(P)
    for i, S in reversed(list(enumerate(weights))):
        peak = float(S.max()) if peaks is None else float(peaks[i])
        factor = S / peak if peak > 0 else xp.zeros_like(S)
        P = resize_bilinear(P, tuple(S.shape[2:])) * factor
    return resize_bilinear(P, size)


def scale_colours(x: Any, n_sigma: float = 1.0, *, mean: float | None = None, std: float | None = None) -> Any:
    """Over the whole array at once: z-score, clip to [-n_sigma, n_sigma], min-max to [0, 1].

    One scaling for the whole batch keeps colours comparable between its images. A constant
    array (zero variance) gives zeros. Given ``mean`` and ``std`` (a fitted basis's, over a
    data set), they replace the batch's and [-n_sigma, n_sigma] maps to [0, 1] in place of
    the batch's min and max, so no image's colours depend on the others.

    >>> import numpy as np
    >>> scale_colours(np.full((1, 3, 2, 2), 7.0, dtype=np.float32)).max()
    np.float32(0.0)
    """
    xp = array_module(x)
    if n_sigma <= 0:
        raise InputError(f"n_sigma must be positive, got {n_sigma}")
    fixed = mean is not None and std is not None
    if not fixed:
        mean = x.mean(dtype=xp.float64)
        std = x.std(dtype=xp.float64)
    if not float(std) > 0:
        return xp.zeros_like(x, dtype=xp.float32)
    z = xp.clip((x - xp.float32(mean)) / xp.float32(std), -n_sigma, n_sigma)
    if fixed:
        return ((z + n_sigma) / (2 * n_sigma)).astype(xp.float32)
    lo, hi = float(z.min()), float(z.max())
    if hi <= lo:
        return xp.zeros_like(x, dtype=xp.float32)
    return ((z - lo) / (hi - lo)).astype(xp.float32)

"""Activation-weighted upsampling (flat and hierarchical) and batch colour scaling.

Arrays are (N, c, H, W) of one module (NumPy or CuPy); results are of the same module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import float_range, threads
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


def flat(P: Any, weights: Sequence[Any], size: tuple[int, int], *, peaks: tuple[float, Sequence[float]] | None = None) -> Any:
    """upsample(P) * sum_l upsample(S_l), the raw channel sums S_l (N, 1, H_l, W_l) unnormalised.

    On NumPy the result is an (N, k, H, W) view of an image-major (N, H, W, k) array, filled
    one image at a time while its maps are in cache; ``result.transpose(0, 2, 3, 1)`` is then
    contiguous.

    When the product of P's and the summed maps' largest magnitudes leaves ``float_range``'s
    safe range, P and the maps are each multiplied by a power of two first (so nothing
    overflows or underflows): the result is then the product times a power of two, which
    the colour scaling does not see. ``peaks``: the largest magnitudes of P and of each S_l
    over the whole group when P is one part of it (so every part is scaled alike).
    """
    if weights:
        P, weights = _in_range(P, weights, peaks)
    if _per_image(P):
        return _flat_per_image(P, weights, size)
    up = resize_bilinear(P, size)
    if not weights:
        return up
    A = resize_bilinear(weights[0], size)
    for S in weights[1:]:
        A = A + resize_bilinear(S, size)
    return up * A


def _in_range(P: Any, weights: Sequence[Any], peaks: tuple[float, Sequence[float]] | None = None) -> tuple[Any, Sequence[Any]]:
    """P and the weighting maps, each scaled by a power of two when their product would leave the safe range."""
    p = float_range.peak(P) if peaks is None else float(peaks[0])
    a = sum(float_range.peak(S) for S in weights) if peaks is None else sum(float(v) for v in peaks[1])
    if float_range.factor(p * a) == 1.0:
        return P, weights
    fp, fa = float_range.factor(p), float_range.factor(a)
    if fp != 1.0:
        P = float_range.scale(P, fp)
    if fa != 1.0:
        weights = [float_range.scale(S, fa) for S in weights]
    return P, weights


def hierarchical(P: Any, weights: Sequence[Any], size: tuple[int, int], *, peaks: Sequence[float] | None = None) -> Any:
    """From the deepest weighting map to the earliest: P = upsample(P, to S_l) * S_l / max(S_l).

    The max is over the whole batch tensor, or ``peaks[l]`` when given (a fitted basis's maxima
    over a data set); a map whose max is not positive weights by zero. On NumPy the result is
    laid out image-major, as in ``flat``.
    """
    xp = array_module(P)
    factors = []
    weights = list(weights)
    for i, S in enumerate(weights):
        peak = float(S.max()) if peaks is None else float(peaks[i])
        f = float_range.factor(peak) if peak > 0 else 1.0
        if f != 1.0:  # 1 / peak would leave float32's range: S and its peak scaled by a power of two first
            weights[i], peak = float_range.scale(S, f), peak * f
        factors.append(1.0 / peak if peak > 0 else 0.0)
    if _per_image(P):
        return _hierarchical_per_image(P, weights, factors, size)
    for S, f in zip(reversed(list(weights)), reversed(factors)):
        factor = S * xp.float32(f) if f else xp.zeros_like(S)
        P = resize_bilinear(P, tuple(S.shape[2:])) * factor
    return resize_bilinear(P, size)


def _per_image(P: Any) -> bool:
    return isinstance(P, np.ndarray) and 0 < P.shape[1] <= _CV_MAX_CHANNELS


def _resize_into(src: np.ndarray, dst: np.ndarray) -> None:
    """Bilinear resize (half-pixel centres) of one image (h, w[, c]) into ``dst`` (H, W[, c])."""
    import cv2

    if src.shape[:2] == dst.shape[:2]:
        dst[...] = src.reshape(dst.shape)
        return
    out = cv2.resize(src, (dst.shape[1], dst.shape[0]), dst=dst, interpolation=cv2.INTER_LINEAR)
    if out is not dst and not np.shares_memory(out, dst):  # pragma: no cover - OpenCV reallocated
        dst[...] = out.reshape(dst.shape)


def _image_major(P: np.ndarray, weights: Sequence[np.ndarray], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """The (N, H, W, k) result to fill, P as (N, h, w, k) and the weighting maps as (N, H_l, W_l)."""
    out = np.empty((P.shape[0], *size, P.shape[1]), dtype=np.float32)
    hwk = np.ascontiguousarray(P.transpose(0, 2, 3, 1), dtype=np.float32)
    return out, hwk, [np.ascontiguousarray(S[:, 0], dtype=np.float32) for S in weights]


def _flat_per_image(P: np.ndarray, weights: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    out, hwk, maps = _image_major(P, weights, size)
    n, H, W, k = out.shape

    def images(span: tuple[int, int]) -> None:  # one span of images per math thread, own buffers
        A = np.empty((H, W), dtype=np.float32)
        term = np.empty((H, W), dtype=np.float32)
        spread = np.empty((H, W, k), dtype=np.float32)  # A repeated over the k channels
        for i in range(*span):
            _resize_into(hwk[i], out[i])
            if not maps:
                continue
            _resize_into(maps[0][i], A)
            for S in maps[1:]:
                _resize_into(S[i], term)
                A += term
            _spread(A, spread)
            out[i] *= spread  # a plain elementwise product: broadcasting over k would be ~8x slower

    threads.run(images, threads.spans(n, threads.count()))
    return out.transpose(0, 3, 1, 2)


def _spread(plane: np.ndarray, dst: np.ndarray) -> None:
    """``dst[:, :, c] = plane`` for every channel c (OpenCV's merge when it can)."""
    import cv2

    k = dst.shape[2]
    if k == 1:
        dst[:, :, 0] = plane
    elif k <= 4:
        cv2.merge([plane] * k, dst=dst)
    else:
        dst[...] = plane[:, :, None]


def _hierarchical_per_image(P: np.ndarray, weights: Sequence[np.ndarray], factors: list[float], size: tuple[int, int]) -> np.ndarray:
    out, hwk, maps = _image_major(P, weights, size)
    n, H, W, k = out.shape

    def images(span: tuple[int, int]) -> None:  # one span of images per math thread, own buffers
        levels = [(np.empty((*S.shape[1:], k), dtype=np.float32), np.empty((*S.shape[1:], k), dtype=np.float32)) for S in maps]
        for i in range(*span):
            p = hwk[i]
            for S, f, (up, spread) in zip(reversed(maps), reversed(factors), reversed(levels)):
                _resize_into(p, up)
                _spread(S[i] * np.float32(f), spread)
                up *= spread
                p = up
            _resize_into(p, out[i])

    threads.run(images, threads.spans(n, threads.count()))
    return out.transpose(0, 3, 1, 2)


def scale_colours(x: Any, n_sigma: float = 1.0, *, mean: float | None = None, std: float | None = None, overwrite: bool = False) -> Any:
    """Over the whole array at once: z-score, clip to [-n_sigma, n_sigma], min-max to [0, 1].

    One scaling for the whole batch keeps colours comparable between its images. A constant
    array (zero variance) gives zeros. Given ``mean`` and ``std`` (a fitted basis's, over a
    data set), they replace the batch's and [-n_sigma, n_sigma] maps to [0, 1] in place of
    the batch's min and max, so no image's colours depend on the others. ``overwrite``: a
    float32 NumPy ``x`` may hold the result (no second array of its size).

    >>> import numpy as np
    >>> scale_colours(np.full((1, 3, 2, 2), 7.0, dtype=np.float32)).max()
    np.float32(0.0)
    """
    xp = array_module(x)
    if n_sigma <= 0:
        raise InputError(f"n_sigma must be positive, got {n_sigma}")
    fixed = mean is not None and std is not None
    if xp is np:
        return _scale_colours_numpy(x, float(n_sigma), mean if fixed else None, std if fixed else None, overwrite)
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


# Elements per chunk of the colour scaling: small enough to stay in cache between its passes.
_CHUNK = 1 << 18


def _scale_colours_numpy(x: np.ndarray, n_sigma: float, mean: float | None, std: float | None, overwrite: bool = False) -> np.ndarray:
    """``scale_colours`` as one affine map and clip, over cache-sized chunks in memory order
    (:class:`ColourStats` then :func:`apply_colours`); the result has the memory layout of ``x``."""
    in_place = overwrite and isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.writeable
    x = np.asarray(x, dtype=np.float32)
    out = x if in_place else np.empty_like(x)
    if in_place and not np.may_share_memory(out.ravel(order="K"), x):  # x's strides allow no flat view: a copy came back
        out = np.empty_like(x)
    if mean is None or std is None:
        if x.size == 0:
            return out
        stats = ColourStats()
        stats.add(x)
        scaling = stats.scaling(n_sigma)
    else:
        scaling = fixed_scaling(mean, std, n_sigma)
    if scaling is None:
        return np.zeros_like(x)
    return apply_colours(x, scaling, out=out)


def fixed_scaling(mean: float, std: float, n_sigma: float) -> tuple[float, float, float, float, float] | None:
    """The affine map of ``scale_colours`` given a fitted ``mean`` and ``std`` (None: all zeros)."""
    if not float(std) > 0:
        return None
    return float(mean), float(std), -n_sigma, n_sigma, float_range.factor(max(abs(float(mean)), float(std)))


def _chunk_statistics(part: np.ndarray, scratch: np.ndarray) -> tuple[int, float, float, float, float]:
    """(count, mean, sum of squared deviations, min, max) of one chunk."""
    d = scratch[: part.size]
    lo, hi = float(part.min()), float(part.max())
    # a chunk beyond float32's safe range for squares is summed scaled by a power of two
    f = float_range.factor(max(-lo, hi))
    if f != 1.0:
        d[...] = float_range.scale(part, f)
        part = d
    mean = float(part.sum(dtype=np.float32)) / part.size  # pairwise float32 sum
    np.subtract(part, np.float32(mean), out=d)
    np.square(d, out=d)
    return part.size, mean / f, float(d.sum()) / (f * f), lo, hi


class ColourStats:
    """The batch statistics of ``scale_colours`` over an array given in consecutive parts.

    The parts, each flattened in its memory order and joined, form the array; they are cut
    into the same ``_CHUNK``-element chunks whatever the parts (and whatever the number of
    math threads that take them), so the statistics are those of the whole array bit for
    bit. Per chunk: mean and squared deviations (merged exactly in float64), min and max.
    """

    def __init__(self) -> None:
        self.chunks: list[tuple[int, float, float, float, float]] = []
        self._carry = np.empty(_CHUNK, dtype=np.float32)  # the start of a chunk that the next part completes
        self._filled = 0

    def add(self, part: Any) -> None:
        flat = np.asarray(part, dtype=np.float32).ravel(order="K")
        i = 0
        if self._filled:
            i = min(_CHUNK - self._filled, flat.size)
            self._carry[self._filled : self._filled + i] = flat[:i]
            self._filled += i
            if self._filled < _CHUNK:
                return
            self.chunks.append(_chunk_statistics(self._carry, np.empty(_CHUNK, dtype=np.float32)))
            self._filled = 0
        starts = range(i, flat.size - _CHUNK + 1, _CHUNK)
        found: list[Any] = [None] * len(starts)

        def statistics(span: tuple[int, int]) -> None:  # chunks of one math thread
            scratch = np.empty(_CHUNK, dtype=np.float32)
            for j in range(*span):
                found[j] = _chunk_statistics(flat[starts[j] : starts[j] + _CHUNK], scratch)

        threads.run(statistics, threads.spans(len(starts), threads.count()))
        self.chunks.extend(found)
        i += len(starts) * _CHUNK
        rest = flat.size - i
        self._carry[:rest] = flat[i:]
        self._filled = rest

    def scaling(self, n_sigma: float) -> tuple[float, float, float, float, float] | None:
        """(mean, std, lo, hi, g) of the affine map (see :func:`apply_colours`), or None when
        the array is constant (its colours are all zeros)."""
        if self._filled:
            self.chunks.append(_chunk_statistics(self._carry[: self._filled].copy(), np.empty(self._filled, dtype=np.float32)))
            self._filled = 0
        if not self.chunks:
            return None
        counts, means, squares, lows, highs = (np.asarray(column, dtype=np.float64) for column in zip(*self.chunks))
        size = float(counts.sum())
        mean = float(counts @ means) / size
        # Chan et al.: the squared deviations of the whole from those of its parts
        variance = (float(squares.sum()) + float(counts @ (means - mean) ** 2)) / size
        std = float(np.sqrt(max(variance, 0.0)))
        if not std > 0:
            return None
        m32, s32 = np.float32(mean), np.float32(std)
        lo, hi = (float(np.clip((np.float32(v) - m32) / s32, -n_sigma, n_sigma)) for v in (lows.min(), highs.max()))
        if hi <= lo:
            return None
        return mean, std, lo, hi, float_range.factor(max(-lows.min(), highs.max()))


def apply_colours(x: Any, scaling: tuple[float, float, float, float, float], *, out: np.ndarray | None = None) -> np.ndarray:
    """``clip((x - mean) * a + b, 0, 1)`` with a = 1 / (std (hi - lo)), b = -lo / (hi - lo)
    (z-score, clip to [-n_sigma, n_sigma] and min-max in one map, as z is monotone in x);
    element by element, so any part of an array gives that part of the whole's result.

    Beyond the safe range it is computed as (x g - mean g) * (a / g), g a power of two.
    """
    mean, std, lo, hi, g = scaling
    x = np.asarray(x, dtype=np.float32)
    out = np.empty_like(x) if out is None else out
    flat_in, flat_out = x.ravel(order="K"), out.ravel(order="K")  # views: the same layout
    m32 = np.float32(float(mean) * g)
    a = np.float32(1.0 / (float(np.float32(std)) * g * (hi - lo)))
    b = np.float32(-lo / (hi - lo))
    chunks = range(0, flat_in.size, _CHUNK)

    def write(span: tuple[int, int]) -> None:  # chunks of one math thread
        for i in chunks[span[0] : span[1]]:
            part = flat_out[i : i + _CHUNK]
            if g == 1.0:
                np.subtract(flat_in[i : i + _CHUNK], m32, out=part)
            else:
                part[...] = float_range.scale(flat_in[i : i + _CHUNK], g)
                part -= m32
            part *= a
            part += b
            np.clip(part, 0.0, 1.0, out=part)

    threads.run(write, threads.spans(len(chunks), threads.count()))
    return out

"""How alike two sets of PFV maps are: magnitudes compared by SSIM (scikit-image) and
Spearman rank correlation (SciPy), image by image or between the images of one set.

Both libraries come with the extra ``sanity`` (``pip install 'pfv-onnx[sanity]'``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DependencyError, InputError

EXTRA = "sanity"

#: Side of the square grid magnitude maps are resampled to before they are compared.
COMPARE_SIZE = 64
_SSIM_SIGMA = 1.5  # Gaussian window of Wang et al. (2004): sigma 1.5, 11 x 11
_SSIM_SIDE = 11


def require() -> None:
    """Raise :class:`DependencyError` naming the extra when scikit-image or SciPy is missing."""
    missing = []
    for module, dist in (("skimage.metrics", "scikit-image"), ("scipy.stats", "scipy")):
        try:
            __import__(module)
        except ImportError:
            missing.append(dist)
    if missing:
        raise DependencyError(
            f"the map similarity scores need {' and '.join(missing)}; install the extra with: pip install 'pfv-onnx[{EXTRA}]'"
        )


def _check_maps(maps: Any, what: str = "maps") -> np.ndarray:
    a = np.asarray(maps)
    if a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4 or a.shape[0] < 1 or min(a.shape[1:3]) < 1:
        raise InputError(f"{what} must be PFV maps shaped (N, H, W, k), got shape {list(a.shape)}")
    if not np.issubdtype(a.dtype, np.number):
        raise InputError(f"{what} must hold numbers, got {a.dtype}")
    return a.astype(np.float64, copy=False)


def magnitude(maps: Any) -> np.ndarray:
    """How strongly each pixel of a set of PFV maps stands out: (N, H, W, k) -> (N, H, W) float64.

    The batch colour scaling maps "nothing special" to one colour, different for every batch
    (mid-grey when the scaled values are symmetric). The magnitude is the Euclidean distance of
    each pixel's colour from the median colour of the whole set (per component, over every pixel
    of every image), so it is comparable within one set and independent of which colour each
    component got. (N, H, W) input is taken as k = 1.
    """
    a = _check_maps(maps)
    median = np.median(a.reshape(-1, a.shape[-1]), axis=0)
    return np.sqrt(((a - median) ** 2).sum(axis=-1))


def _resample(m: np.ndarray, size: int | None) -> np.ndarray:
    """(N, H, W) maps to (N, size, size) by area averaging (bilinear when enlarging)."""
    if size is None or m.shape[1:] == (size, size):
        return m
    import cv2

    out = np.empty((m.shape[0], size, size), np.float64)
    for i, x in enumerate(m):
        shrink = size <= x.shape[0] and size <= x.shape[1]
        out[i] = cv2.resize(x, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out


def _unit_range(m: np.ndarray) -> np.ndarray:
    """Each map min-max scaled to [0, 1]; a constant map becomes zeros."""
    lo = m.min(axis=(-2, -1), keepdims=True)
    span = m.max(axis=(-2, -1), keepdims=True) - lo
    return np.where(span > 0, (m - lo) / np.where(span > 0, span, 1.0), 0.0)


def _pairs(a: Any, b: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim not in (2, 3):
        raise InputError(f"{what} needs two (H, W) or (N, H, W) arrays of one shape, got {list(x.shape)} and {list(y.shape)}")
    return x, y


def ssim(a: Any, b: Any, *, data_range: float = 1.0) -> np.ndarray | float:
    """Structural similarity of two maps, or of two stacks of maps image by image.

    ``skimage.metrics.structural_similarity`` with the settings of Wang et al. (2004):
    Gaussian window (sigma 1.5, 11 x 11), K1 = 0.01, K2 = 0.03, population covariances, the
    mean SSIM over the positions where the window fits entirely.

    Args:
        a, b: (H, W) or (N, H, W) arrays of the same shape, H and W at least 11.
        data_range: the span of possible values (1 for maps in [0, 1]).

    Returns:
        A float for (H, W) inputs, (N,) float64 for stacks; 1 means identical.
    """
    require()
    from skimage.metrics import structural_similarity

    x, y = _pairs(a, b, "SSIM")
    if min(x.shape[-2:]) < _SSIM_SIDE:
        raise InputError(f"SSIM needs maps of at least {_SSIM_SIDE} x {_SSIM_SIDE} pixels, got {list(x.shape[-2:])}")

    def one(p: np.ndarray, q: np.ndarray) -> float:
        return float(structural_similarity(p, q, data_range=data_range, gaussian_weights=True, sigma=_SSIM_SIGMA, use_sample_covariance=False))

    if x.ndim == 2:
        return one(x, y)
    return np.array([one(p, q) for p, q in zip(x, y)], dtype=np.float64)


def spearman(a: Any, b: Any) -> np.ndarray | float:
    """Spearman rank correlation of two maps (all pixels), or of two stacks image by image
    (``scipy.stats.spearmanr``; ties get their average rank). A constant map has no order:
    its correlation is NaN.

    Returns:
        A float for (H, W) inputs, (N,) float64 for (N, H, W) stacks; in [-1, 1].
    """
    require()
    import warnings

    from scipy.stats import spearmanr

    x, y = _pairs(a, b, "Spearman correlation")

    def one(p: np.ndarray, q: np.ndarray) -> float:
        if np.ptp(p) == 0 or np.ptp(q) == 0:
            return float("nan")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(np.clip(spearmanr(p.ravel(), q.ravel())[0], -1.0, 1.0))

    if x.ndim == 2:
        return one(x, y)
    return np.array([one(p, q) for p, q in zip(x, y)], dtype=np.float64)


@dataclass(frozen=True)
class Similarity:
    """Similarity of magnitude maps over a set of pairs: means and the values per pair.

    ``ssim``: mean SSIM of the maps each scaled to [0, 1]; ``spearman``: mean Spearman rank
    correlation (pairs with a constant map left out). Both are 1 for identical maps and near 0
    for unrelated ones. NaN when there is no pair.
    """

    ssim: float
    spearman: float
    ssim_values: np.ndarray
    spearman_values: np.ndarray
    pairs: list[tuple[int, int]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ssim": finite_or_none(self.ssim),
            "spearman": finite_or_none(self.spearman),
            "pairs": len(self.pairs),
        }


def finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _nanmean(v: np.ndarray) -> float:
    v = np.asarray(v, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def _similarity(ma: np.ndarray, mb: np.ndarray, pairs: list[tuple[int, int]]) -> Similarity:
    if not pairs:
        empty = np.zeros(0)
        return Similarity(float("nan"), float("nan"), empty, empty, [])
    ia = np.array([p[0] for p in pairs])
    ib = np.array([p[1] for p in pairs])
    s = ssim(_unit_range(ma[ia]), _unit_range(mb[ib]))
    r = spearman(ma[ia], mb[ib])
    return Similarity(_nanmean(s), _nanmean(r), s, r, list(pairs))


def compare_maps(maps_a: Any, maps_b: Any, *, size: int | None = COMPARE_SIZE) -> Similarity:
    """How alike two sets of PFV maps of the same images are, image by image.

    The magnitude of each set (:func:`magnitude`, so colours need not correspond) is resampled to
    ``size`` x ``size`` (None: as they are) and image i of one set is compared with image i of
    the other.

    Args:
        maps_a, maps_b: (N, H, W, k) maps of the same N images (e.g. ``PFVResult.rgb``); the two
            sets may differ in H, W and k only when ``size`` is given.
    """
    a, b = _check_maps(maps_a, "maps_a"), _check_maps(maps_b, "maps_b")
    if a.shape[0] != b.shape[0]:
        raise InputError(f"the two sets must hold maps of the same images, got {a.shape[0]} and {b.shape[0]} maps")
    if size is None and a.shape[1:3] != b.shape[1:3]:
        raise InputError(f"maps of sizes {list(a.shape[1:3])} and {list(b.shape[1:3])} need a common size=")
    ma, mb = _resample(magnitude(a), size), _resample(magnitude(b), size)
    return _similarity(ma, mb, [(i, i) for i in range(a.shape[0])])


def between_images(maps: Any, *, size: int | None = COMPARE_SIZE) -> Similarity:
    """How alike the maps of different images in one set are: the mean over all pairs i < j.

    High values mean the maps hardly depend on the image (they show the architecture, not the
    content). A set of one image has no pair: NaN.
    """
    a = _check_maps(maps)
    m = _resample(magnitude(a), size)
    n = a.shape[0]
    return _similarity(m, m, [(i, j) for i in range(n) for j in range(i + 1, n)])



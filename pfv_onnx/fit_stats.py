"""The sufficient statistics of a fit's two passes: exact to merge across chunks, shards and workers.

1. :class:`CovarianceStats`: count, sum and sum of outer products (float64) of the rows of
   E_L as (N*h*w, C), plus the peak of every weighting map (for the hierarchical variant).
   The sums are taken around a fixed shift (the first chunk's mean) so that the covariance
   ``sum - n m m^T`` does not cancel badly; shards with different shifts merge exactly
   (up to float64 rounding) by re-expressing one around the other's shift.
   :meth:`CovarianceStats.principal` gives the leading k directions (``pca.top_eigh``), the
   mean and the eigenvalues of the pooled sample covariance.
2. :class:`ProjectionStats`: with those directions, the third moment of every projection
   (the sign rule of ``pca.orient``: it needs the mean and the directions, hence the second
   pass) and the moments (count, mean, centred sum of squares) per component of the weighted
   projections at the image size, for the flat and the hierarchical variant. A sign flip of a
   component flips its mean and keeps its spread, so the colour mean and std over the whole
   ``(N, k, H, W)`` array follow exactly once the signs are known.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from . import pca, weighting
from .errors import InputError
from .pca import PrincipalBasis
from .xp import array_module, to_host

if TYPE_CHECKING:
    from .decompose import ForwardPass

VARIANTS = ("flat", "hierarchical")


# --------------------------------------------------------------------------- first pass


@dataclass
class CovarianceStats:
    """Sufficient statistics of the rows x (C,) of E_L, around a fixed ``shift``.

    ``total`` = sum(x - shift), ``outer`` = sum((x - shift)(x - shift)^T), both float64;
    ``count`` rows from ``n_images`` images; ``peaks`` the maximum of each weighting map's
    channel sum S_l over all images (earliest first). Arrays may live on the GPU while
    accumulating; :meth:`host` brings them back.
    """

    channels: int = 0
    count: int = 0
    n_images: int = 0
    shift: Any = None
    total: Any = None
    outer: Any = None
    peaks: Any = None
    input_hw: tuple[int, int] | None = None

    @property
    def empty(self) -> bool:
        return self.count == 0

    def add(self, fp: ForwardPass) -> CovarianceStats:
        """Accumulate one chunk in place."""
        E = fp.activations
        xp = array_module(E)
        _check_chunk(self, fp)
        X = pca.observations(E)
        if not bool(xp.isfinite(X).all()):
            raise InputError("the decomposed feature map contains NaN or Inf values; check the preprocessing and the model")
        peaks = xp.asarray([float(S.max()) for S in fp.weights], dtype=xp.float64)
        if self.empty:
            self.channels = int(X.shape[1])
            self.shift = X.mean(axis=0, dtype=xp.float64)
            self.total = xp.zeros(self.channels, dtype=xp.float64)
            self.outer = xp.zeros((self.channels, self.channels), dtype=xp.float64)
            self.peaks = peaks
            self.input_hw = tuple(fp.input_hw)
        else:
            self.peaks = xp.maximum(self.peaks, peaks)
        Xs = X.astype(xp.float64) - self.shift
        self.total += Xs.sum(axis=0)
        self.outer += Xs.T @ Xs
        self.count += int(X.shape[0])
        self.n_images += int(E.shape[0])
        return self

    def host(self) -> CovarianceStats:
        if self.empty:
            return CovarianceStats()
        return CovarianceStats(
            self.channels, self.count, self.n_images, to_host(self.shift), to_host(self.total), to_host(self.outer),
            to_host(self.peaks), self.input_hw,
        )

    def merge(self, other: CovarianceStats) -> CovarianceStats:
        """The statistics of both sets of images together (a new object, on the host)."""
        a, b = self.host(), other.host()
        if b.empty:
            return a
        if a.empty:
            return b
        _check_compatible(a, b)
        # Re-express b's sums around a's shift: x - s_a = (x - s_b) + d.
        d = b.shift - a.shift
        total_b = b.total + b.count * d
        outer_b = b.outer + np.outer(b.total, d) + np.outer(d, b.total) + b.count * np.outer(d, d)
        return CovarianceStats(
            a.channels, a.count + b.count, a.n_images + b.n_images, a.shift.copy(), a.total + total_b,
            a.outer + outer_b, np.maximum(a.peaks, b.peaks), a.input_hw,
        )

    def mean(self) -> np.ndarray:
        h = self.host()
        return h.shift + h.total / h.count

    def scatter(self) -> np.ndarray:
        """sum((x - mean)(x - mean)^T), float64, symmetric."""
        h = self.host()
        S = h.outer - np.outer(h.total, h.total) / h.count
        return (S + S.T) / 2

    def principal(self, k: int) -> PrincipalBasis:
        """The leading k directions of the pooled sample covariance, not yet oriented."""
        if self.empty:
            raise InputError("no images were read, so there is nothing to fit")
        pca.check_k(k, self.channels, self.count)
        S = self.scatter()
        vals, V = pca.top_eigh(S, k)
        m = self.count
        return PrincipalBasis(
            mean=self.mean(),
            directions=np.asarray(V, dtype=np.float64),
            eigenvalues=np.maximum(np.asarray(vals, dtype=np.float64), 0.0) / (m - 1),
            total_variance=max(float(np.trace(S)), 0.0) / (m - 1),
            n_observations=int(m),
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        h = self.host()
        if h.empty:
            return {"kind": np.array("covariance"), "count": np.array(0)}
        return {
            "kind": np.array("covariance"),
            "count": np.array(h.count),
            "n_images": np.array(h.n_images),
            "shift": h.shift,
            "total": h.total,
            "outer": h.outer,
            "peaks": h.peaks,
            "input_hw": np.asarray(h.input_hw, dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> CovarianceStats:
        _expect_kind(a, "covariance")
        if int(a["count"]) == 0:
            return cls()
        shift = np.asarray(a["shift"], dtype=np.float64)
        return cls(
            int(shift.shape[0]), int(a["count"]), int(a["n_images"]), shift, np.asarray(a["total"], dtype=np.float64),
            np.asarray(a["outer"], dtype=np.float64), np.asarray(a["peaks"], dtype=np.float64),
            tuple(int(v) for v in a["input_hw"]),  # type: ignore[arg-type]
        )


# --------------------------------------------------------------------------- second pass


@dataclass
class _Moments:
    """Per-component count, mean and centred sum of squares (merged with Chan's formula)."""

    count: int
    mean: np.ndarray  # (k,)
    m2: np.ndarray  # (k,)

    def merge(self, other: _Moments) -> _Moments:
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        n = self.count + other.count
        delta = other.mean - self.mean
        return _Moments(
            n,
            self.mean + delta * (other.count / n),
            self.m2 + other.m2 + delta**2 * (self.count * other.count / n),
        )

    def pooled(self, signs: np.ndarray) -> tuple[float, float]:
        """Mean and (population) std over all components once each is multiplied by its sign."""
        k = self.mean.shape[0]
        means = self.mean * signs
        grand = float(means.mean())
        m2 = float(self.m2.sum() + self.count * ((means - grand) ** 2).sum())
        return grand, float(np.sqrt(max(m2, 0.0) / (self.count * k)))


@dataclass
class ProjectionStats:
    """Second pass: third moments of the projections and moments of the weighted projections.

    ``third`` (k,) = sum of P^3 per component, P projected onto the unoriented directions;
    ``moments[variant]`` per component of the weighting ``variant`` at the image size.
    """

    third: Any = None
    moments: dict[str, _Moments] = field(default_factory=dict)
    n_images: int = 0

    @property
    def empty(self) -> bool:
        return self.n_images == 0

    def add(self, fp: ForwardPass, directions: PrincipalBasis, peaks: Any) -> ProjectionStats:
        """Accumulate one chunk in place; ``directions`` and ``peaks`` come from the first pass."""
        E = fp.activations
        xp = array_module(E)
        n, _, h, w = E.shape
        P = pca.project(pca.observations(E), directions)
        third = to_host((P.astype(xp.float64) ** 3).sum(axis=0))
        self.third = third if self.third is None else self.third + third
        comps = pca.components(P, n, h, w)
        peaks_host = [float(p) for p in peaks]
        for variant in VARIANTS:
            if variant == "flat":
                mapped = weighting.flat(comps, fp.weights, fp.input_hw)
            else:
                mapped = weighting.hierarchical(comps, fp.weights, fp.input_hw, peaks=peaks_host)
            per = int(n * mapped.shape[2] * mapped.shape[3])
            mu = mapped.mean(axis=(0, 2, 3), dtype=xp.float64)
            dev = mapped.astype(xp.float64) - mu[None, :, None, None]
            m2 = (dev * dev).sum(axis=(0, 2, 3))
            chunk = _Moments(per, to_host(mu), to_host(m2))
            self.moments[variant] = self.moments[variant].merge(chunk) if variant in self.moments else chunk
        self.n_images += int(n)
        return self

    def merge(self, other: ProjectionStats) -> ProjectionStats:
        if other.empty:
            return self
        if self.empty:
            return other
        return ProjectionStats(
            self.third + other.third,
            {v: self.moments[v].merge(other.moments[v]) for v in VARIANTS},
            self.n_images + other.n_images,
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {"kind": np.array("projection"), "n_images": np.array(self.n_images)}
        if self.empty:
            return out
        out["third"] = np.asarray(self.third, dtype=np.float64)
        for v in VARIANTS:
            mo = self.moments[v]
            out[f"{v}_count"] = np.array(mo.count)
            out[f"{v}_mean"] = mo.mean
            out[f"{v}_m2"] = mo.m2
        return out

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> ProjectionStats:
        _expect_kind(a, "projection")
        if int(a["n_images"]) == 0:
            return cls()
        moments = {
            v: _Moments(int(a[f"{v}_count"]), np.asarray(a[f"{v}_mean"], dtype=np.float64), np.asarray(a[f"{v}_m2"], dtype=np.float64))
            for v in VARIANTS
        }
        return cls(np.asarray(a["third"], dtype=np.float64), moments, int(a["n_images"]))


def stats_to_bytes(stats: CovarianceStats | ProjectionStats) -> bytes:
    """Statistics as ``.npz`` bytes (no pickle; the same statistics give the same bytes): for
    shipping between processes or saving shards."""
    from .outputs import npz_bytes

    return npz_bytes(stats.to_arrays())


def stats_from_bytes(data: bytes) -> CovarianceStats | ProjectionStats:
    import io

    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    kind = str(arrays.get("kind", ""))
    return CovarianceStats.from_arrays(arrays) if kind == "covariance" else ProjectionStats.from_arrays(arrays)


def _check_chunk(stats: CovarianceStats, fp: ForwardPass) -> None:
    if stats.empty:
        return
    if tuple(fp.input_hw) != stats.input_hw:
        raise InputError(f"all images of a fit must have one input size; got {tuple(fp.input_hw)} after {stats.input_hw}")
    if int(fp.activations.shape[1]) != stats.channels or len(fp.weights) != int(stats.peaks.shape[0]):
        raise InputError("the chunks of a fit come from different feature maps; use one model and one set of layers")


def _check_compatible(a: CovarianceStats, b: CovarianceStats) -> None:
    if a.channels != b.channels or a.peaks.shape != b.peaks.shape or a.input_hw != b.input_hw:
        raise InputError(
            f"cannot merge statistics of different feature maps ({a.channels} vs {b.channels} channels, "
            f"input {a.input_hw} vs {b.input_hw}); fit every shard with the same model, layers and input size"
        )


def _expect_kind(a: dict[str, np.ndarray], kind: str) -> None:
    if str(a.get("kind", "")) != kind:
        raise InputError(f"expected {kind} statistics, got {str(a.get('kind', 'unknown'))!r}")

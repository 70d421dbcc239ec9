"""A principal basis fitted over any number of images, so colours mean the same in every batch.

Per-batch PFV (``PFV.explain``) fits its principal directions and its colour scaling to the
batch, so a colour means something only inside that batch. A :class:`FittedBasis` fixes all
of it once, from a whole data set streamed in chunks (memory constant in the number of
images), and ``PFV.explain(batch, basis=fitted)`` then gives every image the same colours
whatever batch it sits in.

Two passes over the images:

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

Both kinds of statistics merge exactly, so shards (or Ray workers, see ``distributed``) can
each accumulate their part. :func:`fit_passes` is the two-pass algorithm, written once: it
takes a function that runs one :class:`Stage` over all the images and returns the merged
statistics. :func:`fit` gives it passes in this process, ``distributed.fit`` passes on Ray.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import pca, weighting
from .errors import InputError
from .pca import PrincipalBasis
from .decompose import FittedScaling
from .xp import array_module, to_host

if TYPE_CHECKING:
    from .decompose import ForwardPass
    from .pipeline import PFV

FORMAT = "pfv-onnx-basis/1"
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
    """Statistics as ``.npz`` bytes (no pickle): for shipping between processes or saving shards."""
    buf = io.BytesIO()
    np.savez(buf, **stats.to_arrays())
    return buf.getvalue()


def stats_from_bytes(data: bytes) -> CovarianceStats | ProjectionStats:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    kind = str(arrays.get("kind", ""))
    return CovarianceStats.from_arrays(arrays) if kind == "covariance" else ProjectionStats.from_arrays(arrays)


# --------------------------------------------------------------------------- the fitted basis


@dataclass(frozen=True)
class FittedBasis(PrincipalBasis):
    """A :class:`pca.PrincipalBasis` fitted over a data set, with what makes colours fixed.

    Besides the oriented directions, mean and eigenvalues of the pooled covariance, it holds
    the weighting maps' peaks and the colour statistics (mean, std of the weighted
    projections over all images, for each weighting variant), and records the model
    (sha256), the tensors and the preprocessing it belongs to.
    """

    model_sha256: str = ""
    decomposed_name: str = ""  # the tensor E_L
    weighting: tuple[str, ...] = ()
    input_size: tuple[int, int] = (0, 0)
    n_images: int = 0
    weight_peaks: tuple[float, ...] = ()
    colour: dict[str, tuple[float, float]] = field(default_factory=dict)  # variant -> (mean, std)
    preprocessing: dict[str, Any] | None = None
    model_name: str = ""

    @property
    def decomposed(self) -> str:
        """Former name of ``decomposed_name``, kept for existing callers."""
        return self.decomposed_name

    @property
    def tensors(self) -> list[str]:
        """The tensor names used, earliest first; the last one is E_L."""
        return [*self.weighting, self.decomposed_name]

    def check_model(self, pfv: PFV, used: list[str] | None = None) -> None:
        """Refuse another model (by its hash over the file and its external data), or other
        feature maps than those fitted (``used``: the tensor names, default those ``pfv``
        uses at the fitted size); InputError."""
        if pfv.model_sha256 != self.model_sha256:
            raise InputError(
                f"the basis was fitted on another model ({self.model_name or 'unnamed'}, sha256 {self.model_sha256[:12]}), "
                f"not on {pfv.model_path.name} (sha256 {pfv.model_sha256[:12]}); fit a basis for this model with `pfv-onnx fit`"
            )
        if used is None:
            used = pfv.feature_maps(self.input_size)
        if list(used) != self.tensors:
            raise InputError(
                f"the basis was fitted on feature maps {self.tensors}, this run uses {used}; "
                "give the same --layer/--weight-layers (and input size) as the fit"
            )

    def scaling(self, hierarchical: bool) -> FittedScaling:
        """The fitted peaks and colour statistics of one weighting variant (for ``decompose``)."""
        mean, std = self.colour["hierarchical" if hierarchical else "flat"]
        return FittedScaling(peaks=list(self.weight_peaks) if hierarchical else None, mean=mean, std=std)

    def save(self, path: str | Path) -> Path:
        """Write the basis as ``.npz`` (no pickle; metadata as a JSON string), atomically."""
        from .outputs import write_npz

        meta = {
            "format": FORMAT,
            "model_sha256": self.model_sha256,
            "model_name": self.model_name,
            "decomposed": self.decomposed_name,
            "weighting": list(self.weighting),
            "input_size": list(self.input_size),
            "k": self.k,
            "n_images": self.n_images,
            "n_observations": self.n_observations,
            "total_variance": self.total_variance,
            "preprocessing": self.preprocessing,
        }
        arrays = {
            "meta": np.array(json.dumps(meta)),
            "mean": np.asarray(self.mean, dtype=np.float64),
            "directions": np.asarray(self.directions, dtype=np.float64),
            "eigenvalues": np.asarray(self.eigenvalues, dtype=np.float64),
            "weight_peaks": np.asarray(self.weight_peaks, dtype=np.float64),
            **{f"colour_{v}": np.asarray(self.colour[v], dtype=np.float64) for v in VARIANTS},
        }
        return write_npz(path, arrays)


def load(path: str | Path, pfv: PFV | None = None) -> FittedBasis:
    """Read a basis written by :meth:`FittedBasis.save`; with ``pfv``, refuse it for another model."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"basis file {str(p)!r} does not exist; create one with `pfv-onnx fit`")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays["meta"]))
    except Exception as exc:  # not a zip, no meta, bad JSON, a pickled entry
        raise InputError(f"{str(p)!r} is not a basis file written by `pfv-onnx fit` ({type(exc).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"{str(p)!r} is not a basis file of format {FORMAT} (found {meta.get('format') if isinstance(meta, dict) else None!r})")
    try:
        directions = np.asarray(arrays["directions"], dtype=np.float64)
        basis = FittedBasis(
            mean=np.asarray(arrays["mean"], dtype=np.float64),
            directions=directions,
            eigenvalues=np.asarray(arrays["eigenvalues"], dtype=np.float64),
            total_variance=float(meta["total_variance"]),
            n_observations=int(meta["n_observations"]),
            model_sha256=str(meta["model_sha256"]),
            decomposed_name=str(meta["decomposed"]),
            weighting=tuple(str(t) for t in meta["weighting"]),
            input_size=tuple(int(v) for v in meta["input_size"]),  # type: ignore[arg-type]
            n_images=int(meta["n_images"]),
            weight_peaks=tuple(float(v) for v in arrays["weight_peaks"]),
            colour={v: tuple(float(x) for x in arrays[f"colour_{v}"]) for v in VARIANTS},  # type: ignore[misc]
            preprocessing=meta.get("preprocessing"),
            model_name=str(meta.get("model_name", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"basis file {str(p)!r} is incomplete or damaged ({type(exc).__name__}: {exc}); fit it again") from None
    if directions.ndim != 2 or directions.shape[1] != int(meta["k"]) or basis.mean.shape != (directions.shape[0],):
        raise InputError(f"basis file {str(p)!r} is inconsistent (directions {list(directions.shape)}, k={meta['k']}); fit it again")
    if pfv is not None:
        basis.check_model(pfv)
    return basis


def load_for_run(path: str | Path | None, pfv: PFV, preprocessing: dict[str, Any] | None = None, k: int | None = None) -> tuple[FittedBasis | None, list[str]]:
    """``pfv-onnx run --basis``: the basis checked against the model, and notes for the report.

    A preprocessing other than the fit's is allowed but noted: the fitted colour scaling
    then describes other inputs.
    """
    if not path:
        return None, []
    fitted = load(path, pfv)
    notes = [f"colours from the basis {Path(path).name}: fitted over {fitted.n_images} images, the same in every group and run"]
    if k is not None and k != fitted.k:
        notes.append(f"k={fitted.k} from the basis (not {k})")
    if preprocessing is not None and fitted.preprocessing is not None:
        differ = sorted(key for key in set(fitted.preprocessing) | set(preprocessing) if fitted.preprocessing.get(key) != preprocessing.get(key))
        if differ:
            notes.append(f"the basis was fitted with another preprocessing ({', '.join(differ)} differ); its colour scaling may not fit these inputs")
    return fitted, notes


def finish(
    pfv: PFV,
    cov: CovarianceStats,
    directions: PrincipalBasis,
    proj: ProjectionStats,
    *,
    preprocessing: dict[str, Any] | None = None,
) -> FittedBasis:
    """Orient the directions by the sign rule and assemble the :class:`FittedBasis`."""
    if proj.empty or proj.n_images != cov.n_images:
        raise InputError(
            f"the second pass read {proj.n_images} images, the first {cov.n_images}; "
            "both passes must read the same images"
        )
    V = np.asarray(directions.directions, dtype=np.float64)
    # pca.orient reads only the sign of each summed cube: one row whose cube is that sum
    # applies exactly the per-batch rule (with its fallback) to the data-set third moments.
    signs = np.asarray(pca.orient(V, np.cbrt(np.asarray(proj.third, dtype=np.float64))[None, :]), dtype=np.float64)
    analysis = pfv.analysis(cov.input_hw)
    return FittedBasis(
        mean=np.asarray(directions.mean, dtype=np.float64),
        directions=V * signs,
        eigenvalues=np.asarray(directions.eigenvalues, dtype=np.float64),
        total_variance=float(directions.total_variance),
        n_observations=int(directions.n_observations),
        model_sha256=pfv.model_sha256,
        decomposed_name=analysis.decomposed.name,
        weighting=tuple(fm.name for fm in analysis.weighting),
        input_size=tuple(cov.input_hw),  # type: ignore[arg-type]
        n_images=int(cov.n_images),
        weight_peaks=tuple(float(v) for v in np.asarray(cov.host().peaks)),
        colour={v: proj.moments[v].pooled(signs) for v in VARIANTS},
        preprocessing=preprocessing,
        model_name=pfv.model_path.name,
    )


# --------------------------------------------------------------------------- one process


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


ChunkSource = Any  # a NumPy batch, a re-iterable of batches, or a function returning an iterable of batches


def chunks(images: ChunkSource, batch_size: int = 32) -> Callable[[], Iterable[Any]]:
    """A function that yields the preprocessed batches of ``images`` afresh on every call.

    ``images`` is a NumPy batch (split into ``batch_size`` chunks), a function returning an
    iterable of batches, or a re-iterable collection of batches (a list). A one-shot iterator
    (a generator) is refused: a fit reads the images twice.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    if hasattr(images, "shape") and hasattr(images, "dtype"):
        arr = images
        return lambda: (arr[i : i + batch_size] for i in range(0, int(arr.shape[0]), batch_size))
    if callable(images):
        return images
    if isinstance(images, Iterator):
        raise InputError(
            "a fit reads the images twice, but an iterator can be read once; "
            "give a list of batches or a function that returns a fresh iterator"
        )
    if isinstance(images, Iterable):
        return lambda: images
    raise InputError(f"cannot read images from a {type(images).__name__}; give a NumPy batch, a list of batches or a function")


@dataclass(frozen=True)
class Stage:
    """One pass of a fit: the first (no ``directions``) or the second, with the first pass's
    directions and weighting-map peaks. What each chunk's forward pass adds to."""

    directions: PrincipalBasis | None = None
    peaks: Any = None

    def empty(self) -> CovarianceStats | ProjectionStats:
        return CovarianceStats() if self.directions is None else ProjectionStats()

    def add(self, stats: Any, fp: ForwardPass) -> Any:
        if self.directions is None:
            return stats.add(fp)
        return stats.add(fp, self.directions, self.peaks)


RunPass = Callable[[Stage], "CovarianceStats | ProjectionStats | None"]


def fit_passes(pfv: PFV, run_pass: RunPass, *, k: int, preprocessing: dict[str, Any] | None = None) -> FittedBasis:
    """The two-pass fit: ``run_pass(stage)`` runs one stage over every image and returns the
    merged statistics (None when no image could be read); ``pfv`` names the model and maps."""
    cov = run_pass(Stage())
    if cov is None or cov.empty:
        raise InputError("no images were read, so there is nothing to fit")
    cov = cov.host()  # type: ignore[union-attr]
    directions = cov.principal(k)
    proj = run_pass(Stage(directions, np.asarray(cov.peaks)))
    return finish(pfv, cov, directions, proj or ProjectionStats(), preprocessing=preprocessing)  # type: ignore[arg-type]


def local_pass(pfv: PFV, images: ChunkSource, *, batch_size: int = 32, progress: Callable[[int], None] | None = None) -> RunPass:
    """Passes in this process: every batch of ``images`` (see :func:`chunks`) through ``pfv.forward``."""
    source = chunks(images, batch_size)

    def run(stage: Stage) -> CovarianceStats | ProjectionStats:
        stats = stage.empty()
        for batch in source():
            fp = pfv.forward(batch)
            stage.add(stats, fp)
            if progress is not None:
                progress(fp.n)
        return stats

    return run


def covariance_statistics(pfv: PFV, images: ChunkSource, *, batch_size: int = 32, progress: Callable[[int], None] | None = None) -> CovarianceStats:
    """First pass over ``images`` (see :func:`chunks`), e.g. for one shard."""
    return local_pass(pfv, images, batch_size=batch_size, progress=progress)(Stage()).host()  # type: ignore[union-attr]


def projection_statistics(
    pfv: PFV, images: ChunkSource, directions: PrincipalBasis, peaks: Any, *, batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
) -> ProjectionStats:
    """Second pass over the same ``images``, with the first pass's directions and peaks."""
    return local_pass(pfv, images, batch_size=batch_size, progress=progress)(Stage(directions, peaks))  # type: ignore[return-value]


def fit(
    pfv: PFV,
    images: ChunkSource,
    *,
    k: int | None = None,
    batch_size: int = 32,
    preprocessing: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> FittedBasis:
    """Fit a basis over ``images`` in two streaming passes; memory does not grow with their number.

    ``pfv`` is a ``PFV``; ``images`` a NumPy batch, a list of batches, or a function returning a
    fresh iterable of batches (preprocessed, in the model's layout). ``k`` defaults to ``pfv.k``.
    """
    run = local_pass(pfv, images, batch_size=batch_size, progress=progress)
    return fit_passes(pfv, run, k=pfv.k if k is None else k, preprocessing=preprocessing)

"""A principal basis fitted over any number of images, so colours mean the same in every batch.

Per-batch PFV (``PFV.explain``) fits its principal directions and its colour scaling to the
batch, so a colour means something only inside that batch. A :class:`FittedBasis` fixes all
of it once, from a whole data set streamed in chunks (memory constant in the number of
images), and ``PFV.explain(batch, basis=fitted)`` then gives every image the same colours
whatever batch it sits in.

Two passes over the images gather the statistics of :mod:`pfv_onnx.fit_stats` (the
covariance of E_L's rows, then the third moments and colour moments of the projections).
Both kinds of statistics merge exactly, so shards (or Ray workers, see ``distributed``) can
each accumulate their part. :func:`fit_passes` is the two-pass algorithm, written once: it
takes a function that runs one :class:`Stage` over all the images and returns the merged
statistics. :func:`fit` gives it passes in this process, ``distributed.fit`` passes on Ray.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import pca
from .decompose import FittedScaling
from .errors import InputError
from .fit_stats import (
    VARIANTS,
    CovarianceStats,
    ProjectionStats,
    stats_from_bytes,
    stats_to_bytes,
)
from .pca import PrincipalBasis

if TYPE_CHECKING:
    from .decompose import ForwardPass
    from .pipeline import PFV

FORMAT = "pfv-onnx-basis/1"
ChunkSource = Any  # a NumPy batch, a re-iterable of batches, or a function returning an iterable of batches

__all__ = [
    "FORMAT", "VARIANTS", "CovarianceStats", "ProjectionStats", "stats_to_bytes", "stats_from_bytes", "FittedBasis",
    "load", "load_for_run", "finish", "chunks", "Stage", "fit_passes", "local_pass", "covariance_statistics",
    "projection_statistics", "fit",
]  # fmt: skip


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

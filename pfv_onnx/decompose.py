"""The decomposition of gathered forward passes: PCA, weighting and colour scaling, as one pure
function of the feature maps (no model, no session)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import InitVar, dataclass, field
from typing import Any

import numpy as np

from .errors import InputError
from .feature_maps import FeatureMap
from .pca import PrincipalBasis

@dataclass
class ForwardPass:
    """Feature maps and original outputs of one chunk of images.

    ``activations``: E_L, the map that is decomposed, as an (n, C, h, w) float32 array of the
    backend (NumPy or CuPy). ``weights``: the weighting maps' channel sums S_l as
    (n, 1, H_l, W_l) float32 arrays, earliest first. ``outputs``: the model's original
    outputs, NumPy arrays, by output name. ``decomposed=`` and ``.decomposed`` are the
    former name of ``activations``, kept for existing callers.
    """

    activations: Any = None
    weights: list[Any] = field(default_factory=list)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    input_hw: tuple[int, int] = (0, 0)
    decomposed: InitVar[Any] = None

    def __post_init__(self, decomposed: Any) -> None:
        if decomposed is not None:
            self.activations = decomposed
        self.weights = list(self.weights)
        self.input_hw = tuple(self.input_hw)  # type: ignore[assignment]

    @property
    def n(self) -> int:
        return int(self.activations.shape[0])

    def take(self, rows: Sequence[int]) -> ForwardPass:
        """The pass of the images at ``rows`` (in that order)."""
        from .xp import array_module

        idx = np.asarray(rows, dtype=np.int64)
        pick = lambda a: a[array_module(a).asarray(idx)]  # noqa: E731
        return ForwardPass(pick(self.activations), [pick(w) for w in self.weights], {k: v[idx] for k, v in self.outputs.items()}, self.input_hw)


# The former name of ``activations`` (read side); set after the class is made, as the
# dataclass takes a class attribute of that name for the default of the init argument.
ForwardPass.decomposed = property(lambda self: self.activations, doc="Former name of ``activations``.")  # type: ignore[assignment,method-assign]


@dataclass
class PFVResult:
    """Everything PFV computed for one group of images (one decomposition)."""

    rgb: np.ndarray  # (N, H, W, k) float32 in [0, 1]; k = 3 gives RGB
    components: np.ndarray  # (N, k, h, w) float32: sign-fixed projections P, before weighting
    eigenvalues: np.ndarray  # (k,) float64: leading eigenvalues of the sample covariance of E_L
    explained_variance_ratio: np.ndarray  # (k,) float64: eigenvalues / total variance
    feature_maps: list[str]  # tensor names, earliest first; the last one is E_L
    outputs: dict[str, np.ndarray]  # the model's original outputs, unchanged
    basis: Any = None  # the principal basis used (see pca.PrincipalBasis)
    maps: list[FeatureMap] = field(default_factory=list)  # records of the tensors used

    def rgb_parts(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, rgb[start:start + size])`` over the images (as a spooled result gives them)."""
        for start in range(0, self.rgb.shape[0], max(1, size)):
            yield start, self.rgb[start : start + size]


@dataclass(frozen=True)
class FittedScaling:
    """What a fitted basis sets in a decomposition besides the directions."""

    peaks: list[float] | None  # the hierarchical variant's S_l maxima, earliest first
    mean: float  # colour scaling: mean and std of the weighted projections over the data set
    std: float


def check_finite(maps: Sequence[FeatureMap], peaks: Sequence[float]) -> None:
    """Refuse maps with NaN or Inf values; ``peaks``: the largest magnitudes of E_L, then of each weighting map."""
    for fm, peak in zip([maps[-1], *maps[:-1]], peaks):
        if not np.isfinite(peak):
            raise InputError(f"feature map {fm.name!r} contains NaN or Inf values; check the preprocessing and the model")


def concat(arrays: list[Any]) -> Any:
    from .xp import array_module

    if len(arrays) == 1:
        return arrays[0]
    return array_module(arrays[0]).concatenate(arrays, axis=0)


def decompose(
    passes: Sequence[ForwardPass],
    maps: Sequence[FeatureMap],
    *,
    k: int,
    hierarchical: bool = False,
    n_sigma: float = 1.0,
    basis: PrincipalBasis | None = None,
    scaling: FittedScaling | None = None,
) -> PFVResult:
    """One PCA over the gathered chunks, then weighting and colour scaling.

    ``passes`` may also be a :class:`group_spool.GroupSpool`: the same decomposition in
    bounded memory, its colours drawn a part at a time (``decompose_spooled``).

    ``maps``: the records of the tapped tensors, earliest first, the last one E_L (the
    order of ``ForwardPass.weights`` then ``activations``). With ``basis`` the rows are
    projected onto it instead of decomposed; ``scaling`` (from a fitted basis) fixes the
    hierarchical peaks and the colour scaling.
    """
    from . import degenerate, float_range, pca, weighting
    from .xp import to_host

    from .group_spool import GroupSpool

    if isinstance(passes, GroupSpool):
        from .decompose_spooled import DecomposeOptions, decompose_spooled

        options = DecomposeOptions(k=k, hierarchical=hierarchical, n_sigma=n_sigma, basis=basis, scaling=scaling)
        return decompose_spooled(passes, maps, options)  # type: ignore[return-value]
    if not passes:
        raise InputError("nothing to decompose: no forward passes were given")
    hw = passes[0].input_hw
    if any(p.input_hw != hw for p in passes):
        raise InputError("all images of one decomposition must have the same input size")
    E = concat([p.activations for p in passes])
    weights = [concat([p.weights[i] for p in passes]) for i in range(len(passes[0].weights))]
    peaks = [float_range.peak(arr) for arr in [E, *weights]]  # NaN when any value is NaN; any finite size is fine (scale-free)
    check_finite(maps, peaks)
    n, _, h, w = E.shape
    X = pca.observations(E)
    if basis is None:
        basis, P = pca.fit(X, k, peak=peaks[0])
    else:
        P = pca.project(X, basis)
    comps = pca.components(P, n, h, w)
    degenerate.check(maps, peaks, basis, comps, fitted=scaling is not None, hierarchical=hierarchical)
    if hierarchical:
        mapped = weighting.hierarchical(comps, weights, hw, peaks=scaling.peaks if scaling else None)
    else:
        mapped = weighting.flat(comps, weights, hw)
    fitted = {"mean": scaling.mean, "std": scaling.std} if scaling else {}
    own = isinstance(mapped, np.ndarray) and not np.may_share_memory(mapped, comps)  # a weighting may return comps itself
    rgb = weighting.scale_colours(mapped, n_sigma, overwrite=own, **fitted).transpose(0, 2, 3, 1)
    del mapped
    outputs = {name: np.concatenate([p.outputs[name] for p in passes]) for name in passes[0].outputs}
    return PFVResult(
        rgb=np.ascontiguousarray(to_host(rgb), dtype=np.float32),
        components=np.ascontiguousarray(to_host(comps), dtype=np.float32),
        eigenvalues=np.asarray(basis.eigenvalues, dtype=np.float64),
        explained_variance_ratio=np.asarray(basis.explained_variance_ratio, dtype=np.float64),
        feature_maps=[fm.name for fm in maps],
        outputs=outputs,
        basis=basis,
        maps=list(maps),
    )

"""The decomposition of a spooled group (:class:`group_spool.GroupSpool`): the same numbers
as :func:`decompose.decompose` of the same forward passes, in memory that does not grow
with the number of images.

- PCA: ``pca.fit`` of the memory-mapped rows of E_L, its centred copy memory-mapped too
  (or, with a basis, the projections made while the passes ran);
- weighting and colour scaling: the full-resolution weighted maps are never all held. One
  pass over the images, a part at a time, gathers the colour statistics
  (``weighting.ColourStats``, cut into the same chunks as for the whole array); the
  pictures' pass (:meth:`SpooledResult.rgb_parts`) weights each part again and applies the
  colour map. The group-wide peaks that the weighting needs come from the spool.

Every step is the in-memory one on a part of the array, or on the whole array read from
disk, so the result is the same bit for bit on NumPy. The spooled rows are host memory, so
the PCA, the colour statistics and the colour map run on the CPU even when the passes were
CuPy arrays; the weighting runs on the passes' array module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InputError

if TYPE_CHECKING:
    from .decompose import FittedScaling
    from .feature_maps import FeatureMap
    from .group_spool import GroupSpool
    from .pca import PrincipalBasis

# Images weighted at once (~40 MB of 224 x 224 float32 maps); ``run`` draws one part's
# pictures while the next part's colours are computed.
PART_IMAGES = 64


@dataclass
class SpooledResult:
    """A spooled group's decomposition: ``decompose.PFVResult`` with the colours drawn a
    part at a time (:meth:`rgb_parts`) instead of held as one (N, H, W, k) array. Valid
    until the spool is closed (``outputs`` are memory-mapped from it)."""

    components: np.ndarray
    eigenvalues: np.ndarray
    explained_variance_ratio: np.ndarray
    feature_maps: list[str]
    outputs: dict[str, np.ndarray]
    basis: Any = None
    maps: list[Any] = field(default_factory=list)
    n: int = 0
    _colour: Callable[[int, int], np.ndarray] | None = None

    def rgb_parts(self, size: int = PART_IMAGES) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, rgb of images start:start + size)``, (n, H, W, k) float32 in [0, 1]."""
        assert self._colour is not None
        for start in range(0, self.n, max(1, size)):
            yield start, self._colour(start, min(start + size, self.n))


@dataclass(frozen=True)
class DecomposeOptions:
    """The keyword arguments of :func:`decompose.decompose` (their defaults are set there),
    passed on as one when it decomposes a spool."""

    k: int
    hierarchical: bool
    n_sigma: float
    basis: PrincipalBasis | None
    scaling: FittedScaling | None


def decompose_spooled(spool: GroupSpool, maps: Sequence[FeatureMap], options: DecomposeOptions, *, part: int = PART_IMAGES) -> SpooledResult:
    """``decompose.decompose`` of the passes in ``spool`` (see the module docstring)."""
    from . import degenerate, float_range, pca, weighting
    from .decompose import check_finite
    from .xp import to_backend, to_host

    if spool.n == 0:
        raise InputError("nothing to decompose: no forward passes were given")
    if options.n_sigma <= 0:
        raise InputError(f"n_sigma must be positive, got {options.n_sigma}")
    peaks = list(spool.peaks)
    check_finite(maps, peaks)
    n, hw = spool.n, spool.input_hw
    _, h, w = spool.grid  # type: ignore[misc]
    basis, scaling = options.basis, options.scaling
    if basis is None:
        if spool.basis is not None:
            raise InputError("this spool holds projections onto a basis: decompose it with that basis")
        basis, P = pca.fit(spool.rows.array("E"), options.k, peak=peaks[0], scratch=spool.scratch)
    else:
        if spool.basis is not basis:
            raise InputError("this spool holds the rows projected onto another basis (or none): decompose it with its own")
        P = np.array(spool.rows.array("P"))
    comps = pca.components(P, n, h, w)
    del P
    degenerate.check(maps, peaks, basis, comps, fitted=scaling is not None, hierarchical=options.hierarchical)
    xp = spool.xp

    if options.hierarchical:
        level_peaks = scaling.peaks if scaling is not None and scaling.peaks is not None else spool.maxima

        def weigh(a: int, b: int) -> Any:
            return weighting.hierarchical(to_backend(comps[a:b], xp), [to_backend(S, xp) for S in spool.weights(a, b)], hw, peaks=level_peaks)
    else:
        group_peaks = (float_range.peak(comps), peaks[1:])

        def weigh(a: int, b: int) -> Any:
            return weighting.flat(to_backend(comps[a:b], xp), [to_backend(S, xp) for S in spool.weights(a, b)], hw, peaks=group_peaks)

    if scaling is not None:
        colours = weighting.fixed_scaling(scaling.mean, scaling.std, options.n_sigma)
    else:
        stats = weighting.ColourStats()
        for a in range(0, n, part):
            stats.add(to_host(weigh(a, min(a + part, n))))
        colours = stats.scaling(options.n_sigma)

    def colour(a: int, b: int) -> np.ndarray:
        mapped = to_host(weigh(a, b))
        rgb = np.zeros_like(mapped, dtype=np.float32) if colours is None else weighting.apply_colours(mapped, colours)
        return np.ascontiguousarray(rgb.transpose(0, 2, 3, 1), dtype=np.float32)

    return SpooledResult(
        components=np.ascontiguousarray(to_host(comps), dtype=np.float32),
        eigenvalues=np.asarray(basis.eigenvalues, dtype=np.float64),
        explained_variance_ratio=np.asarray(basis.explained_variance_ratio, dtype=np.float64),
        feature_maps=[fm.name for fm in maps],
        outputs=spool.outputs(),
        basis=basis,
        maps=list(maps),
        n=n,
        _colour=colour,
    )

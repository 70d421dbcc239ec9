"""Refuse a decomposition that would end as a black or non-finite map (exit 2, with the reason)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import InputError

# A leading eigenvalue below (this x the map's peak)^2 is float32 rounding of a constant map.
_RELATIVE_NOISE = 1e-6


def check(maps: Sequence[Any], peaks: Sequence[float], basis: Any, comps: Any, *, fitted: bool, hierarchical: bool) -> None:
    """``maps``: the tensors' records, weighting maps first, E_L last; ``peaks``: largest
    magnitudes of E_L and of each weighting map; ``comps`` the projections."""
    name = maps[-1].name
    weighting = list(maps[:-1])
    hint = "use other images, or choose another layer with --layer (pfv-onnx inspect lists them)"
    if not fitted and not float(basis.eigenvalues[0]) > (_RELATIVE_NOISE * peaks[0]) ** 2:
        raise InputError(f"feature map {name!r} is the same at every position of every image: there is nothing to decompose; {hint}")
    lo, hi = float(comps.min()), float(comps.max())
    if not (abs(lo) < float("inf") and abs(hi) < float("inf")):
        raise InputError(f"the principal components of feature map {name!r} are not finite numbers; check the model's weights")
    if hi <= lo:
        raise InputError(f"the principal components of feature map {name!r} are constant over these images: the map would be blank; {hint}")
    zero = [fm.name for fm, p in zip(weighting, peaks[1:]) if p == 0]
    if zero and (hierarchical or len(zero) == len(weighting)):
        raise InputError(
            f"weighting map(s) {', '.join(map(repr, zero))} are zero on every image, which would make the map blank; "
            "name other weighting maps with --weight-layers, or none"
        )

"""Power-of-two rescaling that keeps float32 sums of products and squares finite.

PFV does not depend on the scale of a map, so a map whose values are too large (or too
small) for float32 products is multiplied by a power of two first: exact in float32, and
the usual range costs nothing but the test.
"""

from __future__ import annotations

import math
from typing import Any

# Magnitudes in this range need no rescaling: squares and sums of ~2^40 of their products stay
# well inside float32's normal range (2^-126 to 2^128).
SAFE_LOW = 2.0**-40
SAFE_HIGH = 2.0**40


def factor(peak: float) -> float:
    """A power of two f with ``peak * f`` in [0.5, 1) when ``peak`` lies outside the safe
    range; 1.0 for a peak inside it, zero, or not finite.

    >>> factor(3.0), factor(2.0**50) * 2.0**50
    (1.0, 0.5)
    """
    peak = abs(float(peak))
    if not math.isfinite(peak) or peak == 0.0 or SAFE_LOW <= peak <= SAFE_HIGH:
        return 1.0
    return math.ldexp(1.0, -math.frexp(peak)[1])


def peak(x: Any) -> float:
    """Largest magnitude of an array (NaN when it holds a NaN; 0.0 when empty)."""
    if x.size == 0:
        return 0.0
    return max(-float(x.min()), float(x.max()))


def scale(x: Any, f: float) -> Any:
    """``x * f`` for a power of two f, in float32 steps whose factors float32 can hold (f may exceed 2^127)."""
    from .xp import array_module

    xp = array_module(x)
    step = 2.0**100
    if f > step:
        return (x * xp.float32(step)) * xp.float32(f / step)
    if f < 1.0 / step:
        return (x * xp.float32(1.0 / step)) * xp.float32(f * step)
    return x * xp.float32(f)

"""The page's colour keys: what each colour of a map means, as HTML with CSS gradients and swatches."""

from __future__ import annotations

from ..render import component_ends
from .fmt import component_name, css_rgb, e


def colour_key(k: int) -> str:
    """The two ends and the neutral middle of each drawn component, as CSS gradients."""
    items = []
    for c, (lo, mid, hi) in enumerate(component_ends(k)):
        name = "brightness" if k == 1 else f"component {c + 1} ({component_name(c, k)})"
        grad = f"linear-gradient(90deg,{css_rgb(lo)},{css_rgb(mid)},{css_rgb(hi)})"
        items.append(
            f'<span class="item" data-component="{c + 1}"><b>{e(name)}</b><span class="ends">−</span>'
            f'<span class="bar" style="background:{grad}" title="negative end, neutral, positive end"></span><span class="ends">+</span></span>'
        )
    return f'<div class="ckey" aria-label="colour key">{"".join(items)}</div>'


def keyline(k: int, typical: tuple[float, ...] | None) -> str:
    """A group's line of colour swatches: its typical (median) colour, then each component's two ends."""
    parts = []
    if typical is not None and len(typical) == 3:
        parts.append(f'<span title="the median colour of this group\'s maps: most places are weak or average">typical (neutral) here<i style="background:{css_rgb(typical)}"></i></span>')
    for c, (lo, _, hi) in enumerate(component_ends(k)):
        parts.append(f'<i style="background:{css_rgb(hi)}"></i>{c + 1}+<i style="background:{css_rgb(lo)}"></i>{c + 1}−')
    return " ".join(parts)

"""Text for the page: escaping, numbers, a definition list, the explained-variance chart.

Every value that reaches the page passes :func:`e` (the standard library's :mod:`html`);
the helpers here return HTML fragments already escaped.
"""

from __future__ import annotations

import html
import math
import os
import urllib.parse
from collections.abc import Sequence
from string import Template
from functools import lru_cache
from importlib import resources
from typing import Any

COLOUR_NAMES = ("red", "green", "blue")
COLOUR_RGB = ((232, 35, 35), (22, 178, 60), (35, 95, 240))  # the bars of the chart and the names' swatches


@lru_cache(maxsize=None)
def template(name: str) -> Template:
    """A template of the page (``templates/NAME``), read once from the package."""
    return Template(resources.files(__package__).joinpath("templates", name).read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def asset(name: str) -> str:
    """A stylesheet or script of the page (``templates/NAME``), inlined so the page stays one file."""
    return resources.files(__package__).joinpath("templates", name).read_text(encoding="utf-8")


def fill(template_name: str, /, **values: Any) -> str:
    """The template ``template_name`` with ``values`` (HTML already) put in."""
    return template(template_name).substitute({k: "" if v is None else str(v) for k, v in values.items()})


def e(value: Any) -> str:
    """Text escaped for HTML content and quoted attributes."""
    return html.escape("" if value is None else str(value), quote=True)


def url(rel: str) -> str:
    """A path relative to OUTDIR as a relative URL (spaces, #, %, & and non-ASCII quoted)."""
    return e(urllib.parse.quote(rel.replace(os.sep, "/"), safe="/"))


def pct(x: Any, digits: int = 1) -> str:
    text = num(x, digits, scale=100.0)
    return text if text == "n/a" else f"{text} %"


def num(x: Any, digits: int = 2, scale: float = 1.0) -> str:
    try:
        v = scale * float(x)
    except (TypeError, ValueError):
        return "n/a"
    return f"{v:.{digits}f}" if math.isfinite(v) else "n/a"


def seconds(x: Any) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "n/a"
    if v < 60:
        return f"{v:.1f} s"
    m, s = divmod(round(v), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def component_name(c: int, k: int) -> str:
    """What component ``c`` (from 0) of a k-component map is drawn as."""
    if k == 1:
        return "brightness"
    return COLOUR_NAMES[c] if c < 3 else "not drawn"


def bar_colour(c: int, k: int) -> str:
    if k == 1:
        return "#5b6270"
    return "rgb({},{},{})".format(*COLOUR_RGB[c]) if c < 3 else "#9aa1ad"


def css_rgb(colour: Sequence[float]) -> str:
    """An R, G, B colour in [0, 1] as CSS."""
    return "rgb({},{},{})".format(*(round(255 * float(v)) for v in colour))


def kv(rows: Sequence[tuple[str, str]]) -> str:
    """A definition list; values are HTML already."""
    return '<dl class="kv">' + "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in rows if v != "") + "</dl>"


def list_text(values: Any) -> str:
    if values is None:
        return ""
    if isinstance(values, (list, tuple)):
        return ", ".join(num(v, 3) if isinstance(v, float) else str(v) for v in values)
    return str(values)


def spectrum_svg(ratios: Sequence[float], channels: int | None = None, fitted: bool = False) -> str:
    """A small bar chart of the explained-variance ratios of the k components, inline SVG.

    Each bar has its component's colour and its percentage on top; the line below says how
    much of the variance the k components leave to the others.
    """
    r = [max(0.0, float(v)) if v is not None and math.isfinite(float(v)) else 0.0 for v in ratios]
    k = len(r)
    width, height, top, bottom, left = 260, 150, 20, 24, 8
    plot_h = height - top - bottom
    span = max(r + [1e-12])
    slot = (width - 2 * left) / max(k, 1)
    bar_w = min(44.0, slot * 0.7)
    parts = [
        f'<svg class="spectrum" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="explained variance of the {k} components">',
        f"<title>Explained variance: {e(', '.join(pct(v) for v in r))}</title>",
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - left}" y2="{height - bottom}" stroke="#c5cad3" stroke-width="1"/>',
    ]
    for c, v in enumerate(r):
        h = plot_h * v / span
        x = left + c * slot + (slot - bar_w) / 2
        y = height - bottom - h
        parts.append(
            f'<rect class="bar" data-component="{c + 1}" data-ratio="{v:.6g}" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" '
            f'height="{max(h, 0.5):.1f}" rx="2" fill="{bar_colour(c, k)}"/>'
        )
        if k <= 12:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{y - 5:.1f}" text-anchor="middle" class="val">{pct(v)}</text>')
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{height - 8}" text-anchor="middle" class="axis">{c + 1}</text>')
    parts.append("</svg>")
    total = sum(r)
    rest = max(0.0, 1.0 - total)
    others = f"the other {channels - k} components" if channels and channels > k else "the other components"
    where = "of the fitted data set's variance" if fitted else "of the variance in this group"
    caption = f"Together {pct(total)} {where}; {others} hold {pct(rest)}."
    return "".join(parts) + f'<p class="small muted">{e(caption)}</p>'

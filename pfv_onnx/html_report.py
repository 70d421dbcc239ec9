"""The run's page, ``OUTDIR/report.html``: one self-contained file a reviewer opens in a browser.

The page is built from what ``pfv-onnx run`` and ``pfv-onnx sanity`` left in OUTDIR
(report.json, the map and overlay PNGs, pfv.npz, sanity.json) and escapes every text with
the standard library's :mod:`html`. Pictures are referenced by paths relative to OUTDIR,
so the folder can be zipped and moved; the page loads no script, font or stylesheet from
anywhere, opens from ``file://``, and enlarges a picture with plain HTML and CSS
(a ``:target`` lightbox). Small pictures made for the page (gallery thumbnails, the patches
of the component legend) go to ``OUTDIR/report_files/``.

The component legend is computed, not guessed: for each principal component of a group,
the positions of the feature map where its projection (``components`` in pfv.npz) is
largest and most negative are mapped back to the pixels of the image under them, and
those patches are cut from the original images.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .render import encode_jpeg, encode_png

REPORT_HTML = "report.html"
ASSETS = "report_files"
THUMBS = f"{ASSETS}/thumbs"
LEGEND = f"{ASSETS}/legend"
THUMB_QUALITY = 90  # JPEG quality of the thumbnails
THUMB_SIDE = 320  # longest side of a gallery thumbnail, in pixels (shown at about half: sharp on HiDPI screens)
PATCH_SIDE = 120  # legend patches are square PNGs of this side (shown at half: sharp on HiDPI screens)
PATCHES = 6  # legend patches per component and sign
EAGER_CARDS = 60  # gallery cards whose thumbnails load with the page; the rest as they scroll into view
PATCH_CELLS = 2.0  # a patch spans this many feature-map cells in each direction, centred on its cell

_COLOUR_NAMES = ("red", "green", "blue")
_COLOUR_RGB = ((232, 35, 35), (22, 178, 60), (35, 95, 240))
_COLUMN_HEADS = "<div><span>image</span><span>PFV map</span><span>overlay</span></div>"  # over each gallery column
_LEGEND_FILE = re.compile(r"g\d+-c\d+-(pos|neg)-\d+\.png")


# --------------------------------------------------------------------------- small pictures


def _thumb_size(h: int, w: int, side: int = THUMB_SIDE) -> tuple[int, int]:
    """(height, width) of a picture of ``h`` x ``w`` shrunk to fit ``side`` (never enlarged)."""
    scale = min(1.0, side / max(h, w, 1))
    return max(1, round(h * scale)), max(1, round(w * scale))


def _shrink(bgr: np.ndarray) -> np.ndarray:
    import cv2

    h, w = bgr.shape[:2]
    th, tw = _thumb_size(h, w)
    if (th, tw) == (h, w):
        return bgr
    return cv2.resize(bgr, (tw, th), interpolation=cv2.INTER_AREA)


def _thumb_paths(name: str) -> dict[str, str]:
    return {f"thumb_{kind}": f"{THUMBS}/{name}.{kind}.jpg" for kind in ("image", "map", "overlay")}


def write_thumbnails(outdir: str | os.PathLike[str], name: str, image_bgr: np.ndarray, map_bgr: np.ndarray, overlay_bgr: np.ndarray) -> dict[str, str]:
    """Small JPEGs of an image, its map and its overlay for the page's gallery.

    Called while the full-size pictures are still in memory, so the page costs no second
    decoding. Returns the paths relative to ``outdir`` (``thumb_image``, ``thumb_map``,
    ``thumb_overlay``), as report.json records them.
    """
    from .outputs import atomic_write_bytes

    paths = _thumb_paths(name)
    for kind, pic in (("image", image_bgr), ("map", map_bgr), ("overlay", overlay_bgr)):
        atomic_write_bytes(Path(outdir) / paths[f"thumb_{kind}"], encode_jpeg(_shrink(pic), THUMB_QUALITY), durable=False)
    return paths


# --------------------------------------------------------------------------- the legend's arithmetic


@dataclass(frozen=True)
class Patch:
    """One place of one image where a component is strong: image ``index`` within the group,
    feature-map cell (``y``, ``x``) and the component's value there."""

    index: int
    y: int
    x: int
    value: float


def select_patches(values: np.ndarray, count: int = PATCHES, sign: int = 1) -> list[Patch]:
    """The ``count`` places where ``sign * values`` is largest, one per image first.

    ``values``: (n, h, w), one component's projections over a group. The strongest place of
    each image is taken, the images ordered by it; when the group has fewer images than
    ``count``, further places follow, each at least two cells from those already taken in
    its image. Only places where ``sign * values > 0`` count (the other sign's end).
    """
    v = sign * np.asarray(values, dtype=np.float64)
    n, h, w = v.shape
    flat = v.reshape(n, -1)
    best = flat.argmax(axis=1)
    peak = flat[np.arange(n), best]
    order = np.argsort(-peak, kind="stable")
    chosen: list[Patch] = []
    for i in order[:count]:
        if peak[i] > 0:
            y, x = divmod(int(best[i]), w)
            chosen.append(Patch(int(i), y, x, float(sign * peak[i])))
    if len(chosen) < count:
        for pos in np.argsort(-v.ravel(), kind="stable"):
            if len(chosen) >= count:
                break
            i, rest = divmod(int(pos), h * w)
            y, x = divmod(rest, w)
            if v[i, y, x] <= 0:
                break
            if all(p.index != i or max(abs(p.y - y), abs(p.x - x)) >= 2 for p in chosen):
                chosen.append(Patch(i, y, x, float(sign * v[i, y, x])))
    return chosen


def patch_box(y: int, x: int, grid_hw: tuple[int, int], crop: Sequence[int], image_hw: tuple[int, int], cells: float = PATCH_CELLS) -> tuple[int, int, int, int]:
    """Pixels ``(x0, y0, x1, y1)`` of the original image under feature-map cell (y, x).

    ``crop``: the region of the image the model saw (``x0, y0, x1, y1``); the map's
    ``grid_hw`` cells tile it evenly (the resize stretches it to the model's input). The box
    is ``cells`` cells wide and high, centred on the cell's centre, moved inside the image
    when it would reach over an edge.
    """
    gh, gw = grid_hw
    bx0, by0, bx1, by1 = (float(v) for v in crop)
    ih, iw = image_hw
    cw, ch = (bx1 - bx0) / gw, (by1 - by0) / gh
    cx, cy = bx0 + (x + 0.5) * cw, by0 + (y + 0.5) * ch

    def span(centre: float, size: float, limit: int) -> tuple[int, int]:
        size = min(max(size, 1.0), float(limit))
        lo = min(max(centre - size / 2, 0.0), limit - size)
        a = int(math.floor(lo + 1e-9))
        b = int(math.ceil(lo + size - 1e-9))
        return a, max(b, a + 1)

    x0, x1 = span(cx, cells * cw, iw)
    y0, y1 = span(cy, cells * ch, ih)
    return x0, y0, x1, y1


# --------------------------------------------------------------------------- reading OUTDIR


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}; run the command again") from None
    return data if isinstance(data, dict) else None


def _components(outdir: Path, report: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """(components, group of each row) from pfv.npz, or None when there is none."""
    name = (report.get("outputs") or {}).get("npz")
    if not name or not (outdir / name).is_file():
        return None
    try:
        with np.load(outdir / name, allow_pickle=False) as z:
            if "components" not in z.files:
                return None
            comps = np.asarray(z["components"])
            groups = np.asarray(z["group"]) if "group" in z.files else np.zeros(comps.shape[0], np.int32)
    except (OSError, ValueError):
        return None
    if comps.ndim != 4 or groups.shape != (comps.shape[0],):
        return None
    return comps, groups


def _decoded(path: str, size: Sequence[int], max_pixels: int) -> np.ndarray | None:
    """The original image as the run saw it, or None when it is gone or changed."""
    from .errors import PfvError
    from .inputs import decode_image

    try:
        img = decode_image(path, max_pixels=max_pixels)
    except PfvError:
        return None
    if list(img.bgr.shape[:2]) != [int(s) for s in size]:
        return None
    return img.bgr


# --------------------------------------------------------------------------- the page's parts


def e(value: Any) -> str:
    """Text escaped for HTML content and quoted attributes."""
    return html.escape("" if value is None else str(value), quote=True)


def _url(rel: str) -> str:
    """A path relative to OUTDIR as a relative URL (spaces, #, %, & and non-ASCII quoted)."""
    return e(urllib.parse.quote(rel.replace(os.sep, "/"), safe="/"))


def _pct(x: Any, digits: int = 1) -> str:
    text = _num(x, digits, scale=100.0)
    return text if text == "n/a" else f"{text} %"


def _num(x: Any, digits: int = 2, scale: float = 1.0) -> str:
    try:
        v = scale * float(x)
    except (TypeError, ValueError):
        return "n/a"
    return f"{v:.{digits}f}" if math.isfinite(v) else "n/a"


def _seconds(x: Any) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "n/a"
    if v < 60:
        return f"{v:.1f} s"
    m, s = divmod(round(v), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def _component_name(c: int, k: int) -> str:
    if k == 1:
        return "brightness"
    return _COLOUR_NAMES[c] if c < 3 else "not drawn"


def _swatch(c: int, k: int) -> str:
    if k == 1:
        top = (255, 255, 255)
    elif c < 3:
        top = _COLOUR_RGB[c]
    else:
        top = (150, 150, 150)
    return f"background:linear-gradient(90deg,#000,rgb{top})"


def _bar_colour(c: int, k: int) -> str:
    if k == 1:
        return "#5b6270"
    return "rgb({},{},{})".format(*_COLOUR_RGB[c]) if c < 3 else "#9aa1ad"


def _kv(rows: Sequence[tuple[str, str]]) -> str:
    """A definition list; values are HTML already."""
    return '<dl class="kv">' + "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in rows if v != "") + "</dl>"


def _list_text(values: Any) -> str:
    if values is None:
        return ""
    if isinstance(values, (list, tuple)):
        return ", ".join(_num(v, 3) if isinstance(v, float) else str(v) for v in values)
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
        f"<title>Explained variance: {e(', '.join(_pct(v) for v in r))}</title>",
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - left}" y2="{height - bottom}" stroke="#c5cad3" stroke-width="1"/>',
    ]
    for c, v in enumerate(r):
        h = plot_h * v / span
        x = left + c * slot + (slot - bar_w) / 2
        y = height - bottom - h
        parts.append(
            f'<rect class="bar" data-component="{c + 1}" data-ratio="{v:.6g}" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" '
            f'height="{max(h, 0.5):.1f}" rx="2" fill="{_bar_colour(c, k)}"/>'
        )
        if k <= 12:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{y - 5:.1f}" text-anchor="middle" class="val">{_pct(v)}</text>')
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{height - 8}" text-anchor="middle" class="axis">{c + 1}</text>')
    parts.append("</svg>")
    total = sum(r)
    rest = max(0.0, 1.0 - total)
    others = f"the other {channels - k} components" if channels and channels > k else "the other components"
    where = "of the fitted data set's variance" if fitted else "of the variance in this group"
    caption = f"Together {_pct(total)} {where}; {others} hold {_pct(rest)}."
    return "".join(parts) + f'<p class="small muted">{e(caption)}</p>'


# --------------------------------------------------------------------------- building the page


@dataclass
class _Entry:
    """One explained image on the page."""

    rec: dict[str, Any]
    key: str  # element id suffix
    thumbs: dict[str, str]
    thumb_hw: tuple[int, int]


class _Builder:
    def __init__(self, outdir: Path, report: dict[str, Any] | None, sanity: dict[str, Any] | None):
        self.outdir = outdir
        self.report = report
        self.sanity = sanity
        self.notes: list[str] = []
        self.max_pixels = int(((report or {}).get("preprocessing") or {}).get("max_pixels") or 100_000_000)

    # -- files -------------------------------------------------------------------------

    def _exists(self, rel: str | None) -> bool:
        return bool(rel) and (self.outdir / rel).is_file()  # type: ignore[operator]

    def thumbnails(self, rec: dict[str, Any]) -> dict[str, str]:
        """The record's gallery thumbnails, made now from the PNGs when the run made none."""
        import cv2

        out = rec.get("outputs") or {}
        have = {k: v for k, v in out.items() if k.startswith("thumb_") and self._exists(v)}
        if len(have) == 3:
            return have
        from .outputs import atomic_write_bytes

        paths = _thumb_paths(rec["name"])
        made: dict[str, str] = {}
        for kind in ("map", "overlay"):
            src = out.get(kind)
            pic = cv2.imread(str(self.outdir / src), cv2.IMREAD_COLOR) if self._exists(src) else None
            if pic is not None:
                atomic_write_bytes(self.outdir / paths[f"thumb_{kind}"], encode_jpeg(_shrink(pic), THUMB_QUALITY))
                made[f"thumb_{kind}"] = paths[f"thumb_{kind}"]
        original = _decoded(rec["file"], rec.get("size") or [0, 0], self.max_pixels)
        if original is not None:
            atomic_write_bytes(self.outdir / paths["thumb_image"], encode_jpeg(_shrink(original), THUMB_QUALITY))
            made["thumb_image"] = paths["thumb_image"]
        return made

    # -- legend ------------------------------------------------------------------------

    def legend(self, g: int, entries: list[_Entry], comps: np.ndarray) -> list[tuple[int, list[tuple[Patch, str, _Entry]], list[tuple[Patch, str, _Entry]]]]:
        """Per component: the strongest and most negative patches, cut and saved as PNGs.

        ``comps``: (n, k, h, w) of the group's rows, in the order of ``entries``.
        """
        import cv2

        from .outputs import atomic_write_bytes

        n, k, gh, gw = comps.shape
        wanted: dict[int, list[tuple[int, str, int, Patch]]] = {}
        picks: list[tuple[int, list[Patch], list[Patch]]] = []
        for c in range(k):
            pos = select_patches(comps[:, c], PATCHES, +1)
            neg = select_patches(comps[:, c], PATCHES, -1)
            picks.append((c, pos, neg))
            for side, chosen in (("pos", pos), ("neg", neg)):
                for j, p in enumerate(chosen):
                    wanted.setdefault(p.index, []).append((c, side, j, p))
        saved: dict[tuple[int, str, int], str] = {}
        for i, jobs in wanted.items():  # each original decoded once
            rec = entries[i].rec
            img = _decoded(rec["file"], rec.get("size") or [0, 0], self.max_pixels)
            if img is None:
                self.notes.append(f"legend: {Path(rec['file']).name} could not be read again, its patches are left out")
                continue
            crop = rec.get("crop_box") or [0, 0, img.shape[1], img.shape[0]]
            for c, side, j, p in jobs:
                x0, y0, x1, y1 = patch_box(p.y, p.x, (gh, gw), crop, img.shape[:2])
                patch = cv2.resize(img[y0:y1, x0:x1], (PATCH_SIDE, PATCH_SIDE), interpolation=cv2.INTER_AREA if (x1 - x0) > PATCH_SIDE else cv2.INTER_LINEAR)
                rel = f"{LEGEND}/g{g}-c{c + 1}-{side}-{j}.png"
                atomic_write_bytes(self.outdir / rel, encode_png(patch))
                saved[(c, side, j)] = rel
        result = []
        for c, pos, neg in picks:
            rows = []
            for side, chosen in (("pos", pos), ("neg", neg)):
                rows.append([(p, saved[(c, side, j)], entries[p.index]) for j, p in enumerate(chosen) if (c, side, j) in saved])
            result.append((c, rows[0], rows[1]))
        return result

    # -- html ------------------------------------------------------------------------------

    def build(self) -> str:
        report, sanity = self.report, self.sanity
        main = report or sanity or {}
        model = main.get("model") or {}
        model_name = Path(str(model.get("path") or "model")).name
        sections: list[str] = []
        lightboxes: list[str] = []
        nav: list[tuple[str, str]] = []

        sections.append(self._facts())
        if report is not None:
            basis = self._basis_section()
            if basis:
                sections.append(basis)
                nav.append(("basis", "Basis"))
            groups_html, boxes, toc = self._groups()
            sections.append(self._how_to_read())
            if toc:
                sections.append(toc)
            sections.extend(groups_html)
            lightboxes.extend(boxes)
            nav.insert(0, ("gallery", "Gallery"))
            sections.append(self._failures(report))
            nav.append(("failures", "Failures"))
        if sanity is not None:
            sections.append(self._sanity_section(sanity))
            nav.append(("sanity", "Sanity check"))
            if report is None and sanity.get("failures"):
                sections.append(self._failures(sanity))
                nav.append(("failures", "Failures"))
        details = self._details()
        if details:
            nav.append(("details", "Run notes"))
            sections.append(details)

        n_ok = len((report or {}).get("images") or []) if report is not None else int(sanity.get("images") or 0) if sanity else 0
        n_fail = len((report or sanity or {}).get("failures") or [])
        n_groups = len((report or {}).get("groups") or []) if report is not None else 1
        total = ((report or {}).get("timings") or {}).get("total_s")
        title = "PFV report" if report is not None else "PFV sanity check"
        stats = [f"{n_ok} image{'s' if n_ok != 1 else ''} explained"]
        stats.append(f'<span class="{"bad" if n_fail else ""}">{n_fail} failed</span>')
        if report is not None:
            stats.append(f"{n_groups} group{'s' if n_groups != 1 else ''}")
        if total is not None:
            stats.append(_seconds(total))
        stats.append(f"pfv-onnx {e(main.get('pfv_onnx_version', '?'))}")
        if sanity is not None:
            verdict = "passed" if sanity.get("passed") else "FAILED"
            stats.append(f'<a class="pill {"good" if sanity.get("passed") else "bad"}" href="#sanity">sanity check {verdict}</a>')
        navhtml = " ".join(f'<a href="#{e(i)}">{e(t)}</a>' for i, t in nav)
        notes = "".join(f"<li>{e(n)}</li>" for n in self.notes)
        if notes:
            sections.append(f'<section id="page-notes"><h2>Notes on this page</h2><ul class="small">{notes}</ul></section>')
        generated = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        return (
            "<!DOCTYPE html>\n"
            '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            '<meta name="color-scheme" content="light">\n'
            f'<meta name="generator" content="pfv-onnx {e(main.get("pfv_onnx_version", ""))}">\n'
            f"<title>{e(title)} · {e(model_name)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            '<header class="masthead"><div class="wrap">'
            f'<div class="brand">{e(title)}</div>'
            f'<h1 title="{e(model.get("path"))}">{e(model_name)}</h1>'
            f'<div class="stats">{" · ".join(stats)}</div>'
            f'<nav class="nav">{navhtml}</nav>'
            "</div></header>\n"
            '<main class="wrap">\n' + "\n".join(s for s in sections if s) + "\n</main>\n"
            f'<footer class="wrap small muted">Written by pfv-onnx {e(main.get("pfv_onnx_version", ""))} on {e(generated)}. '
            "Every number comes from report.json" + (" and sanity.json" if sanity is not None else "") + ", the legend from the "
            "component maps in pfv.npz. Principal Feature Visualisation: Bakken et al., ECCV 2020.</footer>\n"
            + "\n".join(lightboxes)
            + "\n</body>\n</html>\n"
        )

    def _facts(self) -> str:
        report, sanity = self.report, self.sanity
        main = report or sanity or {}
        model = main.get("model") or {}
        prep = main.get("preprocessing") or {}
        pfv = main.get("pfv") or {}
        sha = str(model.get("sha256") or "")
        model_rows = [
            ("file", f'<span class="mono" title="{e(model.get("path"))}">{e(Path(str(model.get("path") or "")).name)}</span>'),
            ("sha256", f'<span class="mono" title="{e(sha)}">{e(sha[:16])}{"…" if len(sha) > 16 else ""}</span>' if sha else ""),
        ]
        if report is not None:
            size = model.get("input_size") or []
            inp = f'<span class="mono">{e(model.get("input_name"))}</span>, {e(model.get("input_layout"))}'
            if size:
                inp += f", {e('x'.join(str(s) if s else '?' for s in size))}"
            labels = model.get("labels") or {}
            model_rows += [
                ("input", inp),
                ("outputs", e(", ".join(model.get("output_names") or []))),
                ("labels", e(f"{labels.get('count')} from {labels.get('source')}") if labels.get("source") else "none"),
                ("provider", e(model.get("provider"))),
            ]
        mean, std = prep.get("mean"), prep.get("std")
        size = prep.get("size") or []
        prep_rows = [
            ("preset", e(prep.get("preset"))),
            ("colour order", e(prep.get("color_order"))),
            ("pixels", e(f"0-{int(prep['pixel_range']) if prep.get('pixel_range') else '?'} before mean/std") if prep.get("pixel_range") else ""),
            ("mean / std", e(f"{_list_text(mean)} / {_list_text(std)}") if mean is not None else ""),
            ("size", e(f"{'x'.join(str(s) for s in size)}, {prep.get('resize')}") if size else ""),
            ("from", e("; ".join(prep.get("notes") or []))),
        ]
        weighting = pfv.get("weight_layers")
        pfv_rows = [
            ("k", e(pfv.get("k"))),
            ("weighting", e("hierarchical" if pfv.get("hierarchical") else "flat")),
            ("weight maps", e("none" if weighting == [] else ", ".join(weighting) if weighting else "automatic")),
            ("E_L", e(pfv.get("layer") or "automatic")),
            ("colour clip", e(f"±{_num(pfv.get('n_sigma'), 2)} σ") if pfv.get("n_sigma") is not None else ""),
        ]
        if report is not None:
            grouping = "by predicted class" if pfv.get("group_by") == "class" else (f"{pfv.get('group_size')} images per group" if pfv.get("group_size") else "all images in one group")
            pfv_rows += [
                ("batch size", e(pfv.get("batch_size"))),
                ("groups", e(grouping)),
                ("basis", f'<a href="#basis">{e(Path(str(pfv["basis"])).name)}</a>' if pfv.get("basis") else "fitted per group"),
            ]
        timings = (report or {}).get("timings") or {}
        run_rows = [("command", e(main.get("command")))]
        if report is not None:
            run_rows += [
                ("status", e(report.get("status"))),
                ("run time", e(_seconds(timings.get("total_s"))) if timings.get("total_s") is not None else ""),
                (
                    "of which",
                    e(", ".join(f"{k[:-2]} {_seconds(v)}" for k, v in timings.items() if k.endswith("_s") and k != "total_s" and v is not None)),
                ),
            ]
        run_rows.append(("pfv-onnx", e(main.get("pfv_onnx_version"))))
        outs = (report or {}).get("outputs") or {}
        files = [outs.get("report"), outs.get("npz"), outs.get("mosaic")]
        if sanity is not None:
            files.append("sanity.json")
        links = ", ".join(f'<a href="{_url(f)}">{e(f)}</a>' for f in files if f and self._exists(f))
        run_rows.append(("files", links))
        boxes = [("Model", model_rows), ("Preprocessing", prep_rows), ("PFV", pfv_rows), ("Run", run_rows)]
        cards = "".join(f'<div class="box"><h3>{e(t)}</h3>{_kv(rows)}</div>' for t, rows in boxes)
        return f'<section id="summary" class="facts">{cards}</section>' + self._feature_maps()

    def _feature_maps(self) -> str:
        report = self.report
        maps = (report or {}).get("feature_maps") or []
        if not maps and self.sanity:
            maps = [{"name": n} for n in self.sanity.get("feature_maps") or []]
        if not maps:
            return ""
        rows = []
        for m in maps:
            role = m.get("role") or ""
            shape = m.get("shape") or []
            rows.append(
                f'<tr class="{e(role)}"><td><span class="role {e(role)}">{e(role.replace("decomposed", "decomposed (E_L)") or "-")}</span></td>'
                f'<td class="mono">{e(m.get("name"))}</td><td class="mono nowrap">{e(m.get("op") or "")}</td>'
                f'<td class="mono nowrap">{e("x".join(str(s) for s in shape[1:]) if shape else "")}</td><td>{e(m.get("reason") or "")}</td></tr>'
            )
        return (
            '<details class="box fmaps" open><summary>Feature maps used, earliest first, and why</summary>'
            '<table class="t"><thead><tr><th>role</th><th>tensor</th><th>op</th><th>shape</th><th>why</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></details>"
        )

    def _decomposed_channels(self) -> int | None:
        for m in (self.report or {}).get("feature_maps") or []:
            if m.get("role") == "decomposed" and len(m.get("shape") or []) == 4:
                shape = m["shape"]
                c = shape[3] if str(m.get("layout")) == "NHWC" else shape[1]
                return int(c) if isinstance(c, int) else None
        return None

    def _decomposed_name(self) -> str:
        for m in (self.report or {}).get("feature_maps") or []:
            if m.get("role") == "decomposed":
                return str(m.get("name"))
        maps = (self.report or {}).get("feature_maps") or []
        return str(maps[-1].get("name")) if maps else "the last feature map"

    def _how_to_read(self) -> str:
        pfv = (self.report or {}).get("pfv") or {}
        k = int(pfv.get("k") or 3)
        fitted = bool(pfv.get("basis"))
        n_groups = len((self.report or {}).get("groups") or [])
        if k == 1:
            colours = "Brightness is the first principal component"
        else:
            named = ", ".join(f"{_COLOUR_NAMES[c]} = component {c + 1}" for c in range(min(k, 3)))
            colours = f"Each colour is one principal component ({named})"
        by_class = pfv.get("group_by") == "class"
        scope = (
            "The components come from a basis fitted over a whole data set, so colours mean the same in every group and run."
            if fitted
            else (
                "Each predicted class has its own decomposition, so the colours contrast the features within a class "
                "(a class recognised by a cue such as a watermark or a background shows it here); compare colours "
                "within a class, not between classes."
                if by_class
                else "Each group has its own decomposition: compare colours within a group, not between groups."
                if n_groups > 1
                else "All images form one decomposition, so a colour means the same in every image."
            )
        )
        return (
            '<section id="gallery" class="callout"><h2>How to read the maps</h2><p>'
            f"{e(colours)} of the feature map <span class=\"mono\">{e(self._decomposed_name())}</span>, "
            "computed jointly over the images of a group: places the network encodes with the same pattern of "
            "neurons get the same colour. Dark means little activation. "
            f"{e(scope)} The legend of each group shows, for every component, the image patches where it is "
            "strongest (bright in its colour) and most negative (none of it). Click a picture to enlarge it.</p></section>"
        )

    def _group_title(self, grp: dict[str, Any], first_row: int, count: int, n_groups: int) -> tuple[str, str]:
        cls = grp.get("class")
        if isinstance(cls, dict):
            label = cls.get("label")
            name = str(label).split(",")[0] if label else f"class {cls.get('class')}"
            return name, f"predicted class {cls.get('class')}" + (f" · {label}" if label and "," in str(label) else "")
        if n_groups == 1:
            return "All images", "one decomposition"
        g = int(grp.get("index", 0))
        return f"Group {g + 1}", f"images {first_row + 1}–{first_row + count}"

    def _groups(self) -> tuple[list[str], list[str], str]:
        report = self.report or {}
        images = report.get("images") or []
        groups = report.get("groups") or []
        pfv = report.get("pfv") or {}
        k = int(pfv.get("k") or 3)
        fitted = bool(pfv.get("basis"))
        channels = self._decomposed_channels()
        comp_data = _components(self.outdir, report)
        if comp_data is None and images:
            self.notes.append("pfv.npz is missing: the component legend is left out")
        by_group: dict[int, list[dict[str, Any]]] = {}
        for rec in images:
            by_group.setdefault(int(rec.get("group", 0)), []).append(rec)
        entries_all: list[_Entry] = []
        html_groups: list[str] = []
        toc_items: list[str] = []
        for grp in groups:
            g = int(grp.get("index", 0))
            recs = sorted(by_group.get(g, []), key=lambda r: int(r.get("row", 0)))
            entries = []
            for rec in recs:
                thumbs = self.thumbnails(rec)
                size = rec.get("size") or [THUMB_SIDE, THUMB_SIDE]
                entries.append(_Entry(rec, f"g{g}-{int(rec.get('row', 0))}", thumbs, _thumb_size(int(size[0]), int(size[1]))))
            entries_all.extend(entries)
            first_row = int(recs[0].get("row", 0)) if recs else 0
            title, sub = self._group_title(grp, first_row, len(recs), len(groups))
            gid = f"group-{g}"
            toc_items.append(f'<li><a href="#{gid}">{e(title)}</a> <span class="muted">{len(recs)}</span></li>')

            legend_html = ""
            if comp_data is not None and recs:
                comps, rows_group = comp_data
                rows = [int(r.get("row", 0)) for r in recs]
                if max(rows) < comps.shape[0] and all(int(rows_group[r]) == g for r in rows):
                    legend_html = self._legend_html(g, entries, comps[rows], k)
                else:
                    self.notes.append(f"pfv.npz does not match report.json for group {g + 1}: its legend is left out")
            ratios = grp.get("explained_variance_ratio") or []
            chart = spectrum_svg(ratios, channels, fitted) if ratios else ""
            shown = title if len(groups) > 1 and not isinstance(grp.get("class"), dict) else ""  # a class is the prediction shown
            cards = "".join(self._card(en, shown, lazy=len(entries_all) - len(entries) + i >= EAGER_CARDS) for i, en in enumerate(entries))
            html_groups.append(
                f'<section class="group" id="{gid}" data-group="{g}">'
                f'<h2>{e(title)} <span class="sub">{e(sub)} · {len(recs)} image{"s" if len(recs) != 1 else ""}</span></h2>'
                '<div class="group-head">'
                f'<div class="box chart"><h3>Explained variance</h3>{chart}</div>'
                f'<div class="box legend-box"><h3>Component legend</h3>{legend_html or "<p class=muted>not available</p>"}</div>'
                "</div>"
                f'<div class="colheads" aria-hidden="true">{_COLUMN_HEADS * min(len(entries), 8)}</div>'
                f'<div class="gallery">{cards}</div></section>'
            )
        boxes = [self._lightbox(en, entries_all[i - 1] if i else None, entries_all[i + 1] if i + 1 < len(entries_all) else None) for i, en in enumerate(entries_all)]
        toc = ""
        if len(groups) > 1:
            what = "predicted classes" if pfv.get("group_by") == "class" else "groups"
            toc = f'<nav class="box toc" aria-label="groups"><h3>{len(groups)} {what}</h3><ul>{"".join(toc_items)}</ul></nav>'
        return html_groups, boxes, toc

    def _legend_html(self, g: int, entries: list[_Entry], comps: np.ndarray, k: int) -> str:
        rows = []
        gh, gw = comps.shape[2:]
        for c, pos, neg in self.legend(g, entries, comps):
            strips = []
            for side, chosen in (("pos", pos), ("neg", neg)):
                figs = []
                for p, rel, en in chosen:
                    name = Path(str(en.rec.get("file"))).name
                    tip = f"{name}: cell ({p.y}, {p.x}) of {gh}x{gw}, value {p.value:+.3g}"
                    figs.append(
                        f'<a class="patch" href="#view-{e(en.key)}" title="{e(tip)}" data-component="{c + 1}" data-side="{side}" '
                        f'data-row="{int(en.rec.get("row", 0))}" '
                        f'data-cell="{p.y},{p.x}" data-value="{p.value:.6g}"><img src="{_url(rel)}" alt="{e(tip)}" '
                        f'width="{PATCH_SIDE // 2}" height="{PATCH_SIDE // 2}"></a>'
                    )
                strips.append(f'<div class="strip {side}">{"".join(figs) or "<span class=muted>none</span>"}</div>')
            label = _component_name(c, k)
            rows.append(
                f'<div class="comp" data-component="{c + 1}">'
                f'<div class="comp-name"><span class="swatch" style="{_swatch(c, k)}"></span>'
                f"<b>{e(label.capitalize())}</b><span class=\"muted\">component {c + 1}</span></div>"
                f"{strips[0]}{strips[1]}</div>"
            )
        head = '<div class="comp legend-cols"><span></span><span>strongest</span><span>most negative</span></div>'
        note = (
            f"Each patch is the part of an image under {PATCH_CELLS:g}x{PATCH_CELLS:g} cells of the {gh}x{gw} feature map, around a "
            "place where the component is largest (left) or most negative (right); one patch per image first. "
            "Click a patch to open its image."
        )
        return f'<div class="legend" data-components="{len(rows)}">{head}{"".join(rows)}</div><p class="legend-note small muted">{e(note)}</p>'

    @staticmethod
    def _prediction(rec: dict[str, Any]) -> str:
        pred = rec.get("prediction")
        if not isinstance(pred, dict):
            return ""
        label = pred.get("label")
        text = str(label).split(",")[0] if label else f"class {pred.get('class')}"
        return f'<span class="label" title="{e(label or "")}">{e(text)}</span> <span class="score">{_pct(pred.get("score"))}</span>'

    def _card(self, en: _Entry, grp_label: str, lazy: bool = False) -> str:
        rec = en.rec
        th, tw = en.thumb_hw
        name = Path(str(rec.get("file"))).name
        lazy_attr = ' loading="lazy"' if lazy else ""
        pics = []
        for kind, what in (("image", "image"), ("map", "PFV map"), ("overlay", "overlay")):
            rel = en.thumbs.get(f"thumb_{kind}")
            if rel:
                pics.append(
                    f'<a href="#view-{e(en.key)}"><img{lazy_attr} src="{_url(rel)}" alt="{e(name)}: {what}" '
                    f'width="{tw}" height="{th}" class="{kind}"></a>'
                )
            else:
                pics.append(f'<div class="missing" title="{e(what)} not available">{e(what)}<br>not available</div>')
        notes = rec.get("notes") or []
        pred = self._prediction(rec)
        return (
            f'<article class="card" id="card-{e(en.key)}" data-file="{e(rec.get("file"))}" data-group="{int(rec.get("group", 0))}">'
            f'<div class="trio">{"".join(pics)}</div>'
            f'<div class="meta"><div class="fname" title="{e(rec.get("file"))}">{e(name)}</div>'
            f'<div class="pred">{pred or "<span class=muted>no class scores</span>"}</div>'
            f'<div class="grp muted">{e(" · ".join([grp_label, *notes]).strip(" ·"))}</div></div></article>'
        )

    def _lightbox(self, en: _Entry, prev: _Entry | None, nxt: _Entry | None) -> str:
        rec = en.rec
        out = rec.get("outputs") or {}
        name = Path(str(rec.get("file"))).name
        figs = []
        for kind, what in (("overlay", "overlay"), ("map", "PFV map")):
            rel = out.get(kind)
            if rel and self._exists(rel):
                figs.append(
                    f'<figure><a href="{_url(rel)}"><img loading="lazy" src="{_url(rel)}" alt="{e(name)}: {what}"></a>'
                    f'<figcaption>{e(what)} · <a href="{_url(rel)}">{e(rel)}</a></figcaption></figure>'
                )
        pred = rec.get("prediction") if isinstance(rec.get("prediction"), dict) else None
        top = ""
        if pred and pred.get("top5"):
            rows = "".join(
                f"<tr><td>{e(str(t.get('label')).split(',')[0] if t.get('label') else '')}</td>"
                f'<td class="mono">{e(t.get("class"))}</td><td class="num nowrap">{_pct(t.get("score"))}</td></tr>'
                for t in pred["top5"]
            )
            top = f'<table class="t small"><thead><tr><th>top 5</th><th>class</th><th>score</th></tr></thead><tbody>{rows}</tbody></table>'
        thumb = en.thumbs.get("thumb_image")
        size = rec.get("size") or []
        info = _kv(
            [
                ("file", f'<span class="mono">{e(rec.get("file"))}</span>'),
                ("size", e(f"{size[1]}x{size[0]} px") if len(size) == 2 else ""),
                ("notes", e("; ".join(rec.get("notes") or []))),
            ]
        )
        step = []
        step.append(f'<a href="#view-{e(prev.key)}" rel="prev">← previous</a>' if prev else '<span class="muted">← previous</span>')
        step.append(f'<a href="#view-{e(nxt.key)}" rel="next">next →</a>' if nxt else '<span class="muted">next →</span>')
        return (
            f'<div class="lightbox" id="view-{e(en.key)}" role="dialog" aria-label="{e(name)}">'
            f'<a class="backdrop" href="#card-{e(en.key)}" aria-label="close"></a><div class="panel">'
            f'<div class="lb-head"><b>{e(name)}</b> {self._prediction(rec)}<span class="spacer"></span>{" ".join(step)}'
            f'<a class="close" href="#card-{e(en.key)}" title="close">✕</a></div>'
            f'<div class="lb-body"><div class="lb-pics">{"".join(figs)}</div><aside>'
            + (f'<img loading="lazy" class="orig" src="{_url(thumb)}" alt="{e(name)}: image">' if thumb else "")
            + f"{top}{info}</aside></div></div></div>"
        )

    def _failures(self, source: dict[str, Any]) -> str:
        failures = source.get("failures") or []
        skipped = source.get("skipped") or []
        if not failures:
            body = '<p class="ok">Every input was read and explained.</p>'
        else:
            rows = "".join(f'<tr data-file="{e(f.get("file"))}"><td class="mono">{e(f.get("file"))}</td><td>{e(f.get("reason"))}</td></tr>' for f in failures)
            body = f'<table class="t failures"><thead><tr><th>file</th><th>reason</th></tr></thead><tbody>{rows}</tbody></table>'
        if skipped:
            items = "".join(f'<li><span class="mono">{e(s.get("file"))}</span>: {e(s.get("reason"))}</li>' for s in skipped)
            body += f'<details class="small"><summary>{len(skipped)} file{"s" if len(skipped) != 1 else ""} in the folders were not images and were skipped</summary><ul>{items}</ul></details>'
        return f'<section id="failures"><h2>Failed inputs <span class="sub">{len(failures)}</span></h2>{body}</section>'

    def _sanity_section(self, s: dict[str, Any]) -> str:
        tvr = s.get("trained_vs_randomised") or {}
        between = s.get("between_images") or {}
        bt, br = between.get("trained") or {}, between.get("randomised") or {}
        threshold = s.get("similar_threshold", 0.5)
        passed = bool(s.get("passed"))
        r = s.get("randomisation") or {}
        same_model = self.report is None or ((self.report.get("model") or {}).get("sha256") == (s.get("model") or {}).get("sha256"))
        rows = (
            f"<tr><th>trained vs randomised, same image</th><td class=num>{_num(tvr.get('spearman'))}</td><td class=num>{_num(tvr.get('ssim'))}</td>"
            f"<td>low: the maps depend on what the network learned (Spearman below {_num(threshold)})</td></tr>"
            f"<tr><th>between images, trained</th><td class=num>{_num(bt.get('spearman'))}</td><td class=num>{_num(bt.get('ssim'))}</td>"
            "<td>lower than randomised: the trained maps follow the image content</td></tr>"
            f"<tr><th>between images, randomised</th><td class=num>{_num(br.get('spearman'))}</td><td class=num>{_num(br.get('ssim'))}</td>"
            "<td>maps of a network that learned nothing: what the architecture alone draws</td></tr>"
        )
        outs = s.get("outputs") or {}
        pic = ""
        side = outs.get("side_by_side")
        if side and self._exists(side):
            links = " · ".join(f'<a href="{_url(outs[k])}">{e(outs[k])}</a>' for k in ("trained", "randomised") if outs.get(k) and self._exists(outs[k]))
            pic = (
                f'<figure class="sanity-pic"><a href="{_url(side)}"><img src="{_url(side)}" alt="PFV maps of the trained model (left) and of the randomised model (right)"></a>'
                f"<figcaption>Trained model left, randomised (seed {e(r.get('seed'))}) right, the same images. Full size: {links}</figcaption></figure>"
            )
        summary = "".join(f"<li>{e(line.strip()[2:].strip())}</li>" for line in s.get("summary") or [] if line.strip().startswith("->"))
        other = "" if same_model else '<p class="bad">This check was run on another model file than the gallery above (sha256 differs).</p>'
        return (
            f'<section id="sanity"><h2>Sanity check: model randomisation <span class="pill {"good" if passed else "bad"}">{"passed" if passed else "failed"}</span></h2>'
            f"{other}<p>Every Conv, Gemm and MatMul weight of a copy of the model was re-drawn ({e(r.get('init', 'He-normal'))}; "
            f"{e(r.get('weights'))} tensors, {e(r.get('parameters'))} parameters, seed {e(r.get('seed'))}) and both models explained the same "
            f"{e(s.get('images'))} images with the same feature maps. The scores compare the magnitude of the maps "
            "(1 = the same maps, 0 = unrelated). A trained network should give maps unlike its randomised twin's, and maps "
            "that change from image to image (Adebayo et al., NeurIPS 2018).</p>"
            f'<table class="t scores"><thead><tr><th></th><th>Spearman</th><th>SSIM</th><th>what it means</th></tr></thead><tbody>{rows}</tbody></table>'
            f'<ul class="summary">{summary}</ul>{pic}</section>'
        )

    def _basis_section(self) -> str:
        pfv = (self.report or {}).get("pfv") or {}
        path = pfv.get("basis")
        if not path:
            return ""
        rows: list[tuple[str, str]] = [("file", f'<span class="mono">{e(path)}</span>')]
        try:
            from .basis import load

            b = load(path)
            rows += [
                ("fitted on", e(f"{b.n_images} images ({b.n_observations} positions of the feature map)")),
                ("model", e(f"{b.model_name} (sha256 {b.model_sha256[:16]}…)")),
                ("E_L", f'<span class="mono">{e(b.decomposed)}</span>'),
                ("weight maps", e(", ".join(b.weighting) or "none")),
                ("input size", e("x".join(str(v) for v in b.input_size))),
                ("k", e(b.k)),
            ]
        except Exception:  # the basis file moved since the run: the run's own notes say what it was
            rows.append(("", e("the basis file is no longer readable; the run's notes below say what it was")))
        notes = "".join(f"<li>{e(n)}</li>" for n in (self.report or {}).get("notes") or [] if "basis" in str(n))
        return (
            '<section id="basis"><h2>Fitted basis</h2><div class="box">'
            "<p>The colours come from principal directions and a colour scaling fitted over a data set with "
            "<span class=mono>pfv-onnx fit</span>, not from each group: a colour means the same in every group and every run "
            "that uses this basis.</p>"
            f"{_kv(rows)}<ul class=small>{notes}</ul></div></section>"
        )

    def _details(self) -> str:
        notes = list((self.report or {}).get("notes") or [])
        if not notes:
            return ""
        items = "".join(f"<li>{e(n)}</li>" for n in notes)
        return f'<section id="details"><h2>Run notes</h2><ul class="small">{items}</ul></section>'


def _clean_legend(outdir: Path) -> None:
    """Legend patches of an earlier page in the same folder (its groups may differ)."""
    folder = outdir / LEGEND
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if _LEGEND_FILE.fullmatch(p.name) and p.is_file():
            try:
                p.unlink()
            except OSError:
                pass


def write_report(outdir: str | os.PathLike[str]) -> Path:
    """Write ``OUTDIR/report.html`` from report.json and/or sanity.json in ``outdir``; returns its path."""
    from .outputs import atomic_write_text

    folder = Path(outdir)
    report = _read_json(folder / "report.json")
    sanity = _read_json(folder / "sanity.json")
    if report is None and sanity is None:
        raise InputError(f"{folder} holds neither report.json nor sanity.json; run `pfv-onnx run` or `pfv-onnx sanity` first")
    _clean_legend(folder)
    page = _Builder(folder, report, sanity).build()
    return atomic_write_text(folder / REPORT_HTML, page)


_CSS = """
:root{--fg:#1c2230;--muted:#646d7e;--line:#e2e5eb;--bg:#f5f6f8;--card:#fff;--accent:#2453c9;--bad:#b42318;--good:#067647}
*{box-sizing:border-box}
html{scroll-behavior:smooth}
body{margin:0;font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Noto Sans",sans-serif;color:var(--fg);background:var(--bg)}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
.wrap{max-width:1280px;margin:0 auto;padding:0 28px}
.mono,code{font:12.5px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace}
.muted{color:var(--muted)}.small{font-size:13px}.bad{color:var(--bad)}.ok{color:var(--good)}
.masthead{background:#151b28;color:#e9edf5;padding:22px 0 0;margin-bottom:24px}
.masthead .brand{font-size:12px;letter-spacing:.12em;text-transform:uppercase;color:#9aa6bd}
.masthead h1{margin:2px 0 4px;font-size:28px;font-weight:650;letter-spacing:-.01em;overflow-wrap:anywhere}
.masthead .stats{color:#c3cbda;font-size:14px}
.masthead .stats .bad{color:#ff9b8f}
.nav{display:flex;gap:20px;margin-top:16px;border-top:1px solid #2a3243;padding:10px 0}
.nav a{color:#d6ddeb;font-size:14px}
.pill{display:inline-block;font-size:12px;font-weight:600;padding:1px 9px;border-radius:999px;vertical-align:2px;letter-spacing:.02em}
.pill.good{background:#d1fadf;color:#05603a}.pill.bad{background:#fee4e2;color:#912018}
.masthead .pill{margin-left:4px}
h2{font-size:20px;font-weight:650;margin:38px 0 12px;letter-spacing:-.005em}
h2 .sub{font-size:14px;font-weight:400;color:var(--muted);margin-left:6px}
h3{font-size:12px;font-weight:600;text-transform:uppercase;letter-spacing:.08em;color:var(--muted);margin:0 0 8px}
.box{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px}
.facts{display:grid;grid-template-columns:repeat(auto-fit,minmax(270px,1fr));gap:14px}
dl.kv{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:3px 14px;margin:0;font-size:14px}
dl.kv dt{color:var(--muted)}dl.kv dd{margin:0;overflow-wrap:anywhere}
details.fmaps{margin-top:14px}details.fmaps summary{cursor:pointer;font-weight:600;font-size:14px}
details.fmaps table{margin-top:10px}
table.t{border-collapse:collapse;width:100%;font-size:14px}
table.t th,table.t td{text-align:left;padding:6px 10px;border-bottom:1px solid var(--line);vertical-align:top}
table.t thead th{font-size:12px;text-transform:uppercase;letter-spacing:.06em;color:var(--muted);font-weight:600}
table.t td.mono{overflow-wrap:anywhere}table.t td.nowrap,.nowrap{white-space:nowrap;overflow-wrap:normal}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.role{font-size:12px;padding:1px 8px;border-radius:999px;background:#eef1f6;white-space:nowrap}
.role.decomposed{background:#e3ebff;color:#1d3f99;font-weight:600}
.callout{background:#fff;border:1px solid var(--line);border-left:4px solid var(--accent);border-radius:10px;padding:4px 20px 8px;margin-top:26px}
.callout h2{margin:12px 0 4px;font-size:16px}.callout p{margin:6px 0 8px;max-width:960px}
.toc{margin-top:14px}.toc ul{list-style:none;margin:0;padding:0;columns:4 200px;font-size:14px}
.group{margin-top:8px;padding-top:6px}
.group-head{display:grid;grid-template-columns:270px minmax(0,1fr);gap:14px;align-items:start}
.chart svg{display:block;max-width:100%;height:auto}
.chart .val{font-size:12px;fill:#2b3140;font-weight:600}.chart .axis{font-size:12px;fill:#646d7e}
.chart p{margin:6px 0 0}
.legend .comp{display:grid;grid-template-columns:104px minmax(0,1fr) minmax(0,1fr);gap:14px;align-items:center;padding:6px 0;border-top:1px solid var(--line)}
.legend .legend-cols{border-top:0;padding:0;font-size:12px;text-transform:uppercase;letter-spacing:.06em;color:var(--muted)}
.comp-name{display:flex;flex-direction:column;font-size:14px;line-height:1.3}
.swatch{display:block;width:56px;height:10px;border-radius:3px;margin-bottom:5px}
.legend-note{margin:8px 0 0}
.strip{display:flex;flex-wrap:wrap;gap:4px}
.patch img{display:block;border-radius:4px;border:1px solid #d5d9e1}
.strip.pos .patch img{outline:2px solid transparent}
.patch:hover img{border-color:var(--accent)}
.colheads{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));column-gap:14px;grid-template-rows:auto;grid-auto-rows:0;overflow:hidden;margin:18px 0 4px;
 font-size:12px;text-transform:uppercase;letter-spacing:.06em;color:var(--muted)}
.colheads div{display:grid;grid-template-columns:repeat(3,1fr);gap:4px;padding:0 9px}.colheads span{text-align:center}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:14px;align-items:start}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:8px;scroll-margin-top:20px}
.card:target{border-color:var(--accent);box-shadow:0 0 0 3px #d6e1ff}
.trio{display:grid;grid-template-columns:repeat(3,1fr);gap:4px;align-items:center}
.trio img{display:block;width:100%;height:auto;aspect-ratio:4/3;object-fit:contain}
.trio .missing{display:flex;width:100%;aspect-ratio:4/3;border-radius:5px;background:#eceef2}
.trio .missing{display:flex;align-items:center;justify-content:center;text-align:center;font-size:11px;color:var(--muted)}
.trio a:hover img{filter:brightness(1.06)}
.meta{padding:7px 4px 2px}
.fname{font-weight:600;font-size:14px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.pred{font-size:14px}.pred .score,.lb-head .score{color:var(--muted);font-variant-numeric:tabular-nums}
.grp{font-size:12.5px}
table.failures td:first-child{width:45%}
table.scores th[scope],table.scores tbody th{font-weight:500;white-space:nowrap}
ul.summary{font-size:14px}
.sanity-pic{margin:12px 0 0}.sanity-pic img{max-width:100%;height:auto;border:1px solid var(--line);border-radius:8px;background:#fff}
.sanity-pic figcaption{font-size:13px;color:var(--muted)}
footer.wrap{padding-top:36px;padding-bottom:48px}
.lightbox{display:none;position:fixed;inset:0;z-index:10;overflow:auto;padding:3vh 3vw}
.lightbox:target{display:block}
.lightbox .backdrop{position:fixed;inset:0;background:rgba(10,13,20,.88)}
.lightbox .panel{position:relative;background:#fff;border-radius:12px;padding:14px 18px 18px;max-width:1500px;margin:0 auto}
.lb-head{display:flex;gap:14px;align-items:baseline;flex-wrap:wrap;margin-bottom:10px}
.lb-head .spacer{flex:1}.lb-head .close{font-size:18px;color:var(--fg)}
.lb-body{display:grid;grid-template-columns:minmax(0,1fr) 290px;gap:16px}
aside table.t th,aside table.t td{padding:4px 6px}
.lb-pics{display:grid;grid-template-columns:repeat(auto-fit,minmax(280px,1fr));gap:12px}
.lb-pics figure{margin:0}.lb-pics img{display:block;width:100%;max-height:74vh;object-fit:contain;background:#0d0f14;border-radius:6px}
.lb-pics figcaption{font-size:12.5px;color:var(--muted);margin-top:4px;overflow-wrap:anywhere}
aside img.orig{display:block;max-width:100%;border-radius:6px;margin-bottom:10px}
aside dl.kv{font-size:13px;margin-top:10px}
@media (max-width:860px){.group-head,.lb-body{grid-template-columns:1fr}.legend .comp{grid-template-columns:1fr}}
@media print{.lightbox,.nav{display:none}.masthead{background:#fff;color:#000}}
"""

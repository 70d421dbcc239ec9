"""The page itself: the gallery first (cards, flags, colour key, legends, enlarged views), then the rest.

HTML comes from the templates in ``templates/`` (``string.Template``); every value put in is
escaped here. The stylesheet and the script are inlined, so the page is one file; without
script it shows every image in run order.
"""

from __future__ import annotations

import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..audit import mean_colours, median_colours, record_flags
from ..render import component_ends
from . import sections
from .assets import PATCH_SIDE, THUMB_SIDE, Pictures, read_components, thumb_size
from .colours import colour_key, keyline
from .fmt import asset, component_name, css_rgb, e, fill, kv, pct, seconds, spectrum_svg, url
from .legend import PATCH_CELLS

EAGER_CARDS = 60  # gallery cards whose thumbnails load with the page; the rest as they scroll into view


@dataclass
class _Entry:
    """One explained image on the page."""

    rec: dict[str, Any]
    key: str  # element id suffix
    thumbs: dict[str, str]
    thumb_hw: tuple[int, int]
    flags: dict[str, Any] = field(default_factory=dict)
    views: list[str] = field(default_factory=list)


def _prediction(rec: dict[str, Any]) -> str:
    pred = rec.get("prediction")
    if not isinstance(pred, dict):
        return ""
    label = pred.get("label")
    text = str(label).split(",")[0] if label else f"class {pred.get('class')}"
    return f'<span class="label" title="{e(label or "")}">{e(text)}</span> <span class="score">{pct(pred.get("score"))}</span>'


def _badges(flags: dict[str, Any], rec: dict[str, Any]) -> str:
    out = []
    if flags.get("low_confidence"):
        out.append('<span class="flag low" title="top-class score below 50 %">low confidence</span>')
    if flags.get("atypical"):
        pred = rec.get("prediction") or {}
        what = str(pred.get("label") or f"class {pred.get('class')}").split(",")[0]
        out.append(
            f'<span class="flag atypical" title="mean map colour {flags.get("atypicality")} robust deviations from the '
            f'other images of its class in its group (rank {int(flags.get("atypicality_rank", 0)) + 1})">atypical for {e(what)}</span>'
        )
    return "".join(out)


class Page:
    def __init__(self, outdir: Path, report: dict[str, Any] | None, sanity: dict[str, Any] | None, pool: Any = None,
                 colours: tuple[np.ndarray, np.ndarray] | None = None) -> None:  # fmt: skip
        self.outdir, self.report, self.sanity = outdir, report, sanity
        self.given_colours = colours  # (means, medians) of pfv.npz's rows, from the run that wrote it
        max_pixels = int(((report or {}).get("preprocessing") or {}).get("max_pixels") or 100_000_000)
        self.files = Pictures(outdir, max_pixels, pool)
        self.k = int(((report or {}).get("pfv") or {}).get("k") or 3)
        self.typical: dict[int, tuple[float, ...]] = {}  # per group: the median colour of its maps, where most places are weak

    # -- audit flags -----------------------------------------------------------------------

    def _colours(self, images: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray] | None:
        """Per image, the mean and the median colour of its map (n, 3), R, G, B in [0, 1]: from
        pfv.npz's ``rgb`` when it holds one (float or uint8), else from the map thumbnails."""
        import cv2

        name = ((self.report or {}).get("outputs") or {}).get("npz")
        rows = [int(r.get("row", 0)) for r in images]
        if self.given_colours is not None and name:
            means, medians = (np.asarray(c) for c in self.given_colours)
            if means.ndim == medians.ndim == 2 and len(means) == len(medians) and all(0 <= r < len(means) for r in rows):
                return means[rows].reshape(len(rows), -1), medians[rows].reshape(len(rows), -1)
        if name and (self.outdir / name).is_file():
            from ..outputs import npz_row_blocks

            try:  # a few hundred maps at a time: the rows of a large run do not fit in memory at once
                means, medians, start = {}, {}, 0
                for rgb in npz_row_blocks(self.outdir / name, "rgb"):
                    if rgb.ndim != 4:
                        break
                    block_means, block_medians = mean_colours(rgb), median_colours(rgb)
                    for j in range(len(rgb)):
                        means[start + j], medians[start + j] = block_means[j], block_medians[j]
                    start += len(rgb)
                if all(r in means for r in rows):
                    return np.asarray([means[r] for r in rows]).reshape(len(rows), -1), np.asarray([medians[r] for r in rows]).reshape(len(rows), -1)
            except (OSError, ValueError, KeyError, zipfile.BadZipFile):
                pass
        means, medians = [], []
        for rec in images:
            rel = (rec.get("outputs") or {}).get("thumb_map") or (rec.get("outputs") or {}).get("map")
            pic = cv2.imread(str(self.outdir / rel), cv2.IMREAD_COLOR) if self.files.exists(rel) else None
            if pic is None:
                return None
            size, crop = rec.get("size") or [0, 0], rec.get("crop_box")
            if crop and size[0] and size[1]:
                sy, sx = pic.shape[0] / float(size[0]), pic.shape[1] / float(size[1])
                pic = pic[round(crop[1] * sy) : max(round(crop[3] * sy), 1), round(crop[0] * sx) : max(round(crop[2] * sx), 1)]
            px = pic.reshape(-1, 3)[:, ::-1] / 255.0
            means.append(px.mean(axis=0))
            medians.append(np.median(px, axis=0))
        return np.asarray(means), np.asarray(medians)

    def _flags(self, images: list[dict[str, Any]]) -> list[dict[str, Any]]:
        found = self._colours(images) if images else None
        if found is None:
            colours = np.zeros((len(images), 1))
            if images:
                self.files.notes.append("the maps could not be read: no image is flagged as atypical")
        else:
            colours = found[0]
            for g in {int(r.get("group", 0)) for r in images}:
                idx = [i for i, r in enumerate(images) if int(r.get("group", 0)) == g]
                self.typical[g] = tuple(float(v) for v in np.median(found[1][idx], axis=0)[:3])
        return record_flags(images, colours, self.k)

    # -- the gallery ------------------------------------------------------------------------

    def _legend(self, g: int, entries: list[_Entry], comps: np.ndarray) -> str:
        rows = []
        gh, gw = comps.shape[2:]
        for c, (pos, neg) in enumerate(self.files.legend(g, [en.rec for en in entries], comps)):
            strips = []
            for side, chosen, cap in (("pos", pos, "positive end (strongest)"), ("neg", neg, "negative end (most negative)")):
                figs = [f'<span class="strip-cap">{e(cap)}</span>']
                for p, rel in chosen:
                    en = entries[p.index]
                    tip = f"{Path(str(en.rec.get('file'))).name}: cell ({p.y}, {p.x}) of {gh}x{gw}, value {p.value:+.3g}"
                    figs.append(
                        f'<a class="patch" href="#view-{e(en.key)}" title="{e(tip)}" data-component="{c + 1}" data-side="{side}" '
                        f'data-row="{int(en.rec.get("row", 0))}" data-cell="{p.y},{p.x}" data-value="{p.value:.6g}">'
                        f'<img src="{url(rel)}" alt="{e(tip)}" width="{PATCH_SIDE // 2}" height="{PATCH_SIDE // 2}"></a>'
                    )
                if not chosen:
                    figs.append("<span class=muted>none</span>")
                strips.append(f'<div class="strip {side}">{"".join(figs)}</div>')
            ends = component_ends(self.k)
            swatch = ""
            if c < len(ends):
                lo, mid, hi = ends[c]
                swatch = f'<span class="swatch" style="background:linear-gradient(90deg,{css_rgb(hi)},{css_rgb(mid)},{css_rgb(lo)})"></span>'
            rows.append(
                f'<div class="comp" data-component="{c + 1}"><div class="comp-name">{swatch}'
                f'<b>{e(component_name(c, self.k).capitalize())}</b><span class="muted">component {c + 1}</span></div>{strips[0]}{strips[1]}</div>'
            )
        head = '<div class="comp legend-cols"><span></span><span>positive end (strongest)</span><span>negative end (most negative)</span></div>'
        note = (
            f"Each patch is the part of an image under {PATCH_CELLS:g}x{PATCH_CELLS:g} cells of the {gh}x{gw} feature map, around a place "
            "where the component is largest (drawn saturated in its colour) or most negative (drawn in the opposite colour, e.g. teal "
            "for red); one patch per image first. Click a patch to open its image."
        )
        return f'<div class="legend" data-components="{len(rows)}">{head}{"".join(rows)}</div><p class="legend-note small muted">{e(note)}</p>'

    def _card(self, en: _Entry, grp_label: str, lazy: bool) -> str:
        rec = en.rec
        th, tw = en.thumb_hw
        name = Path(str(rec.get("file"))).name
        pics = []
        for kind, what in (("image", "image"), ("map", "PFV map"), ("overlay", "overlay")):
            rel = en.thumbs.get(f"thumb_{kind}")
            if rel:
                pics.append(
                    f'<a href="#view-{e(en.key)}"><img{" loading=lazy" if lazy else ""} src="{url(rel)}" alt="{e(name)}: {what}" '
                    f'title="{what}" width="{tw}" height="{th}" class="{kind}"></a>'
                )
            else:
                pics.append(f'<div class="missing" title="{e(what)} not available">{e(what)}<br>not available</div>')
        pred = rec.get("prediction") if isinstance(rec.get("prediction"), dict) else {}
        flags = [f for f in ("low", "atypical") if en.flags.get("low_confidence" if f == "low" else "atypical")]
        atyp = en.flags.get("atypicality")
        return fill(
            "card.html",
            key=e(en.key), file=e(rec.get("file")), name=e(name), group=int(rec.get("group", 0)), order=int(rec.get("row", 0)),
            cls=e(pred.get("class", "")), score=e(pred.get("score", "")), atypicality="" if atyp is None else e(atyp),
            flags=" ".join(flags), pics="".join(pics), pred=_prediction(rec) or "<span class=muted>no class scores</span>",
            badges=_badges(en.flags, rec), grp=e(" · ".join([grp_label, *(rec.get("notes") or [])]).strip(" ·")),
        )

    def _lightbox(self, en: _Entry, prev: _Entry | None, nxt: _Entry | None) -> str:
        rec = en.rec
        out = rec.get("outputs") or {}
        name = Path(str(rec.get("file"))).name
        figs = []
        for kind, what in (("overlay", "overlay"), ("map", "PFV map")):
            rel = out.get(kind)
            if rel and self.files.exists(rel):
                figs.append(
                    f'<figure><a href="{url(rel)}"><img loading="lazy" src="{url(rel)}" alt="{e(name)}: {what}"></a>'
                    f'<figcaption>{e(what)} · <a href="{url(rel)}">{e(rel)}</a></figcaption></figure>'
                )
        views = ""
        if en.views:
            vf = "".join(
                f'<figure data-component="{c + 1}"><img loading="lazy" src="{url(rel)}" alt="{e(name)}: component {c + 1}">'
                f"<figcaption>component {c + 1}{' (' + e(component_name(c, self.k)) + ')' if c < 3 else ''}</figcaption></figure>"
                for c, rel in enumerate(en.views)
            )
            views = (
                f'<div class="views"><h3>Each component on its own</h3><div class="row">{vf}</div>'
                '<p class="small muted">Red: the component\'s positive end; blue: its negative end; white: zero (the batch '
                "average); the image shows faintly beneath. Full colour is the largest value of that component in the group. These are the projections on the "
                "decomposed feature map, before the activation weighting.</p></div>"
            )
        pred = rec.get("prediction") if isinstance(rec.get("prediction"), dict) else None
        top = ""
        if pred and pred.get("top5"):
            rows = "".join(
                f"<tr><td>{e(str(t.get('label')).split(',')[0] if t.get('label') else '')}</td>"
                f'<td class="mono">{e(t.get("class"))}</td><td class="num nowrap">{pct(t.get("score"))}</td></tr>'
                for t in pred["top5"]
            )
            top = f'<table class="t small top5"><thead><tr><th>top 5</th><th>class</th><th>score</th></tr></thead><tbody>{rows}</tbody></table>'
        thumb = en.thumbs.get("thumb_image")
        size = rec.get("size") or []

        info = kv(
            [
                ("file", f'<span class="mono">{e(rec.get("file"))}</span>'),
                ("size", e(f"{size[1]}x{size[0]} px") if len(size) == 2 else ""),
                ("atypicality", e(f"{en.flags['atypicality']} (rank {int(en.flags['atypicality_rank']) + 1})") if en.flags.get("atypicality") is not None else ""),
                ("notes", e("; ".join(rec.get("notes") or []))),
            ]
        )
        return fill(
            "lightbox.html",
            key=e(en.key), name=e(name), pred=_prediction(rec), badges=_badges(en.flags, rec), figs="".join(figs), views=views,
            prev=f'<a href="#view-{e(prev.key)}" rel="prev" title="previous (←)">← previous</a>' if prev else '<span class="muted">← previous</span>',
            next=f'<a href="#view-{e(nxt.key)}" rel="next" title="next (→)">next →</a>' if nxt else '<span class="muted">next →</span>',
            original=f'<img loading="lazy" class="orig" src="{url(thumb)}" alt="{e(name)}: image">' if thumb else "", top=top, info=info,
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

    def gallery(self) -> tuple[str, list[str]]:
        report = self.report or {}
        images = report.get("images") or []
        groups = report.get("groups") or []
        pfv = report.get("pfv") or {}
        comp_data = read_components(self.outdir, report)
        if comp_data is None and images:
            self.files.notes.append("pfv.npz holds no component maps: the legend and the per-component views are left out")
        flags = dict(zip((id(r) for r in images), self._flags(images)))
        by_group: dict[int, list[dict[str, Any]]] = {}
        for rec in images:
            by_group.setdefault(int(rec.get("group", 0)), []).append(rec)
        entries_all: list[_Entry] = []
        parts: list[str] = []
        drawing: list[tuple[_Entry, Any]] = []  # the views being drawn in the pool
        for grp in groups:
            g = int(grp.get("index", 0))
            recs = sorted(by_group.get(g, []), key=lambda r: int(r.get("row", 0)))
            comps = None
            if comp_data is not None and recs:
                rows = [int(r.get("row", 0)) for r in recs]
                if max(rows) < comp_data[0].shape[0] and all(int(comp_data[1][r]) == g for r in rows):
                    comps = comp_data[0][rows]
                else:
                    self.files.notes.append(f"pfv.npz does not match report.json for group {g + 1}: its legend is left out")
            scales = np.abs(comps).max(axis=(0, 2, 3)) if comps is not None else None
            entries = []
            for i, rec in enumerate(recs):
                size = rec.get("size") or [THUMB_SIDE, THUMB_SIDE]
                en = _Entry(rec, f"g{g}-{int(rec.get('row', 0))}", self.files.thumbnails(rec), thumb_size(int(size[0]), int(size[1])), flags[id(rec)])
                if comps is not None:
                    drawing.append((en, self.files.submit(self.files.component_views, g, int(rec.get("row", 0)), rec, comps[i], scales, en.thumbs.get("thumb_image"))))
                entries.append(en)
            first_row = int(recs[0].get("row", 0)) if recs else 0
            title, sub = self._group_title(grp, first_row, len(recs), len(groups))
            shown = title if len(groups) > 1 and not isinstance(grp.get("class"), dict) else ""  # a class is the prediction shown
            cards = "".join(self._card(en, shown, lazy=len(entries_all) + i >= EAGER_CARDS) for i, en in enumerate(entries))
            entries_all.extend(entries)
            ratios = grp.get("explained_variance_ratio") or []
            parts.append(
                fill(
                    "group.html",
                    g=g, title=e(title), sub=e(f"{sub} · {len(recs)} image{'s' if len(recs) != 1 else ''}"), keyline=keyline(self.k, self.typical.get(g)),
                    chart=spectrum_svg(ratios, sections.decomposed_channels(report), bool(pfv.get("basis"))) if ratios else "",
                    legend=self._legend(g, entries, comps) if comps is not None else "<p class=muted>not available</p>", cards=cards,
                )
            )
        for en, views in drawing:
            en.views = views.result()
        boxes = [self._lightbox(en, entries_all[i - 1] if i else None, entries_all[i + 1] if i + 1 < len(entries_all) else None) for i, en in enumerate(entries_all)]
        return self._how_to_read() + self._toolbar(entries_all, groups) + "".join(parts), boxes

    def _toolbar(self, entries: list[_Entry], groups: list[dict[str, Any]]) -> str:
        classes: dict[Any, tuple[str, int]] = {}
        for en in entries:
            pred = en.rec.get("prediction")
            if isinstance(pred, dict):
                label = str(pred.get("label") or f"class {pred.get('class')}").split(",")[0]
                classes[pred.get("class")] = (label, classes.get(pred.get("class"), ("", 0))[1] + 1)
        options = "".join(f'<option value="{e(c)}">{e(label)} ({n})</option>' for c, (label, n) in sorted(classes.items(), key=lambda kv_: (-kv_[1][1], str(kv_[0]))))
        group_filter = ""
        if len(groups) > 1:
            opts = "".join(f'<option value="{int(g.get("index", 0))}">{e(self._group_title(g, 0, 0, len(groups))[0])}</option>' for g in groups)
            group_filter = f'<label>Group <select id="f-group"><option value="">all</option>{opts}</select></label>'
        return fill("toolbar.html", classes=options, group_filter=group_filter)

    def _how_to_read(self) -> str:
        report = self.report or {}
        pfv = report.get("pfv") or {}
        n_groups = len(report.get("groups") or [])
        if self.k == 1:
            colours = "Brightness is the first principal component (from black, its negative end, to white, its positive end)"
        else:
            named = ", ".join(f"{component_name(c, self.k)} = component {c + 1}" for c in range(min(self.k, 3)))
            colours = f"Each colour channel is one principal component ({named}), with a positive and a negative end"
        if pfv.get("basis"):
            scope = "The components come from a basis fitted over a whole data set, so colours mean the same in every group and run."
        elif pfv.get("group_by") == "class":
            scope = ("Each predicted class has its own decomposition, so the colours contrast the features within a class (a class "
                     "recognised by a cue such as a watermark or a background shows it here); compare colours within a class.")
        elif n_groups > 1:
            scope = "Each group has its own decomposition: compare colours within a group, not between groups."
        else:
            scope = "All images form one decomposition, so a colour means the same in every image."
        return fill("howto.html", colours=e(colours), layer=e(sections.decomposed_name(report)), scope=e(scope), key=colour_key(self.k))

    # -- the whole page ---------------------------------------------------------------------

    def build(self) -> str:
        report, sanity = self.report, self.sanity
        main = report or sanity or {}
        model = main.get("model") or {}
        body: list[str] = []
        lightboxes: list[str] = []
        nav: list[tuple[str, str]] = []
        if report is not None:
            gallery, lightboxes = self.gallery()
            body.append(f'<section id="gallery">{gallery}</section>')
            nav.append(("gallery", "Gallery"))
            body.append(sections.failures(report))
            nav.append(("failures", "Failures"))
        if sanity is not None:
            body.append(sections.sanity_section(sanity, report, self.files))
            nav.append(("sanity", "Sanity check"))
            if report is None and sanity.get("failures"):
                body.append(sections.failures(sanity))
                nav.append(("failures", "Failures"))
        details = sections.facts(report, sanity, self.files) + sections.basis_section(report) + sections.run_notes(report)
        body.append(f'<section id="details" class="meta"><details class="run-details"{"" if report is not None else " open"}>'
                    "<summary>Run details: model, preprocessing, options, feature maps, notes</summary>"
                    f"{details}</details></section>")
        nav.append(("details", "Run details"))
        if self.files.notes:
            body.append('<section id="page-notes"><h2>Notes on this page</h2><ul class="small">' + "".join(f"<li>{e(n)}</li>" for n in self.files.notes) + "</ul></section>")
        version = e(main.get("pfv_onnx_version", ""))
        title = "PFV report" if report is not None else "PFV sanity check"
        return fill(
            "page.html",
            version=version, title=e(title), model_name=e(Path(str(model.get("path") or "model")).name), model_path=e(model.get("path")),
            css=asset("style.css"), js=asset("report.js"), stats=self._stats(), nav=" ".join(f'<a href="#{e(i)}">{e(t)}</a>' for i, t in nav),
            main="\n".join(body), generated=e(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())),
            sources="report.json" + (" and sanity.json" if sanity is not None else ""), lightboxes="\n".join(lightboxes),
        )

    def _stats(self) -> str:
        report, sanity = self.report, self.sanity
        main = report or sanity or {}
        n_ok = len((report or {}).get("images") or []) if report is not None else int((sanity or {}).get("images") or 0)
        n_fail = len(main.get("failures") or [])
        stats = [f"{n_ok} image{'s' if n_ok != 1 else ''} explained", f'<span class="{"bad" if n_fail else ""}">{n_fail} failed</span>']
        if report is not None:
            n_groups = len(report.get("groups") or [])
            stats.append(f"{n_groups} group{'s' if n_groups != 1 else ''}")
        total = ((report or {}).get("timings") or {}).get("total_s")
        if total is not None:
            stats.append(seconds(total))
        stats.append(f"pfv-onnx {e(main.get('pfv_onnx_version', '?'))}")
        if sanity is not None:
            ok = bool(sanity.get("passed"))
            stats.append(f'<a class="pill {"good" if ok else "bad"}" href="#sanity">sanity check {"passed" if ok else "FAILED"}</a>')
        return " · ".join(stats)

"""Pictures and a page for ``compare``: per image, image | reference map | candidate map |
difference; a mosaic of the most-changed images; a self-contained HTML page ranked by drift."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import render

TILE = 224  # height of each panel of a side-by-side picture
GAP = 4
CAPTION = 22


def difference_picture(ref_bgr: np.ndarray, cand_bgr: np.ndarray) -> np.ndarray:
    """Per pixel, the distance between the two maps' colours (0 black .. the largest possible
    white-hot), drawn with the magma colour map: (H, W, 3) uint8 BGR."""
    import cv2

    d = np.linalg.norm(ref_bgr.astype(np.float32) - cand_bgr.astype(np.float32), axis=2) / np.sqrt(3.0)
    return cv2.applyColorMap(np.clip(d, 0, 255).astype(np.uint8), cv2.COLORMAP_MAGMA)


def side_by_side(image_bgr: np.ndarray, ref_rgb: np.ndarray, cand_rgb: np.ndarray, ref_box: Any, cand_box: Any, caption: str = "") -> np.ndarray:
    """image | reference map | candidate map | difference, each ``TILE`` px high, with a caption line."""
    import cv2

    h, w = image_bgr.shape[:2]
    ref = render.map_picture(ref_rgb, (h, w), ref_box)
    cand = render.map_picture(cand_rgb, (h, w), cand_box)
    panels = [image_bgr, ref, cand, difference_picture(ref, cand)]
    width = max(1, round(w * TILE / h))
    tiles = [cv2.resize(p, (width, TILE), interpolation=cv2.INTER_AREA if h > TILE else cv2.INTER_LINEAR) for p in panels]
    out = np.full((TILE + CAPTION, 4 * width + 3 * GAP, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        x = i * (width + GAP)
        out[:TILE, x : x + width] = t
    if caption:
        text, scale = render.fit_text(caption, out.shape[1] - 8, max_scale=0.5)
        cv2.putText(out, text, (4, TILE + CAPTION - 6), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def stack(pictures: Sequence[np.ndarray], width: int = 4 * 180) -> np.ndarray:
    """Pictures one below the other, each scaled to ``width`` px: the mosaic of the most-changed images."""
    import cv2

    rows = [cv2.resize(p, (width, max(1, round(p.shape[0] * width / p.shape[1]))), interpolation=cv2.INTER_AREA) for p in pictures]
    out = np.full((sum(r.shape[0] for r in rows) + GAP * (len(rows) + 1), width + 2 * GAP, 3), 255, np.uint8)
    y = GAP
    for r in rows:
        out[y : y + r.shape[0], GAP : GAP + width] = r
        y += r.shape[0] + GAP
    return out


def page(summary: dict[str, Any], rows: Sequence[dict[str, Any]], thumbs: dict[str, bytes], title: str) -> str:
    """The HTML page: the summary, then every image ranked by drift (largest first), with its
    side-by-side picture embedded when ``thumbs`` has it (JPEG bytes by name)."""
    e = html.escape

    def num(v: Any, digits: int = 3) -> str:
        return "n/a" if v is None else f"{float(v):.{digits}f}"

    facts = [
        ("images", summary.get("images")),
        ("drift mean / median / max", f"{num(summary.get('drift_mean'))} / {num(summary.get('drift_median'))} / {num(summary.get('drift_max'))}"),
        ("top-1 agreement", num(summary.get("top1_agreement"))),
        ("linear CKA of E_L", num(summary.get("cka"))),
        ("common space", summary.get("channels")),
        ("why", (summary.get("channel_evidence") or {}).get("reason")),
        ("gate", summary.get("gate", {}).get("verdict") if summary.get("gate") else "none (no --fail-over)"),
    ]
    body = ["<dl>", *(f"<dt>{e(str(k))}</dt><dd>{e(str(v))}</dd>" for k, v in facts), "</dl>"]
    body.append("<table><thead><tr><th>#</th><th>image</th><th>drift</th><th>top-1 reference</th><th>top-1 candidate</th><th>image | reference | candidate | difference</th></tr></thead><tbody>")
    for rank, r in enumerate(sorted(rows, key=lambda r: -r["drift"]), 1):
        pic = thumbs.get(r["name"])
        img = f'<img alt="" src="data:image/jpeg;base64,{base64.b64encode(pic).decode()}">' if pic else e(r.get("picture", ""))
        same = r.get("top1_reference") == r.get("top1_candidate")
        body.append(
            f"<tr><td>{rank}</td><td>{e(r['name'])}</td><td class=n>{r['drift']:.4f}</td>"
            f"<td>{e(_label(r, 'reference'))}</td><td{'' if same else ' class=diff'}>{e(_label(r, 'candidate'))}</td><td>{img}</td></tr>"
        )
    body.append("</tbody></table>")
    style = (
        "body{font:14px system-ui,sans-serif;margin:24px;color:#222}dl{display:grid;grid-template-columns:max-content auto;gap:4px 16px}"
        "dt{color:#666}dd{margin:0}table{border-collapse:collapse;margin-top:16px}td,th{padding:4px 8px;border-bottom:1px solid #ddd;"
        "text-align:left;vertical-align:middle}td.n{font-variant-numeric:tabular-nums}td.diff{color:#b00020;font-weight:600}img{max-width:720px}"
    )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title><style>{style}</style></head>'
        f"<body><h1>{e(title)}</h1>{''.join(body)}</body></html>\n"
    )


def _label(row: dict[str, Any], which: str) -> str:
    c, label = row.get(f"top1_{which}"), row.get(f"label_{which}")
    return "n/a" if c is None else (f"{c} {label}" if label else str(c))

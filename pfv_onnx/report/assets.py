"""What the page reads from OUTDIR, and the small pictures it writes to ``OUTDIR/report_files/``.

Read: report.json, sanity.json, the ``components`` and ``group`` arrays of pfv.npz (by key;
any other array, ``rgb`` included, may be absent) and the original images (for the legend
patches). Written: gallery thumbnails, legend patches and the per-component views.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..render import component_picture, encode_jpeg
from .legend import PATCHES, Patch, patch_box, select_patches

ASSETS = "report_files"
THUMBS = f"{ASSETS}/thumbs"
LEGEND = f"{ASSETS}/legend"
VIEWS = f"{ASSETS}/components"
THUMB_QUALITY = 80  # JPEG quality of the thumbnails (shown at half their pixels; sizes in docs/PERFORMANCE.md)
# Legend patches and component views are page pictures only: JPEG at this quality keeps them
# within a grey level or two of the pixels (tested) at a seventh of the PNG bytes.
PAGE_QUALITY = 85
THUMB_SIDE = 320  # longest side of a gallery thumbnail, in pixels (shown at about half: sharp on HiDPI screens)
PATCH_SIDE = 120  # legend patches are square JPEGs of this side (shown at half: sharp on HiDPI screens)
VIEW_SIDE = 240  # longest side of a per-component view
VIEW_IMAGE_WEIGHT = 0.25  # share of the (gray) image under a per-component view

_PAGE_FILE = re.compile(r"(g\d+-c\d+-(pos|neg)-\d+|g\d+-\d+-c\d+|g\d+-\d+-y\d+x\d+)\.(png|jpg)")


def thumb_size(h: int, w: int, side: int = THUMB_SIDE) -> tuple[int, int]:
    """(height, width) of a picture of ``h`` x ``w`` shrunk to fit ``side`` (never enlarged)."""
    scale = min(1.0, side / max(h, w, 1))
    return max(1, round(h * scale)), max(1, round(w * scale))


def _shrink(bgr: np.ndarray) -> np.ndarray:
    import cv2

    h, w = bgr.shape[:2]
    th, tw = thumb_size(h, w)
    if (th, tw) == (h, w):
        return bgr
    return cv2.resize(bgr, (tw, th), interpolation=cv2.INTER_AREA)


def thumbnail_jpeg(pic: np.ndarray, kind: str) -> bytes:
    """A gallery thumbnail of a full-size picture: the map's keeps full colour resolution, the
    image's and the overlay's have the half-resolution colour of photographs."""
    return encode_jpeg(_shrink(pic), THUMB_QUALITY, full_colour=kind == "map")


def _thumb_paths(name: str) -> dict[str, str]:
    return {f"thumb_{kind}": f"{THUMBS}/{name}.{kind}.jpg" for kind in ("image", "map", "overlay")}


def write_thumbnails(outdir: str | os.PathLike[str], name: str, image_bgr: np.ndarray, map_bgr: np.ndarray, overlay_bgr: np.ndarray) -> dict[str, str]:
    """Small JPEGs of an image, its map and its overlay for the page's gallery.

    Called while the full-size pictures are still in memory, so the page costs no second
    decoding. Returns the paths relative to ``outdir`` (``thumb_image``, ``thumb_map``,
    ``thumb_overlay``), as report.json records them.
    """
    from ..outputs import atomic_write_bytes

    paths = _thumb_paths(name)
    for kind, pic in (("image", image_bgr), ("map", map_bgr), ("overlay", overlay_bgr)):
        atomic_write_bytes(Path(outdir) / paths[f"thumb_{kind}"], thumbnail_jpeg(pic, kind), durable=False)
    return paths


def read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}; run the command again") from None
    return data if isinstance(data, dict) else None


def read_components(outdir: Path, report: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """(components (n, k, h, w), group of each row) from pfv.npz, or None when there are none."""
    name = (report.get("outputs") or {}).get("npz")
    if not name or not (outdir / name).is_file():
        return None
    try:
        with np.load(outdir / name, allow_pickle=False) as z:
            if "components" not in z.files:
                return None
            comps = np.asarray(z["components"], dtype=np.float32)
            groups = np.asarray(z["group"]) if "group" in z.files else np.zeros(comps.shape[0], np.int32)
    except (OSError, ValueError):
        return None
    if comps.ndim != 4 or groups.shape != (comps.shape[0],):
        return None
    return comps, groups


def decoded(path: str, size: Sequence[int], max_pixels: int) -> np.ndarray | None:
    """The original image as the run saw it, or None when it is gone or changed."""
    from ..errors import PfvError
    from ..inputs import decode_image

    try:
        img = decode_image(path, max_pixels=max_pixels)
    except PfvError:
        return None
    if list(img.bgr.shape[:2]) != [int(s) for s in size]:
        return None
    return img.bgr


def clean(outdir: Path) -> None:
    """Legend patches and component views of an earlier page in the same folder (its groups may differ)."""
    for folder in (outdir / LEGEND, outdir / VIEWS):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if _PAGE_FILE.fullmatch(p.name) and p.is_file():
                try:
                    p.unlink()
                except OSError:
                    pass


class Pictures:
    """The pictures of one page, written into ``outdir``; ``notes`` says what could not be made."""

    def __init__(self, outdir: Path, max_pixels: int, pool: Any = None):
        self.outdir = outdir
        self.max_pixels = max_pixels
        self.pool = pool  # an Executor that draws the pictures, or None: drawn as they are asked for
        self.notes: list[str] = []
        self.promised: set[str] = set()  # files the caller writes once the page is drawn (report.json)

    def submit(self, fn: Any, *args: Any) -> Future:
        """``fn(*args)`` in the pool (a future of its result); done at once without one."""
        if self.pool is not None:
            return self.pool.submit(fn, *args)
        done: Future = Future()
        try:
            done.set_result(fn(*args))
        except BaseException as exc:
            done.set_exception(exc)
        return done

    def exists(self, rel: str | None) -> bool:
        return bool(rel) and (rel in self.promised or (self.outdir / rel).is_file())  # type: ignore[operator]

    def thumbnails(self, rec: dict[str, Any]) -> dict[str, str]:
        """The record's gallery thumbnails, made now from the PNGs when the run made none."""
        import cv2

        from ..outputs import atomic_write_bytes

        out = rec.get("outputs") or {}
        have = {k: v for k, v in out.items() if k.startswith("thumb_") and self.exists(v)}
        if len(have) == 3:
            return have
        paths = _thumb_paths(rec["name"])
        made: dict[str, str] = {}
        for kind in ("map", "overlay"):
            src = out.get(kind)
            pic = cv2.imread(str(self.outdir / src), cv2.IMREAD_COLOR) if self.exists(src) else None
            if pic is not None:
                atomic_write_bytes(self.outdir / paths[f"thumb_{kind}"], thumbnail_jpeg(pic, kind))
                made[f"thumb_{kind}"] = paths[f"thumb_{kind}"]
        original = decoded(rec["file"], rec.get("size") or [0, 0], self.max_pixels)
        if original is not None:
            atomic_write_bytes(self.outdir / paths["thumb_image"], thumbnail_jpeg(original, "image"))
            made["thumb_image"] = paths["thumb_image"]
        return made

    def legend(self, g: int, recs: list[dict[str, Any]], comps: np.ndarray) -> list[tuple[list[tuple[Patch, str]], list[tuple[Patch, str]]]]:
        """Per component: its strongest and most negative patches (with their PNG paths), cut from
        the original images. ``comps``: (n, k, h, w) of the group's rows, in the order of ``recs``."""
        import cv2

        from ..outputs import atomic_write_bytes

        n, k, gh, gw = comps.shape
        wanted: dict[int, list[tuple[int, str, int, Patch]]] = {}
        picks: list[tuple[list[Patch], list[Patch]]] = []
        for c in range(k):
            pos, neg = select_patches(comps[:, c], PATCHES, +1), select_patches(comps[:, c], PATCHES, -1)
            picks.append((pos, neg))
            for side, chosen in (("pos", pos), ("neg", neg)):
                for j, p in enumerate(chosen):
                    wanted.setdefault(p.index, []).append((c, side, j, p))

        def patches(i: int, jobs: list[tuple[int, str, int, Patch]]) -> dict[tuple[int, str, int], str] | None:
            """The patches cut from original ``i`` (decoded once), or None when it cannot be read again."""
            rec = recs[i]
            img = decoded(rec["file"], rec.get("size") or [0, 0], self.max_pixels)
            if img is None:
                return None
            crop = rec.get("crop_box") or [0, 0, img.shape[1], img.shape[0]]
            out: dict[tuple[int, str, int], str] = {}
            for c, side, j, p in jobs:
                rel = f"{LEGEND}/g{g}-{i}-y{p.y}x{p.x}.jpg"  # one file per place: a place can end several components
                if rel not in out.values():
                    x0, y0, x1, y1 = patch_box(p.y, p.x, (gh, gw), crop, img.shape[:2])
                    interp = cv2.INTER_AREA if (x1 - x0) > PATCH_SIDE else cv2.INTER_LINEAR
                    patch = cv2.resize(img[y0:y1, x0:x1], (PATCH_SIDE, PATCH_SIDE), interpolation=interp)
                    atomic_write_bytes(self.outdir / rel, encode_jpeg(patch, PAGE_QUALITY), durable=False)
                out[(c, side, j)] = rel
            return out

        saved: dict[tuple[int, str, int], str] = {}
        for i, cut in [(i, self.submit(patches, i, jobs)) for i, jobs in wanted.items()]:  # in the pool, then in order
            if cut.result() is None:
                self.notes.append(f"legend: {Path(recs[i]['file']).name} could not be read again, its patches are left out")
            else:
                saved.update(cut.result())
        return [
            tuple([(p, saved[(c, side, j)]) for j, p in enumerate(chosen) if (c, side, j) in saved] for side, chosen in (("pos", pos), ("neg", neg)))  # type: ignore[misc]
            for c, (pos, neg) in enumerate(picks)
        ]

    def component_views(self, g: int, row: int, rec: dict[str, Any], comps: np.ndarray, scales: np.ndarray, under: str | None = None) -> list[str]:
        """One blue-white-red picture per component of image ``row`` (``comps``: (k, h, w)), over
        the part of the image the model saw; ``scales[c]`` is drawn at full colour. ``under``: a
        picture of the image (relative to OUTDIR) shown faintly beneath, for orientation."""
        import cv2

        from ..outputs import atomic_write_bytes

        size = rec.get("size") or [VIEW_SIDE, VIEW_SIDE]
        h, w = thumb_size(int(size[0]), int(size[1]), VIEW_SIDE)
        box = None
        crop = rec.get("crop_box")
        if crop and len(crop) == 4 and size[0] and size[1]:
            sy, sx = h / float(size[0]), w / float(size[1])
            box = (round(crop[0] * sx), round(crop[1] * sy), round(crop[2] * sx), round(crop[3] * sy))
        gray = cv2.imread(str(self.outdir / under), cv2.IMREAD_GRAYSCALE) if self.exists(under) else None
        if gray is not None:
            gray = cv2.cvtColor(cv2.resize(gray, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_GRAY2BGR)
        paths = []
        for c in range(comps.shape[0]):
            pic = component_picture(comps[c], float(scales[c]), (h, w), box)
            if gray is not None:
                pic = cv2.addWeighted(pic, 1.0 - VIEW_IMAGE_WEIGHT, gray, VIEW_IMAGE_WEIGHT, 0.0)
            rel = f"{VIEWS}/g{g}-{row}-c{c + 1}.jpg"
            atomic_write_bytes(self.outdir / rel, encode_jpeg(pic, PAGE_QUALITY), durable=False)
            paths.append(rel)
        return paths

"""The one writer of a run's results: pictures, the rows of ``pfv.npz``, ``report.json``,
the mosaic and the page.

Every group, whether computed now or kept from an interrupted run, reaches the results
through :meth:`RunWriter.add`, so a resumed run writes the same bytes as an
uninterrupted one. An image whose pictures cannot be written is a failure, and its rows
are left out of ``pfv.npz``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError, one_line
from .outdir import MOSAIC, NPZ, REPORT, REPORT_HTML
from ..audit import ATYPICAL_DISTANCE, LOW_CONFIDENCE, MIN_CLASS_SIZE, mean_colours, median_colours, record_flags
from ..predictions import labels_fit, predictions
from .progress import SavedGroup

if TYPE_CHECKING:
    from ..inputs import DecodedImage, Preprocessing
    from .loading import Loaded

MOSAIC_MAX = 64  # images shown in the mosaic
# Images coloured at once while the pool draws the part before: small, so that the pool starts
# drawing soon after the decomposition (each image's colours do not depend on the part size).
RENDER_PART = 16
MOSAIC_TILE = 160
LOSSY_FORMATS = frozenset({"jpeg"})  # DecodedImage.format values whose overlays are JPEG under --overlay-format auto
NPZ_PRECISIONS = ("uint8", "full")


def rgb_rows(rgb: Any, precision: str) -> np.ndarray:
    """The ``rgb`` rows of pfv.npz: 8-bit (value / 255, as in the map pictures) by default,
    float32 with ``precision="full"``."""
    rgb = np.asarray(rgb, dtype=np.float32)
    if precision == "full":
        return rgb
    if rgb.ndim >= 2 and rgb.size and rgb.flags.c_contiguous and float(rgb.min()) >= 0.0 and float(rgb.max()) <= 1.0:
        import cv2  # one pass, the same rounding (half to even) and saturation: 60x faster than the NumPy chain

        flat = rgb.reshape(-1, rgb.shape[-1] * (rgb.shape[-2] if rgb.ndim > 2 else 1))
        return cv2.convertScaleAbs(flat, alpha=255.0).reshape(rgb.shape)
    return np.clip(np.rint(rgb * np.float32(255.0)), 0, 255).astype(np.uint8)


def render_one(outdir: Path, name: str, rgb: np.ndarray, image: DecodedImage | None, path: Path, prep: Preprocessing,
               alpha: float, max_pixels: int, want_tile: bool, thumbs: bool, overlay_format: str) -> tuple[dict[str, str], tuple[np.ndarray, np.ndarray] | None]:  # fmt: skip
    """Write one image's map and overlay (and the page's thumbnails); returns their names and its mosaic tiles."""
    from .. import render
    from ..inputs import crop_box, decode_image
    from ..outputs import atomic_write_bytes

    if image is None:  # not kept in memory: decode again
        image = decode_image(path, max_pixels=max_pixels)
    h, w = image.bgr.shape[:2]
    box = crop_box(w, h, prep)
    pic = render.map_picture(rgb, (h, w), box)
    over = render.overlay(image.bgr, pic, alpha, box)
    jpeg = overlay_format == "jpg" or (overlay_format == "auto" and image.format in LOSSY_FORMATS)
    files = {"map": f"{name}.pfv.png", "overlay": f"{name}.overlay.{'jpg' if jpeg else 'png'}"}
    # Not synced one by one: the run syncs once before it records a group or itself as done.
    atomic_write_bytes(outdir / files["map"], render.encode_png(pic), durable=False)
    atomic_write_bytes(outdir / files["overlay"], render.encode_jpeg(over, render.OVERLAY_QUALITY) if jpeg else render.encode_png(over), durable=False)
    if thumbs:  # the page's gallery pictures, while the full-size ones are in memory
        from ..html_report import write_thumbnails

        files.update(write_thumbnails(outdir, name, image.bgr, pic, over))
    tiles = None
    if want_tile:
        x0, y0, x1, y1 = box
        tiles = (render.letterbox(image.bgr[y0:y1, x0:x1], MOSAIC_TILE), render.letterbox(pic[y0:y1, x0:x1], MOSAIC_TILE))
    return files, tiles


def caption(pred: dict[str, Any] | None, name: str, group: int | None) -> str:
    """A mosaic tile's caption: the predicted label (or class), prefixed by its group when there are several."""
    if pred is None:
        text = name
    elif pred.get("label"):
        text = str(pred["label"]).split(",")[0]
    else:
        text = f"class {pred['class']}"
    return f"g{group}: {text}" if group is not None else text


def map_record(m: Any) -> dict[str, Any]:
    """The report's record of one feature map used."""
    return {
        "name": m.name,
        "op": getattr(m, "op", None),
        "shape": list(getattr(m, "shape", []) or []),
        "layout": str(getattr(getattr(m, "layout", None), "value", getattr(m, "layout", None))),
        "role": str(getattr(getattr(m, "role", None), "value", getattr(m, "role", None))),
        "reason": getattr(m, "reason", ""),
    }


class RunWriter:
    """Owns a run's results in ``outdir``: the report, the rows of pfv.npz (spooled to disk
    group by group), the mosaic tiles, and the pictures of each group."""

    def __init__(self, outdir: Path, report: dict[str, Any], *, prep: Preprocessing, names: list[str], labels: list[str] | None,
                 output_order: list[str] | None, alpha: float, max_pixels: int, html: bool, overlay_format: str,
                 npz_precision: str, pool: Any) -> None:  # fmt: skip
        from ..outputs import RowSpool

        self.outdir, self.report, self.prep, self.names = outdir, report, prep, names
        self.labels, self.output_order = labels, output_order
        self.alpha, self.max_pixels, self.html, self.overlay_format = alpha, max_pixels, html, overlay_format
        self.npz_precision, self.pool = npz_precision, pool
        self.spool = RowSpool(outdir)
        self.tiles: list[tuple[np.ndarray, np.ndarray, dict[str, Any] | None, str, int]] = []
        self.eigenvalues: list[np.ndarray] = []
        self.colours: list[np.ndarray] = []
        self.medians: list[np.ndarray] = []  # for the page's typical colour of a group
        self.explained: list[np.ndarray] = []
        self.row_groups: list[int] = []
        self.row_files: list[str] = []
        self.feature_maps: list[str] | None = None
        self.pred_output: str | None = None
        self.pred_classes: int | None = None
        self.k = 3  # components per map, from the rows

    @property
    def rows(self) -> int:
        return len(self.row_files)

    @property
    def failures(self) -> list[dict[str, str]]:
        return self.report["failures"]

    def fail(self, file: str | Path, reason: str) -> None:
        self.failures.append({"file": str(file), "reason": reason})

    # ------------------------------------------------------------------ groups

    def write_group(self, index: int, items: list[Loaded], res: Any, klass: dict[str, Any] | None, failures_before: int, end: int) -> SavedGroup:
        """Draw one decomposed group's pictures and add its results; returns the group as progress keeps it.

        ``res``: a ``decompose.PFVResult`` or a spooled one, whose colours come part by part;
        each part's rows go to the spool once its pictures are written.

        ``failures_before``: the count of failures when the group started filling (those
        after it are the group's); ``end``: one past the last input file it consumed."""
        from ..inputs import crop_box

        preds, pred_output = predictions(res.outputs, len(items), self.labels, self.output_order)
        if self.feature_maps is None:
            maps = [map_record(m) for m in (res.maps or [])] or [{"name": n} for n in res.feature_maps]
        else:
            maps = list(self.report["feature_maps"])
        first_row = self.rows
        kept: list[int] = []
        images: list[dict[str, Any]] = []
        tiles: list[Any] = []

        def collect(start: int, futures: list[Any], rgb: np.ndarray) -> None:
            """Wait for one part's pictures; spool the rows of the images drawn."""
            drawn = []
            for jj, fut in enumerate(futures):
                j = start + jj
                item = items[j]
                try:
                    written, tile = fut.result()
                except InputError as exc:  # the file changed or vanished since it was read
                    self.fail(item.path, one_line(str(exc)))
                    continue
                finally:
                    item.image = None
                h, w = item.hw
                images.append({
                    "file": str(item.path), "name": self.names[item.index], "group": index, "row": first_row + len(kept),
                    "size": [h, w], "crop_box": list(crop_box(w, h, self.prep)), "notes": item.notes,
                    "prediction": preds[j], "outputs": written,
                })  # fmt: skip
                if tile is not None and len(self.tiles) + len(tiles) < MOSAIC_MAX:
                    tiles.append((tile[0], tile[1], preds[j], images[-1]["name"], index))
                kept.append(j)
                drawn.append(jj)
            rows = np.asarray(drawn, dtype=np.intp) if len(drawn) < len(futures) else slice(None)  # all drawn: no copy
            stop = start + len(futures)
            self.spool.append("rgb", rgb_rows(rgb[rows], self.npz_precision))
            self.spool.append("components", np.asarray(res.components[start:stop], dtype=np.float32)[rows])
            for k, v in res.outputs.items():
                self.spool.append(f"output/{k}", np.asarray(v[start:stop])[rows])

        # Part by part: the pictures of one part are drawn in the pool while the next part's colours are computed.
        pending: tuple[int, list[Any], np.ndarray] | None = None
        for start, rgb in res.rgb_parts(RENDER_PART):
            futures = [
                self.pool.submit(
                    render_one, self.outdir, self.names[item.index], rgb[jj], item.image, item.path, self.prep,
                    self.alpha, self.max_pixels, len(self.tiles) + start + jj < MOSAIC_MAX, self.html, self.overlay_format,
                )
                for jj, item in enumerate(items[start : start + len(rgb)])
            ]  # fmt: skip
            if pending is not None:
                collect(*pending)
            pending = (start, futures, rgb)
        if pending is not None:
            collect(*pending)
        keys = ["rgb", "components", *(f"output/{k}" for k in res.outputs)]
        arrays = {key: self.spool.array(key, first_row, first_row + len(kept)) for key in keys}  # memory-mapped
        group = {
            "index": index, "images": len(kept), "eigenvalues": res.eigenvalues, "explained_variance_ratio": res.explained_variance_ratio,
            **({"class": klass} if klass is not None else {}),
        }  # fmt: skip
        if len(kept) < len(items):
            group["decomposed_images"] = len(items)
        saved = SavedGroup(
            index=index, end=end, images=images, failures=self.failures[failures_before:], group=group,
            files=[str(items[j].path) for j in kept], arrays=arrays,
            eigenvalues=np.asarray(res.eigenvalues, dtype=np.float64),
            explained_variance_ratio=np.asarray(res.explained_variance_ratio, dtype=np.float64),
            tiles=tiles, feature_maps=list(res.feature_maps), map_records=maps, pred_output=pred_output,
        )  # fmt: skip
        del self.failures[failures_before:]  # added back, in order, with the group
        self.add(saved, spooled=True)
        return saved

    def add(self, saved: SavedGroup, *, spooled: bool = False) -> None:
        """Add one complete group (computed now or kept from an interrupted run) to the results.
        ``spooled``: its rows are already in the spool (a group written now)."""
        if not spooled:
            for key, val in saved.arrays.items():
                self.spool.append(key, val)
        self.k = int(saved.arrays["rgb"].shape[-1])
        self.failures.extend(saved.failures)
        if self.feature_maps is None:
            self.feature_maps, self.report["feature_maps"] = list(saved.feature_maps), list(saved.map_records)
        if saved.pred_output is not None:
            self.pred_output = saved.pred_output
            key = f"output/{saved.pred_output}"
            if self.pred_classes is None and key in saved.arrays:
                self.pred_classes = int(np.prod(saved.arrays[key].shape[1:]))
        self.tiles.extend(saved.tiles[: max(0, MOSAIC_MAX - len(self.tiles))])
        self.row_groups.extend([saved.index] * len(saved.files))
        self.row_files.extend(saved.files)
        self.colours.append(mean_colours(saved.arrays["rgb"]))  # for the audit flags and the page: as it would read them from pfv.npz
        if self.html:
            self.medians.append(median_colours(saved.arrays["rgb"]))
        self.eigenvalues.append(np.asarray(saved.eigenvalues, dtype=np.float64))
        self.explained.append(np.asarray(saved.explained_variance_ratio, dtype=np.float64))
        self.report["images"].extend(saved.images)
        self.report["groups"].append(saved.group)

    def write_partial_report(self) -> None:
        from ..outputs import write_json

        write_json(self.outdir / REPORT, self.report)  # progress so far, replaced at the end

    # ------------------------------------------------------------------ the end

    def finish(self) -> None:
        """Write pfv.npz, the mosaic, the complete report and the page."""
        from ..outputs import atomic_write_text, json_text, sync_all, write_npz
        from ..render import MOSAIC_QUALITY, encode_jpeg, mosaic

        report = self.report
        if self.rows:
            arrays: dict[str, Any] = {
                "rgb": self.spool.rows("rgb"),
                "components": self.spool.rows("components"),
                "eigenvalues": np.stack(self.eigenvalues),
                "explained_variance_ratio": np.stack(self.explained),
                "feature_maps": np.asarray(self.feature_maps or [], dtype=str),
                "files": np.asarray(self.row_files, dtype=str),
                "group": np.asarray(self.row_groups, dtype=np.int32),
                **{k: self.spool.rows(k) for k in self.spool.keys() if k.startswith("output/")},
            }
            write_npz(self.outdir / NPZ, arrays, deflate=["rgb"] if self.npz_precision != "full" else [])
            report["outputs"]["npz"] = NPZ
        self.close()
        if self.tiles:
            several = len(report["groups"]) > 1
            captions = [caption(t[2], t[3], t[4] if several else None) for t in self.tiles]
            pic = mosaic([t[0] for t in self.tiles], [t[1] for t in self.tiles], captions, tile=MOSAIC_TILE, key=self.k)
            from ..outputs import atomic_write_bytes

            atomic_write_bytes(self.outdir / MOSAIC, encode_jpeg(pic, MOSAIC_QUALITY))
            report["outputs"]["mosaic"] = MOSAIC
            report["outputs"]["mosaic_images"] = len(self.tiles)
            if self.rows > len(self.tiles):
                report["notes"].append(f"{MOSAIC} shows the first {len(self.tiles)} of {self.rows} images")
        if self.pred_output is not None:
            report["outputs"]["prediction_from"] = self.pred_output
        labels, warnings = self.labels, report.setdefault("warnings", [])
        if not labels_fit(labels, self.pred_classes) and not any(w.startswith(f"{len(labels or ())} labels") for w in warnings):
            warnings.append(f"{len(labels or ())} labels for {self.pred_classes} classes: predictions are shown without names")
        if self.rows:
            for rec, flags in zip(report["images"], record_flags(report["images"], np.concatenate(self.colours), self.k)):
                rec["flags"] = flags
            report["audit"] = {"low_confidence_below": LOW_CONFIDENCE, "atypical_above": ATYPICAL_DISTANCE, "min_class_size": MIN_CLASS_SIZE}
        report["pfv"]["groups"] = len(report["groups"])
        report["status"] = "complete"
        if self.html:
            report["outputs"]["html"] = REPORT_HTML
        text = json_text(report)
        # The pictures, written unsynced, reach the disk before the report calls the run complete;
        # the page (its pictures, from the report as report.json will hold it) is drawn meanwhile.
        syncing = self.pool.submit(sync_all, self.outdir)
        page, failed = None, None
        if self.html:
            from ..report import page_html

            given = (np.concatenate(self.colours), np.concatenate(self.medians)) if self.rows else None
            try:
                page = page_html(self.outdir, report=json.loads(text), pool=self.pool, colours=given)
            except Exception as exc:  # the results stand without their page: report.json first, then the error
                failed = exc
        syncing.result()
        atomic_write_text(self.outdir / REPORT, text)
        if failed is not None:
            raise failed
        if page is not None:
            atomic_write_text(self.outdir / REPORT_HTML, page)

    def close(self) -> None:
        """Remove the spooled rows (after :meth:`finish`, or when the run stops)."""
        self.spool.close()

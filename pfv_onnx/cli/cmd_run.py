"""Explain images with PFV: an RGB map per image, overlays, a mosaic, pfv.npz and report.json.

Colours are comparable only within one group (one decomposition): by default all
images form one group; --group-size splits large sets. A file that cannot be read is
reported with its reason and the run goes on (exit code 1 when any failed).
With --ray the images are decoded and run forward on a Ray cluster (pip install
'pfv-onnx[ray]'); the decomposition, pictures and files are made here, as without it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..predictions import predictions
from ..provenance import provenance
from . import _args, _preamble

if TYPE_CHECKING:
    import numpy as np

    from ..inputs import DecodedImage, Preprocessing
    from ..pipeline import PFV

MOSAIC_MAX = 64  # images shown in mosaic.png
MOSAIC_TILE = 160
CACHE_BYTES = 512 << 20  # decoded originals kept per group for rendering; the rest are decoded again
REPORT = "report.json"
NPZ = "pfv.npz"
MOSAIC = "mosaic.png"
REPORT_HTML = "report.html"
OVERLAY_FORMATS = ("auto", "png", "jpg")
LOSSY_FORMATS = frozenset({"jpeg"})  # DecodedImage.format values whose overlays are JPEG under --overlay-format auto


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _args.add_model_options(parser)
    _args.add_input_options(parser)
    _args.add_output_options(parser)
    _args.add_pfv_options(parser)
    _args.add_preprocessing_options(parser)
    _args.add_runtime_options(parser)
    parser.add_argument("--basis", metavar="BASIS.npz", help="project onto a basis from 'pfv-onnx fit': the same colours in every group and run")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="redo every image; by default a run started again with the same arguments keeps the groups "
        "an interrupted run in OUTDIR finished, and finds a complete one done",
    )
    parser.add_argument(
        "--group-by",
        choices=("class",),
        help="class: one decomposition per predicted class (argmax of the model's first class-score output), "
        "so colours contrast the features within a class",
    )
    parser.add_argument("--no-html", action="store_true", help=f"do not write the page OUTDIR/{REPORT_HTML}")
    parser.add_argument(
        "--overlay-format",
        choices=OVERLAY_FORMATS,
        default="auto",
        help="file format of the overlays (NAME.overlay.*). auto (default): JPEG (quality 95, full colour "
        "resolution) for JPEG images, whose pixels are lossy already, PNG for the rest. The maps (NAME.pfv.png) are always PNG",
    )
    parser.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="decode and run the forward passes on Ray: the cluster at ADDRESS ('auto', 'ray://host:10001'), "
        "else RAY_ADDRESS or a new local one (pip install 'pfv-onnx[ray]'; the model and images at the same paths on every node)",
    )
    parser.add_argument("--actors", type=_args.positive_int, metavar="N", help="Ray actors (default: one per GPU, else per CPU)")


def run(args: argparse.Namespace) -> int:
    return execute(args)


# --------------------------------------------------------------------------- pieces


@dataclass
class _Loaded:
    index: int
    path: Path
    image: DecodedImage | None = None
    tensor: np.ndarray | None = None
    error: str | None = None
    seconds: float = 0.0
    hw: tuple[int, int] = (0, 0)
    notes: list[str] = field(default_factory=list)
    part: tuple[Any, int] | None = None  # --ray: (the forward pass its actor ran, its row there)


def _load(index: int, path: Path, prep: Preprocessing, max_pixels: int) -> _Loaded:
    from ..errors import PfvError
    from ..inputs import decode_image, preprocess

    t0 = time.perf_counter()
    try:
        img = decode_image(path, max_pixels=max_pixels)
        tensor = preprocess(img.bgr, prep)
        return _Loaded(index, path, img, tensor, seconds=time.perf_counter() - t0, hw=(img.height, img.width), notes=list(img.notes))
    except PfvError as exc:
        return _Loaded(index, path, error=_one_line(str(exc)), seconds=time.perf_counter() - t0)
    except MemoryError:
        return _Loaded(index, path, error="out of memory while reading the image", seconds=time.perf_counter() - t0)


def _quiet_opencv() -> None:
    """OpenCV's own warnings (a truncated file, ...) would break up the progress bar; each bad
    file is reported with its reason instead."""
    import cv2

    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # a build without the logging module
        pass


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "unknown error"


def _prefetch(pool: Any, files: Sequence[Path], prep: Preprocessing, max_pixels: int, window: int, start: int = 0) -> Iterator[_Loaded]:
    """Decode in the pool, ``window`` files ahead, and yield the results in input order (from ``files[start]``)."""
    from collections import deque

    pending: deque[Any] = deque()
    nxt = start
    while nxt < len(files) or pending:
        while nxt < len(files) and len(pending) < window:
            pending.append(pool.submit(_load, nxt, files[nxt], prep, max_pixels))
            nxt += 1
        yield pending.popleft().result()


def _caption(pred: dict[str, Any] | None, name: str, group: int | None) -> str:
    if pred is None:
        text = name
    elif pred.get("label"):
        text = str(pred["label"]).split(",")[0]
    else:
        text = f"class {pred['class']}"
    return f"g{group}: {text}" if group is not None else text


@dataclass
class _ImageRecord:
    file: str
    name: str
    group: int
    row: int
    size: tuple[int, int]
    crop_box: tuple[int, int, int, int]
    notes: list[str]
    prediction: dict[str, Any] | None = None
    outputs: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "name": self.name,
            "group": self.group,
            "row": self.row,
            "size": list(self.size),
            "crop_box": list(self.crop_box),
            "notes": self.notes,
            "prediction": self.prediction,
            "outputs": self.outputs,
        }


def _render_one(
    outdir: Path,
    name: str,
    rgb: np.ndarray,
    image: DecodedImage | None,
    path: Path,
    prep: Preprocessing,
    alpha: float,
    max_pixels: int,
    want_tiles: bool,
    thumbs: bool = False,
    overlay_format: str = "auto",
) -> tuple[dict[str, str], tuple[np.ndarray, np.ndarray] | None]:
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
    atomic_write_bytes(outdir / files["overlay"], render.encode_jpeg(over) if jpeg else render.encode_png(over), durable=False)
    if thumbs:  # the page's gallery pictures, while the full-size ones are in memory
        from ..html_report import write_thumbnails

        files.update(write_thumbnails(outdir, name, image.bgr, pic, over))
    tiles = None
    if want_tiles:
        x0, y0, x1, y1 = box
        tiles = (
            render.letterbox(image.bgr[y0:y1, x0:x1], MOSAIC_TILE),
            render.letterbox(pic[y0:y1, x0:x1], MOSAIC_TILE),
        )
    return files, tiles


def _forward(pfv: PFV, layout: str, items: list[_Loaded]) -> Any:
    """One forward pass over a chunk of loaded images (the engine splits it for a fixed-batch model)."""
    from ..inputs import stack_batch

    fp = pfv.forward(stack_batch([p.tensor for p in items], layout))
    for p in items:
        p.tensor = None
    return fp


def _gathered(items: list[_Loaded]) -> Any:
    """--ray: the forward pass of a chunk, gathered from the passes the actors already ran."""
    from ..distributed import gather_rows

    fp = gather_rows([p.part for p in items])  # type: ignore[misc]
    for p in items:
        p.part = None
    return fp


def _ray_loader(args: argparse.Namespace, pfv: PFV, prep: Preprocessing, files: Sequence[Path], start: int, timings: dict[str, float], notes: list[str]) -> Iterator[_Loaded]:
    """--ray: the files from ``files[start]``, decoded and run forward on Ray actors, in input order."""
    from ..distributed import RunForward

    options = {
        "provider": args.provider, "layer": args.layer, "weight_layers": _args.weight_layers(args.weight_layers),
        "input_name": args.input_name, "layout": args.layout, "k": args.k, "hierarchical": args.hierarchical,
        "n_sigma": args.n_sigma,
    }  # fmt: skip
    source = RunForward(
        pfv.model_path, files, preprocessing=prep, pfv_options=options, address=args.ray or None,
        batch_size=args.batch_size, actors=getattr(args, "actors", None), max_pixels=args.max_pixels, start=start,
    )  # fmt: skip
    try:
        if start < len(files):
            notes.append(f"decoding and forward passes on Ray ({source.actors} actors); decode_s and forward_s are summed over them")
        for r in source:
            timings["forward_s"] += r.forward_s
            yield _Loaded(r.index, files[r.index], error=r.error, seconds=r.seconds, hw=r.hw, notes=r.notes, part=r.part)
    finally:
        source.close()


# --------------------------------------------------------------------------- the command


def execute(args: argparse.Namespace, *, title: str = "pfv-onnx run") -> int:
    """Run PFV over ``args.inputs`` and write everything into ``args.outdir``; returns the exit code."""
    import concurrent.futures as cf
    import functools

    import numpy as np

    from .. import __version__
    from ..basis import load_for_run
    from ..errors import InputError
    from ..inputs import collect_images, crop_box
    from ..outputs import RowSpool, atomic_write_bytes, clean_stale_temp_files, sync_all, unique_names, write_json
    from ..render import encode_png, mosaic

    _quiet_opencv()
    t_start = time.perf_counter()
    timings = {"decode_s": 0.0, "forward_s": 0.0, "decompose_s": 0.0, "render_s": 0.0}
    found = collect_images(args.inputs)
    failures: list[dict[str, str]] = [{"file": f, "reason": r} for f, r in found.missing]
    skipped = [{"file": f, "reason": r} for f, r in found.skipped]
    files = found.files
    if not files:
        what = "; ".join(f"{x['file']}: {x['reason']}" for x in failures[:3]) or "nothing given"
        raise InputError(f"no image files found ({what})")

    pfv = _args.build_pfv(args)
    on_ray = getattr(args, "ray", None) is not None
    if on_ray:  # a missing extra is told before anything is written
        from ..distributed import import_ray

        import_ray()
    prep, prep_notes = _args.build_preprocessing(args, pfv)
    fitted, basis_notes = load_for_run(getattr(args, "basis", None), pfv, prep.to_dict(), args.k)
    labels, labels_source = _args.read_labels(args.labels, pfv)
    chunk = args.batch_size
    by_class = getattr(args, "group_by", None) == "class"
    if by_class and args.group_size:
        raise InputError("--group-by class and --group-size cannot be combined: a class group holds all its images")
    group_size = args.group_size or len(files)
    names = unique_names(files)

    outdir = Path(args.outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder {outdir}: {exc.strerror or exc}") from None
    clean_stale_temp_files(outdir, depth=2)  # and in the page's folders (report_files/thumbs, ...)

    report: dict[str, Any] = {
        "pfv_onnx_version": __version__,
        "command": title,
        "status": "running",
        "model": {
            "path": str(Path(args.model).resolve()),
            "sha256": getattr(pfv, "model_sha256", None),
            "input_name": getattr(pfv, "input_name", None),
            "input_layout": str(getattr(getattr(pfv, "input_layout", None), "value", getattr(pfv, "input_layout", None))),
            "input_size": list(getattr(pfv, "input_size", None) or []),
            "fixed_batch": getattr(pfv, "fixed_batch", None),
            "provider": getattr(pfv, "provider", None),
            "output_names": list(getattr(pfv, "output_names", None) or []),
            "labels": {"source": labels_source, "count": len(labels) if labels else 0},
        },
        "feature_maps": [],
        "pfv": {
            "k": args.k,
            "hierarchical": bool(args.hierarchical),
            "n_sigma": args.n_sigma,
            "layer": args.layer,
            "weight_layers": _args.weight_layers(args.weight_layers),
            "batch_size": chunk,
            "group_size": args.group_size,
            "basis": getattr(args, "basis", None),
            "group_by": getattr(args, "group_by", None),
            "groups": 0,
        },
        "preprocessing": {**prep.to_dict(), "notes": prep_notes, "max_pixels": args.max_pixels},
        "groups": [],
        "images": [],
        "failures": failures,
        "skipped": skipped,
        "outputs": {"report": REPORT},
        "timings": timings,
        "notes": list(basis_notes),
    }
    from . import _progress

    run_fp = _progress.fingerprint(
        report, files,
        {"alpha": args.alpha, "labels": labels, "basis_sha256": _progress.file_digest(getattr(args, "basis", None)),
         "html": not getattr(args, "no_html", False), "overlay_format": getattr(args, "overlay_format", "auto")},
    )  # fmt: skip
    progress = _progress.Progress(outdir, run_fp, overwrite=bool(getattr(args, "overwrite", False)))
    report["resume"] = {"fingerprint": run_fp, "groups_reused": 0}
    earlier = progress.completed(REPORT)
    if earlier is not None:  # the same run is already complete in outdir: nothing to redo
        progress.finish()  # saved groups of a run killed after its last write
        if not args.quiet:
            print(f"all {len(earlier.get('images') or [])} images already done in {outdir}{os.sep} (--overwrite redoes them)", file=sys.stderr)
        return 1 if earlier.get("failures") else 0

    report["warnings"] = _preamble.preamble(args, pfv, title, len(files))
    report["provenance"] = provenance(files)
    from tqdm import tqdm

    bar = tqdm(total=len(files), unit="img", file=sys.stderr, disable=args.quiet, desc="pfv", dynamic_ncols=True)
    workers = max(1, min(4, os.cpu_count() or 1))
    spool = RowSpool(outdir)  # rgb, components and model outputs of finished groups, on disk
    pred_classes: int | None = None
    group_rows: list[int] = []
    file_rows: list[str] = []
    eigen_rows: list[np.ndarray] = []
    evr_rows: list[np.ndarray] = []
    tiles: list[tuple[np.ndarray, np.ndarray, dict[str, Any] | None, str, int]] = []
    feature_maps: list[str] | None = None
    row = 0
    pred_output: str | None = None
    restored = progress.restore()
    for saved in restored:  # complete groups of an interrupted run with the same arguments
        for key, val in saved.arrays.items():
            spool.append(key, val)
        failures.extend(saved.failures)
        if feature_maps is None:
            feature_maps, report["feature_maps"] = list(saved.feature_maps), list(saved.map_records)
        if saved.pred_output is not None:
            pred_output = saved.pred_output
            if pred_classes is None and f"output/{pred_output}" in saved.arrays:
                pred_classes = int(np.prod(saved.arrays[f"output/{pred_output}"].shape[1:]))
        tiles.extend(saved.tiles[: max(0, MOSAIC_MAX - len(tiles))])
        group_rows.extend([saved.index] * len(saved.files))
        file_rows.extend(saved.files)
        eigen_rows.append(np.asarray(saved.eigenvalues, dtype=np.float64))
        evr_rows.append(np.asarray(saved.explained_variance_ratio, dtype=np.float64))
        row += len(saved.files)
        report["images"].extend(saved.images)
        report["groups"].append(saved.group)
        bar.update(saved.end - (restored[saved.index - 1].end if saved.index else 0))
    report["resume"]["groups_reused"] = len(restored)
    consumed_end = restored[-1].end if restored else 0

    with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pfv-io") as pool:
        if on_ray:
            loader = _ray_loader(args, pfv, prep, files, consumed_end, timings, report["notes"])
            forward: Any = _gathered
        else:
            loader = _prefetch(pool, files, prep, args.max_pixels, window=max(2 * chunk, 2 * workers), start=consumed_end)
            forward = functools.partial(_forward, pfv, prep.layout)
        try:
            g = len(restored) - 1
            exhausted = False
            queued: list[tuple[list[_Loaded], list[Any], dict[str, Any] | None]] = []  # --group-by class: groups to do
            while not exhausted or queued:
                group_start, failures_mark, tiles_mark = consumed_end, len(failures), len(tiles)
                ok: list[_Loaded] = []
                passes = []
                pending: list[_Loaded] = []
                cached = 0
                while not queued and len(ok) < group_size:  # a group is the next group_size images that decode
                    item = next(loader, None)
                    if item is None:
                        exhausted = True
                        break
                    consumed_end = item.index + 1
                    timings["decode_s"] += item.seconds
                    if item.error is not None:
                        failures.append({"file": str(item.path), "reason": item.error})
                        bar.update(1)
                        continue
                    cached += item.image.bgr.nbytes if item.image is not None else 0  # --ray: decoded again when rendering
                    if cached > CACHE_BYTES:
                        item.image = None  # decoded again when rendering
                    ok.append(item)
                    pending.append(item)
                    if len(pending) == chunk or len(ok) == group_size:
                        t0 = time.perf_counter()
                        passes.append(forward(pending))
                        timings["forward_s"] += time.perf_counter() - t0
                        bar.update(len(pending))
                        pending = []
                if pending:
                    t0 = time.perf_counter()
                    passes.append(forward(pending))
                    timings["forward_s"] += time.perf_counter() - t0
                    bar.update(len(pending))
                    pending = []
                if by_class and ok:
                    queued = split_by_class(ok, passes, labels, getattr(pfv, "output_names", None))
                    _preamble.class_groups(report, [len(q[0]) for q in queued], args.quiet)
                group_class = None
                if queued:
                    ok, passes, group_class = queued.pop(0)
                if not ok:
                    break
                g += 1

                t0 = time.perf_counter()
                res = pfv.decompose(passes, basis=fitted)
                timings["decompose_s"] += time.perf_counter() - t0
                del passes
                if feature_maps is None:
                    feature_maps = list(res.feature_maps)
                    report["feature_maps"] = [_map_record(m) for m in (res.maps or [])] or [{"name": n} for n in feature_maps]
                preds, pred_output = predictions(res.outputs, len(ok), labels, getattr(pfv, "output_names", None))

                t0 = time.perf_counter()
                bar.set_postfix_str(f"writing group {g + 1}")
                futures = []
                for j, item in enumerate(ok):
                    want = len(tiles) + j < MOSAIC_MAX
                    futures.append(
                        pool.submit(
                            _render_one, outdir, names[item.index], np.asarray(res.rgb[j]), item.image,
                            item.path, prep, args.alpha, args.max_pixels, want, not getattr(args, "no_html", False),
                            getattr(args, "overlay_format", "auto"),
                        )
                    )  # fmt: skip
                # while the pictures are drawn: the group's arrays go to the spool
                spool.append("rgb", np.asarray(res.rgb, dtype=np.float32))
                spool.append("components", np.asarray(res.components, dtype=np.float32))
                for key, val in res.outputs.items():
                    spool.append(f"output/{key}", np.asarray(val))
                group_images = []
                for j, (item, fut) in enumerate(zip(ok, futures)):
                    try:
                        written, tile = fut.result()
                    except InputError as exc:  # the file changed or vanished since it was read
                        failures.append({"file": str(item.path), "reason": _one_line(str(exc))})
                        continue
                    img_h, img_w = item.hw
                    rec = _ImageRecord(
                        file=str(item.path),
                        name=names[item.index],
                        group=g,
                        row=row + j,
                        size=(img_h, img_w),
                        crop_box=crop_box(img_w, img_h, prep),
                        notes=item.notes,
                        prediction=preds[j],
                        outputs=written,
                    )
                    group_images.append(rec.to_dict())
                    if tile is not None and len(tiles) < MOSAIC_MAX:
                        tiles.append((tile[0], tile[1], preds[j], rec.name, g))
                    item.image = None
                timings["render_s"] += time.perf_counter() - t0
                bar.set_postfix_str("")

                if pred_output is not None and pred_classes is None:
                    pred_classes = int(np.prod(np.shape(res.outputs[pred_output])[1:]))
                group_rows.extend([g] * len(ok))
                file_rows.extend(str(it.path) for it in ok)
                eigen_rows.append(np.asarray(res.eigenvalues, dtype=np.float64))
                evr_rows.append(np.asarray(res.explained_variance_ratio, dtype=np.float64))
                row += len(ok)
                report["images"].extend(group_images)
                report["groups"].append(
                    {
                        "index": g,
                        "images": len(ok),
                        "eigenvalues": res.eigenvalues,
                        "explained_variance_ratio": res.explained_variance_ratio,
                        **({"class": group_class} if group_class is not None else {}),
                    }
                )
                last = consumed_end >= len(files) and not queued
                if not last:  # the last group needs no saving: the final files follow
                    progress.save(
                        _progress.SavedGroup(
                            index=g, end=consumed_end, images=group_images, failures=failures[failures_mark:],
                            group=report["groups"][-1], files=[str(it.path) for it in ok],
                            arrays={"rgb": np.asarray(res.rgb, dtype=np.float32), "components": np.asarray(res.components, dtype=np.float32),
                                    **{f"output/{k}": np.asarray(v) for k, v in res.outputs.items()}},
                            eigenvalues=np.asarray(res.eigenvalues, dtype=np.float64),
                            explained_variance_ratio=np.asarray(res.explained_variance_ratio, dtype=np.float64),
                            tiles=tiles[tiles_mark:], feature_maps=list(feature_maps or []),
                            map_records=list(report["feature_maps"]), pred_output=pred_output,
                        ),
                        start=group_start,
                    )  # fmt: skip
                timings["total_s"] = time.perf_counter() - t_start
                if not last:
                    write_json(outdir / REPORT, report)  # progress so far, replaced at the end
        except BaseException:
            spool.close()
            raise
        finally:
            bar.close()
            loader.close()

    try:
        if row:
            small = {
                "eigenvalues": np.stack(eigen_rows),
                "explained_variance_ratio": np.stack(evr_rows),
                "feature_maps": np.asarray(feature_maps or [], dtype=str),
                "files": np.asarray(file_rows, dtype=str),
                "group": np.asarray(group_rows, dtype=np.int32),
            }
            outputs_keys = [k for k in spool.keys() if k.startswith("output/")]
            order = ["rgb", "components", *small, *outputs_keys]
            spool.write(outdir / NPZ, small, order)
            report["outputs"]["npz"] = NPZ
    finally:
        spool.close()
    if tiles:
        several = len(report["groups"]) > 1
        captions = [_caption(t[2], t[3], t[4] if several else None) for t in tiles]
        pic = mosaic([t[0] for t in tiles], [t[1] for t in tiles], captions, tile=MOSAIC_TILE, key=report["pfv"]["k"])
        atomic_write_bytes(outdir / MOSAIC, encode_png(pic))
        report["outputs"]["mosaic"] = MOSAIC
        report["outputs"]["mosaic_images"] = len(tiles)
        if row > len(tiles):
            report["notes"].append(f"mosaic.png shows the first {len(tiles)} of {row} images")
    if pred_output is not None:
        report["outputs"]["prediction_from"] = pred_output
    if labels and pred_classes is not None and len(labels) not in (pred_classes, pred_classes - 1):
        report["notes"].append(f"{len(labels)} labels for {pred_classes} classes: labels not used")
    report["pfv"]["groups"] = len(report["groups"])
    report["status"] = "complete"
    if not getattr(args, "no_html", False):
        report["outputs"]["html"] = REPORT_HTML
    sync_all(outdir)  # the pictures, written unsynced, reach the disk before the report calls the run complete
    timings["total_s"] = time.perf_counter() - t_start
    write_json(outdir / REPORT, report)
    if not getattr(args, "no_html", False):
        from ..html_report import write_report

        write_report(outdir)
    progress.finish()

    if not args.quiet:
        done = row
        ng = len(report["groups"])
        print(
            f"{done} image{'s' if done != 1 else ''} explained in {ng} group{'s' if ng != 1 else ''}, "
            f"{len(failures)} failed; results in {outdir}{os.sep}"
            + ("" if getattr(args, "no_html", False) else f"; open {outdir / REPORT_HTML} in a browser"),
            file=sys.stderr,
        )
        for f in failures:
            print(f"  failed: {f['file']}: {f['reason']}", file=sys.stderr)
    return 1 if failures else 0


def _map_record(m: Any) -> dict[str, Any]:
    return {
        "name": m.name,
        "op": getattr(m, "op", None),
        "shape": list(getattr(m, "shape", []) or []),
        "layout": str(getattr(getattr(m, "layout", None), "value", getattr(m, "layout", None))),
        "role": str(getattr(getattr(m, "role", None), "value", getattr(m, "role", None))),
        "reason": getattr(m, "reason", ""),
    }


def split_by_class(loaded: list[Any], passes: list[Any], labels: Sequence[str] | None, order: Sequence[str] | None) -> list[tuple[list[Any], list[Any], dict[str, Any]]]:
    """``--group-by class``: the images and their forward passes split by predicted class.

    The class is the argmax of the model's first output shaped (N, classes) (see
    :func:`predictions`). Returns ``(images, passes, {"class", "label"})`` per class, the
    largest class first (ties: the lower class index); images keep their order.
    """
    import numpy as np

    from ..errors import InputError
    from ..pipeline import ForwardPass
    from ..xp import array_module

    outputs = {name: np.concatenate([p.outputs[name] for p in passes]) for name in passes[0].outputs}
    preds, _ = predictions(outputs, len(loaded), labels, order)
    if any(p is None for p in preds):
        raise InputError("--group-by class needs a model output of finite class scores shaped (N, classes); this model has none")
    classes = np.array([int(p["class"]) for p in preds])  # type: ignore[index]
    starts = np.cumsum([0] + [p.n for p in passes])
    found, counts = np.unique(classes, return_counts=True)
    groups = []
    for c in found[np.argsort(-counts, kind="stable")]:
        rows = np.flatnonzero(classes == c)
        sliced = []
        for p, s0, s1 in zip(passes, starts[:-1], starts[1:]):
            local = rows[(rows >= s0) & (rows < s1)] - s0
            if local.size == 0:
                continue
            xp = array_module(p.decomposed)
            idx = xp.asarray(local)
            sliced.append(
                ForwardPass(
                    decomposed=p.decomposed[idx],
                    weights=[w[array_module(w).asarray(local)] for w in p.weights],
                    outputs={k: v[local] for k, v in p.outputs.items()},
                    input_hw=p.input_hw,
                )
            )
        label = preds[int(rows[0])].get("label")  # type: ignore[union-attr]
        groups.append(([loaded[i] for i in rows], sliced, {"class": int(c), "label": label}))
    return groups

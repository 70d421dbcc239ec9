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
from pathlib import Path
from typing import Any

from ..predictions import predictions
from ..provenance import provenance
from ..runplan.outdir import MOSAIC, NPZ, REPORT, REPORT_HTML
from ..runplan.writer import NPZ_PRECISIONS
from . import _args, _preamble

__all__ = ["MOSAIC", "NPZ", "REPORT", "REPORT_HTML", "add_arguments", "execute", "predictions", "run"]

OVERLAY_FORMATS = ("auto", "png", "jpg")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _args.add_model_options(parser)
    _args.add_input_options(parser)
    _args.add_output_options(parser)
    _args.add_pfv_options(parser)
    _args.add_preprocessing_options(parser)
    _args.add_runtime_options(parser)
    groups = parser.add_argument_group("groups and resuming")
    files = parser.add_argument_group("files written")
    ray = parser.add_argument_group("Ray (pip install 'pfv-onnx[ray]')")
    groups.add_argument("--basis", metavar="BASIS.npz", help="project onto a basis from 'pfv-onnx fit': the same colours in every group and run")
    groups.add_argument(
        "--overwrite",
        action="store_true",
        help="redo every image; by default a run started again with the same arguments keeps the groups "
        "an interrupted run in OUTDIR finished, and finds a complete one done",
    )
    groups.add_argument(
        "--group-by",
        choices=("class",),
        help="class: one decomposition per predicted class (argmax of the model's first class-score output), "
        "so colours contrast the features within a class",
    )
    files.add_argument("--no-html", action="store_true", help=f"do not write the page OUTDIR/{REPORT_HTML}")
    files.add_argument(
        "--overlay-format",
        choices=OVERLAY_FORMATS,
        default="auto",
        help="file format of the overlays (NAME.overlay.*). auto (default): JPEG (quality 85, full colour "
        "resolution) for JPEG images, whose pixels are lossy already, PNG for the rest. The maps (NAME.pfv.png) are always PNG",
    )
    ray.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="decode and run the forward passes on Ray: the cluster at ADDRESS ('auto', 'ray://host:10001'), "
        "else RAY_ADDRESS or a new local one (pip install 'pfv-onnx[ray]'; the model and images at the same paths on every node)",
    )
    ray.add_argument("--actors", type=_args.positive_int, metavar="N", help="Ray actors (default: one per GPU, else per CPU)")
    files.add_argument(
        "--npz-precision",
        choices=NPZ_PRECISIONS,
        default="uint8",
        help="the rgb maps in pfv.npz: uint8 (default; value/255, as in the NAME.pfv.png maps, compressed) or full "
        "(float32, four times larger); components, eigenvalues and model outputs are always full precision",
    )


def run(args: argparse.Namespace) -> int:
    return execute(args)


def execute(args: argparse.Namespace, *, title: str = "pfv-onnx run") -> int:
    """Run PFV over ``args.inputs`` and write everything into ``args.outdir``; returns the exit code."""
    from .. import __version__, runplan
    from ..basis import load_for_run
    from ..errors import InputError
    from ..inputs import collect_images
    from ..runplan import outdir as out_files
    from ..runplan.progress import file_digest, fingerprint

    outdir = Path(args.outdir)
    found = collect_images(args.inputs, exclude=out_files.excluded_from_inputs(outdir))
    failures: list[dict[str, str]] = [{"file": f, "reason": r} for f, r in found.missing]
    files = found.files
    if not files:
        what = "; ".join(f"{x['file']}: {x['reason']}" for x in failures[:3]) or "nothing given"
        raise InputError(f"no image files found ({what})")
    by_class = getattr(args, "group_by", None) == "class"
    if by_class and args.group_size:
        raise InputError("--group-by class and --group-size cannot be combined: a class group holds all its images")
    out_files.check_writable(outdir)  # before any work

    pfv = _args.build_pfv(args)
    on_ray = getattr(args, "ray", None) is not None
    if on_ray:  # a missing extra is told before anything is written
        from ..distributed import import_ray

        import_ray()
    prep, prep_notes = _args.build_preprocessing(args, pfv)
    fitted, basis_notes = load_for_run(getattr(args, "basis", None), pfv, prep.to_dict(), args.k)
    runplan.check_basis_size(fitted, prep.size)  # before any work
    labels, labels_source = _args.read_labels(args.labels, pfv)
    npz_precision = getattr(args, "npz_precision", "uint8")
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
            "batch_size": args.batch_size,
            "group_size": args.group_size,
            "basis": getattr(args, "basis", None),
            "group_by": getattr(args, "group_by", None),
            "groups": 0,
        },
        "preprocessing": {**prep.to_dict(), "notes": prep_notes, "max_pixels": args.max_pixels},
        "groups": [],
        "images": [],
        "failures": failures,
        "skipped": [{"file": f, "reason": r} for f, r in found.skipped],
        "outputs": {"report": REPORT, "npz_precision": npz_precision},
        "timings": {"decode_s": 0.0, "forward_s": 0.0, "decompose_s": 0.0, "render_s": 0.0},
        "notes": list(basis_notes),
    }
    run_fp = fingerprint(
        report, files,
        {"alpha": args.alpha, "labels": labels, "basis_sha256": file_digest(getattr(args, "basis", None)),
         "html": not getattr(args, "no_html", False), "overlay_format": getattr(args, "overlay_format", "auto"),
         "npz_precision": npz_precision},
    )  # fmt: skip
    ray_options = None
    if on_ray:
        ray_options = {
            "address": args.ray or None, "batch_size": args.batch_size, "actors": getattr(args, "actors", None), "max_pixels": args.max_pixels,
            "pfv": {
                "provider": args.provider, "layer": args.layer, "weight_layers": _args.weight_layers(args.weight_layers),
                "input_name": args.input_name, "layout": args.layout, "k": args.k, "hierarchical": args.hierarchical, "n_sigma": args.n_sigma,
            },
        }  # fmt: skip
    job = runplan.RunJob(
        pfv=pfv, files=files, prep=prep, outdir=outdir, report=report, fingerprint=run_fp, batch_size=args.batch_size,
        group_size=args.group_size, by_class=by_class, basis=fitted, labels=labels, alpha=args.alpha,
        overlay_format=getattr(args, "overlay_format", "auto"), html=not getattr(args, "no_html", False), max_pixels=args.max_pixels,
        npz_precision=npz_precision, overwrite=bool(getattr(args, "overwrite", False)), ray=ray_options, show_progress=not args.quiet,
        on_start=lambda: _start(args, pfv, title, files, prep.size, report),
        on_class_plan=lambda sizes: _preamble.class_groups(report, sizes, args.quiet),
    )  # fmt: skip
    summary = runplan.execute(job)
    done = summary.report
    if summary.already_done:
        if not args.quiet:
            print(f"all {len(done.get('images') or [])} images already done in {outdir}{os.sep} (--overwrite redoes them)", file=sys.stderr)
        return 1 if done.get("failures") else 0
    if not args.quiet:
        n, ng = len(done["images"]), len(done["groups"])
        print(
            f"{n} image{'s' if n != 1 else ''} explained in {ng} group{'s' if ng != 1 else ''}, "
            f"{len(done['failures'])} failed; results in {outdir}{os.sep}"
            + ("" if getattr(args, "no_html", False) else f"; open {outdir / REPORT_HTML} in a browser"),
            file=sys.stderr,
        )
        for f in done["failures"]:
            print(f"  failed: {f['file']}: {f['reason']}", file=sys.stderr)
    return 1 if done["failures"] else 0


def _start(args: argparse.Namespace, pfv: Any, title: str, files: list[Path], size: tuple[int, int], report: dict[str, Any]) -> None:
    """Once the run is known not to be done already: the preamble and its warnings, the
    analysis's own warnings, and the provenance of the inputs."""
    warnings = _preamble.preamble(args, pfv, title, len(files))
    found = [w for w in getattr(pfv.analysis(size), "warnings", []) if w not in warnings]
    _preamble.say(found, args.quiet, warning=True)
    report["warnings"] = [*warnings, *found]
    report["provenance"] = provenance(files)

"""Compare what two models look at: a reference and a converted, quantised or fine-tuned copy.

Both models explain the same images, each with its own preprocessing (from its metadata and
the options; --candidate-* options override the candidate's). The candidate's PFV is put
into the reference's colour space: projected onto the reference's principal basis when the
channels are the same (decided from their correlations over the images), else rotated onto
it by orthogonal Procrustes. Per image, drift = 1 - the Pearson correlation of the two
component maps; over the set, linear CKA of the two decomposed maps. Writes compare.json,
a picture per image (image | reference | candidate | difference), compare_mosaic.png (the
most-changed images) and compare.html.

With --basis (fitted on the reference by `pfv-onnx fit`), the reference's colour space is the
fitted basis and the images stream through in chunks, so memory does not grow with their
number (same-channel copies only; one machine, no Ray).

Exit codes: 0 done (and under --fail-over); 1 some inputs failed (the others compared);
2 usage or model error; 3 the compared drift exceeds --fail-over.
"""

from __future__ import annotations

import argparse
import copy
import sys
import warnings
from pathlib import Path
from collections.abc import Iterator
from typing import Any

from . import _args

REPORT = "compare.json"
MOSAIC = "compare_mosaic.png"
PAGE = "compare.html"
PICTURES = "compare_images"
EXIT_DRIFT = 3
THUMB_WIDTH = 720  # px of the side-by-side pictures embedded in the page
PAGE_PICTURES = 200  # the most-changed images get a picture in the page; the rest a row


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("reference", metavar="REFERENCE", help="the reference ONNX model (the one that was checked)")
    parser.add_argument("candidate", metavar="CANDIDATE", help="the ONNX model compared with it (converted, quantised, fine-tuned, ...)")
    _args.add_input_options(parser)
    _args.add_model_options(parser, positional=False)
    _args.add_output_options(parser)
    _args.add_pfv_options(parser)
    _args.add_preprocessing_options(parser)
    _args.add_runtime_options(parser)
    c = parser.add_argument_group("candidate", "Where the candidate differs from the reference (default: as the reference's options, its own metadata)")
    c.add_argument("--candidate-layer", metavar="NAME", help="the candidate's tensor to decompose")
    c.add_argument("--candidate-weight-layers", metavar="NAMES", action="append", help="the candidate's weighting tensors ('none' for none)")
    c.add_argument("--candidate-input-name", metavar="NAME", help="the candidate's image input")
    c.add_argument("--candidate-preset", choices=_args.PRESET_NAMES, help="the candidate's preprocessing preset")
    c.add_argument("--candidate-mean", type=_args.float_list, metavar="M[,M,M]", help="the candidate's per-channel mean")
    c.add_argument("--candidate-std", type=_args.float_list, metavar="S[,S,S]", help="the candidate's per-channel std")
    order = c.add_mutually_exclusive_group()
    order.add_argument("--candidate-bgr", dest="candidate_color_order", action="store_const", const="BGR", help="feed the candidate B, G, R")
    order.add_argument("--candidate-rgb", dest="candidate_color_order", action="store_const", const="RGB", help="feed the candidate R, G, B")
    c.add_argument(
        "--candidate-pixel-range", type=lambda t: float(t) if t in ("1", "255") else t, choices=(1.0, 255.0), metavar="{1,255}",
        help="the candidate's pixel range",
    )
    c.add_argument("--candidate-size", type=_args.size_hw, metavar="N|HxW", help="the candidate's input size")
    c.add_argument("--candidate-resize", choices=("stretch", "crop"), help="the candidate's resize mode")
    g = parser.add_argument_group("comparison")
    g.add_argument(
        "--channels", choices=("auto", "same", "procrustes"), default="auto",
        help="auto (default): projection onto the reference's basis when the channels correlate one to one, else Procrustes",
    )
    g.add_argument("--fail-over", type=_args.unit_float, metavar="D", help=f"exit {EXIT_DRIFT} when the compared drift exceeds D (a gate for CI)")
    g.add_argument("--fail-quantile", type=_args.unit_float, metavar="Q", help="compare this quantile of the drifts (0..1) instead of the largest")
    g.add_argument(
        "--basis", metavar="BASIS.npz",
        help="the reference's colour space from a basis fitted on it ('pfv-onnx fit'): the images stream in chunks of "
        "--group-size (default --batch-size), so memory does not grow with their number; same-channel copies only; no Ray",
    )
    g.add_argument("--mosaic-count", type=_args.positive_int, default=8, metavar="N", help="images in the mosaic of the most changed (default 8)")


_CANDIDATE_FIELDS = ("layer", "weight_layers", "input_name", "preset", "mean", "std", "color_order", "pixel_range", "size", "resize")


def candidate_args(args: argparse.Namespace) -> argparse.Namespace:
    """The options as they apply to the candidate: the reference's, with each --candidate-* given instead."""
    out = copy.copy(args)
    for name in _CANDIDATE_FIELDS:
        value = getattr(args, f"candidate_{name}", None)
        if value is not None:
            setattr(out, name, value)
    return out


def run(args: argparse.Namespace) -> int:

    from .. import __version__, compare, compare_report
    from ..errors import InputError, PfvError
    from ..inputs import collect_images, crop_box, decode_image, preprocess, stack_batch
    from ..outputs import atomic_write_bytes, atomic_write_text, unique_names, write_json
    import cv2

    from ..render import encode_jpeg, encode_png

    if args.fail_quantile is not None and args.fail_over is None:
        raise InputError("--fail-quantile needs --fail-over D")
    if getattr(args, "group_size", None) and not args.basis:
        raise InputError("compare decomposes all the images at once; leave --group-size out (--batch-size sets the forward passes), or give --basis to stream")
    found = collect_images(args.inputs)
    failures = [{"file": f, "reason": r} for f, r in found.missing]
    if not found.files:
        what = "; ".join(f"{x['file']}: {x['reason']}" for x in failures[:3]) or "nothing given"
        raise InputError(f"no image files found ({what})")
    cargs = candidate_args(args)
    ref = _args.build_pfv(args, args.reference)
    cand = _args.build_pfv(cargs, args.candidate)
    config_r, config_c = _args.resolve(args, ref), _args.resolve(cargs, cand)
    prep_r, prep_c = config_r.preprocessing, config_c.preprocessing
    streamed = None
    if args.basis:
        from ..basis import load
        from ..compare_stream import StreamedComparison
        from ..runplan import check_basis_size

        fitted = load(args.basis, ref)  # refuses a basis of another model or other maps
        check_basis_size(fitted, prep_r.size)
        streamed = StreamedComparison(ref, cand, fitted, channels=args.channels)

    def decoded(files: list[Any]) -> tuple[list[Any], list[Any], list[Any]]:
        images, tensors_r, tensors_c = [], [], []
        for path in files:
            try:
                img = decode_image(path, max_pixels=args.max_pixels)
                tensors_r.append(preprocess(img.bgr, prep_r))
                tensors_c.append(preprocess(img.bgr, prep_c))
                images.append(img)
            except PfvError as exc:
                failures.append({"file": str(path), "reason": " ".join(str(exc).split())})
        return images, tensors_r, tensors_c

    def chunks() -> Iterator[tuple[list[Any], Any]]:
        """(images, their comparison) per chunk: all at once, or streamed with --basis."""
        if streamed is None:
            images, tensors_r, tensors_c = decoded(list(found.files))
            if images:
                yield images, compare.compare(
                    ref, cand, stack_batch(tensors_r, prep_r.layout), stack_batch(tensors_c, prep_c.layout),
                    batch_size=args.batch_size, channels=args.channels,
                )
            return
        step = args.group_size or args.batch_size
        for i in range(0, len(found.files), step):
            images, tensors_r, tensors_c = decoded(list(found.files[i : i + step]))
            if images:
                yield images, streamed.add(stack_batch(tensors_r, prep_r.layout), stack_batch(tensors_c, prep_c.layout), batch_size=args.batch_size)

    outdir = Path(args.outdir)
    try:
        (outdir / PICTURES).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder {outdir}: {exc.strerror or exc}") from None
    labels_r, labels_c = config_r.labels, config_c.labels or config_r.labels
    all_names = unique_names(list(found.files))
    name_of = {str(f): n for f, n in zip(found.files, all_names)}
    rows: list[dict[str, Any]] = []
    # the most changed only, so memory does not grow with the images: (drift, index, picture) for the
    # mosaic, (drift, index, JPEG thumbnail) for the page
    mosaic: list[tuple[float, int, Any]] = []
    thumbs: list[tuple[float, int, bytes]] = []
    result = None
    with warnings.catch_warnings(record=True) as caught:  # the self-check's findings: one line each, and in compare.json
        warnings.simplefilter("always", RuntimeWarning)
        for images, part in chunks():
            result = part
            for j, img in enumerate(images):
                name = name_of[str(img.path)]
                top_r, top_c = part.top1_reference[j], part.top1_candidate[j]
                classes = streamed.classes if streamed is not None else part.classes
                lab_r, lab_c = _label(labels_r, top_r, classes[0]), _label(labels_c, top_c, classes[1])
                drift = float(part.drift[j])
                caption = f"{name}  drift {drift:.3f}  reference: {lab_r or top_r}  candidate: {lab_c or top_c}"
                pic = compare_report.side_by_side(
                    img.bgr, part.reference_rgb[j], part.candidate_rgb[j],
                    crop_box(img.width, img.height, prep_r), crop_box(img.width, img.height, prep_c), caption,
                )
                rel = f"{PICTURES}/{name}.compare.png"
                atomic_write_bytes(outdir / rel, encode_png(pic), durable=False)
                mosaic.append((drift, len(rows), pic))
                small = cv2.resize(pic, (THUMB_WIDTH, round(pic.shape[0] * THUMB_WIDTH / pic.shape[1])), interpolation=cv2.INTER_AREA)
                thumbs.append((drift, len(rows), encode_jpeg(small, quality=85)))
                rows.append({
                    "name": name, "file": str(img.path), "drift": drift, "top1_reference": top_r, "top1_candidate": top_c,
                    "label_reference": lab_r, "label_candidate": lab_c, "picture": rel,
                })
            mosaic = sorted(mosaic, key=lambda t: (-t[0], t[1]))[: args.mosaic_count]
            thumbs = sorted(thumbs, key=lambda t: (-t[0], t[1]))[:PAGE_PICTURES]
            del images, part
        if streamed is not None and rows:
            result = streamed.finish()
    if result is None:
        raise InputError(f"none of the {len(found.files)} images could be read ({failures[0]['file']}: {failures[0]['reason']})")
    notes = list(dict.fromkeys(" ".join(str(w.message).split()) for w in caught))
    for note in notes:
        print(f"pfv-onnx compare: warning: {note}", file=sys.stderr)
    atomic_write_bytes(outdir / MOSAIC, encode_png(compare_report.stack([pic for _, _, pic in mosaic])), durable=False)

    summary = result.summary()
    summary["warnings"] = notes
    exit_code = 1 if failures else 0
    if streamed is not None:
        summary["basis"] = {"path": str(Path(args.basis).resolve()), "n_images": streamed.fitted.n_images, "streamed_in": args.group_size or args.batch_size}
    if args.fail_over is not None:
        compared = result.compared_drift(args.fail_quantile)
        failed = compared > args.fail_over
        what = "largest drift" if args.fail_quantile is None else f"drift quantile {args.fail_quantile:g}"
        summary["gate"] = {
            "fail_over": args.fail_over, "quantile": args.fail_quantile, "compared_drift": compared, "failed": failed,
            "verdict": f"{what} {compared:.4f} {'exceeds' if failed else 'is within'} --fail-over {args.fail_over:g}",
        }
        if failed:
            exit_code = EXIT_DRIFT
    summary["preprocessing"] = {"reference": config_r.to_dict(), "candidate": config_c.to_dict()}
    summary["models"] = {
        "reference": {"path": str(Path(args.reference).resolve()), "sha256": ref.model_sha256},
        "candidate": {"path": str(Path(args.candidate).resolve()), "sha256": cand.model_sha256},
    }
    write_json(outdir / REPORT, {"pfv_onnx_version": __version__, "images": rows, "failures": failures, "summary": summary})
    atomic_write_text(outdir / PAGE, compare_report.page(summary, rows, {rows[j]["name"]: jpeg for _, j, jpeg in thumbs}, f"{Path(args.reference).name} vs {Path(args.candidate).name}"))
    if not args.quiet:
        _print_summary(summary, outdir, len(failures))
    return exit_code


def _label(labels: Any, c: int | None, classes: int | None) -> str | None:
    from ..predictions import label_for

    return None if c is None or classes is None else label_for(labels, c, classes)


def _print_summary(summary: dict[str, Any], outdir: Path, failed: int) -> None:
    def num(v: Any) -> str:
        return "n/a" if v is None else f"{float(v):.4f}"

    lines = [
        f"compared {summary['images']} images ({summary['channels']} channels: {summary['channel_evidence']['reason']})",
        f"drift mean {num(summary['drift_mean'])}, max {num(summary['drift_max'])}; top-1 agreement {num(summary['top1_agreement'])}; CKA {num(summary['cka'])}",
    ]
    if "gate" in summary:
        lines.append(summary["gate"]["verdict"])
    if failed:
        lines.append(f"{failed} input(s) failed: see {outdir / REPORT}")
    lines.append(f"results in {outdir}")
    print("\n".join(lines))

"""Model-randomisation sanity check: PFV of the model and of a copy with re-drawn weights.

Every Conv, Gemm and MatMul weight of a copy of MODEL is re-drawn (He-normal, --seed);
both models explain the same images with the same tensors. Writes trained.png,
randomised.png, the two side by side in sanity.png, the scores in sanity.json and both
sets of maps in sanity.npz (rgb_trained, rgb_randomised: N x H x W x k), and
prints how alike the two sets of maps are (Spearman correlation and SSIM of the map
magnitudes: 1 = the same, 0 = unrelated) and how much each set varies between images.
A trained network should give maps unlike its randomised twin's, and maps that follow
the image; maps that survive randomisation show the architecture, not what was learned
(Adebayo et al., Sanity Checks for Saliency Maps, 2018).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _args, _preamble

if TYPE_CHECKING:
    import numpy as np

SANITY_JSON = "sanity.json"
SANITY_NPZ = "sanity.npz"
TRAINED_PNG = "trained.png"
RANDOMISED_PNG = "randomised.png"
SIDE_BY_SIDE_PNG = "sanity.png"
RANDOMISED_MODEL = "randomised.onnx"
MOSAIC_MAX = 32  # images shown in the mosaics
TILE = 160
COLUMNS = 8  # tiles per row in trained.png and randomised.png
SIDE_COLUMNS = 4  # per half of sanity.png, so the two fit side by side


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _args.add_model_options(parser)
    _args.add_input_options(parser)
    _args.add_output_options(parser)
    g = parser.add_argument_group("randomisation")
    g.add_argument("--seed", type=int, default=0, help="seed of the re-drawn weights (default 0)")
    g.add_argument(
        "--biases",
        choices=("zero", "keep"),
        default="zero",
        help="Conv and Gemm biases: zero (as a fresh initialisation, default) or keep the trained ones",
    )
    g.add_argument("--save-model", action="store_true", help=f"also write the randomised model as OUTDIR/{RANDOMISED_MODEL}")
    _args.add_pfv_options(parser)
    _args.add_preprocessing_options(parser)
    _args.add_runtime_options(parser, batching=False)
    out = parser.add_argument_group("files written")
    out.add_argument("--no-html", action="store_true", help="do not write the page OUTDIR/report.html")
    g.add_argument(
        "--batch-size",
        type=_args.positive_int,
        help="images per forward pass (default: all at once); all images form one decomposition",
    )


def _side_by_side(left: np.ndarray, right: np.ndarray, titles: tuple[str, str]) -> np.ndarray:
    """Two mosaics next to each other under a title each, on white."""
    import cv2
    import numpy as np

    from ..render import fit_text

    head, gap = 28, 12
    h = max(left.shape[0], right.shape[0])
    canvas = np.full((h + head, left.shape[1] + gap + right.shape[1], 3), 255, np.uint8)
    for pic, x, title in ((left, 0, titles[0]), (right, left.shape[1] + gap, titles[1])):
        canvas[head : head + pic.shape[0], x : x + pic.shape[1]] = pic
        text, scale = fit_text(title, pic.shape[1] - 8, max_scale=0.6)
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.putText(canvas, text, (x + (pic.shape[1] - tw) // 2, (head + th) // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def _caption(pred: dict[str, Any] | None, name: str) -> str:
    """The top class under a map (its label's first name, else its index), or the file name."""
    if pred is None:
        return name
    if pred.get("label"):
        return str(pred["label"]).split(",")[0]
    return f"class {pred['class']}"




def run(args: argparse.Namespace) -> int:
    import numpy as np

    from .. import __version__, render
    from ..errors import InputError, PfvError
    from ..inputs import collect_images, crop_box, decode_image, preprocess, stack_batch
    from ..outputs import atomic_write_bytes, write_json, write_npz
    from ..provenance import provenance
    from ..sanity import sanity_check
    from ..similarity import require
    from .cmd_run import predictions

    require()  # scikit-image and SciPy (extra "sanity"): a one-line error before any work
    found = collect_images(args.inputs)
    failures: list[dict[str, str]] = [{"file": f, "reason": r} for f, r in found.missing]
    if not found.files:
        what = "; ".join(f"{x['file']}: {x['reason']}" for x in failures[:3]) or "nothing given"
        raise InputError(f"no image files found ({what})")

    pfv = _args.build_pfv(args)
    prep, prep_notes = _args.build_preprocessing(args, pfv)
    warnings = _preamble.preamble(args, pfv, "pfv-onnx sanity", len(found.files))
    labels, _ = _args.read_labels(args.labels, pfv)

    files: list[Path] = []
    tensors: list[np.ndarray] = []
    tiles: list[np.ndarray] = []
    for path in found.files:
        try:
            img = decode_image(path, max_pixels=args.max_pixels)
            tensors.append(preprocess(img.bgr, prep))
        except PfvError as exc:
            failures.append({"file": str(path), "reason": " ".join(str(exc).split())})
            continue
        files.append(path)
        if len(tiles) < MOSAIC_MAX:
            x0, y0, x1, y1 = crop_box(img.width, img.height, prep)
            tiles.append(img.bgr[y0:y1, x0:x1])
    if not files:
        raise InputError(f"none of the {len(found.files)} image files could be read (first: {failures[-1]['reason']})")

    outdir = Path(args.outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder {outdir}: {exc.strerror or exc}") from None

    batch = stack_batch(tensors, prep.layout)
    del tensors
    result = sanity_check(
        pfv,
        batch,
        seed=args.seed,
        biases=args.biases,
        batch_size=args.batch_size,
        save_randomised=outdir / RANDOMISED_MODEL if args.save_model else None,
    )

    n = len(files)
    order = getattr(pfv, "output_names", None)
    preds_t, _ = predictions(result.trained.outputs, n, labels, order)
    preds_r, _ = predictions(result.randomised.outputs, n, labels, order)
    shown = len(tiles)
    halves = {}
    for key, res, preds, target in (
        ("trained", result.trained, preds_t, TRAINED_PNG),
        ("randomised", result.randomised, preds_r, RANDOMISED_PNG),
    ):
        maps = [render.map_picture(res.rgb[i], tiles[i].shape[:2]) for i in range(shown)]
        captions = [_caption(preds[i], files[i].stem) for i in range(shown)]
        pic = render.mosaic(tiles, maps, captions, columns=COLUMNS, tile=TILE)
        atomic_write_bytes(outdir / target, render.encode_png(pic))
        halves[key] = render.mosaic(tiles, maps, captions, columns=SIDE_COLUMNS, tile=TILE)
    both = _side_by_side(halves["trained"], halves["randomised"], ("trained", f"randomised (seed {args.seed})"))
    atomic_write_bytes(outdir / SIDE_BY_SIDE_PNG, render.encode_png(both))

    write_npz(
        outdir / SANITY_NPZ,
        {
            "rgb_trained": result.trained.rgb,
            "rgb_randomised": result.randomised.rgb,
            "files": np.asarray([str(f) for f in files], dtype=str),
        },
    )
    scores = result.to_dict()
    record: dict[str, Any] = {
        "pfv_onnx_version": __version__,
        "command": "pfv-onnx sanity",
        "model": {"path": str(Path(args.model).resolve()), "sha256": getattr(pfv, "model_sha256", None)},
        **scores,
        "summary": result.summary(),
        "pfv": {"k": args.k, "hierarchical": bool(args.hierarchical), "n_sigma": args.n_sigma},
        "preprocessing": {**prep.to_dict(), "notes": prep_notes},
        "images_used": [
            {
                "file": str(f),
                "trained_prediction": preds_t[i],
                "randomised_prediction": preds_r[i],
                "ssim": scores["per_image"]["ssim"][i],
                "spearman": scores["per_image"]["spearman"][i],
            }
            for i, f in enumerate(files)
        ],
        "failures": failures,
        "warnings": warnings,
        "provenance": provenance(files),
        "outputs": {
            "trained": TRAINED_PNG,
            "randomised": RANDOMISED_PNG,
            "side_by_side": SIDE_BY_SIDE_PNG,
            "maps": SANITY_NPZ,
            "mosaic_images": shown,
            **({"randomised_model": RANDOMISED_MODEL} if args.save_model else {}),
        },
    }
    write_json(outdir / SANITY_JSON, record)
    if not getattr(args, "no_html", False):
        from ..html_report import write_report

        write_report(outdir)

    if not args.quiet:
        print(f"{n} image{'s' if n != 1 else ''}, {len(result.randomisation.weights)} weight tensors re-drawn (seed {args.seed})")
        for line in result.summary():
            print(line)
        print(f"mosaics: {outdir / SIDE_BY_SIDE_PNG} (trained left, randomised right); scores: {outdir / SANITY_JSON}")
        for f in failures:
            print(f"  failed: {f['file']}: {f['reason']}", file=sys.stderr)
    return 1 if failures else 0

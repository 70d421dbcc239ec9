"""Run PFV with a bundled model on bundled images of its own domain and say where the pictures are.

EfficientNet-Lite0 (the default) explains photographs, ppocr-cls lines of text (upright
and upside down), synthetic-shapes images of discs, squares and triangles.
"""

from __future__ import annotations

import argparse

from . import _args

DEFAULT_OUTDIR = "pfv-demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    own = parser.add_argument_group("demo")
    own.add_argument("-o", "--outdir", default=DEFAULT_OUTDIR, metavar="OUTDIR", help=f"folder for the results (default {DEFAULT_OUTDIR})")
    own.add_argument("--model", metavar="NAME", help="another bundled model by name (default: the default model)")
    _args.add_runtime_options(parser, batching=False)
    own.add_argument("--overwrite", action="store_true", help="redo every image; by default a finished demo in OUTDIR is found done")
    _args.add_quiet(own)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import DependencyError
    from . import cmd_run

    try:
        import pfv_onnx_models as bundled
    except ImportError:
        raise DependencyError(
            "the bundled models (package pfv_onnx_models) are not installed; reinstall pfv-onnx with pip"
        ) from None
    from ..errors import InputError

    try:
        model = bundled.model_path(args.model) if args.model else bundled.model_path()
    except KeyError:
        raise InputError(f"unknown bundled model {args.model!r}; choose one of {', '.join(sorted(bundled.MODELS))}") from None
    except FileNotFoundError as exc:
        raise DependencyError(f"{exc}; reinstall pfv-onnx") from None
    images = [str(p) for p in bundled.demo_images(args.model or bundled.DEFAULT_MODEL)]
    if not images:
        raise DependencyError("the bundled demo images are missing; reinstall pfv-onnx")
    parser = argparse.ArgumentParser(prog="pfv-onnx demo")
    cmd_run.add_arguments(parser)
    run_args = parser.parse_args([str(model), *images, "-o", args.outdir, "--provider", args.provider, *(["--overwrite"] if args.overwrite else [])])
    run_args.quiet = args.quiet
    code = cmd_run.execute(run_args, title="pfv-onnx demo")
    outdir = Path(args.outdir)
    print(f"mosaic:    {outdir / cmd_run.MOSAIC}")
    print(f"maps:      {outdir}{'/' if not str(outdir).endswith('/') else ''}*.pfv.png, *.overlay.*")
    print(f"report:    {outdir / cmd_run.REPORT}")
    print(f"page:      {outdir / cmd_run.REPORT_HTML} (open it in a browser)")
    return code

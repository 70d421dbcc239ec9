"""Option groups shared by the commands: each adds its flags and builds its library object.

Only the standard library is imported here at module level, so ``pfv-onnx --help``
stays fast and loads neither onnxruntime nor cupy.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import ResolvedConfig
    from ..inputs import Preprocessing
    from ..pipeline import PFV

PRESET_NAMES = ("imagenet", "inception", "caffe", "raw")  # pfv_onnx.inputs.PRESETS, without importing NumPy for --help
DEFAULT_SIZE = 224  # pfv_onnx.config.DEFAULT_SIZE


# --------------------------------------------------------------------------- value parsers


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return value


def size_hw(text: str) -> tuple[int, int]:
    """``224`` -> (224, 224); ``240x320``, ``240,320`` -> (240, 320) as (H, W)."""
    from ..config import parse_size

    size = parse_size(text)
    if size is None:
        raise argparse.ArgumentTypeError(f"expected N or HxW with positive whole numbers, got {text!r}")
    return size


def float_list(text: str) -> list[float]:
    """``0.5`` or ``0.485,0.456,0.406`` (commas or spaces)."""
    try:
        values = [float(p) for p in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


# --------------------------------------------------------------------------- option groups


def add_debug(parser: argparse.ArgumentParser, *, top_level: bool = False) -> None:
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False if top_level else argparse.SUPPRESS,
        help="show the full traceback of an error",
    )


def add_model_options(parser: argparse.ArgumentParser, *, positional: bool = True) -> None:
    """MODEL and the choice of tensors: ``--layer``, ``--weight-layers``, ``--input-name``, ``--layout``."""
    if positional:
        parser.add_argument("model", metavar="MODEL", help="the ONNX model file")
    g = parser.add_argument_group("model")
    g.add_argument(
        "--layer",
        metavar="NAME",
        help="tensor to decompose (a name or glob pattern) instead of the automatic choice",
    )
    g.add_argument(
        "--weight-layers",
        metavar="NAMES",
        action="append",
        help="earlier tensors whose activations weight the upsampling: names or patterns, "
        "comma-separated or repeated; 'none' for no weighting (default: automatic)",
    )
    g.add_argument("--input-name", metavar="NAME", help="the image input, when the model has several inputs")
    g.add_argument(
        "--layout",
        type=str.upper,
        choices=("NCHW", "NHWC"),
        help="input layout, when the model's input shape leaves it ambiguous",
    )


def add_pfv_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("PFV")
    g.add_argument("--k", type=positive_int, metavar="K", default=3, help="principal components (3 gives RGB; default 3)")
    g.add_argument(
        "--hierarchical",
        action="store_true",
        help="hierarchical activation weighting instead of the flat one",
    )
    g.add_argument(
        "--n-sigma",
        type=positive_float,
        metavar="S",
        default=1.0,
        help="colour scaling clips at this many standard deviations (default 1)",
    )


def add_runtime_options(parser: argparse.ArgumentParser, *, batching: bool = True) -> None:
    g = parser.add_argument_group("runtime")
    g.add_argument(
        "--provider",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="execution provider (default auto: CUDA when really available, else CPU)",
    )
    if batching:
        g.add_argument(
            "--batch-size",
            type=positive_int,
            metavar="N",
            default=16,
            help="images per forward pass (default 16)",
        )
        g.add_argument(
            "--group-size",
            type=positive_int,
            metavar="N",
            help="images per decomposition; colours are comparable only within one group "
            "(default: all images form one group)",
        )


def add_preprocessing_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "preprocessing",
        "Defaults come from the model's metadata (preprocessing, color_order) when it has them, "
        "else imagenet on RGB.",
    )
    g.add_argument(
        "--preset",
        choices=PRESET_NAMES,
        help="imagenet: RGB in [0,1], ImageNet mean/std; inception: (x/255-0.5)/0.5; "
        "caffe: BGR on 0-255 minus the Caffe means; raw: RGB in [0,1]",
    )
    g.add_argument(
        "--mean",
        type=float_list,
        metavar="M[,M,M]",
        help="per-channel mean, in the channel order fed to the model and the preset's pixel range",
    )
    g.add_argument("--std", type=float_list, metavar="S[,S,S]", help="per-channel standard deviation (as --mean)")
    order = g.add_mutually_exclusive_group()
    order.add_argument("--bgr", dest="color_order", action="store_const", const="BGR", help="feed B, G, R channels")
    order.add_argument("--rgb", dest="color_order", action="store_const", const="RGB", help="feed R, G, B channels")
    g.add_argument(
        "--pixel-range",
        type=lambda t: float(t) if t in ("1", "255") else t,
        choices=(1.0, 255.0),
        metavar="{1,255}",
        help="pixels scaled to [0, 1] (1) or kept on 0-255 (255) before --mean/--std (default: the preset's)",
    )
    g.add_argument(
        "--size",
        type=size_hw,
        metavar="N|HxW",
        help=f"model input size (default: the model's static size, else {DEFAULT_SIZE})",
    )
    g.add_argument(
        "--resize",
        choices=("stretch", "crop"),
        help="stretch: the whole image, aspect changed (default); crop: shorter side fitted, centre cropped",
    )


def add_input_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        metavar="INPUT",
        nargs="+",
        help="image files, folders (searched recursively) or glob patterns (quote them)",
    )
    from_inputs_default = 100_000_000
    parser.add_argument_group("inputs").add_argument(
        "--max-pixels",
        metavar="N",
        type=positive_int,
        default=from_inputs_default,
        help=f"refuse images with more pixels (default {from_inputs_default:,})",
    )


def add_output_options(parser: argparse.ArgumentParser, *, default_outdir: str | None = None) -> None:
    g = parser.add_argument_group("output")
    if default_outdir is None:
        g.add_argument("-o", "--outdir", required=True, metavar="OUTDIR", help="folder for the results")
    else:
        g.add_argument("-o", "--outdir", default=default_outdir, metavar="OUTDIR", help=f"folder for the results (default {default_outdir})")
    g.add_argument(
        "--labels",
        metavar="FILE",
        help="class names, one per line (default: the labels in the model's metadata, if any)",
    )
    g.add_argument("--alpha", type=unit_float, metavar="A", default=0.5, help="opacity of the map in overlays (default 0.5)")
    add_quiet(g)


def add_quiet(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    from ._help import QUIET_HELP

    parser.add_argument("-q", "--quiet", action="store_true", help=QUIET_HELP)


# --------------------------------------------------------------------------- builders


def weight_layers(values: list[str] | None) -> list[str] | None:
    """``--weight-layers`` as the engine wants it: None (automatic), [] (none) or names."""
    if values is None:
        return None
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    if any(n.lower() == "none" for n in names):
        if len(names) > 1:
            raise _usage("--weight-layers 'none' cannot be combined with names")
        return []
    return names


def _usage(message: str) -> Exception:
    from ..errors import InputError

    return InputError(message)


def check_model_path(path: str) -> Path:
    from ..errors import ModelError

    p = Path(path)
    if not p.exists():
        raise ModelError(f"model file not found: {path}")
    if p.is_dir():
        raise ModelError(f"the model must be an .onnx file, not a folder: {path}")
    if not p.is_file():  # a FIFO or a device: reading it could block forever
        raise ModelError(f"the model must be a regular .onnx file: {path}")
    return p


def build_pfv(args: argparse.Namespace, model: str | os.PathLike[str] | None = None) -> PFV:
    """The engine object for ``args`` (model, tensors, PFV options, provider)."""
    from ..pipeline import PFV
    from ..runtime_check import check_onnxruntime_install

    path = check_model_path(os.fspath(model if model is not None else args.model))
    check_onnxruntime_install()
    kwargs: dict[str, Any] = {
        "provider": getattr(args, "provider", "auto"),
        "layer": getattr(args, "layer", None),
        "weight_layers": weight_layers(getattr(args, "weight_layers", None)),
        "input_name": getattr(args, "input_name", None),
        "layout": getattr(args, "layout", None),
        # the commands decode and draw on other threads beside the forward passes: idle
        # onnxruntime workers sleep rather than spin on the cores those threads need
        "spinning": False,
    }
    if hasattr(args, "k"):
        kwargs.update(k=args.k, hierarchical=args.hierarchical, n_sigma=args.n_sigma)
    return PFV(str(path), **kwargs)


OPTION_NAMES = {
    name: f"option --{name.replace('_', '-')}"
    for name in ("size", "preset", "mean", "std", "pixel_range", "resize", "labels", "provider")
}
OPTION_NAMES["color_order"] = "option --rgb/--bgr"


def resolve(args: argparse.Namespace, pfv: PFV) -> ResolvedConfig:
    """The one resolved record (see :func:`pfv_onnx.config.resolve_config`) for the options in ``args``."""
    from ..config import resolve_config

    provider = getattr(args, "provider", None)
    return resolve_config(
        pfv,
        size=getattr(args, "size", None),
        preset=getattr(args, "preset", None),
        mean=getattr(args, "mean", None),
        std=getattr(args, "std", None),
        color_order=getattr(args, "color_order", None),
        pixel_range=getattr(args, "pixel_range", None),
        resize=getattr(args, "resize", None),
        labels=getattr(args, "labels", None),
        provider=None if provider == "auto" else provider,
        named=OPTION_NAMES,
    )


def model_size(pfv: PFV, requested: tuple[int, int] | None) -> tuple[int, int]:
    """``--size``, checked against the model's static input, else the model's default size."""
    from ..config import resolve_config

    return resolve_config(pfv, size=requested, named=OPTION_NAMES).size


def build_preprocessing(args: argparse.Namespace, pfv: PFV) -> tuple[Preprocessing, list[str]]:
    """Preprocessing from the options, falling back on the model's metadata, then the defaults.

    Returns the recipe and notes on where each choice came from.
    """
    config = resolve(args, pfv)
    keys = ("size", "preset", "color_order", "mean", "std", "pixel_range", "resize", "layout")
    return config.preprocessing, [*config.notes, *config.describe(keys)]


def read_labels(path: str | None, pfv: PFV | None = None) -> tuple[list[str] | None, str | None]:
    """Class names from ``--labels FILE``, else from the model's metadata: ``(labels, source)``
    (the source is the file's path or ``"model metadata"``)."""
    from ..config import load_labels

    names, source = load_labels(path, dict(getattr(pfv, "metadata", None) or {}))
    return names, (path if path is not None else source) if names else None

"""Write the rewritten model: the original outputs plus the feature maps PFV taps.

The result passes onnx.checker and runs in any ONNX runtime; its extra outputs are the
tensors 'pfv-onnx inspect' marks (or those chosen with --layer / --weight-layers).
"""

from __future__ import annotations

import argparse
import sys

from . import _args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _args.add_model_options(parser)
    own = parser.add_argument_group("surgery")
    own.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="where to write the rewritten model")
    own.add_argument("--size", type=_args.size_hw, metavar="N|HxW", help="input size to analyse at (default: the model's)")
    _args.add_quiet(own)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import InputError

    src = _args.check_model_path(args.model)
    out = Path(args.output)
    if out.exists() and out.resolve() == src.resolve():
        raise InputError(f"refusing to overwrite the input model {src}; choose another -o")
    if out.is_dir():
        raise InputError(f"-o must name a file, not a folder: {out}")
    args.provider = "cpu"
    pfv = _args.build_pfv(args)
    size = _args.model_size(pfv, args.size)
    out.parent.mkdir(parents=True, exist_ok=True)
    pfv.save_surgery(str(out), size=size)
    if not args.quiet:
        maps = pfv.maps(size)
        print(f"wrote {out} with {len(maps)} extra output{'s' if len(maps) != 1 else ''}:", file=sys.stderr)
        for m in maps:
            role = getattr(m.role, "value", m.role)
            print(f"  {m.name}  {'x'.join(str(s) for s in m.shape)}  ({role})", file=sys.stderr)
    return 0

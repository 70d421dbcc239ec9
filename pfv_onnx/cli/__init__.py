"""The ``pfv-onnx`` command line: ``main(argv) -> exit code``.

Exit codes: 0 all done; 1 some inputs failed (the others done and reported); 2 usage
or model error. A :class:`~pfv_onnx.errors.PfvError` is printed as one line; any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
import traceback
from collections.abc import Sequence

from . import _args, _help

COMMANDS = ("run", "compare", "fit", "inspect", "surgery", "demo", "sanity")
"""Subcommands, in the order ``--help`` lists them; each is the module ``cmd_<name>``
with a docstring (its help), ``add_arguments(parser)`` and ``run(args) -> int``."""
RESUMABLE = ("run", "demo")  # commands that pick up where an interrupted run stopped


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _help.Parser(
        prog="pfv-onnx",
        description="Principal Feature Visualisation (PFV) heatmaps for ONNX image classifiers.",
        epilog="Run 'pfv-onnx COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"pfv-onnx {__version__}")
    _args.add_debug(parser, top_level=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"{__name__}.cmd_{name}")
        doc = (module.__doc__ or "").strip()
        p = sub.add_parser(
            name,
            help=doc.splitlines()[0] if doc else None,
            description=doc,
            epilog=_help.epilog(name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _args.add_debug(p)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


# Write errors of a full disk, a quota or a file-size limit: the environment, not a bug.
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    from ..errors import PfvError

    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:  # --help, --version or a usage error
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        return int(args._run(args) or 0)
    except PfvError as exc:
        if args.debug:
            traceback.print_exc()
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"pfv-onnx {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = "; run the same command again to resume: finished groups are kept" if args.command in RESUMABLE else ""
        print(f"pfv-onnx {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno not in _FULL:
            raise
        if args.debug:
            traceback.print_exc()
        where = f" {exc.filename}" if exc.filename else ""
        hint = "; free some space (or write elsewhere) and run the same command again to resume" if args.command in RESUMABLE else ""
        print(f"pfv-onnx {args.command}: error: could not write{where}: {exc.strerror or exc}{hint}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into a program that stopped reading
        sys.stderr.close()
        return 0

"""Show the candidate feature maps of a model and the automatic choice, with the reason.

Lists every spatial tensor (in graph order) with its op, shape, layout, stride and grid: maps,
and token sequences (N, T, C) whose patch tokens the graph puts on a grid (with the special
tokens counted and how the grid was found). Marks the decomposed map (E_L) and the weighting
maps, explains how they were chosen, and warns where the choice is known to be weak.
--layer and --weight-layers show what a run with those options would use.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import _args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _args.add_model_options(parser)
    own = parser.add_argument_group("inspect")
    own.add_argument("--size", type=_args.size_hw, metavar="N|HxW", help="analyse at this input size (default: the model's)")
    own.add_argument("--json", action="store_true", help="print the result as JSON")


def _value(x: Any) -> Any:
    return getattr(x, "value", x)


def _ratio(a: int, b: int) -> int | float:
    r = a / b
    return int(r) if r.is_integer() else round(r, 3)


def _record(m: Any, size: tuple[int, int] | None) -> dict[str, Any]:
    h, w = m.hw
    stride = None
    if size and h and w:
        sh, sw = (_ratio(size[0], h), _ratio(size[1], w))
        stride = sh if sh == sw else f"{sh}x{sw}"
    tokens = getattr(m, "tokens", None)
    return {
        "name": m.name,
        "op": m.op,
        "shape": list(tokens.shape if tokens is not None else m.shape),
        "layout": "tokens" if tokens is not None else _value(m.layout),
        "dtype": m.dtype,
        "stride": stride,
        "grid": [h, w],
        "tokens": None if tokens is None else {"token_axis": tokens.token_axis, "before": tokens.before, "after": tokens.after},
        "grid_from": getattr(m, "grid_from", ""),
        "role": _value(m.role),
        "reason": m.reason,
    }


def report_dict(rep: Any, model: str) -> dict[str, Any]:
    size = tuple(rep.size) if rep.size else None
    return {
        "model": model,
        "input_name": rep.input_name,
        "input_layout": _value(rep.input_layout),
        "input_shape": list(rep.input_shape),
        "size": list(size) if size else None,
        "decomposed": rep.decomposed.name if rep.decomposed is not None else None,
        "weighting": [m.name for m in rep.weighting],
        "candidates": [_record(m, size) for m in rep.candidates],
        "notes": list(rep.notes),
        "warnings": list(getattr(rep, "warnings", [])),
    }


def format_table(d: dict[str, Any]) -> str:
    rows = [("#", "name", "op", "shape", "layout", "stride", "grid", "role")]
    for i, c in enumerate(d["candidates"]):
        role = {"decomposed": "DECOMPOSED", "weighting": "weighting"}.get(c["role"], "")
        grid = "x".join(str(s) for s in c["grid"])
        if c["tokens"]:
            t = c["tokens"]
            grid += f" +{t['before'] + t['after']} special" if t["before"] or t["after"] else ""
        rows.append((str(i), c["name"], c["op"] or "", "x".join(str(s) for s in c["shape"]), c["layout"] or "",
                     "" if c["stride"] is None else str(c["stride"]), grid, role))  # fmt: skip
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    widths[1] = min(widths[1], 60)
    lines = [
        f"model:  {d['model']}",
        f"input:  {d['input_name']}  shape {d['input_shape']}  layout {d['input_layout']}"
        + (f"  analysed at {d['size'][0]}x{d['size'][1]}" if d["size"] else ""),
        "",
    ]
    for r in rows:
        name = r[1] if len(r[1]) <= widths[1] else "..." + r[1][-(widths[1] - 3) :]
        cells = (r[0].rjust(widths[0]), name.ljust(widths[1]), *(c.ljust(wd) for c, wd in zip(r[2:], widths[2:])))
        lines.append("  ".join(cells).rstrip())
    chosen = [c for c in d["candidates"] if c["role"] in ("decomposed", "weighting") and c["reason"]]
    if chosen:
        lines += ["", "why:"]
        lines += [f"  {c['name']}: {c['reason']}" for c in chosen]
    found: dict[str, int] = {}
    for c in d["candidates"]:
        if c["grid_from"]:
            found[c["grid_from"]] = found.get(c["grid_from"], 0) + 1
    if found:
        lines += ["", "grids:  (tensors whose grid a Reshape/Transpose made, and how it was found)"]
        lines += [f"  {n} tensor(s): {how}" for how, n in found.items()]
    if d["notes"]:
        lines += ["", "notes:"]
        lines += [f"  {n}" for n in d["notes"]]
    if d.get("warnings"):
        lines += ["", "warnings:"]
        lines += [f"  {w}" for w in d["warnings"]]
    lines += ["", f"decomposed: {d['decomposed']}", f"weighting:  {', '.join(d['weighting']) or '(none)'}"]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..pipeline import inspect
    from ..runtime_check import check_onnxruntime_install

    path = _args.check_model_path(args.model)
    check_onnxruntime_install()
    rep = inspect(
        str(path),
        size=args.size,
        layer=args.layer,
        weight_layers=_args.weight_layers(args.weight_layers),
        input_name=args.input_name,
        layout=args.layout,
    )
    d = report_dict(rep, str(path))
    text = json.dumps(d, indent=2) if args.json else format_table(d)
    sys.stdout.write(text + "\n")
    return 0

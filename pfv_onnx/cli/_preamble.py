"""What a command is about to do, on stderr before the work starts, and the warnings that go with it.

:func:`preamble` prints the model, provider, input size and preprocessing (each with where it
came from), the decomposed tensor and the weighting maps, and the labels, unless ``--quiet``;
it returns the warnings (printed too, unless ``--quiet``) for report.json. The checks themselves
(:func:`run_warnings`, :func:`group_warnings`) return text and never print.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import ResolvedConfig
    from ..pipeline import PFV

MIN_GROUP = 5
"""Fewer images than this in one decomposition give components that depend mostly on which
images were drawn. Measured on EfficientNet-Lite0 (tools/group_size_stability.py): the top-3
subspace of groups of 1-3 photos shares on average 0.13-0.46 of the whole set's, the worst
groups 0.01-0.11 (unrelated subspaces: 0.002); from 5 images no drawn group fell below 0.19, from
8 none below 0.45 (docs/PERFORMANCE.md)."""


def class_count(pfv: PFV) -> int | None:
    """Classes of the model's first output shaped (N, classes) with a static class count, else None."""
    for name in getattr(pfv, "output_names", None) or []:
        shape = (getattr(pfv, "output_shapes", None) or {}).get(name) or ()
        if len(shape) >= 2 and isinstance(shape[1], int) and shape[1] >= 2 and all(s == 1 for s in shape[2:]):
            return shape[1]
    return None


def _layer_ambiguity(pattern: str | None, pfv: PFV, size: tuple[int, int]) -> str | None:
    """A warning when ``--layer`` is a pattern that matches several spatial maps (the last one is taken)."""
    if not pattern:
        return None
    analysis = pfv.analysis(size)
    names = [fm.name for fm in analysis.candidates]
    if pattern in names:
        return None
    hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    if len(hits) < 2:
        return None
    taken = analysis.decomposed.name
    others = [n for n in hits if n != taken]
    shown = ", ".join(others[:8]) + (f" and {len(others) - 8} more" if len(others) > 8 else "")
    return f"--layer {pattern!r} matches {len(hits)} tensors; took {taken!r}, the last in graph order; the others: {shown} (give a full name to choose)"


def group_warnings(sizes: Sequence[int], *, by_class: bool = False) -> list[str]:
    """A warning when some decompositions have fewer than :data:`MIN_GROUP` images."""
    small = [n for n in sizes if n < MIN_GROUP]
    if not small:
        return []
    if by_class:
        singles = sum(1 for n in small if n == 1)
        return [
            f"--group-by class made {len(sizes)} groups, {len(small)} of them with fewer than {MIN_GROUP} images"
            + (f" ({singles} of a single image)" if singles else "")
            + ": their components depend on the few images drawn and their colours say little; give more images per class, or leave out --group-by"
        ]
    if len(sizes) == 1:
        return [
            f"one group of {sizes[0]} image{'s' if sizes[0] != 1 else ''}: with fewer than {MIN_GROUP} the components "
            "depend on which images were drawn; add images"
        ]
    return [
        f"{len(small)} of {len(sizes)} groups have fewer than {MIN_GROUP} images (smallest {min(small)}): their components "
        "depend on which images were drawn; raise --group-size"
    ]


def run_warnings(args: argparse.Namespace, pfv: PFV, config: ResolvedConfig, n_images: int | None = None) -> list[str]:
    """The warnings known before a run starts: labels that do not fit the classes, an
    ambiguous ``--layer``, groups too small for a meaningful decomposition."""
    from ..predictions import labels_fit

    out = []
    classes = class_count(pfv)
    if not labels_fit(config.labels, classes):
        out.append(
            f"{len(config.labels or ())} labels ({config.sources['labels']}) for {classes} classes: predictions are shown "
            f"without names; give a file of {classes} names with --labels"
        )
    out.extend(pfv.analysis(config.size).warnings)  # where the choice of maps is known to be weak
    ambiguous = _layer_ambiguity(getattr(args, "layer", None), pfv, config.size)
    if ambiguous:
        out.append(ambiguous)
    if n_images and getattr(args, "basis", None) is None and getattr(args, "group_by", None) is None:
        gs = getattr(args, "group_size", None) or n_images
        sizes = [gs] * (n_images // gs) + ([n_images % gs] if n_images % gs else [])
        out.extend(group_warnings(sizes))
    return out


def _shape(fm: Any) -> str:
    return "x".join(str(s) for s in (fm.channels, *fm.hw))


def describe(pfv: PFV, config: ResolvedConfig, title: str) -> list[str]:
    """The preamble's lines."""
    p, src = config.preprocessing, config.sources
    analysis = pfv.analysis(config.size)
    el = analysis.decomposed
    weighting = ", ".join(f"{fm.name} ({_shape(fm)})" for fm in analysis.weighting) or "none (components upsampled unweighted)"
    mean = ",".join(f"{v:g}" for v in p.mean)
    std = ",".join(f"{v:g}" for v in p.std)
    labels = f"{len(config.labels)} names ({src['labels']})" if config.labels else "none (classes shown by index)"
    return [
        f"{title}: {pfv.model_path} on {config.provider} ({src['provider']})",
        f"  input        {pfv.input_name!r} {p.layout} ({src['layout']}), {p.size[0]}x{p.size[1]} ({src['size']})",
        f"  preprocess   {p.preset} ({src['preset']}); {p.color_order} ({src['color_order']}); "
        f"pixels on [0, {p.range:g}], mean {mean}, std {std} ({src['mean']}); "
        f"resize {p.resize} ({src['resize']})",
        f"  decomposed   {el.name} ({_shape(el)}){f': {el.reason}' if el.reason else ''}",
        f"  weighting    {weighting}",
        f"  labels       {labels}",
    ]


def say(lines: Sequence[str], quiet: bool = False, *, warning: bool = False) -> None:
    """Print on stderr unless ``quiet``, beside a progress bar if one is shown."""
    if quiet:
        return
    try:
        from tqdm import tqdm

        for line in lines:
            tqdm.write(f"warning: {line}" if warning else line, file=sys.stderr)
    except ImportError:  # pragma: no cover - tqdm is a dependency
        for line in lines:
            print(f"warning: {line}" if warning else line, file=sys.stderr)


def preamble(args: argparse.Namespace, pfv: PFV, title: str, n_images: int | None = None) -> list[str]:
    """Print what the command will do (unless ``--quiet``) and its warnings; returns the warnings."""
    from . import _args

    config = _args.resolve(args, pfv)
    quiet = bool(getattr(args, "quiet", False))
    say(describe(pfv, config, title), quiet)
    warnings = [*config.notes, *run_warnings(args, pfv, config, n_images)]
    say(warnings, quiet, warning=True)
    return warnings


def class_groups(report: dict[str, Any], sizes: Sequence[int], quiet: bool = False) -> None:
    """``--group-by class``: warn of (and record in ``report["warnings"]``) classes with too few images."""
    found = group_warnings(sizes, by_class=True)
    report.setdefault("warnings", []).extend(found)
    say(found, quiet, warning=True)

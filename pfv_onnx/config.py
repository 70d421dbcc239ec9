"""One resolved record of how a model is fed: the model's metadata, explicit choices and defaults.

:func:`resolve_config` merges, in this order of precedence, what the caller asked for
(options of the command line, arguments of the API), the model's ``metadata_props``
(``preprocessing``, ``color_order``, ``input_size``, ``labels``), the model's static input
shape and the defaults, into one frozen :class:`ResolvedConfig` that also says where each
value came from. The command line and :meth:`PFV.explain_images` both call it, so the two
feed a model the same way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError
from .inputs import PRESETS, Preprocessing, make_preprocessing

DEFAULT_SIZE = 224
DEFAULT_PRESET = "imagenet"
DEFAULT_RESIZE = "stretch"

DEFAULT = "default"
METADATA = "model metadata"
STATIC_SHAPE = "model's static input shape"


def parse_size(text: str) -> tuple[int, int] | None:
    """``"224"`` -> (224, 224); ``"240x320"`` or ``"240,320"`` -> (240, 320) as (H, W); None when not a size."""
    parts = str(text).strip().lower().replace(",", "x").split("x")
    if not all(p.strip().isdigit() for p in parts) or len(parts) not in (1, 2):
        return None
    values = [int(p) for p in parts] * (2 if len(parts) == 1 else 1)
    if min(values) < 1:
        return None
    return (values[0], values[1])


def default_size(static_hw: Sequence[int | None], metadata: Mapping[str, str]) -> tuple[tuple[int, int], str]:
    """The input size used when none is asked for, and where it came from.

    A static side is the model's own; a dynamic side comes from the metadata key ``input_size``
    (``"HxW"``) when it parses, else :data:`DEFAULT_SIZE`.
    """
    h, w = (list(static_hw) + [None, None])[:2]
    if h and w:
        return (int(h), int(w)), STATIC_SHAPE
    hint = parse_size(metadata.get("input_size", "")) if metadata.get("input_size") else None
    fill, source = (hint, METADATA) if hint else ((DEFAULT_SIZE, DEFAULT_SIZE), DEFAULT)
    if h or w:
        source = f"{STATIC_SHAPE} and {source}"
    return (int(h or fill[0]), int(w or fill[1])), source


def _lines(text: str) -> list[str]:
    lines = [ln.strip() for ln in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def read_labels_file(path: str | os.PathLike[str]) -> list[str]:
    """Class names, one per line (trailing blank lines dropped)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot read the labels file {os.fspath(path)}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"the labels file {os.fspath(path)} is not UTF-8 text") from None
    lines = _lines(text)
    if not lines:
        raise InputError(f"the labels file {os.fspath(path)} is empty")
    return lines


def load_labels(
    labels: str | os.PathLike[str] | Sequence[str] | None, metadata: Mapping[str, str], named: str = "argument labels"
) -> tuple[list[str] | None, str]:
    """Class names and where they came from: a labels file or a list (``named``), else the
    metadata's ``labels`` (one per line), else ``(None, "none")``."""
    if labels is None:
        names = _lines(str(metadata.get("labels") or ""))
        return (names, METADATA) if names else (None, "none")
    if isinstance(labels, (str, os.PathLike)):
        return read_labels_file(labels), f"{named} {os.fspath(labels)}"
    return [str(x) for x in labels], named


@dataclass(frozen=True)
class ResolvedConfig:
    """How images are fed to one model, and where each choice came from.

    ``preprocessing`` holds the input size, mean/std, channel order, pixel range, layout and
    resize mode; ``labels`` the class names (or None); ``provider`` the execution provider in
    use. ``sources`` maps each of ``size``, ``preset``, ``mean``, ``std``, ``color_order``,
    ``pixel_range``, ``resize``, ``layout``, ``labels`` and ``provider`` to where its value
    came from: ``"model metadata"``, ``"model's static input shape"``, ``"default"``, an
    option or argument name, ``"preset NAME"``, ...
    """

    preprocessing: Preprocessing
    labels: tuple[str, ...] | None
    provider: str
    sources: Mapping[str, str]
    notes: tuple[str, ...] = field(default=())

    @property
    def size(self) -> tuple[int, int]:
        return self.preprocessing.size

    @property
    def labels_source(self) -> str | None:
        return self.sources["labels"] if self.labels else None

    def describe(self, keys: Sequence[str] | None = None) -> list[str]:
        """One line per choice (``keys``, default all): ``name: value (source)``."""
        p = self.preprocessing
        values = {
            "size": f"{p.size[0]}x{p.size[1]}",
            "preset": p.preset,
            "color_order": p.color_order,
            "mean": ",".join(f"{v:g}" for v in p.mean),
            "std": ",".join(f"{v:g}" for v in p.std),
            "pixel_range": f"{p.range:g}",
            "resize": p.resize,
            "layout": p.layout,
            "labels": f"{len(self.labels)} names" if self.labels else "none",
            "provider": self.provider,
        }
        return [f"{k}: {values[k]} ({self.sources[k]})" for k in (keys or values)]

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.preprocessing.to_dict(),
            "labels": len(self.labels) if self.labels else 0,
            "provider": self.provider,
            "sources": dict(self.sources),
        }


def resolve_config(
    model: Any,
    *,
    size: tuple[int, int] | int | None = None,
    preset: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    color_order: str | None = None,
    pixel_range: float | None = None,
    resize: str | None = None,
    labels: str | os.PathLike[str] | Sequence[str] | None = None,
    provider: str | None = None,
    named: Mapping[str, str] | None = None,
) -> ResolvedConfig:
    """Merge explicit choices, the model's metadata and the defaults into one record.

    Args:
        model: a :class:`~pfv_onnx.pipeline.PFV` (its ``metadata``, ``input_size``,
            ``input_layout``, ``layout_reason``, ``input_channels`` and ``provider`` are read).
        size, preset, mean, std, color_order, pixel_range, resize: explicit choices (None:
            not asked for), as :func:`~pfv_onnx.inputs.make_preprocessing` takes them.
            A preset asked for also sets the colour order (the metadata's is then ignored).
        labels: a labels file, or the class names; None: the metadata's ``labels``, if any.
        provider: the provider asked for (``auto``, ``cpu``, ``cuda``); None: ``auto``.
        named: how the caller names each argument in the sources (the command line passes
            ``{"size": "option --size", ...}``); default ``"argument size"`` and so on.

    Raises:
        InputError: a size that does not fit the model's static input, a bad value, an
            unreadable labels file.
    """
    meta = {str(k): str(v) for k, v in (getattr(model, "metadata", None) or {}).items()}

    def asked(name: str) -> str:
        return (named or {}).get(name) or f"argument {name}"

    sources: dict[str, str] = {}
    notes: list[str] = []

    # input size: asked for (and checked against the static shape), else the model's
    static = (list(getattr(model, "input_size", None) or ()) + [None, None])[:2]
    if size is not None:
        hw = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        for got, want, what in ((hw[0], static[0], "height"), (hw[1], static[1], "width")):
            if want and got != want:
                raise InputError(
                    f"{asked('size')} {hw[0]}x{hw[1]} does not fit: the model takes a fixed {what} of {want} "
                    f"(input size {static[0] or 'any'}x{static[1] or 'any'}); leave the size out"
                )
        sources["size"] = asked("size")
    else:
        hw, sources["size"] = default_size(static, meta)
        if meta.get("input_size") and not parse_size(meta["input_size"]):
            notes.append(f"input_size {meta['input_size']!r} in the model's metadata is not HxW; ignored")

    # preset and colour order
    if preset is not None:
        sources["preset"] = asked("preset")
    else:
        meta_preset = meta.get("preprocessing", "").strip().lower()
        if meta_preset in PRESETS:
            preset, sources["preset"] = meta_preset, METADATA
        else:
            if meta_preset:
                notes.append(f"unknown preprocessing {meta_preset!r} in the model's metadata ignored")
            preset, sources["preset"] = DEFAULT_PRESET, DEFAULT
    channels = getattr(model, "input_channels", None) or 3
    if channels not in (1, 3):
        raise InputError(f"the model's image input has {channels} channels; pfv-onnx feeds 1 (gray) or 3 (colour)")
    if color_order is not None:
        sources["color_order"] = asked("color_order")
    else:
        meta_order = meta.get("color_order", "").strip().upper()
        if meta_order in ("RGB", "BGR") and sources["preset"] != asked("preset"):
            color_order, sources["color_order"] = meta_order, METADATA
        else:
            sources["color_order"] = f"preset {preset}"
    if channels == 1:
        sources["color_order"] = "model's input (1 channel)"
    sources["mean"] = asked("mean") if mean is not None else f"preset {preset}"
    sources["std"] = asked("std") if std is not None else f"preset {preset}"
    sources["pixel_range"] = asked("pixel_range") if pixel_range is not None else f"preset {preset}"
    sources["resize"] = asked("resize") if resize is not None else DEFAULT
    layout = getattr(model, "input_layout", None) or "NCHW"
    sources["layout"] = str(getattr(model, "layout_reason", None) or "model's input")
    prep = make_preprocessing(
        preset,
        mean=mean,
        std=std,
        color_order=color_order,
        pixel_range=pixel_range,
        size=hw,
        resize=resize or DEFAULT_RESIZE,
        layout=str(getattr(layout, "value", layout)),
        channels=channels,
    )

    # labels
    names, sources["labels"] = load_labels(labels, meta, asked("labels"))

    # provider
    requested = provider or "auto"
    in_use = str(getattr(model, "provider", None) or requested)
    sources["provider"] = asked("provider") if provider not in (None, "auto") else f"{DEFAULT}: auto, CUDA when available, else CPU"
    return ResolvedConfig(prep, tuple(names) if names else None, in_use, sources, tuple(notes))

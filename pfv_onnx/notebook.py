"""PFV of image files or arrays in a few lines: decoded and preprocessed as ``pfv-onnx run`` does.

:func:`explain_images` (also :meth:`PFV.explain_images <pfv_onnx.pipeline.PFV.explain_images>`)
resolves the preprocessing with :func:`pfv_onnx.config.resolve_config` (explicit arguments,
then the model's metadata, then the defaults), decodes each file with
:func:`pfv_onnx.inputs.decode_image`, and returns an :class:`Explanation`: the
:class:`~pfv_onnx.pipeline.PFVResult` plus predictions with class names, RGB pictures for
matplotlib and a notebook display.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import DependencyError, InputError
from .pipeline import PFVResult

if TYPE_CHECKING:
    from .config import ResolvedConfig
    from .pipeline import PFV

BATCH_SIZE = 16  # images per forward pass, as `pfv-onnx run --batch-size` defaults
HTML_IMAGES = 24  # images shown by the notebook display
HTML_TILE = 160  # pixels, longer side


@dataclass
class Explanation(PFVResult):
    """A :class:`~pfv_onnx.pipeline.PFVResult` with what a notebook needs besides.

    ``names``: the file of each image (``"array 0"``, ... for arrays). ``config``: the
    resolved preprocessing, labels and provider, with their sources. ``predictions``: per
    image ``{"class", "label", "score", "top5"}`` (softmax of the scores unless they already
    are probabilities), or None when the model has no class-score output.
    """

    names: list[str] = field(default_factory=list)
    config: ResolvedConfig | None = None
    predictions: list[dict[str, Any] | None] = field(default_factory=list)
    prediction_output: str | None = None
    images_bgr: list[np.ndarray] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return len(self.names)

    def image(self, i: int) -> np.ndarray:
        """Image ``i`` as decoded, (H, W, 3) uint8 RGB."""
        return np.ascontiguousarray(self.images_bgr[i][:, :, ::-1])

    def _box(self, i: int) -> tuple[int, int, int, int]:
        from .inputs import crop_box

        h, w = self.images_bgr[i].shape[:2]
        return crop_box(w, h, self.config.preprocessing)  # type: ignore[union-attr]

    def map_image(self, i: int) -> np.ndarray:
        """Image ``i``'s map at the image's size, (H, W, 3) uint8 RGB for ``plt.imshow``
        (black outside the region the model saw, as the command line's NAME.pfv.png)."""
        from .render import map_picture

        h, w = self.images_bgr[i].shape[:2]
        return np.ascontiguousarray(map_picture(self.rgb[i], (h, w), self._box(i))[:, :, ::-1])

    def overlay_image(self, i: int, alpha: float = 0.5) -> np.ndarray:
        """The map blended over image ``i`` (``alpha`` = the map's opacity), (H, W, 3) uint8 RGB,
        as the command line's NAME.overlay picture."""
        from .render import map_picture, overlay

        bgr = self.images_bgr[i]
        box = self._box(i)
        pic = map_picture(self.rgb[i], bgr.shape[:2], box)
        return np.ascontiguousarray(overlay(bgr, pic, alpha, box)[:, :, ::-1])

    def caption(self, i: int) -> str:
        """``name: label (score)`` of image ``i``; the class index when there are no labels."""
        pred = self.predictions[i] if i < len(self.predictions) else None
        if pred is None:
            return Path(self.names[i]).name
        what = str(pred["label"]).split(",")[0] if pred.get("label") else f"class {pred['class']}"
        return f"{Path(self.names[i]).name}: {what} ({pred['score']:.0%})"

    def show(self, indices: Sequence[int] | None = None, *, alpha: float = 0.5, width: float = 9.0) -> Any:
        """A matplotlib figure: one row per image (the image, its map, the overlay). Returns the figure."""
        try:
            import matplotlib.pyplot as plt
        except ImportError:
            raise DependencyError("show() needs matplotlib: pip install matplotlib (or use the map_image/overlay_image arrays)") from None
        rows = list(range(len(self)) if indices is None else indices)
        if not rows:
            raise InputError("show(): no images to show")
        fig, axes = plt.subplots(len(rows), 3, figsize=(width, width / 3 * len(rows)), squeeze=False)
        for ax_row, i in zip(axes, rows):
            for ax, pic, title in zip(ax_row, (self.image(i), self.map_image(i), self.overlay_image(i, alpha)), (self.caption(i), "PFV map", "overlay")):
                ax.imshow(pic)
                ax.set_title(title, fontsize=9)
                ax.axis("off")
        fig.tight_layout()
        return fig

    def _repr_html_(self) -> str:
        """The notebook display: a table of image, map and overlay with the top class."""
        from .render import encode_png, letterbox

        def tag(rgb: np.ndarray) -> str:
            png = encode_png(letterbox(np.ascontiguousarray(rgb[:, :, ::-1]), HTML_TILE))
            return f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" width="{HTML_TILE}">'

        evr = ", ".join(f"{v:.1%}" for v in np.asarray(self.explained_variance_ratio).tolist())
        head = (
            f"<p><b>PFV</b> of {len(self)} image{'s' if len(self) != 1 else ''}; E_L <code>{html.escape(self.feature_maps[-1])}</code>; "
            f"explained variance {evr}</p>"
        )
        rows = []
        for i in range(min(len(self), HTML_IMAGES)):
            rows.append(
                f"<tr><td>{html.escape(self.caption(i))}</td><td>{tag(self.image(i))}</td>"
                f"<td>{tag(self.map_image(i))}</td><td>{tag(self.overlay_image(i))}</td></tr>"
            )
        more = f"<p>first {HTML_IMAGES} of {len(self)} shown</p>" if len(self) > HTML_IMAGES else ""
        return head + "<table><tr><th>image</th><th></th><th>map</th><th>overlay</th></tr>" + "".join(rows) + "</table>" + more


def _from_array(a: Any, i: int) -> np.ndarray:
    """An RGB (or gray) array as the BGR uint8 image that decoding a file would give."""
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3 or min(a.shape[:2]) < 1:
        raise InputError(f"image array {i} must be (H, W, 3) RGB or (H, W) gray, got shape {list(a.shape)}")
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise InputError(f"image array {i} is floating point: its values must lie in [0, 1]")
        a = np.rint(a * 255.0)
    elif a.dtype != np.uint8:
        raise InputError(f"image array {i} must be uint8 or float in [0, 1], got {a.dtype}")
    return np.ascontiguousarray(a.astype(np.uint8)[:, :, ::-1])


def _decoded(images: Any, max_pixels: int) -> tuple[list[str], list[np.ndarray]]:
    from .inputs import collect_images, decode_image

    if isinstance(images, (str, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim in (2, 3) and images.dtype != object):
        images = [images]
    names: list[str] = []
    bgrs: list[np.ndarray] = []
    for i, item in enumerate(images):
        if isinstance(item, (str, os.PathLike)):
            found = collect_images([item])
            if found.missing:
                raise InputError(f"{found.missing[0][0]}: {found.missing[0][1]}")
            for path in found.files:
                try:
                    bgrs.append(decode_image(path, max_pixels=max_pixels).bgr)
                except InputError as exc:
                    raise type(exc)(f"{path}: {exc}") from None
                names.append(str(path))
        else:
            bgrs.append(_from_array(item, i))
            names.append(f"array {i}")
    if not bgrs:
        raise InputError("no images given")
    return names, bgrs


def explain_images(
    pfv: PFV,
    images: Any,
    *,
    size: tuple[int, int] | int | None = None,
    preset: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    color_order: str | None = None,
    pixel_range: float | None = None,
    resize: str | None = None,
    labels: str | os.PathLike[str] | Sequence[str] | None = None,
    k: int | None = None,
    hierarchical: bool | None = None,
    n_sigma: float | None = None,
    basis: Any = None,
    batch_size: int = BATCH_SIZE,
    max_pixels: int | None = None,
) -> Explanation:
    """PFV of image files or arrays, all in one decomposition, fed as ``pfv-onnx run`` feeds them.

    Args:
        pfv: the model.
        images: image files, folders or glob patterns (as ``run`` takes them), or arrays
            (H, W, 3) RGB / (H, W) gray, uint8 or float in [0, 1]; one or a list.
        size, preset, mean, std, color_order, pixel_range, resize, labels: as ``run``'s
            options of the same names; None takes the model's metadata, then the defaults
            (see :func:`pfv_onnx.config.resolve_config`).
        k, hierarchical, n_sigma, basis: as :meth:`PFV.explain`.
        batch_size: images per forward pass.
        max_pixels: larger image files are refused (default as ``run``'s).

    Raises:
        InputError: an image that cannot be read (named), a bad option.
    """
    from .config import resolve_config
    from .inputs import DEFAULT_MAX_PIXELS, preprocess, stack_batch
    from .predictions import predictions

    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    config = resolve_config(
        pfv, size=size, preset=preset, mean=mean, std=std, color_order=color_order, pixel_range=pixel_range, resize=resize, labels=labels,
        provider=getattr(pfv, "_provider_request", None),
    )  # fmt: skip
    names, bgrs = _decoded(images, max_pixels or DEFAULT_MAX_PIXELS)
    prep = config.preprocessing
    passes = [
        pfv.forward(stack_batch([preprocess(b, prep) for b in bgrs[i : i + batch_size]], prep.layout)) for i in range(0, len(bgrs), batch_size)
    ]
    res = pfv.decompose(passes, k=k, hierarchical=hierarchical, n_sigma=n_sigma, basis=basis)
    preds, output = predictions(res.outputs, len(names), config.labels, getattr(pfv, "output_names", None))
    return Explanation(
        **{f: getattr(res, f) for f in PFVResult.__dataclass_fields__},
        names=names,
        config=config,
        predictions=preds,
        prediction_output=output,
        images_bgr=bgrs,
    )


__all__ = ["Explanation", "explain_images"]

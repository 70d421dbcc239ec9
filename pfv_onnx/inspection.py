"""What PFV would tap in a model, without building a session: :func:`inspect` and the probe
run that the analysis falls back on (shared with :class:`pipeline.PFV`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .feature_maps import FeatureMap, Layout

__all__ = ["InspectReport", "inspect"]


@dataclass
class InspectReport:
    """The spatial maps of a model and the automatic (or requested) choice, with reasons."""

    input_name: str
    input_layout: Layout
    input_shape: tuple[int | str | None, ...]
    size: tuple[int, int]
    candidates: list[FeatureMap]
    decomposed: FeatureMap
    weighting: list[FeatureMap]
    notes: list[str]
    warnings: list[str] = field(default_factory=list)  # where the choice is known to be weak


def parse_layout(layout: str | Layout | None) -> Layout | None:
    """A layout asked for by name (``"NCHW"``, ``"nhwc"``) or as a ``Layout``; None: detect it."""
    if layout is None or isinstance(layout, Layout):
        return layout
    try:
        return Layout(str(layout).upper())
    except ValueError:
        raise InputError(f"unknown layout {layout!r}; use NCHW or NHWC") from None


def cpu_probe(input_name: str, external_dir: Path):
    """One CPU run of a pinned copy of the model, for tensors that analysis must see: their
    values on ``batch`` (zeros when not given; shapes when shape inference gives up)."""

    def run(pinned: Any, names: list[str], dims: tuple[int, ...], batch: np.ndarray | None = None) -> dict[str, np.ndarray]:
        import onnx

        from .runtime import create_session

        probe_model = onnx.ModelProto()
        probe_model.CopyFrom(pinned)
        existing = {o.name for o in probe_model.graph.output}
        for name in names:
            if name not in existing:
                probe_model.graph.output.append(onnx.ValueInfoProto(name=name))
        elem = next(i for i in probe_model.graph.input if i.name == input_name).type.tensor_type.elem_type
        np_dtype = onnx.helper.tensor_dtype_to_np_dtype(elem)
        sess = create_session(probe_model, "cpu", external_data_dir=external_dir, input_name=input_name)
        values = sess.run(np.zeros(dims, dtype=np_dtype) if batch is None else np.asarray(batch, dtype=np_dtype))
        return {name: np.asarray(values[name]) for name in names if hasattr(values.get(name), "shape")}

    return run


def inspect(
    model: str | Path,
    *,
    size: tuple[int, int] | None = None,
    layer: str | None = None,
    weight_layers: Sequence[str] | None = None,
    input_name: str | None = None,
    layout: str | Layout | None = None,
) -> InspectReport:
    """Every spatial map of ``model`` and the choice PFV makes, with reasons. Runs the model once, at batch 1,
    only when shapes need a probe or a weighting map follows a normalisation over channels."""
    from . import model_io, surgery
    from .config import default_size
    from .model_file import ModelFile

    file, proto = ModelFile.open(model)
    spec = model_io.image_input(proto, input_name)
    lay, how = surgery.input_layout(proto, spec, parse_layout(layout))
    a, b = lay.spatial_axes
    static = (spec.dims[a] if isinstance(spec.dims[a], int) else None, spec.dims[b] if isinstance(spec.dims[b], int) else None)
    hw = tuple(size) if size else default_size(static, {m.key: m.value for m in proto.metadata_props})[0]
    analysis = surgery.analyse(
        proto, spec, hw, input_layout=lay, layer=layer, weight_layers=weight_layers, probe=cpu_probe(spec.name, file.folder)  # type: ignore[arg-type]
    )
    notes = [f"input {spec.name!r} is {lay.value} ({how})", *analysis.notes]
    return InspectReport(spec.name, lay, spec.dims, hw, analysis.candidates, analysis.decomposed, analysis.weighting, notes, analysis.warnings)  # type: ignore[arg-type]

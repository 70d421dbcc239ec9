"""The spatial maps of a graph at one input size: what PFV may tap.

Maps are rank-4 activations whose layout the operators give (``layouts``) or that a
Reshape/Transpose made (``grids``), and token sequences whose patch tokens the graph puts on a
grid. Not maps: the input image and what it becomes before a learned layer (Transpose, Cast,
Pad, normalisation), and Reshape/Transpose outputs that only relabel another map.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import onnx
from onnx import TensorProto

from . import grids
from .errors import ModelError
from .feature_maps import FeatureMap, Layout, TokenGrid
from .graph_index import PLUMBING, GraphIndex, build, reachable_from
from .layouts import propagate_layouts, rank4
from .model_io import (
    FLOAT_TYPES,
    QUANT_TYPES,
    InputSpec,
    TensorInfo,
    check_tensor_sizes,
    infer_tensor_info,
    with_pinned_input,
)

# Ops with learned weights: what an image goes through before it is a feature map of the network.
LEARNED = {
    "Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "NhwcConv", "FusedConv", "DeformConv",
    "MatMul", "Gemm", "QLinearMatMul", "MatMulInteger", "Einsum", "FusedMatMul",
}
# (scale, zero point) input positions of ops that produce quantized tensors.
QUANT_PRODUCERS = {
    "QuantizeLinear": (1, 2), "QLinearConv": (6, 7), "QLinearMatMul": (6, 7), "QLinearAdd": (6, 7),
    "QLinearMul": (6, 7), "QLinearAveragePool": (3, 4), "QLinearGlobalAveragePool": (3, 4),
    "QLinearLeakyRelu": (3, 4), "QLinearSigmoid": (3, 4), "QLinearConcat": (0, 1),
}
QUANT_PASSTHROUGH = {"MaxPool", "Transpose", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Relu", "Slice", "Pad"}


@dataclass
class MapGraph:
    """The analysed graph: layouts, grids of regrouped tensors, and which tensors are maps."""

    g: GraphIndex
    input_name: str
    layouts: dict[str, Layout]
    views: dict[str, grids.GridView]
    reach: set[str]

    def hw(self, name: str) -> tuple[int, int]:
        if name in self.views and self.views[name].kind == "tokens":
            return self.views[name].grid
        shape = self.g.shape(name)
        a, b = self.layouts[name].spatial_axes
        return int(shape[a]), int(shape[b])  # type: ignore[index]

    def is_map(self, name: str) -> bool:
        if name not in self.reach:
            return False
        v = self.views.get(name)
        if v is not None and v.kind == "tokens":
            return v.grid[0] * v.grid[1] > 1
        if name not in self.layouts or not rank4(self.g, name):
            return False
        h, w = self.hw(name)
        return h * w > 1


def _map_graph(g: GraphIndex, input_name: str, input_layout: Layout) -> MapGraph:
    reach = reachable_from(g, input_name)
    data = reach - g.constants
    names = {o: n.op_type for n in g.nodes for o in n.output if o}

    def views_of(layouts):
        carried = grids.propagate(g, layouts, data, input_name)
        out = {}
        for t, c in carried.items():
            if t not in layouts or names.get(t) in grids.REGROUP:
                v = grids.view(c, names, layouts)
                if v is not None:
                    out[t] = v
        return out

    # Maps made by regrouping get a layout that spreads like any other's, which can make more.
    made: dict[str, grids.GridView] = {}
    for _ in range(16):
        layouts = propagate_layouts(g, input_name, input_layout, known={t: v.layout for t, v in made.items()})
        views = views_of(layouts)
        new = {t: v for t, v in views.items() if v.kind == "map" and t not in made and t not in layouts}
        made.update({t: v for t, v in views.items() if v.kind == "map" and t in layouts})
        if not new:
            break
        made.update(new)
    views = {**made, **{t: v for t, v in views.items() if v.kind == "tokens"}}
    return MapGraph(g, input_name, layouts, views, reach)


def image_derived(g: GraphIndex, input_name: str, reach: set[str]) -> set[str]:
    """The input and what it becomes before any learned layer (Transpose, Cast, Pad, normalisation)."""
    image = {input_name}
    for node in g.nodes:
        data = [x for x in node.input if x and x in reach and x not in g.constants]
        if data and node.op_type not in LEARNED and all(x in image for x in data):
            image.update(o for o in node.output if o)
    return image


def _alias(m: MapGraph, name: str) -> bool:
    """A Reshape/Transpose/... output that only relabels another map (or the input) is no map of its own."""
    t = name
    for _ in range(64):
        node = m.g.producer_node(t)
        if node is None:
            return True  # the graph input
        if node.op_type not in PLUMBING:
            return m.is_map(t)
        t = node.input[0]
    return False


def quant_params_of(g: GraphIndex, name: str, depth: int = 0) -> tuple[str, str] | None:
    """(scale, zero point) tensor names of a quantized tensor, from its producer or its consumers."""
    if depth > 6:
        return None
    node = g.producer_node(name)
    if node is not None:
        pos = QUANT_PRODUCERS.get(node.op_type)
        if pos is not None and len(node.input) > max(pos):
            return node.input[pos[0]], node.input[pos[1]]
        if node.op_type in QUANT_PASSTHROUGH and node.input:
            found = quant_params_of(g, node.input[0], depth + 1)
            if found is not None:
                return found
    for ci in g.consumers.get(name, []):
        node = g.nodes[ci]
        if node.op_type in {"DequantizeLinear"} and node.input[0] == name and len(node.input) >= 3:
            return node.input[1], node.input[2]
        if node.op_type == "QLinearConv" and node.input[0] == name:
            return node.input[1], node.input[2]
    return None


def _record(m: MapGraph, node: onnx.NodeProto, out: str) -> FeatureMap:
    ti = m.g.info[out]
    dtype = TensorProto.DataType.Name(ti.elem_type).lower()
    v = m.views.get(out)
    if v is None:
        return FeatureMap(out, node.op_type, tuple(ti.shape), m.layouts[out], dtype)  # type: ignore[arg-type]
    if v.kind == "map":
        return FeatureMap(out, node.op_type, tuple(ti.shape), m.layouts[out], dtype, grid_from=v.how)  # type: ignore[arg-type]
    shape = tuple(int(d) for d in ti.shape)  # type: ignore[union-attr]
    c = shape[3 - v.token_axis]
    h, w = v.grid
    view = (shape[0], h, w, c) if v.token_axis == 1 else (shape[0], c, h, w)
    tokens = TokenGrid(shape, v.token_axis, v.before, v.after, v.origin, v.origin_axes)  # type: ignore[arg-type]
    return FeatureMap(out, node.op_type, view, v.layout, dtype, tokens=tokens, grid_from=v.how)


def probe_dims(spec: InputSpec, size: tuple[int, int], input_layout: Layout) -> tuple[int, int, int, int]:
    """The input shape at which the graph is analysed (and probed): batch 1, or the model's fixed batch."""
    h, w = size
    c = spec.dims[input_layout.channel_axis]
    c = c if isinstance(c, int) else 3
    batch = spec.dims[0]
    n = batch if isinstance(batch, int) and batch > 1 else 1
    return (n, c, h, w) if input_layout is Layout.NCHW else (n, h, w, c)


def find_maps(
    model: onnx.ModelProto,
    spec: InputSpec,
    size: tuple[int, int],
    input_layout: Layout,
    notes: list[str],
    probe: Callable[..., dict[str, Any]] | None,
    max_tensor_bytes: int,
) -> tuple[MapGraph, list[FeatureMap], dict[str, tuple[str, str]]]:
    """The analysed graph at input size ``size``, its maps in graph order, and the quantized maps' (scale, zero point)."""
    dims = probe_dims(spec, size, input_layout)
    pinned = with_pinned_input(model, spec, dims)
    info = infer_tensor_info(pinned)
    wanted = [o for n in pinned.graph.node for o in n.output if o]
    missing = [o for o in wanted if o not in info or info[o].shape is None]
    check_tensor_sizes(info, max_tensor_bytes)  # what is already known is refused before any probe run
    if missing:
        if probe is None:
            raise ModelError(f"shape inference could not type {len(missing)} tensors (e.g. {missing[0]!r}) and no probe run is possible")
        notes.append(f"shape inference left {len(missing)} tensors untyped; shapes read from a probe run at batch 1")
        values = probe(with_pinned_input(model, spec, dims, weights=True), missing, dims)
        info.update({k: TensorInfo(onnx.helper.np_dtype_to_tensor_dtype(v.dtype), tuple(int(d) for d in v.shape)) for k, v in values.items()})
    check_tensor_sizes(info, max_tensor_bytes)
    g = build(pinned, info)
    m = _map_graph(g, spec.name, input_layout)
    image = image_derived(g, spec.name, m.reach)

    # Every spatial map that a PFV user may pick (explicitly), in graph order.
    quant_params: dict[str, tuple[str, str]] = {}
    spatial: list[FeatureMap] = []
    for node in g.nodes:
        for out in node.output:
            if not out or not m.is_map(out) or out in image:
                continue
            ti = g.info[out]
            if ti.elem_type in QUANT_TYPES:
                qp = quant_params_of(g, out)
                if qp is None or node.op_type == "QuantizeLinear" or out in m.views:
                    continue
                quant_params[out] = qp
            elif ti.elem_type not in FLOAT_TYPES:
                continue
            if node.op_type in PLUMBING and _alias(m, out):
                continue
            spatial.append(_record(m, node, out))
    if not spatial:
        raise ModelError(
            "the model has no spatial feature maps (no 4-D activation with height and width > 1 after the input, "
            "and no token sequence that the graph maps onto a grid); PFV needs a convolutional network or a vision transformer"
        )
    return m, spatial, quant_params

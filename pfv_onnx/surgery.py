"""Find the feature maps of an ONNX graph and rewrite the graph so they become extra outputs.

Analysis (``analyse``) works on the protobuf with the input pinned to one size: it propagates the
NCHW/NHWC layout through the graph, lists every spatial activation, and makes the automatic choice
(E_L and one weighting map per finer resolution). Rewriting (``rewrite``) appends the chosen tensors
to the outputs with onnx-graphsurgeon, adding an in-graph channel sum for weighting maps and a
DequantizeLinear for quantized (QOperator) maps. The original outputs are always kept.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Sequence
from typing import Any
from dataclasses import dataclass, field, replace

import numpy as np
import onnx
from onnx import TensorProto

from .errors import InputError, ModelError
from .feature_maps import FeatureMap, Layout, Role
from .model_io import (
    DEFAULT_MAX_TENSOR_BYTES,
    FLOAT_TYPES,
    QUANT_TYPES,
    InputSpec,
    TensorInfo,
    check_tensor_sizes,
    infer_tensor_info,
    with_pinned_input,
)

# Ops that read and write NCHW by the ONNX definition.
NCHW_OPS = {
    "Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "MaxPool", "AveragePool", "LpPool",
    "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "BatchNormalization", "InstanceNormalization",
    "LRN", "DepthToSpace", "SpaceToDepth", "QLinearAveragePool", "QLinearGlobalAveragePool", "FusedConv",
    "DeformConv", "MaxUnpool", "GridSample", "RoiAlign",
}
# Ops whose rank-4 output has the layout of their rank-4 input.
LAYOUT_PRESERVING = {
    "Relu", "Clip", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish",
    "Tanh", "Softplus", "Softsign", "Mish", "Gelu", "Erf", "ThresholdedRelu", "Add", "Sub", "Mul", "Div",
    "Pow", "Sqrt", "Exp", "Log", "Abs", "Neg", "Max", "Min", "Sum", "Mean", "Where", "Cast", "Identity",
    "Dropout", "QuantizeLinear", "DequantizeLinear", "Floor", "Ceil", "Round", "Sign", "Reciprocal",
    "Pad", "Resize", "Upsample", "Slice", "Split", "Concat", "Tile", "Expand", "QLinearAdd", "QLinearMul",
    "QLinearLeakyRelu", "QLinearSigmoid", "QLinearConcat", "FastGelu", "QuickGelu", "BiasGelu", "Swish",
    "Softmax", "LogSoftmax", "LayerNormalization", "Trilu", "Shrink", "BitShift", "Sin", "Cos",
}
# Ops that move or relabel data without computing: never candidates.
PLUMBING = {"Transpose", "Cast", "Identity", "Dropout", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "QuantizeLinear"}
ACTIVATIONS = {
    "Relu", "Clip", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish",
    "Tanh", "Softplus", "Mish", "Gelu", "Add", "Sum", "Mul", "Max", "Concat", "DequantizeLinear",
    "QLinearAdd", "QLinearLeakyRelu", "QLinearSigmoid", "QLinearConcat", "FastGelu", "QuickGelu", "Swish",
}
POOLS = {"MaxPool", "AveragePool", "LpPool", "QLinearAveragePool"}
# (scale, zero point) input positions of ops that produce quantized tensors.
QUANT_PRODUCERS = {
    "QuantizeLinear": (1, 2), "QLinearConv": (6, 7), "QLinearMatMul": (6, 7), "QLinearAdd": (6, 7),
    "QLinearMul": (6, 7), "QLinearAveragePool": (3, 4), "QLinearGlobalAveragePool": (3, 4),
    "QLinearLeakyRelu": (3, 4), "QLinearSigmoid": (3, 4), "QLinearConcat": (0, 1),
}
QUANT_PASSTHROUGH = {"MaxPool", "Transpose", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Relu", "Slice", "Pad"}


@dataclass
class Analysis:
    """What a graph holds at one input size, and the automatic (or requested) choice."""

    input: InputSpec
    input_layout: Layout
    size: tuple[int, int]
    candidates: list[FeatureMap]  # every spatial map in graph order, roles set
    decomposed: FeatureMap
    weighting: list[FeatureMap]
    notes: list[str] = field(default_factory=list)
    quant_params: dict[str, tuple[str, str]] = field(default_factory=dict)  # tensor -> (scale, zero point)

    @property
    def chosen(self) -> list[FeatureMap]:
        return [*self.weighting, self.decomposed]


@dataclass
class _Graph:
    nodes: list[onnx.NodeProto]
    producer: dict[str, int]
    consumers: dict[str, list[int]]
    info: dict[str, TensorInfo]
    constants: set[str]
    outputs: list[str]


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _toposorted(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for node in pending:
            # Inputs produced inside subgraphs' outer scope are fine: only top-level names matter.
            if all(i in available for i in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            missing = sorted({i for n in rest for i in n.input if i not in available})[:3]
            raise ModelError(f"the graph is not a DAG or uses undefined tensors ({', '.join(missing)}); the file is damaged")
        pending = rest
    return ordered


def _build(model: onnx.ModelProto, info: dict[str, TensorInfo]) -> _Graph:
    nodes = _toposorted(model.graph)
    producer: dict[str, int] = {}
    consumers: dict[str, list[int]] = {}
    constants = {t.name for t in model.graph.initializer}
    for i, node in enumerate(nodes):
        for out in node.output:
            if out:
                producer[out] = i
        for inp in node.input:
            if inp:
                consumers.setdefault(inp, []).append(i)
        if node.op_type == "Constant" or (node.input and all((not x) or x in constants for x in node.input) and node.op_type in PLUMBING):
            constants.update(o for o in node.output if o)
    return _Graph(nodes, producer, consumers, info, constants, [o.name for o in model.graph.output])


def _rank4(g: _Graph, name: str) -> bool:
    ti = g.info.get(name)
    return ti is not None and ti.shape is not None and len(ti.shape) == 4


def _propagate_layouts(g: _Graph, input_name: str, forced: Layout | None) -> dict[str, Layout]:
    """Layout of every rank-4 tensor reachable from the image input, where the graph determines it."""
    layout: dict[str, Layout] = {}
    if forced is not None:
        layout[input_name] = forced

    def data_inputs(node: onnx.NodeProto) -> list[str]:
        return [x for x in node.input if x and x not in g.constants and _rank4(g, x)]

    changed = True
    passes = 0
    while changed and passes < 50:
        changed = False
        passes += 1
        for node in g.nodes:
            op = node.op_type
            ins = data_inputs(node)
            outs = [o for o in node.output if o and _rank4(g, o)]
            new: dict[str, Layout] = {}
            if op in NCHW_OPS:
                if ins:
                    new[ins[0]] = Layout.NCHW
                for o in outs:
                    new[o] = Layout.NCHW
            elif op == "NhwcConv":
                if ins:
                    new[ins[0]] = Layout.NHWC
                for o in outs:
                    new[o] = Layout.NHWC
            elif op == "Transpose" and ins:
                perm = list(_attr(node, "perm", []) or [])
                flips = {(0, 2, 3, 1): (Layout.NCHW, Layout.NHWC), (0, 3, 1, 2): (Layout.NHWC, Layout.NCHW)}
                if tuple(perm) in flips:
                    new[ins[0]] = flips[tuple(perm)][0]
                    for o in outs:
                        new[o] = flips[tuple(perm)][1]
                elif perm == [0, 1, 2, 3] and ins[0] in layout:
                    for o in outs:
                        new[o] = layout[ins[0]]
            elif op in LAYOUT_PRESERVING and outs:
                known = [layout[x] for x in ins if x in layout]
                if known:
                    for o in outs:
                        new[o] = known[0]
                else:
                    known_out = [layout[o] for o in outs if o in layout]
                    if known_out and op not in {"Concat", "Split", "Slice", "Pad", "Resize", "Upsample", "Tile", "Expand"}:
                        for x in ins:
                            if tuple(g.info[x].shape) == tuple(g.info[outs[0]].shape):  # type: ignore[arg-type]
                                new[x] = known_out[0]
            elif outs and op in {"Reshape", "Squeeze", "Unsqueeze", "Flatten"}:
                # A rank-4 result of reshaping keeps the layout of the nearest rank-4 ancestor with the
                # same spatial dims at the same places (channel shuffles reshape through rank 5).
                anc = _nearest_rank4_ancestor(g, node, layout)
                if anc is not None:
                    src, lay = anc
                    a, b = lay.spatial_axes
                    s_in, s_out = g.info[src].shape, g.info[outs[0]].shape
                    if s_in is not None and s_out is not None and (s_in[a], s_in[b]) == (s_out[a], s_out[b]) and s_in[0] == s_out[0]:
                        new[outs[0]] = lay
            for name, lay in new.items():
                if name not in layout:
                    layout[name] = lay
                    changed = True
    return layout


def _nearest_rank4_ancestor(g: _Graph, node: onnx.NodeProto, layout: dict[str, Layout]) -> tuple[str, Layout] | None:
    frontier = [node]
    seen = 0
    while frontier and seen < 8:
        seen += 1
        nxt = []
        for n in frontier:
            data = n.input[:1] if n.op_type in {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten"} else []
            for x in data:
                if x in layout:
                    return x, layout[x]
                if x in g.producer:
                    nxt.append(g.nodes[g.producer[x]])
        frontier = nxt
    return None


def input_layout(model: onnx.ModelProto, spec: InputSpec, forced: Layout | None = None) -> tuple[Layout, str]:
    """The image input's layout as the graph determines it, with how it was found.

    The operators that read the input tell (Conv: NCHW, Transpose [0,3,1,2]: NHWC); shapes are
    inferred with unknown dims pinned to a nominal size. Only when the graph says nothing is the
    input shape used, and then only when the channel axis is unambiguous.
    """
    if forced is not None:
        return forced, "given by the caller"
    for guess in (Layout.NCHW, Layout.NHWC):
        c_ax = guess.channel_axis
        filled = tuple(d if isinstance(d, int) else (1 if i == 0 else (3 if i == c_ax else 64)) for i, d in enumerate(spec.dims))
        pinned = with_pinned_input(model, spec, filled)  # type: ignore[arg-type]
        g = _build(pinned, infer_tensor_info(pinned))
        layouts = _propagate_layouts(g, spec.name, None)
        if spec.name in layouts:
            return layouts[spec.name], "from the operators that read the input"
    dims = spec.dims
    if dims[1] in (1, 3, 4) and dims[3] not in (1, 3, 4):
        return Layout.NCHW, "guessed from the input shape (channels second); give layout= if wrong"
    if dims[3] in (1, 3, 4) and dims[1] not in (1, 3, 4):
        return Layout.NHWC, "guessed from the input shape (channels last); give layout= if wrong"
    raise ModelError(
        f"cannot tell whether input {spec.name!r} (shape {list(dims)}) is NCHW or NHWC; give layout='NCHW' or 'NHWC' (--layout)"
    )


def _reachable_from(g: _Graph, start: str) -> set[str]:
    seen = {start}
    stack = [start]
    while stack:
        t = stack.pop()
        for ci in g.consumers.get(t, []):
            for o in g.nodes[ci].output:
                if o and o not in seen:
                    seen.add(o)
                    stack.append(o)
    return seen


def _quant_params(g: _Graph, name: str, depth: int = 0) -> tuple[str, str] | None:
    """(scale, zero point) tensor names of a quantized tensor, from its producer or its consumers."""
    if depth > 6:
        return None
    if name in g.producer:
        node = g.nodes[g.producer[name]]
        pos = QUANT_PRODUCERS.get(node.op_type)
        if pos is not None and len(node.input) > max(pos):
            return node.input[pos[0]], node.input[pos[1]]
        if node.op_type in QUANT_PASSTHROUGH and node.input:
            found = _quant_params(g, node.input[0], depth + 1)
            if found is not None:
                return found
    for ci in g.consumers.get(name, []):
        node = g.nodes[ci]
        if node.op_type in {"DequantizeLinear"} and node.input[0] == name and len(node.input) >= 3:
            return node.input[1], node.input[2]
        if node.op_type == "QLinearConv" and node.input[0] == name:
            return node.input[1], node.input[2]
    return None


def analyse(
    model: onnx.ModelProto,
    spec: InputSpec,
    size: tuple[int, int],
    *,
    input_layout: Layout,
    layer: str | None = None,
    weight_layers: Sequence[str] | None = None,
    probe: Callable[[onnx.ModelProto, list[str], tuple[int, ...]], dict[str, TensorInfo]] | None = None,
    max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES,
) -> Analysis:
    """List the spatial maps of ``model`` at input size ``size`` and choose E_L and the weighting maps."""
    h, w = size
    c = spec.dims[input_layout.channel_axis]
    c = c if isinstance(c, int) else 3
    dims = (1, c, h, w) if input_layout is Layout.NCHW else (1, h, w, c)
    batch = spec.dims[0]
    if isinstance(batch, int) and batch > 1:
        dims = (batch, *dims[1:])
    pinned = with_pinned_input(model, spec, dims)
    info = infer_tensor_info(pinned)
    notes: list[str] = []
    wanted = [o for n in pinned.graph.node for o in n.output if o]
    missing = [o for o in wanted if o not in info or info[o].shape is None]
    check_tensor_sizes(info, max_tensor_bytes)  # what is already known is refused before any probe run
    if missing:
        if probe is None:
            raise ModelError(f"shape inference could not type {len(missing)} tensors (e.g. {missing[0]!r}) and no probe run is possible")
        notes.append(f"shape inference left {len(missing)} tensors untyped; shapes read from a probe run at batch 1")
        info.update(probe(with_pinned_input(model, spec, dims, weights=True), missing, dims))
    check_tensor_sizes(info, max_tensor_bytes)
    g = _build(pinned, info)
    layouts = _propagate_layouts(g, spec.name, input_layout)
    reach = _reachable_from(g, spec.name)

    def is_spatial(name: str) -> bool:
        if name not in layouts or name not in reach or not _rank4(g, name):
            return False
        hh, ww = _hw(g, name, layouts[name])
        return hh * ww > 1

    # Every spatial map that a PFV user may pick (explicitly), in graph order.
    quant_params: dict[str, tuple[str, str]] = {}
    spatial: list[FeatureMap] = []
    for node in g.nodes:
        for out in node.output:
            if not out or not is_spatial(out):
                continue
            ti = g.info[out]
            if ti.elem_type in QUANT_TYPES:
                qp = _quant_params(g, out)
                if qp is None or node.op_type == "QuantizeLinear":
                    continue
                quant_params[out] = qp
            elif ti.elem_type not in FLOAT_TYPES:
                continue
            if node.op_type in PLUMBING:
                continue
            spatial.append(
                FeatureMap(out, node.op_type, tuple(ti.shape), layouts[out], TensorProto.DataType.Name(ti.elem_type).lower())  # type: ignore[arg-type]
            )
    if not spatial:
        raise ModelError(
            "the model has no spatial feature maps (no 4-D activation with height and width > 1 after the input); "
            "PFV needs a convolutional network"
        )
    by_name = {fm.name: fm for fm in spatial}
    order = {fm.name: i for i, fm in enumerate(spatial)}

    # E_L
    if layer is not None:
        decomposed = _match_one(layer, spatial, "layer")
        decomposed = replace(decomposed, role=Role.DECOMPOSED, reason=f"named by the caller ({layer!r})")
        notes.append(f"E_L named by the caller: {decomposed.name}")
    else:
        decomposed = _auto_decomposed(g, spatial, by_name, layouts, is_spatial, notes)

    el_area = decomposed.hw[0] * decomposed.hw[1]
    # Weighting maps
    if weight_layers is not None:
        weighting = []
        for pattern in weight_layers:
            for fm in _match_all(pattern, spatial, "weight_layers"):
                if fm.name != decomposed.name and fm.name not in {x.name for x in weighting}:
                    weighting.append(replace(fm, role=Role.WEIGHTING, reason=f"named by the caller ({pattern!r})"))
        weighting.sort(key=lambda fm: order[fm.name])
        if not weight_layers:
            notes.append("no weighting maps (weight_layers=[]): the components are upsampled unweighted")
    else:
        weighting = _auto_weighting(g, spatial, decomposed, el_area, order, spec.name)
        if weighting:
            notes.append(
                "weighting maps: one per resolution finer than E_L, the last map at that resolution "
                "that every path to the output passes through, preferring activations over raw convolutions"
            )
        else:
            notes.append("no spatial map is finer than E_L: the components are upsampled unweighted")

    chosen = {fm.name: fm for fm in [*weighting, decomposed]}
    candidates = [chosen.get(fm.name, fm) for fm in spatial]
    return Analysis(spec, input_layout, size, candidates, decomposed, weighting, notes, quant_params)


def _hw(g: _Graph, name: str, layout: Layout) -> tuple[int, int]:
    shape = g.info[name].shape
    a, b = layout.spatial_axes
    return int(shape[a]), int(shape[b])  # type: ignore[index]


def _auto_decomposed(g, spatial, by_name, layouts, is_spatial, notes) -> FeatureMap:
    # Tensors with a spatial map somewhere downstream: the collapse into the head is the last
    # place where space disappears and never comes back (squeeze-excite pools do come back).
    spatial_below: dict[str, bool] = {}
    for node in reversed(g.nodes):
        for out in node.output:
            if not out:
                continue
            below = False
            for ci in g.consumers.get(out, []):
                for o in g.nodes[ci].output:
                    if o and (is_spatial(o) or spatial_below.get(o, False)):
                        below = True
            spatial_below[out] = below
    heads: list[tuple[int, str, str]] = []  # (node position, input tensor, op)
    for i, node in enumerate(g.nodes):
        ins = [x for x in node.input if x and is_spatial(x)]
        if not ins:
            continue
        outs = [o for o in node.output if o]
        if outs and all(not is_spatial(o) and not spatial_below.get(o, False) for o in outs):
            heads.append((i, ins[0], node.op_type))
    reason_tail = ""
    if heads:
        # The deepest head by longest path from the input, not by list position: an auxiliary
        # classifier may be listed after the main head in a valid node order.
        depth = _depths(g)
        pos, tensor, op = max(heads, key=lambda h: (depth.get(h[1], 0), h[0]))
        reason = f"input of the collapse into the head ({op})"
        tensor, skipped = _walk_back(g, tensor, is_spatial)
        if skipped:
            reason_tail = f"; skipped {', '.join(skipped)} before it, which only downsample or move data"
        if tensor not in by_name:
            tensor = _deepest_candidate_before(g, tensor, by_name)
    else:
        # No collapse: a fully convolutional output. Take the deepest spatial map.
        tensor = spatial[-1].name
        reason = "deepest spatial map (the network never collapses space)"
    fm = by_name[tensor]
    notes.append(f"E_L: {fm.name} ({reason}{reason_tail})")
    return replace(fm, role=Role.DECOMPOSED, reason=f"deepest map with spatial extent: {reason}{reason_tail}")


def _depths(g: _Graph) -> dict[str, int]:
    """Longest path (in nodes) from the graph's inputs to every tensor."""
    depth: dict[str, int] = {}
    for node in g.nodes:  # topologically sorted
        d = 1 + max((depth.get(x, 0) for x in node.input if x), default=0)
        for out in node.output:
            if out:
                depth[out] = d
    return depth


def _walk_back(g: _Graph, tensor: str, is_spatial) -> tuple[str, list[str]]:
    """Skip plumbing and downsample-only pools between E_L and the collapse."""
    skipped: list[str] = []
    for _ in range(64):
        if tensor not in g.producer:
            break
        node = g.nodes[g.producer[tensor]]
        if node.op_type in PLUMBING or (node.op_type == "DequantizeLinear" and _is_qdq_of_pool(g, node)):
            src = node.input[0]
        elif node.op_type in POOLS and node.input and is_spatial(node.input[0]):
            src = node.input[0]
            skipped.append(f"{node.op_type} {node.name or tensor}".strip())
        else:
            break
        if not is_spatial(src) and node.op_type not in PLUMBING:
            break
        if not is_spatial(src):
            # plumbing from a non-spatial or unknown tensor: stop here
            break
        tensor = src
    return tensor, skipped


def _is_qdq_of_pool(g: _Graph, dq: onnx.NodeProto) -> bool:
    """DequantizeLinear(QuantizeLinear(pool output)) in QDQ graphs counts as part of that pool."""
    q = dq.input[0]
    if q not in g.producer or g.nodes[g.producer[q]].op_type != "QuantizeLinear":
        return False
    src = g.nodes[g.producer[q]].input[0]
    return src in g.producer and g.nodes[g.producer[src]].op_type in POOLS


def _deepest_candidate_before(g: _Graph, tensor: str, by_name: dict[str, FeatureMap]) -> str:
    stack, seen = [tensor], set()
    while stack:
        t = stack.pop()
        if t in by_name:
            return t
        if t in seen or t not in g.producer:
            continue
        seen.add(t)
        stack.extend(x for x in g.nodes[g.producer[t]].input if x)
    raise ModelError(f"could not find a feature map above {tensor!r}; name one with layer=")


def _cut_tensors(g: _Graph, names: set[str], input_name: str) -> set[str]:
    """The tensors every path from the input to the head passes through.

    In topological order a tensor t made by node p is such a cut when no other rank-4 data tensor
    made at or before p is still read after p.
    """
    data = [n for n in g.info if _rank4(g, n) and (n in g.producer or n == input_name) and n not in g.constants]
    items = []
    for name in data:
        p = g.producer.get(name, -1)
        uses = g.consumers.get(name, [])
        items.append((p, max(uses) if uses else p, name))
    items.sort()
    cuts: set[str] = set()
    running = -2  # max last use among tensors made strictly before the current node
    i = 0
    while i < len(items):
        j = i
        while j < len(items) and items[j][0] == items[i][0]:
            j += 1
        group = items[i:j]
        p = items[i][0]
        for _, last, name in group:
            siblings = max((it[1] for it in group if it[2] != name), default=-2)
            if name in names and running <= p and siblings <= p:
                cuts.add(name)
        running = max(running, max(it[1] for it in group))
        i = j
    return cuts


def _auto_weighting(g, spatial, decomposed, el_area, order, input_name) -> list[FeatureMap]:
    names = {fm.name for fm in spatial}
    cuts = _cut_tensors(g, names, input_name)
    el_pos = order[decomposed.name]
    by_res: dict[tuple[int, int], list[FeatureMap]] = {}
    for fm in spatial:
        if order[fm.name] >= el_pos or fm.hw[0] * fm.hw[1] <= el_area or fm.name not in cuts:
            continue
        by_res.setdefault(fm.hw, []).append(fm)
    chosen = []
    for res, fms in by_res.items():
        post = [fm for fm in fms if fm.op in ACTIVATIONS]
        pick = post[-1] if post else fms[-1]
        kind = "activation" if post else "raw output (no activation at this resolution)"
        chosen.append(
            replace(pick, role=Role.WEIGHTING, reason=f"stage output at {res[0]}x{res[1]}: last {kind} every path passes through")
        )
    chosen.sort(key=lambda fm: order[fm.name])
    return chosen


def _match_all(pattern: str, spatial: list[FeatureMap], what: str) -> list[FeatureMap]:
    exact = [fm for fm in spatial if fm.name == pattern]
    if exact:
        return exact
    hits = [fm for fm in spatial if fnmatch.fnmatchcase(fm.name, pattern)]
    if hits:
        return hits
    close = difflib.get_close_matches(pattern, [fm.name for fm in spatial], n=3, cutoff=0.3)
    hint = f"; closest spatial maps: {', '.join(close)}" if close else "; run `pfv-onnx inspect MODEL` to list them"
    raise InputError(f"{what}: no spatial feature map matches {pattern!r}{hint}")


def _match_one(pattern: str, spatial: list[FeatureMap], what: str) -> FeatureMap:
    return _match_all(pattern, spatial, what)[-1]


# ---------------------------------------------------------------- rewriting


@dataclass(frozen=True)
class TappedOutput:
    """An output the rewritten graph adds: the tensor it reads and how it appears."""

    source: str  # the feature map's tensor name
    output: str  # the new graph output's name
    channel_sum: bool  # (N,1,H,W) / (N,H,W,1) channel sum instead of the full map


def output_name(source: str, channel_sum: bool) -> str:
    return f"pfv_onnx/{source}/{'channel_sum' if channel_sum else 'map'}"


# Output channels of the 1x1 convolution that sums an NCHW map over its channels: a multiple
# of onnxruntime's NCHWc block (8 or 16 on x86), so the convolution reads the blocked map
# as it is, with no reorder to NCHW first. All its channels are equal; channel 0 is kept.
_SUM_CONV_CHANNELS = 16


def _channel_sum(fm: FeatureMap, src: Any, out: Any, opset: int, conv: bool = True) -> list[Any]:
    """Nodes computing the channel sum of the float32 tensor ``src`` of map ``fm`` into ``out``.

    NCHW maps: a 1x1 ``Conv`` with an all-ones kernel, then ``Slice`` of channel 0. Measured
    on EfficientNet-Lite0 (docs/PERFORMANCE.md), this keeps the rewritten model's forward pass
    within 5-10% of the original's and its peak memory near the original's, where
    ``ReduceSum`` after onnxruntime's layout reorder cost +13-24% and +340 MiB. NHWC maps
    (and maps whose channel count is unknown) use ``ReduceSum``.
    """
    import onnx_graphsurgeon as gs

    axis = fm.layout.channel_axis
    channels = fm.channels
    if conv and fm.layout is Layout.NCHW and isinstance(channels, int) and channels > 0:
        kernel = gs.Constant(f"pfv_onnx/{fm.name}/ones", np.ones((_SUM_CONV_CHANNELS, channels, 1, 1), dtype=np.float32))
        summed = gs.Variable(f"pfv_onnx/{fm.name}/channel_sums", dtype=np.float32)
        conv = gs.Node("Conv", attrs={"kernel_shape": [1, 1]}, inputs=[src, kernel], outputs=[summed])
        if opset >= 10:
            bounds = [gs.Constant(f"pfv_onnx/{fm.name}/slice_{k}", np.array([v], dtype=np.int64)) for k, v in (("starts", 0), ("ends", 1), ("axes", 1))]
            return [conv, gs.Node("Slice", inputs=[summed, *bounds], outputs=[out])]
        return [conv, gs.Node("Slice", attrs={"starts": [0], "ends": [1], "axes": [1]}, inputs=[summed], outputs=[out])]
    if opset >= 13:
        axes = gs.Constant(f"pfv_onnx/{fm.name}/axes", np.array([axis], dtype=np.int64))
        return [gs.Node("ReduceSum", attrs={"keepdims": 1}, inputs=[src, axes], outputs=[out])]
    return [gs.Node("ReduceSum", attrs={"keepdims": 1, "axes": [axis]}, inputs=[src], outputs=[out])]


def rewrite(model: onnx.ModelProto, analysis: Analysis, *, conv_sums: bool = True) -> tuple[onnx.ModelProto, list[TappedOutput]]:
    """Append E_L (full) and the weighting maps (channel sums) to the model's outputs.

    ``conv_sums``: NCHW channel sums as 1x1 convolutions (for onnxruntime's CPU provider), else ReduceSum.
    """
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    graph.toposort()
    tensors = graph.tensors()
    # Tap nodes go after the original nodes, deepest map first: onnxruntime's default order
    # then runs each channel sum right after its map instead of holding every map to the end.
    tap_nodes: dict[str, list[gs.Node]] = {}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    taps: list[TappedOutput] = []
    static_hw = all(isinstance(d, int) for d in analysis.input.dims[1:])
    batch = analysis.input.dims[0] if analysis.input.dims[0] is not None else "batch"

    def out_shape(fm: FeatureMap, channel_sum: bool) -> list[int | str]:
        """The output's shape: static where the input is, named symbols for dynamic dims."""
        dims: list[int | str] = list(fm.shape)
        dims[0] = batch  # type: ignore[assignment]
        if channel_sum:
            dims[fm.layout.channel_axis] = 1
        if not static_hw:
            for ax, tag in zip(fm.layout.spatial_axes, ("h", "w")):
                dims[ax] = f"{tag}_{len(taps)}"
        return dims

    def float_source(fm: FeatureMap) -> gs.Variable:
        src = tensors[fm.name]
        if fm.name in analysis.quant_params:
            scale, zp = analysis.quant_params[fm.name]
            deq = gs.Variable(f"pfv_onnx/{fm.name}/dequantized", dtype=np.float32)
            tap_nodes.setdefault(fm.name, []).append(gs.Node("DequantizeLinear", inputs=[src, tensors[scale], tensors[zp]], outputs=[deq]))
            return deq
        return src

    for fm in analysis.weighting:
        src = float_source(fm)
        if fm.dtype != "float" and fm.name not in analysis.quant_params:
            cast = gs.Variable(f"pfv_onnx/{fm.name}/float", dtype=np.float32)
            tap_nodes.setdefault(fm.name, []).append(gs.Node("Cast", attrs={"to": TensorProto.FLOAT}, inputs=[src], outputs=[cast]))
            src = cast
        out = gs.Variable(output_name(fm.name, True), dtype=np.float32, shape=out_shape(fm, True))
        tap_nodes.setdefault(fm.name, []).extend(_channel_sum(fm, src, out, opset, conv=conv_sums))
        graph.outputs.append(out)
        taps.append(TappedOutput(fm.name, out.name, True))

    fm = analysis.decomposed
    src = float_source(fm)
    dtype = np.float32 if fm.name in analysis.quant_params else onnx.helper.tensor_dtype_to_np_dtype(TensorProto.DataType.Value(fm.dtype.upper()))
    out = gs.Variable(output_name(fm.name, False), dtype=dtype, shape=out_shape(fm, False))
    tap_nodes.setdefault(fm.name, []).append(gs.Node("Identity", inputs=[src], outputs=[out]))
    graph.outputs.append(out)
    taps.append(TappedOutput(fm.name, out.name, False))

    for chosen in [analysis.decomposed, *reversed(analysis.weighting)]:
        graph.nodes.extend(tap_nodes.get(chosen.name, []))
    graph.cleanup(remove_unused_graph_inputs=False)
    untyped = {o.name for o in graph.outputs if o.dtype is None}  # onnxruntime runs such outputs; the exporter refuses them
    known: dict[str, onnx.TypeProto] = {}
    if untyped:
        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
            known = {v.name: v.type for v in inferred.graph.value_info if v.name in untyped and v.type.tensor_type.elem_type}
        except Exception:  # inference gives up on some graphs; the outputs then stay untyped
            known = {}
        for o in graph.outputs:
            if o.name in known:
                o.dtype = onnx.helper.tensor_dtype_to_np_dtype(known[o.name].tensor_type.elem_type)
    rewritten = gs.export_onnx(graph, do_type_check=all(o.dtype is not None for o in graph.outputs))
    for out in rewritten.graph.output:
        if out.name in known:
            out.type.CopyFrom(known[out.name])
    rewritten.ir_version = model.ir_version
    del rewritten.opset_import[:]
    rewritten.opset_import.extend(model.opset_import)
    del rewritten.metadata_props[:]
    rewritten.metadata_props.extend(model.metadata_props)
    rewritten.producer_name = model.producer_name
    rewritten.producer_version = model.producer_version
    return rewritten, taps

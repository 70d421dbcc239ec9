"""Which maps PFV taps: the automatic (or requested) choice of E_L and the weighting maps among
the spatial maps of a graph (``candidates``), with the reasons and warnings in words.

E_L is the deepest map before the network collapses space into its head; weighting maps
are the network's own finer stage outputs (never the input image, a Pad, or a map whose grid is
not the input's divided by a whole stride).
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import onnx

from .cancellation import Probe, drop_cancelled
from .candidates import MapGraph, find_maps
from .errors import InputError, ModelError
from .feature_maps import FeatureMap, Layout, Role
from .graph_index import PLUMBING, GraphIndex, depths
from .layouts import rank4
from .model_io import DEFAULT_MAX_TENSOR_BYTES, InputSpec
from .token_weighting import single_resolution_token_weighting

ACTIVATIONS = {
    "Relu", "Clip", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish",
    "Tanh", "Softplus", "Mish", "Gelu", "Add", "Sum", "Mul", "Max", "Concat", "DequantizeLinear",
    "QLinearAdd", "QLinearLeakyRelu", "QLinearSigmoid", "QLinearConcat", "FastGelu", "QuickGelu", "Swish",
}
POOLS = {"MaxPool", "AveragePool", "LpPool", "QLinearAveragePool"}
# Ops that mix tokens with each other by data-dependent weights (attention).
MIXING = {"MatMul", "Einsum", "QLinearMatMul", "MatMulInteger", "FusedMatMul", "Gemm"}
NOT_HEADS = {"Shape", "Size"}  # read only a tensor's shape
BORDER_CELLS = 4  # cells a map may lose at its border (valid convolutions) and still count as input / stride


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
    warnings: list[str] = field(default_factory=list)  # where the choice is known to be weak

    @property
    def chosen(self) -> list[FeatureMap]:
        return [*self.weighting, self.decomposed]


def analyse(
    model: onnx.ModelProto,
    spec: InputSpec,
    size: tuple[int, int],
    *,
    input_layout: Layout,
    layer: str | None = None,
    weight_layers: Sequence[str] | None = None,
    probe: Probe | None = None,
    max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES,
) -> Analysis:
    """List the spatial maps of ``model`` at input size ``size`` and choose E_L and the weighting maps."""
    notes: list[str] = []
    m, spatial, quant_params = find_maps(model, spec, size, input_layout, notes, probe, max_tensor_bytes)
    by_name = {fm.name: fm for fm in spatial}
    order = {fm.name: i for i, fm in enumerate(spatial)}
    warnings: list[str] = []

    # E_L
    if layer is not None:
        named = _match_one(layer, spatial, "layer")
        decomposed = _int8_copy(m.g, named, by_name, notes)
        why = f"named by the caller ({layer!r})" + (f"; {notes[-1]}" if decomposed is not named else "")
        decomposed = replace(decomposed, role=Role.DECOMPOSED, reason=why)
        notes.append(f"E_L named by the caller: {decomposed.name}")
    else:
        decomposed = _auto_decomposed(m, spatial, by_name, notes)
    if decomposed.tokens is not None:
        notes.append(f"E_L is a token sequence: {_token_words(decomposed)}")

    # Weighting maps
    if weight_layers is not None:
        weighting = []
        for pattern in weight_layers:
            for named in _match_all(pattern, spatial, "weight_layers"):
                fm = _int8_copy(m.g, named, by_name, notes)
                why = f"named by the caller ({pattern!r})" + (f"; {notes[-1]}" if fm is not named else "")
                if fm.name != decomposed.name and fm.name not in {x.name for x in weighting}:
                    weighting.append(replace(fm, role=Role.WEIGHTING, reason=why))
        weighting.sort(key=lambda fm: order[fm.name])
        if not weight_layers:
            notes.append("no weighting maps (weight_layers=[]): the components are upsampled unweighted")
    else:
        weighting = _auto_weighting(m, spatial, decomposed, order, size)
        if weighting:
            notes.append(
                "weighting maps: one per resolution finer than E_L, the last map at that resolution "
                "that every path to the output passes through, preferring activations over raw convolutions; "
                "never the input image, a Pad, or a map whose grid is not the input's divided by a whole stride"
            )
        elif decomposed.tokens is not None:
            weighting = single_resolution_token_weighting(m, decomposed)
            notes.append("single-resolution token model (no layer works at a grid finer than the patch grid): "
                         + (f"the components are weighted by the attention each patch token receives in {weighting[0].name}"
                            if weighting else "the components are upsampled unweighted (no attention Softmax above E_L)"))
            if decomposed.tokens.before or decomposed.tokens.after:
                warnings.append(
                    "E_L holds the patch tokens of a single-resolution transformer with special (class/register) tokens: "
                    "a class-token head need not make its patch tokens localise the objects, so the colours show what "
                    "the patch tokens encode, not necessarily where the class evidence is"
                )
        else:
            notes.append("no spatial map is finer than E_L: the components are upsampled unweighted")

    if weighting and probe is not None:
        weighting, dropped = drop_cancelled(model, spec, size, input_layout, m.g, weighting, probe, named=weight_layers is not None)
        warnings += dropped
        if dropped and not weighting:
            notes.append("no weighting map is left (their channel sums cancel): the components are upsampled unweighted")

    chosen = {fm.name: fm for fm in [*weighting, decomposed]}
    candidates = [chosen.get(fm.name, fm) for fm in spatial]
    return Analysis(spec, input_layout, size, candidates, decomposed, weighting, notes, quant_params, warnings)


def _int8_copy(g: GraphIndex, fm: FeatureMap, by_name: dict[str, FeatureMap], notes: list[str]) -> FeatureMap:
    """A QDQ graph's float map that only a QuantizeLinear reads exists in float only as written:
    onnxruntime fuses it into an int8 operator, and tapping it would undo that fusion and move
    the model's outputs. Its dequantised copy (the DequantizeLinear of that QuantizeLinear) is
    what the model computes, and is used instead (said in the notes)."""
    readers = [g.nodes[i] for i in g.consumers.get(fm.name, [])]
    if len(readers) != 1 or readers[0].op_type != "QuantizeLinear" or fm.name in g.outputs:
        return fm
    q = readers[0]
    copies = [g.nodes[i].output[0] for i in g.consumers.get(q.output[0], []) if g.nodes[i].op_type == "DequantizeLinear"]
    copy = next((by_name[c] for c in copies if c in by_name), None)
    if copy is None:
        return fm
    notes.append(f"{fm.name!r} is only the float input of QuantizeLinear {q.name or q.output[0]!r}, which onnxruntime fuses into "
                 f"an int8 operator: the model computes it as the int8 values that {copy.name!r} dequantises, tapped instead")
    return copy


def _token_words(fm: FeatureMap) -> str:
    t = fm.tokens
    assert t is not None
    h, w = fm.hw
    special = f"{t.before} special token(s) before and {t.after} after the {h * w} patch tokens"
    return f"{h}x{w} grid of patch tokens in a {list(t.shape)} tensor ({special}); {fm.grid_from}"


def _auto_decomposed(m: MapGraph, spatial: list[FeatureMap], by_name: dict[str, FeatureMap], notes: list[str]) -> FeatureMap:
    g = m.g
    # Tensors with a map somewhere downstream: the collapse into the head is the last place where
    # space disappears and never comes back (squeeze-excite pools and attention do come back).
    below: dict[str, bool] = {}
    for node in reversed(g.nodes):
        for out in node.output:
            if out:
                below[out] = any(m.is_map(o) or below.get(o, False) for ci in g.consumers.get(out, []) for o in g.nodes[ci].output if o)
    heads: list[tuple[int, str, onnx.NodeProto]] = []  # (node position, input tensor, node)
    for i, node in enumerate(g.nodes):
        ins = [x for x in node.input if x and m.is_map(x)]
        outs = [o for o in node.output if o]
        if ins and outs and node.op_type not in NOT_HEADS and all(not m.is_map(o) and not below.get(o, False) for o in outs):
            heads.append((i, ins[0], node))
    if not heads:
        fm = spatial[-1]
        reason = "deepest map; the network never collapses space (its output is this map or one computed from it)"
        notes.append(f"E_L: {fm.name} ({reason})")
        return replace(fm, role=Role.DECOMPOSED, reason=reason)
    # The deepest head by longest path from the input, not by list position: an auxiliary
    # classifier may be listed after the main head in a valid node order.
    depth = depths(g)
    _, tensor, node = max(heads, key=lambda h: (depth.get(h[1], 0), h[0]))
    mixer = _mixing_below(m, node)
    if mixer is not None:
        shape = g.shape(node.output[0])
        raise ModelError(
            f"the last spatial map {tensor!r} becomes tokens (shape {list(shape) if shape else '?'} after {node.op_type} "
            f"{node.name or node.output[0]!r}) that the graph does not map onto a grid, and {mixer} mixes them afterwards; "
            "PFV cannot place them in the image (name a map with --layer to decompose it anyway)"
        )
    head = f"{node.op_type} {node.name or node.output[0]!r}"
    start = tensor
    tensor, moved, skipped = _walk_back(m, tensor)
    collapse = "collapses space into the head"
    if start in m.views and m.views[start].kind == "tokens":
        collapse = {"Gather": "takes single tokens out of the sequence into the head", "Slice": "takes single tokens out of the sequence into the head",
                    "ReduceMean": "pools the tokens into the head"}.get(node.op_type, "turns the tokens into the head's input")
    if tensor == start:
        reason = f"input of {head}, which {collapse}"
    else:
        reason = (f"{head} {collapse}; its input {start!r} is this map after "
                  f"{', '.join(moved + skipped)}, which only move data, drop special tokens or downsample")
    if tensor not in by_name:
        found = _deepest_candidate_before(g, tensor, by_name)
        reason += f"; {tensor!r} is no feature map of its own ({g.producer_node(tensor).op_type}), so the deepest map above it"  # type: ignore[union-attr]
        tensor = found
    fm = by_name[tensor]
    notes.append(f"E_L: {fm.name} ({reason})")
    return replace(fm, role=Role.DECOMPOSED, reason=reason)


def _mixing_below(m: MapGraph, node: onnx.NodeProto) -> str | None:
    """An op below ``node`` that multiplies two data tensors (attention over tokens), if any."""
    g = m.g
    stack = [o for o in node.output if o]
    seen: set[str] = set()
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        for ci in g.consumers.get(t, []):
            n = g.nodes[ci]
            data = [x for x in n.input[:2] if x and x in m.reach and x not in g.constants]
            if n.op_type in MIXING and len(data) == 2 and all((g.rank(x) or 0) >= 3 for x in data):
                return f"{n.op_type} {n.name or n.output[0]!r}"
            stack.extend(o for o in n.output if o)
    return None


def _walk_back(m: MapGraph, tensor: str) -> tuple[str, list[str], list[str]]:
    """Skip plumbing, token slices and downsample-only pools between E_L and the collapse."""
    g = m.g
    moved: list[str] = []
    skipped: list[str] = []
    for _ in range(64):
        node = g.producer_node(tensor)
        if node is None or not node.input:
            break
        src = node.input[0]
        label = f"{node.op_type} {node.name or tensor!r}"
        if not m.is_map(src):
            break
        if node.op_type in PLUMBING or (node.op_type == "DequantizeLinear" and _is_qdq_of_pool(g, node)):
            moved.append(label)
        elif node.op_type == "Slice" and tensor in m.views and src in m.views and m.views[src].grid == m.views[tensor].grid:
            moved.append(label)
        elif node.op_type in POOLS:
            skipped.append(label)
        else:
            break
        tensor = src
    return tensor, moved, skipped


def _is_qdq_of_pool(g: GraphIndex, dq: onnx.NodeProto) -> bool:
    """DequantizeLinear(QuantizeLinear(pool output)) in QDQ graphs counts as part of that pool."""
    q = g.producer_node(dq.input[0])
    if q is None or q.op_type != "QuantizeLinear":
        return False
    src = g.producer_node(q.input[0])
    return src is not None and src.op_type in POOLS


def _deepest_candidate_before(g: GraphIndex, tensor: str, by_name: dict[str, FeatureMap]) -> str:
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


def _cut_tensors(g: GraphIndex, names: set[str], input_name: str) -> set[str]:
    """The tensors every path from the input to the head passes through.

    In topological order a tensor t made by node p is such a cut when no other data tensor (a
    rank-4 one, or a map) made at or before p is still read after p.
    """
    data = [n for n in g.info if (rank4(g, n) or n in names) and (n in g.producer or n == input_name) and n not in g.constants]
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


def whole_stride(cells: int, pixels: int) -> bool:
    """Whether a map axis of ``cells`` is the input's ``pixels`` divided by a whole stride.

    ``ceil(pixels / s)`` for some whole s >= 1, or a few cells fewer (what valid convolutions
    lose at the border); never more (a padded copy: 230 from 224, 113 from 224).
    """
    for s in range(1, pixels + 1):
        hi = -(-pixels // s)
        lo = pixels // s - max(BORDER_CELLS, (pixels // s) // 8)
        if lo <= cells <= hi:
            return True
        if hi < cells:
            return False
    return False


def _auto_weighting(m: MapGraph, spatial: list[FeatureMap], decomposed: FeatureMap, order: dict[str, int], size: tuple[int, int]) -> list[FeatureMap]:
    names = {fm.name for fm in spatial}
    cuts = _cut_tensors(m.g, names, m.input_name)
    el_pos = order[decomposed.name]
    el_area = decomposed.hw[0] * decomposed.hw[1]
    by_res: dict[tuple[int, int], list[FeatureMap]] = {}
    for fm in spatial:
        if order[fm.name] >= el_pos or fm.hw[0] * fm.hw[1] <= el_area or fm.name not in cuts or fm.op == "Pad":
            continue
        if not (whole_stride(fm.hw[0], size[0]) and whole_stride(fm.hw[1], size[1])):
            continue
        by_res.setdefault(fm.hw, []).append(fm)
    chosen = []
    for res, fms in by_res.items():
        post = [fm for fm in fms if fm.op in ACTIVATIONS or fm.grid_from]  # a regrouped map holds an activation

        pick = post[-1] if post else fms[-1]
        kind = f"activation ({pick.op})" if post else f"raw output of {pick.op} (no activation at this resolution)"
        if pick.op == "DequantizeLinear":
            kind = "activation (DequantizeLinear: the float values of an int8 activation)"
        chosen.append(
            replace(pick, role=Role.WEIGHTING, reason=f"stage output at {res[0]}x{res[1]}: the last {kind} every path to the head passes through")
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

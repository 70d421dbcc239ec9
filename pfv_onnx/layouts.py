"""Memory layout (NCHW or NHWC) of the image input and of every rank-4 tensor, as the graph's
operators determine it: Conv and pooling read and write NCHW, Transposes flip it, element-wise
ops keep it, linear layers on channels-last maps keep NHWC.
"""

from __future__ import annotations

import onnx

from .errors import ModelError
from .feature_maps import Layout
from .graph_index import GraphIndex, attr, build
from .model_io import InputSpec, infer_tensor_info, with_pinned_input

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


def propagate_layouts(g: GraphIndex, input_name: str, forced: Layout | None, known: dict[str, Layout] | None = None) -> dict[str, Layout]:
    """Layout of every rank-4 tensor reachable from the image input, where the graph determines it.

    ``known``: layouts found otherwise (maps that Reshapes make, see ``grids``), spread from here on.
    Reshapes are left to ``grids``, which follows their axes instead of guessing from shapes.
    """
    layout: dict[str, Layout] = dict(known or {})
    if forced is not None:
        layout[input_name] = forced

    def data_inputs(node: onnx.NodeProto) -> list[str]:
        return [x for x in node.input if x and x not in g.constants and rank4(g, x)]

    changed = True
    passes = 0
    while changed and passes < 50:
        changed = False
        passes += 1
        for node in g.nodes:
            op = node.op_type
            ins = data_inputs(node)
            outs = [o for o in node.output if o and rank4(g, o)]
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
                perm = list(attr(node, "perm", []) or [])
                flips = {(0, 2, 3, 1): (Layout.NCHW, Layout.NHWC), (0, 3, 1, 2): (Layout.NHWC, Layout.NCHW)}
                if tuple(perm) in flips:
                    new[ins[0]] = flips[tuple(perm)][0]
                    for o in outs:
                        new[o] = flips[tuple(perm)][1]
                elif perm == [0, 1, 2, 3] and ins[0] in layout:
                    for o in outs:
                        new[o] = layout[ins[0]]
            elif op == "MatMul" and ins and outs and layout.get(ins[0]) is Layout.NHWC and _is_weight(g, node.input[1]):
                # A linear layer on channels-last maps (Swin, ConvNeXt) acts on the channel axis only.
                new[outs[0]] = Layout.NHWC
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
            for name, lay in new.items():
                if name not in layout:
                    layout[name] = lay
                    changed = True
    return layout


def rank4(g: GraphIndex, name: str) -> bool:
    return g.rank(name) == 4


def _is_weight(g: GraphIndex, name: str) -> bool:
    """A constant 2-D matrix (a linear layer's weights)."""
    return name in g.constants and g.rank(name) == 2


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
        g = build(pinned, infer_tensor_info(pinned))
        layouts = propagate_layouts(g, spec.name, None)
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

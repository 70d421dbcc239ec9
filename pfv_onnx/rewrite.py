"""Rewrite a model so the chosen maps become extra outputs (onnx-graphsurgeon).

E_L is appended in full, each weighting map as its in-graph channel sum; quantized (QOperator)
maps get a DequantizeLinear, token sequences a Slice of their patch tokens and a Reshape to the
grid view the analysis describes. The original outputs are always kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

from .feature_maps import FeatureMap, Layout
from .map_choice import Analysis

INT64_MAX = np.iinfo(np.int64).max


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
        copy = _own_dequantize(fm, src)
        if copy is not None:
            tap_nodes.setdefault(fm.name, []).append(copy)
            src = copy.outputs[0]
        if fm.tokens is not None:
            nodes, grid = _grid_view(fm, src, tensors, opset)
            tap_nodes.setdefault(fm.name, []).extend(nodes)
            return grid
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


def _own_dequantize(fm: FeatureMap, src: Any) -> Any | None:
    """A copy of the DequantizeLinear that makes map ``src`` (a QDQ graph's activation), or None.

    onnxruntime fuses each DequantizeLinear -> op -> QuantizeLinear group into one quantised
    operator only while the DequantizeLinear output feeds nothing else, so the map is read from
    a copy reading the same quantised tensor, scale and zero point (the same float values).
    On the CPU, int8 activations are fused only after onnxruntime turns each QuantizeLinear ->
    DequantizeLinear pair into uint8, which it does only for a quantised tensor read by
    DequantizeLinear nodes alone; the copy would add a reader and keep both neighbouring groups
    in float (EfficientNet-Lite0 from ``quantize_static``: outputs moved by 0.11). So the pair
    is turned into uint8 here (zero point + 128: the same float values, exactly).
    """
    import onnx_graphsurgeon as gs

    producer = src.inputs[0] if src.inputs else None
    if producer is None or producer.op != "DequantizeLinear" or not producer.inputs or isinstance(producer.inputs[0], gs.Constant):
        return None
    _as_uint8(producer.inputs[0], f"pfv_onnx/{fm.name}/zero_point_uint8")
    copy = gs.Variable(f"pfv_onnx/{fm.name}/dequantized", dtype=src.dtype)
    return gs.Node("DequantizeLinear", attrs=dict(producer.attrs), inputs=list(producer.inputs), outputs=[copy], domain=producer.domain)


def _as_uint8(quantised: Any, name: str) -> None:
    """Make an int8 QuantizeLinear -> DequantizeLinear pair uint8 (zero point + 128), where the
    quantised tensor comes from a QuantizeLinear with a constant zero point that every
    DequantizeLinear reading it shares; otherwise leave the graph as it is."""
    import onnx_graphsurgeon as gs

    q = quantised.inputs[0] if quantised.inputs else None
    if q is None or q.op != "QuantizeLinear" or len(q.inputs) < 3 or "output_dtype" in q.attrs:
        return
    zp = q.inputs[2]
    readers = list(quantised.outputs)
    if not isinstance(zp, gs.Constant) or np.asarray(zp.values).dtype != np.int8 or not readers:
        return
    if any(r.op != "DequantizeLinear" or len(r.inputs) < 3 or r.inputs[2] is not zp for r in readers):
        return
    shifted = gs.Constant(name, np.asarray(np.asarray(zp.values).astype(np.int16) + 128, dtype=np.uint8))
    for node in (q, *readers):
        node.inputs[2] = shifted
    quantised.dtype = np.uint8


def _grid_view(fm: FeatureMap, src: Any, tensors: dict[str, Any], opset: int) -> tuple[list[Any], Any]:
    """Nodes that take the patch tokens of token tensor ``src`` and reshape them to ``fm``'s grid view.

    h and w come from the shape of the map the tokens were made from, when there is one with the
    same grid, so the view follows the input size; else they are the analysed size's. Attention
    probabilities (N, heads, T, T) are first averaged over heads and queries into (N, 1, T).
    """
    import onnx_graphsurgeon as gs

    t = fm.tokens
    assert t is not None
    pre = f"pfv_onnx/{fm.name}"
    ax = t.token_axis

    def const(name: str, values: list[int]) -> Any:
        return gs.Constant(f"{pre}/{name}", np.array(values, dtype=np.int64))

    nodes: list[Any] = []
    if t.attention:
        mean = gs.Variable(f"{pre}/received", dtype=src.dtype)
        if opset >= 18:
            nodes.append(gs.Node("ReduceMean", attrs={"keepdims": 1}, inputs=[src, const("mean_axes", [1, 2])], outputs=[mean]))
        else:
            nodes.append(gs.Node("ReduceMean", attrs={"keepdims": 1, "axes": [1, 2]}, inputs=[src], outputs=[mean]))
        src = gs.Variable(f"{pre}/received_tokens", dtype=src.dtype)
        nodes.append(gs.Node("Reshape", inputs=[mean, const("received_shape", [0, 1, -1])], outputs=[src]))
    patches = src
    if t.before or t.after:
        patches = gs.Variable(f"{pre}/patch_tokens", dtype=src.dtype)
        end = -t.after if t.after else INT64_MAX
        nodes.append(gs.Node("Slice", inputs=[src, const("starts", [t.before]), const("ends", [end]), const("axes", [ax])], outputs=[patches]))
    channels = fm.channels
    if t.origin and t.origin in tensors:
        shape = gs.Variable(f"{pre}/origin_shape", dtype=np.int64)
        hw = gs.Variable(f"{pre}/grid_hw", dtype=np.int64)
        nodes.append(gs.Node("Shape", inputs=[tensors[t.origin]], outputs=[shape]))
        nodes.append(gs.Node("Gather", attrs={"axis": 0}, inputs=[shape, const("grid_axes", list(t.origin_axes))], outputs=[hw]))
        parts = [const("batch", [0]), hw, const("channels", [channels])] if ax == 1 else [const("batch", [0]), const("channels", [channels]), hw]
        dims = gs.Variable(f"{pre}/grid_shape", dtype=np.int64)
        nodes.append(gs.Node("Concat", attrs={"axis": 0}, inputs=parts, outputs=[dims]))
    else:
        h, w = fm.hw
        dims = const("grid_shape", [0, h, w, channels] if ax == 1 else [0, channels, h, w])
    grid = gs.Variable(f"{pre}/grid", dtype=src.dtype)
    nodes.append(gs.Node("Reshape", inputs=[patches, dims], outputs=[grid]))
    return nodes, grid

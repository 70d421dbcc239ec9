"""Copies of the bundled EfficientNet-Lite0 made in the tests: int8 QDQ, fp16, a layer
re-drawn, and the bundled photographs preprocessed for it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pfv_onnx.inputs import load_image, make_preprocessing, stack_batch

ROOT = Path(__file__).resolve().parent.parent
EFFICIENTNET = ROOT / "models" / "efficientnet_lite0.onnx"
PHOTOS = sorted((ROOT / "models" / "images").glob("*.jpg"))


def photo_batch(paths=PHOTOS, size: tuple[int, int] = (224, 224)) -> np.ndarray:
    """The photos as EfficientNet-Lite0 takes them (its metadata says: inception preprocessing, RGB)."""
    prep = make_preprocessing("inception", size=size)
    return stack_batch([load_image(p, prep)[1] for p in paths])


def quantise_int8(folder: Path, calibration_images: int = 3) -> Path:
    """onnxruntime's static quantiser as a deployment would run it: ``quant_pre_process``, then
    ``quantize_static`` to QDQ, per channel, calibrated on a few of the photos."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batch = photo_batch(PHOTOS[:calibration_images])

    class Photos(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter({"input": batch[i : i + 1]} for i in range(len(batch)))

        def get_next(self):
            return next(self._feeds, None)

    folder.mkdir(parents=True, exist_ok=True)
    pre, out = folder / "efficientnet_lite0_pre.onnx", folder / "efficientnet_lite0_int8.onnx"
    quant_pre_process(str(EFFICIENTNET), str(pre), skip_symbolic_shape=True)  # (symbolic inference needs sympy; the shapes are static)
    quantize_static(
        str(pre), str(out), Photos(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
    )
    return out


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    return m


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Float16 weights and arithmetic; the image input and the logits stay float32 (Cast nodes
    at both ends), as converters for deployment write it."""
    m = _copy(model)
    g = m.graph
    for t in g.initializer:
        if t.data_type == TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
    inp, out = g.input[0].name, g.output[0].name
    for node in g.node:
        node.input[:] = [f"{inp}_fp16" if i == inp else i for i in node.input]
        node.output[:] = [f"{out}_fp16" if o == out else o for o in node.output]
    g.node.insert(0, helper.make_node("Cast", [inp], [f"{inp}_fp16"], to=TensorProto.FLOAT16, name="input_to_fp16"))
    g.node.append(helper.make_node("Cast", [f"{out}_fp16"], [out], to=TensorProto.FLOAT, name="logits_to_fp32"))
    del g.value_info[:]
    return m


def redrawn(model: onnx.ModelProto, weight: str, seed: int = 0) -> onnx.ModelProto:
    """The initializer ``weight`` drawn again: normal, with the same mean and std."""
    m = _copy(model)
    t = next(t for t in m.graph.initializer if t.name == weight)
    w = numpy_helper.to_array(t)
    fresh = np.random.default_rng(seed).normal(w.mean(), w.std(), w.shape).astype(w.dtype)
    t.CopyFrom(numpy_helper.from_array(fresh, weight))
    return m


def conv_weight(model: onnx.ModelProto, node_name: str) -> str:
    return next(n for n in model.graph.node if n.name == node_name).input[1]


EFFICIENTNET_EL = "/_swish_1/Clip_output_0"  # E_L: the head conv's ReLU6, the global average pool's input
MAGENTA_BGR = (255, 0, 255)


def with_patch_detector(model: onnx.ModelProto, channels: np.ndarray, gain: float = 6.0, cancel: bool = False) -> onnx.ModelProto:
    """A planted shortcut: a detector of pure magenta in the input image, max-pooled to E_L's
    7x7 grid, added with ``gain`` to E_L's ``channels`` before the global average pool. Photos
    without magenta give exactly the reference's E_L. ``cancel`` subtracts the detector's share
    of the logits again (then the outputs never change)."""
    m = _copy(model)
    g = m.graph
    gap = next(n for n in g.node if n.op_type == "GlobalAveragePool")
    assert gap.input[0] == EFFICIENTNET_EL
    c = 1280
    spread = np.zeros((c, 1, 1, 1), np.float32)
    spread[channels] = gain
    inits = [
        numpy_helper.from_array(np.array([[[[1.0]], [[-2.0]], [[1.0]]]], np.float32), "shortcut/magenta_w"),  # R - 2G + B (RGB, [-1, 1])
        numpy_helper.from_array(np.array([-3.0], np.float32), "shortcut/magenta_b"),  # 4 for pure magenta, <= 3 for every other colour
        numpy_helper.from_array(spread, "shortcut/spread_w"),
    ]
    nodes = [
        helper.make_node("Conv", [g.input[0].name, "shortcut/magenta_w", "shortcut/magenta_b"], ["shortcut/magenta"], name="shortcut/magenta"),
        helper.make_node("Relu", ["shortcut/magenta"], ["shortcut/magenta_relu"], name="shortcut/relu"),
        helper.make_node("MaxPool", ["shortcut/magenta_relu"], ["shortcut/cells"], kernel_shape=[32, 32], strides=[32, 32], name="shortcut/cells"),
        helper.make_node("Conv", ["shortcut/cells", "shortcut/spread_w"], ["shortcut/spread"], name="shortcut/spread"),
        helper.make_node("Add", [EFFICIENTNET_EL, "shortcut/spread"], ["shortcut/features"], name="shortcut/add"),
    ]
    gap.input[0] = "shortcut/features"
    at = list(g.node).index(gap)
    ordered = [*g.node[:at], *nodes, *g.node[at:]]
    nodes = []
    if cancel:
        fc = next(n for n in g.node if n.op_type == "Gemm")
        w = numpy_helper.to_array(next(t for t in g.initializer if t.name == fc.input[1]))  # (classes, 1280), transB
        correction = -(w[:, channels].sum(axis=1) * gain)[None, :].astype(np.float32)  # (1, classes) per unit of mean detector
        out = g.output[0].name
        fc.output[0] = "shortcut/logits_raw"
        inits.append(numpy_helper.from_array(correction, "shortcut/correction"))
        nodes += [
            helper.make_node("GlobalAveragePool", ["shortcut/cells"], ["shortcut/cell_mean"], name="shortcut/cell_mean"),
            helper.make_node("Flatten", ["shortcut/cell_mean"], ["shortcut/cell_mean_flat"], name="shortcut/flat"),
            helper.make_node("MatMul", ["shortcut/cell_mean_flat", "shortcut/correction"], ["shortcut/logit_shift"], name="shortcut/shift"),
            helper.make_node("Add", ["shortcut/logits_raw", "shortcut/logit_shift"], [out], name="shortcut/logits"),
        ]
    g.initializer.extend(inits)
    del g.node[:]
    g.node.extend([*ordered, *nodes])
    onnx.checker.check_model(m)
    return m


def add_patch(bgr: np.ndarray, where: tuple[float, float] = (0.08, 0.08), side: float = 0.25) -> np.ndarray:
    """A copy of the picture with a magenta square (``side`` of each dimension) whose top-left
    corner lies at ``where`` (fractions of height and width)."""
    out = bgr.copy()
    h, w = out.shape[:2]
    y0, x0 = int(where[0] * h), int(where[1] * w)
    out[y0 : y0 + int(side * h), x0 : x0 + int(side * w)] = MAGENTA_BGR
    return out

"""Shapes that ONNX shape inference cannot give come from a probe run of the image input."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pfv_onnx import PFV, inspect


def _model_with_contrib_op() -> onnx.ModelProto:
    """A conv net whose first conv is onnxruntime's com.microsoft FusedConv (unknown to onnx's
    shape inference), with an int64 initializer listed first among the graph inputs, as
    exporters of IR version 3 wrote them."""
    rng = np.random.default_rng(3)
    shape_const = numpy_helper.from_array(np.array([0, -1], dtype=np.int64), "flat_shape")
    inits = [
        shape_const,
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(np.zeros(8, np.float32), "b1"),
        numpy_helper.from_array(rng.standard_normal((12, 8, 3, 3)).astype(np.float32) * 0.3, "w2"),
        numpy_helper.from_array(rng.standard_normal((12, 4)).astype(np.float32), "fc"),
    ]
    nodes = [
        helper.make_node("FusedConv", ["image", "w1", "b1"], ["fused"], domain="com.microsoft",
                         activation="Relu", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("MaxPool", ["fused"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["pool", "w2"], ["conv2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv2"], ["relu2"]),
        helper.make_node("GlobalAveragePool", ["relu2"], ["gap"]),
        helper.make_node("Reshape", ["gap", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc"], ["logits"]),
    ]
    inputs = [
        helper.make_tensor_value_info("flat_shape", TensorProto.INT64, [2]),
        helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 16, 16]),
    ]
    graph = helper.make_graph(nodes, "contrib", inputs, [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    return model


def test_probe_run_types_what_inference_cannot(tmp_path):
    path = tmp_path / "contrib.onnx"
    onnx.save(_model_with_contrib_op(), str(path))
    report = inspect(path)
    assert any("probe run" in note for note in report.notes)
    assert report.decomposed.name == "relu2" and report.decomposed.shape == (1, 12, 8, 8)
    assert [fm.name for fm in report.weighting] == ["fused"]

    batch = np.random.default_rng(0).random((3, 3, 16, 16), dtype=np.float32)
    res = PFV(path).explain(batch)
    assert res.feature_maps == ["fused", "relu2"]
    assert res.components.shape == (3, 3, 8, 8)
    assert res.rgb.shape == (3, 16, 16, 3) and np.isfinite(res.rgb).all()

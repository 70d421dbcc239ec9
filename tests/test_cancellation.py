"""A weighting map whose channel sum cancels to rounding noise weights nothing.

The test network is a small CNN with a post-norm residual stage at 16x16, as in Swin-V2:
x = LN(conv(image)), stage = x + LN(conv1x1(x)), each LayerNorm over the channels. With a
uniform LayerNorm scale and no bias the stage output's channels sum to zero at every position
(float32 noise is all that is left); with a scale that varies over the channels they do not.
Whether the sum cancels is checked here on the activation itself (onnxruntime, NumPy), not by
the engine.
"""

from __future__ import annotations

import json

import cv2
import graphs
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pfv_onnx import PFV, inspect
from pfv_onnx.cli import main
from pfv_onnx.errors import InputError

STAGE = "stage16"  # the post-norm stage output at 16x16
STAGE8 = "relu8"  # the 8x8 stage output (a ReLU)


def _post_norm_net(gamma: np.ndarray) -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    inits = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def conv(x: str, cin: int, cout: int, k: int, stride: int, out: str) -> onnx.NodeProto:
        w = const(f"{out}_w", rng.normal(0, (2 / (cin * k * k)) ** 0.5, (cout, cin, k, k)))
        b = const(f"{out}_b", rng.normal(0, 0.1, cout))
        return helper.make_node("Conv", [x, w, b], [out], kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4)

    def layer_norm(x: str, out: str) -> list[onnx.NodeProto]:
        """LayerNorm over the channels of an NCHW map (through NHWC and back, as exporters write it)."""
        return [
            helper.make_node("Transpose", [x], [f"{out}_nhwc"], perm=[0, 2, 3, 1]),
            helper.make_node("LayerNormalization", [f"{out}_nhwc", const(f"{out}_g", gamma), const(f"{out}_beta", np.zeros(8))],
                             [f"{out}_ln"], axis=-1),
            helper.make_node("Transpose", [f"{out}_ln"], [out], perm=[0, 3, 1, 2]),
        ]  # fmt: skip

    nodes = [
        conv("image", 3, 8, 3, 1, "c1"), *layer_norm("c1", "x"),
        conv("x", 8, 8, 1, 1, "c2"), *layer_norm("c2", "branch"),
        helper.make_node("Add", ["x", "branch"], [STAGE]),
        conv(STAGE, 8, 16, 3, 2, "c3"), helper.make_node("Relu", ["c3"], [STAGE8]),
        conv(STAGE8, 16, 16, 3, 2, "c4"), helper.make_node("Relu", ["c4"], ["relu4"]),
        helper.make_node("GlobalAveragePool", ["relu4"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", const("fc_w", rng.normal(0, 0.3, (5, 16))), const("fc_b", np.zeros(5))], ["logits"], transB=1),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes, "post_norm", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", graphs.OPSET)], ir_version=graphs.IR_VERSION)


UNIFORM = np.ones(8)
VARYING = np.linspace(0.2, 1.8, 8)


def _cancellation(model: onnx.ModelProto, batch: np.ndarray) -> float:
    """|sum over channels| / sum of |values| of the stage output, straight from onnxruntime."""
    _, values = graphs.fetch(model, [STAGE], batch)
    E = values[STAGE].astype(np.float64)
    return float(np.abs(E.sum(axis=1)).sum() / np.abs(E).sum())


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(11).uniform(-1, 1, size=(4, 3, 16, 16)).astype(np.float32)


def test_a_weighting_map_whose_channel_sum_cancels_is_dropped_with_a_warning(save_model, batch):
    model = _post_norm_net(UNIFORM)
    assert _cancellation(model, batch) < 1e-6  # the premise: the stage's channel sum is rounding noise
    path = save_model(model, "post_norm_uniform")
    rep = inspect(path)
    assert rep.decomposed.name == "relu4"
    assert [fm.name for fm in rep.weighting] == [STAGE8]
    assert len(rep.warnings) == 1 and repr(STAGE) in rep.warnings[0] and "cancels" in rep.warnings[0]
    res = PFV(path, provider="cpu").explain(batch)
    assert res.feature_maps == [STAGE8, "relu4"]
    assert np.isfinite(res.rgb).all()


def test_a_normalised_map_with_a_real_channel_sum_still_weights(save_model, batch):
    model = _post_norm_net(VARYING)
    assert _cancellation(model, batch) > 1e-2  # the premise: the channels do not sum to a constant
    rep = inspect(save_model(model, "post_norm_varying"))
    assert [fm.name for fm in rep.weighting] == [STAGE, STAGE8]
    assert rep.warnings == []


def test_a_named_weighting_map_that_cancels_is_refused_in_one_line(save_model, capsys):
    path = save_model(_post_norm_net(UNIFORM), "post_norm_uniform")
    with pytest.raises(InputError, match="cancels to float32 rounding noise"):
        PFV(path, provider="cpu", weight_layers=[STAGE])
    capsys.readouterr()
    assert main(["inspect", path, "--weight-layers", STAGE]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cancels" in err and "Traceback" not in err


def test_run_says_why_a_weighting_map_was_dropped(save_model, tmp_path, capsys):
    path = save_model(_post_norm_net(UNIFORM), "post_norm_uniform")
    images = tmp_path / "images"
    images.mkdir()
    yy, xx = np.mgrid[0:20, 0:20]
    for i in range(3):
        cv2.imwrite(str(images / f"p{i}.png"), np.stack([xx * (5 + i), yy * 9, (xx + yy) * 3], axis=-1).astype(np.uint8))
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["run", path, str(images), "-o", str(out)]) == 0
    terminal = capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    assert any(repr(STAGE) in w and "cancels" in w for w in report["warnings"])
    assert "cancels" in terminal.out + terminal.err

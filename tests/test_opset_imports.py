"""Opset imports: a domain no node uses is harmless; a node of a domain onnxruntime lacks is refused."""

from __future__ import annotations

import derived_models
import graphs
import numpy as np
import onnx
import pytest
from onnx import helper

from pfv_onnx import PFV
from pfv_onnx.cli import main
from pfv_onnx.errors import ModelError

UNUSED = "com.example.nothing_uses_this"


def test_quantised_model_with_unused_opset_imports_is_explained(efficientnet_int8):
    """onnxruntime's quantiser writes opset imports for domains no node uses."""
    m = onnx.load(str(efficientnet_int8), load_external_data=False)
    imported = {o.domain for o in m.opset_import}
    used = {n.domain for n in m.graph.node}
    assert "ai.onnx.preview" in imported and "ai.onnx.preview" not in used  # independently: what the issue saw
    assert {n.op_type for n in m.graph.node} >= {"QuantizeLinear", "DequantizeLinear"}
    batch = derived_models.photo_batch()
    res = PFV(str(efficientnet_int8), provider="cpu").explain(batch)
    assert np.isfinite(res.rgb).all() and np.ptp(res.rgb) > 0.5
    ref = PFV(str(derived_models.EFFICIENTNET), provider="cpu").explain(batch)
    logits, ref_logits = next(iter(res.outputs.values())), next(iter(ref.outputs.values()))
    top5 = np.argsort(logits, axis=1)[:, -5:]
    assert all(r in t for r, t in zip(ref_logits.argmax(axis=1), top5))  # the int8 copy still classifies the photos


def test_quantised_model_on_the_command_line(efficientnet_int8, tmp_path):
    out = tmp_path / "out"
    assert main(["run", str(efficientnet_int8), str(derived_models.PHOTOS[0]), str(derived_models.PHOTOS[1]), "-o", str(out), "-q"]) == 0
    assert (out / "report.json").exists()


def test_unused_unknown_domain_is_accepted(tmp_path):
    m = onnx.ModelProto()
    m.CopyFrom(graphs.vgg().model)
    m.opset_import.append(helper.make_opsetid(UNUSED, 1))
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    res = PFV(str(path), provider="cpu").explain(graphs.vgg().batch(2))
    assert np.isfinite(res.rgb).all()


def test_a_node_of_an_unknown_domain_inside_a_subgraph_is_refused(tmp_path):
    """The domain of every node counts, also one in an If branch."""
    base = graphs.vgg().model
    m = onnx.ModelProto()
    m.CopyFrom(base)
    logits = m.graph.output[0].name
    branch_out = helper.make_tensor_value_info("branch_out", onnx.TensorProto.FLOAT, None)
    secret = helper.make_graph([helper.make_node("Secret", [logits], ["branch_out"], domain=UNUSED)], "then", [], [branch_out])
    plain = helper.make_graph([helper.make_node("Identity", [logits], ["branch_out"])], "else", [], [branch_out])
    m.graph.node.append(helper.make_node("Constant", [], ["cond"], value=helper.make_tensor("c", onnx.TensorProto.BOOL, [], [False])))
    m.graph.node.append(helper.make_node("If", ["cond"], ["picked"], then_branch=secret, else_branch=plain))
    m.graph.output.append(helper.make_tensor_value_info("picked", onnx.TensorProto.FLOAT, None))
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    with pytest.raises(ModelError, match=r"custom operators of domain 'com\.example\.nothing_uses_this' \(Secret\)"):
        PFV(str(path), provider="cpu")


def test_quantised_model_is_weighted_like_its_float_original(efficientnet_int8):
    """onnxruntime's quantiser stores weights as DequantizeLinear of int8 initializers, placed
    early in the graph: they are constants, not data, and must not hide the stage outputs from
    the choice of weighting maps. The int8 copy is weighted at the float model's resolutions,
    by the dequantised copies of the same activations."""
    from pfv_onnx import inspect

    float_report = inspect(str(derived_models.EFFICIENTNET))
    int8_report = inspect(str(efficientnet_int8))
    assert [fm.hw for fm in int8_report.weighting] == [fm.hw for fm in float_report.weighting] and float_report.weighting
    for q, f in zip(int8_report.weighting, float_report.weighting):
        assert q.name.startswith(f.name), (q.name, f.name)

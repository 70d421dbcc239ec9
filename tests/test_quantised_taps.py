"""Tapping a QDQ-quantised model (onnxruntime's ``quantize_static``, per channel) keeps it as it runs.

onnxruntime fuses each DequantizeLinear -> op -> QuantizeLinear group of such a model into one
int8 operator. Tapping a map must not undo that fusion: the model's own outputs stay what the
unmodified model gives, and the tapped E_L is the int8 map the model's head reads, which a
NumPy copy of the head (pool, requantise, dequantised Gemm, requantise) checks here against
the model's own logits.
"""

from __future__ import annotations

import warnings

import derived_models
import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from pfv_onnx import PFV


def _plain_outputs(path, batch) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {sess.get_inputs()[0].name: batch})))


def test_tapping_a_qdq_model_leaves_its_outputs_unchanged(efficientnet_int8):
    batch = derived_models.photo_batch()
    pfv = PFV(str(efficientnet_int8), provider="cpu")
    assert any(fm.op == "DequantizeLinear" for fm in pfv.maps())  # the maps are dequantised int8 activations
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the self-check's warning fails the test
        res = pfv.explain(batch)
    assert pfv.self_check_result is not None and pfv.self_check_result.startswith("ok")
    plain = _plain_outputs(efficientnet_int8, batch)
    for name, ref in plain.items():
        np.testing.assert_allclose(res.outputs[name], ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_the_tapped_e_l_is_what_the_int8_head_reads(efficientnet_int8):
    batch = derived_models.photo_batch()
    pfv = PFV(str(efficientnet_int8), provider="cpu")
    E = pfv.forward(batch).activations.astype(np.float64)  # (N, 1280, 7, 7)
    model = onnx.load(str(efficientnet_int8))
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    nodes = list(model.graph.node)
    el = pfv.maps()[-1].name
    producer = {o: n for n in nodes for o in n.output}
    consumers = lambda t: [n for n in nodes if t in n.input]  # noqa: E731

    def dq(x, scale, zero):
        return (np.asarray(x, np.float64) - np.asarray(zero, np.float64)) * np.asarray(scale, np.float64)

    def qdq(x, scale, zero):
        return dq(np.clip(np.round(x / scale) + zero, -128, 127), scale, zero)

    # E_L holds int8 values: on the grid of its DequantizeLinear
    s, z = (init[x] for x in producer[el].input[1:3])
    steps = E / s + z
    assert np.abs(steps - np.round(steps)).max() < 1e-3 and steps.min() >= -128 and steps.max() <= 127

    # The head, in NumPy from the graph's own constants: GlobalAveragePool -> Q/DQ -> Gemm -> Q/DQ
    (pool,) = consumers(el)
    assert pool.op_type == "GlobalAveragePool"
    (q_pool,) = consumers(pool.output[0])
    sp, zp = init[q_pool.input[1]], init[q_pool.input[2]]
    gemm = next(n for n in nodes if n.op_type == "Gemm")
    w_node, b_node = producer[gemm.input[1]], producer[gemm.input[2]]
    W = dq(init[w_node.input[0]], init[w_node.input[1]][:, None], init[w_node.input[2]][:, None])
    b = dq(*(init[x] for x in b_node.input[:3]))
    (q_out,) = consumers(gemm.output[0])
    sl, zl = init[q_out.input[1]], init[q_out.input[2]]
    predicted = qdq(qdq(E.mean(axis=(2, 3)), sp, zp) @ W.T + b, sl, zl)

    logits = _plain_outputs(efficientnet_int8, batch)[model.graph.output[0].name]
    assert np.abs(predicted - logits).max() <= 1.01 * sl  # at most one quantisation step (rounding ties)
    assert (predicted.argmax(axis=1) == logits.argmax(axis=1)).all()


def test_a_named_float_map_inside_a_qdq_pair_is_read_as_the_int8_model_computes_it(efficientnet_int8):
    """The float input of a QuantizeLinear exists only before onnxruntime fuses it away: naming it
    taps its dequantised int8 values (said in the notes), and the outputs stay unchanged."""
    model = onnx.load(str(efficientnet_int8), load_external_data=False)
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "/_swish_1/Clip_output_0")
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0])
    pfv = PFV(str(efficientnet_int8), provider="cpu", layer="/_swish_1/Clip_output_0")
    assert pfv.maps()[-1].name == dq.output[0]
    assert any("/_swish_1/Clip_output_0" in note and "int8" in note for note in pfv.analysis().notes)
    assert "int8" in pfv.maps()[-1].reason  # the record (report.json, inspect) says it too
    batch = derived_models.photo_batch()[:2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pfv.explain(batch)
    assert pfv.self_check_result is not None and pfv.self_check_result.startswith("ok")

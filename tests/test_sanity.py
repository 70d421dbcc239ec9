"""Weight randomisation and map-similarity scores of pfv_onnx.sanity, and the sanity command.

Expected numbers come from the tests' own arithmetic: He-normal spreads from the weight
shapes written here, SSIM from a window-by-window loop, Spearman from scipy, ranks and
colours worked out by hand.
"""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphs
from pfv_onnx import PfvError, sanity
from pfv_onnx.errors import InputError, ModelError

F32 = TensorProto.FLOAT


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every stored tensor (initializers and Constant nodes) as float64 NumPy, by name."""
    out = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            out[node.output[0]] = numpy_helper.to_array(node.attribute[0].t).astype(np.float64)
    return out


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})


def _model(nodes, inits, inputs, outputs) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "t", inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _wide_net() -> onnx.ModelProto:
    """Conv 16->48 (3x3), depthwise Conv (group 48), Gemm with transB=1 and with transB=0,
    MatMul + Add: shapes chosen so that every wrong fan-in axis gives a very different spread."""
    rng = np.random.default_rng(5)
    w1 = rng.normal(0, 0.05, (48, 16, 3, 3)).astype(np.float32)
    b1 = rng.normal(0, 0.5, 48).astype(np.float32)
    wd = rng.normal(0, 0.05, (48, 1, 5, 5)).astype(np.float32)
    g1 = rng.normal(0, 0.05, (300, 48)).astype(np.float32)  # transB=1: (N, K) with K = 48
    g1b = rng.normal(0, 0.5, 300).astype(np.float32)
    g2 = rng.normal(0, 0.05, (300, 20)).astype(np.float32)  # transB=0: (K, N) with K = 300
    mm = rng.normal(0, 0.05, (20, 7)).astype(np.float32)  # x @ W: K = 20
    add = rng.normal(0, 0.5, 7).astype(np.float32)
    shape = np.array([0, -1], np.int64)
    inits = [numpy_helper.from_array(a, n) for a, n in [
        (w1, "conv1.w"), (b1, "conv1.b"), (wd, "dw.w"), (g1, "fc1.w"), (g1b, "fc1.b"), (g2, "fc2.w"),
        (mm, "fc3.w"), (add, "fc3.bias"), (shape, "flat.shape")]]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "conv1.w", "conv1.b"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "dw.w"], ["c2"], name="dw", group=48, pads=[2, 2, 2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Reshape", ["p", "flat.shape"], ["f"]),
        helper.make_node("Gemm", ["f", "fc1.w", "fc1.b"], ["g1"], name="fc1", transB=1),
        helper.make_node("Gemm", ["g1", "fc2.w"], ["g2"], name="fc2"),
        helper.make_node("MatMul", ["g2", "fc3.w"], ["m"], name="fc3"),
        helper.make_node("Add", ["m", "fc3.bias"], ["y"]),
    ]
    return _model(nodes, inits, [helper.make_tensor_value_info("x", F32, ["N", 16, 8, 8])],
                  [helper.make_tensor_value_info("y", F32, ["N", 7])])


# fan-in written from the shapes above: Conv C/group*k*k, Gemm/MatMul the contracted axis
WIDE_FAN_IN = {"conv1.w": 16 * 3 * 3, "dw.w": 1 * 5 * 5, "fc1.w": 48, "fc2.w": 300, "fc3.w": 20}


# --------------------------------------------------------------------------- randomisation


def test_he_normal_spread_follows_each_operators_fan_in():
    model = _wide_net()
    before = _weights(model)
    res = sanity.randomise_weights(model, seed=3)
    after = _weights(res.model)
    assert {w.name for w in res.weights} == set(WIDE_FAN_IN)
    for name, fan_in in WIDE_FAN_IN.items():
        w = after[name]
        assert w.shape == before[name].shape
        expected = math.sqrt(2.0 / fan_in)
        n = w.size
        # the sample std of n normal draws is within ~4/sqrt(2n) of the true one (relative), almost surely
        assert abs(w.std() / expected - 1) < 4 / math.sqrt(2 * n) + 0.01, (name, w.std(), expected)
        assert abs(w.mean()) < 5 * expected / math.sqrt(n)
    # Conv and Gemm biases zeroed; the Add bias after MatMul and non-weight constants untouched
    assert np.all(after["conv1.b"] == 0) and np.all(after["fc1.b"] == 0)
    assert set(res.zeroed_biases) == {"conv1.b", "fc1.b"}
    np.testing.assert_array_equal(after["fc3.bias"], before["fc3.bias"])
    np.testing.assert_array_equal(after["flat.shape"], before["flat.shape"])
    # the input model is not modified
    np.testing.assert_array_equal(_weights(model)["conv1.w"], before["conv1.w"])


def test_keep_biases_and_seeds():
    model = _wide_net()
    kept = sanity.randomise_weights(model, seed=1, biases="keep")
    np.testing.assert_array_equal(_weights(kept.model)["conv1.b"], _weights(model)["conv1.b"])
    assert kept.zeroed_biases == []
    a = sanity.randomise_weights(model, seed=7).model.SerializeToString()
    b = sanity.randomise_weights(model, seed=7).model.SerializeToString()
    c = sanity.randomise_weights(model, seed=8).model.SerializeToString()
    assert a == b
    assert a != c
    # bias mode does not shift the random stream: the weights are the same either way
    zero = sanity.randomise_weights(model, seed=1, biases="zero")
    np.testing.assert_array_equal(_weights(zero.model)["fc2.w"], _weights(kept.model)["fc2.w"])
    with pytest.raises(InputError, match="biases"):
        sanity.randomise_weights(model, biases="random")


def test_randomised_model_runs_and_changes_the_outputs():
    model = _wide_net()
    x = np.random.default_rng(0).standard_normal((2, 16, 8, 8)).astype(np.float32)
    res = sanity.randomise_weights(model, seed=0)
    onnx.checker.check_model(res.model)
    (y0,) = _run(model, x)
    (y1,) = _run(res.model, x)
    assert y1.shape == y0.shape and np.isfinite(y1).all()
    assert not np.allclose(y0, y1)


def test_gemm_weight_as_first_input_with_trans_a():
    """Y = A' B with A stored (K, M) and transA=1: fan-in is K = A.shape[0]."""
    a = numpy_helper.from_array(np.zeros((400, 6), np.float32), "A")
    m = _model([helper.make_node("Gemm", ["A", "x"], ["y"], transA=1)], [a],
               [helper.make_tensor_value_info("x", F32, [400, 3])], [helper.make_tensor_value_info("y", F32, [6, 3])])
    res = sanity.randomise_weights(m, seed=0)
    w = _weights(res.model)["A"]
    assert res.weights[0].fan_in == 400
    assert abs(w.std() / math.sqrt(2 / 400) - 1) < 0.06


def test_matmul_weight_on_the_left():
    """Y = W X with W stored (M, K): fan-in is K = W.shape[-1]."""
    w = numpy_helper.from_array(np.zeros((5, 900), np.float32), "W")
    m = _model([helper.make_node("MatMul", ["W", "x"], ["y"])], [w],
               [helper.make_tensor_value_info("x", F32, [900, 2])], [helper.make_tensor_value_info("y", F32, [5, 2])])
    res = sanity.randomise_weights(m, seed=0)
    assert res.weights[0].fan_in == 900
    assert abs(_weights(res.model)["W"].std() / math.sqrt(2 / 900) - 1) < 0.06


def test_constant_node_weights_behind_cast_and_shared_weights():
    """Paddle-style Constant nodes; an fp16 weight reached through Cast; one weight used twice."""
    rng = np.random.default_rng(2)
    w = rng.normal(0, 1, (8, 8, 3, 3)).astype(np.float16)
    const = helper.make_node("Constant", [], ["w16"], value=numpy_helper.from_array(w, "w16"))
    cast = helper.make_node("Cast", ["w16"], ["w32"], to=F32)
    nodes = [
        const, cast,
        helper.make_node("Conv", ["x", "w32"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w32"], ["y"], pads=[1, 1, 1, 1]),
    ]  # fmt: skip
    m = _model(nodes, [], [helper.make_tensor_value_info("x", F32, ["N", 8, 6, 6])],
               [helper.make_tensor_value_info("y", F32, ["N", 8, 6, 6])])
    res = sanity.randomise_weights(m, seed=0)
    assert [r.name for r in res.weights] == ["w16"]  # drawn once
    t = res.model.graph.node[0].attribute[0].t
    assert t.data_type == TensorProto.FLOAT16
    new = numpy_helper.to_array(t).astype(np.float64)
    assert abs(new.std() / math.sqrt(2 / 72) - 1) < 0.15
    assert not np.allclose(new, w.astype(np.float64))
    (y,) = _run(res.model, np.ones((1, 8, 6, 6), np.float32))
    assert np.isfinite(y).all()


def test_fp16_graph_keeps_its_types_and_runs():
    c = graphs.case("fp16")
    res = sanity.randomise_weights(c.model, seed=0)
    types = {t.name: t.data_type for t in res.model.graph.initializer}
    assert types == {t.name: t.data_type for t in c.model.graph.initializer}
    changed = [t.name for t, u in zip(c.model.graph.initializer, res.model.graph.initializer) if t.raw_data != u.raw_data]
    assert len(res.weights) == 4 and set(w.name for w in res.weights) <= set(changed)
    (y,) = _run(res.model, c.batch())
    assert np.isfinite(y).all()


def test_bfloat16_weight_keeps_its_type():
    w = helper.make_tensor("W", TensorProto.BFLOAT16, (4000, 3), np.zeros(12000, np.float32))
    m = _model([helper.make_node("MatMul", ["x", "W"], ["y"])], [w],
               [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [2, 4000])],
               [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [2, 3])])
    res = sanity.randomise_weights(m, seed=0)
    t = res.model.graph.initializer[0]
    assert t.data_type == TensorProto.BFLOAT16
    v = numpy_helper.to_array(t).astype(np.float64)
    assert abs(v.std() / math.sqrt(2 / 4000) - 1) < 0.05


@pytest.mark.parametrize("name", ["qdq", "qop"])
def test_quantised_models_are_refused(name):
    with pytest.raises(ModelError, match="quantised"):
        sanity.randomise_weights(graphs.case(name).model)


def test_model_without_weights_is_refused():
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [], [helper.make_tensor_value_info("x", F32, [1, 3, 4, 4])],
               [helper.make_tensor_value_info("y", F32, [1, 3, 4, 4])])
    with pytest.raises(ModelError, match="no stored Conv, Gemm or MatMul weight"):
        sanity.randomise_weights(m)


def test_weight_computed_at_run_time_is_listed_as_skipped():
    """MatMul of two activations: nothing to re-draw there; the Gemm's weight is still drawn."""
    g = numpy_helper.from_array(np.zeros((4, 4), np.float32), "G")
    nodes = [helper.make_node("MatMul", ["x", "x"], ["xx"], name="gram"), helper.make_node("Gemm", ["xx", "G"], ["y"], name="fc")]
    m = _model(nodes, [g], [helper.make_tensor_value_info("x", F32, [4, 4])], [helper.make_tensor_value_info("y", F32, [4, 4])])
    res = sanity.randomise_weights(m)
    assert [w.name for w in res.weights] == ["G"]
    assert res.skipped == [("gram", "no stored weight (computed at run time)")]


def test_model_file_with_external_data_is_written_self_contained(tmp_path):
    model = _wide_net()
    src = tmp_path / "src"
    src.mkdir()
    onnx.save(_wide_net(), str(src / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.data", size_threshold=0)
    out = tmp_path / "out" / "r.onnx"
    res = sanity.randomise_model_file(src / "m.onnx", out, seed=4)
    loaded = onnx.load(str(out))  # no data file next to it
    assert not any(t.data_location == TensorProto.EXTERNAL for t in loaded.graph.initializer)
    expected = _weights(sanity.randomise_weights(model, seed=4).model)
    got = _weights(loaded)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])
    assert len(res.weights) == 5


# --------------------------------------------------------------------------- similarity scores


def _ssim_loop(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM written window by window: 11 x 11 Gaussian (sigma 1.5) weights, K1 0.01, K2 0.03, range 1."""
    r = 5
    g = np.exp(-0.5 * (np.arange(-r, r + 1) / 1.5) ** 2)
    win = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    vals = []
    for i in range(a.shape[0] - 2 * r):
        for j in range(a.shape[1] - 2 * r):
            pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
            ma, mb = (win * pa).sum(), (win * pb).sum()
            va = (win * (pa - ma) ** 2).sum()
            vb = (win * (pb - mb) ** 2).sum()
            cov = (win * (pa - ma) * (pb - mb)).sum()
            vals.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_matches_a_window_by_window_computation():
    rng = np.random.default_rng(0)
    a = rng.random((17, 19))
    b = np.clip(a + 0.3 * rng.standard_normal(a.shape), 0, 1)
    assert sanity.ssim(a, b) == pytest.approx(_ssim_loop(a, b), abs=1e-12)
    stack = sanity.ssim(np.stack([a, b]), np.stack([b, b]))
    assert stack.shape == (2,)
    assert stack[0] == pytest.approx(_ssim_loop(a, b), abs=1e-12)
    assert stack[1] == pytest.approx(1.0)
    assert sanity.ssim(b, a) == pytest.approx(sanity.ssim(a, b))
    with pytest.raises(InputError, match="at least 11"):
        sanity.ssim(a[:10], b[:10])


def test_spearman_against_scipy_and_by_hand():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    x = rng.random((3, 9, 7))
    y = np.round(rng.random((3, 9, 7)) * 4)  # many ties
    got = sanity.spearman(x, y)
    want = [stats.spearmanr(p.ravel(), q.ravel())[0] for p, q in zip(x, y)]
    np.testing.assert_allclose(got, want, atol=1e-12)
    # ranks by hand: x -> [1, 2.5, 2.5, 4], y -> [1, 2, 3, 4]
    rx, ry = np.array([1, 2.5, 2.5, 4]), np.array([1, 2, 3, 4.0])
    want = np.corrcoef(rx, ry)[0, 1]
    assert sanity.spearman(np.array([[1, 2, 2, 3.0]]), np.array([[10, 20, 30, 40.0]])) == pytest.approx(want)
    assert sanity.spearman(x[0], np.exp(x[0])) == pytest.approx(1.0)
    assert sanity.spearman(x[0], -x[0]) == pytest.approx(-1.0)
    assert np.isnan(sanity.spearman(np.ones((3, 3)), x[0, :3, :3]))


def test_magnitude_is_distance_from_the_median_colour():
    maps = np.zeros((3, 2, 2, 3))
    maps[:] = [0.5, 0.2, 0.1]  # the common colour
    maps[0, 0, 0] = [0.5, 0.2, 0.9]  # one pixel 0.8 away in blue
    maps[2, 1, 1] = [0.2, 0.6, 0.1]  # one pixel 0.5 away (0.3, 0.4)
    m = sanity.magnitude(maps)
    want = np.zeros((3, 2, 2))
    want[0, 0, 0] = 0.8
    want[2, 1, 1] = 0.5
    np.testing.assert_allclose(m, want, atol=1e-12)
    # which colour a component got does not matter
    np.testing.assert_allclose(sanity.magnitude(maps[..., ::-1]), m)
    with pytest.raises(InputError, match=r"\(N, H, W, k\)"):
        sanity.magnitude(np.zeros((2, 3)))


def _blob_maps(centres, size=48, seed=0):
    """RGB maps with a cone-shaped blob (radius 10) at each centre on a flat background, one
    image per centre; most pixels are background, so the median colour is the background's."""
    yy, xx = np.mgrid[0:size, 0:size]
    out = np.full((len(centres), size, size, 3), 0.3)
    rng = np.random.default_rng(seed)
    for i, (cy, cx) in enumerate(centres):
        blob = np.clip(1 - np.hypot(yy - cy, xx - cx) / 10.0, 0, None)
        out[i] += blob[..., None] * rng.uniform(0.3, 0.7, 3)
    return out


def test_compare_maps_and_between_images():
    centres = [(10, 10), (10, 38), (38, 10), (38, 38)]
    a = _blob_maps(centres)
    same = sanity.compare_maps(a, a[..., [2, 0, 1]], size=None)  # colours permuted: same magnitudes
    assert same.ssim == pytest.approx(1.0) and same.spearman == pytest.approx(1.0)
    moved = sanity.compare_maps(a, _blob_maps(centres[::-1]), size=None)
    assert moved.spearman < 0 and moved.ssim < 0.8  # the flat backgrounds still agree
    assert moved.pairs == [(0, 0), (1, 1), (2, 2), (3, 3)]
    # between images: the blobs are elsewhere in every image; a set of one blob repeated is alike
    spread = sanity.between_images(a, size=None)
    alike = sanity.between_images(_blob_maps([(24, 24)] * 4), size=None)
    assert len(spread.pairs) == 6 and spread.pairs[0] == (0, 1)
    assert alike.spearman == pytest.approx(1.0) and alike.ssim == pytest.approx(1.0, abs=1e-9)
    assert spread.spearman < 0.2
    # per-pair values are what ssim/spearman give on the magnitudes (scaled to [0, 1] for SSIM)
    m = sanity.magnitude(a)
    scaled = (m - m.min(axis=(1, 2), keepdims=True)) / np.ptp(m, axis=(1, 2), keepdims=True)
    assert spread.ssim_values[0] == pytest.approx(_ssim_loop(scaled[0], scaled[1]), abs=1e-9)
    one = sanity.between_images(a[:1])
    assert math.isnan(one.ssim) and one.pairs == [] and one.to_dict()["ssim"] is None
    with pytest.raises(InputError, match="same images"):
        sanity.compare_maps(a, a[:3])
    with pytest.raises(InputError, match="common size"):
        sanity.compare_maps(a, a[:, :40], size=None)
    # with the default grid, sizes may differ
    assert sanity.compare_maps(a, a[:, :, :, :]).spearman == pytest.approx(1.0)


# --------------------------------------------------------------------------- the whole check


def test_sanity_check_on_a_small_graph(save_model, tmp_path):
    c = graphs.case("vgg")
    path = save_model(c.model, "sanity_vgg")
    batch = c.batch(6)
    keep = tmp_path / "random.onnx"
    res = sanity.sanity_check(path, batch, seed=2, provider="cpu", save_randomised=keep)
    assert res.trained.rgb.shape == res.randomised.rgb.shape == (6, *c.image_hw, 3)
    assert res.randomised.feature_maps == res.trained.feature_maps
    # the kept model is the seeded randomisation of the file
    expected = _weights(sanity.randomise_weights(onnx.load(path), seed=2).model)
    got = _weights(onnx.load(str(keep)))
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])
    # the scores are those of the functions on the two sets of maps
    direct = sanity.compare_maps(res.trained.rgb, res.randomised.rgb)
    assert res.trained_vs_randomised.spearman == pytest.approx(direct.spearman)
    assert len(res.between_trained.pairs) == 15
    record = res.to_dict()
    json.dumps(record, allow_nan=False)
    n_ops = sum(n.op_type in ("Conv", "Gemm", "MatMul") for n in c.model.graph.node)
    assert record["randomisation"]["weights"] == len(res.randomisation.weights) == n_ops
    assert record["passed"] == (res.maps_differ and res.trained_more_image_dependent is not False)
    assert res.summary()[-1] in ("sanity check passed", "sanity check FAILED")


def test_sanity_check_refuses_options_twice(save_model):
    from pfv_onnx import PFV

    c = graphs.case("vgg")
    pfv = PFV(save_model(c.model, "sanity_vgg"), provider="cpu")
    with pytest.raises(PfvError, match="either"):
        sanity.sanity_check(pfv, c.batch(2), k=2)


def test_sanity_command_on_a_small_graph(save_model, tmp_path, capsys):
    """The command writes its pictures and scores; the printed scores are those in sanity.json."""
    import cv2

    from pfv_onnx.cli import main

    c = graphs.case("vgg")
    path = save_model(c.model, "sanity_vgg")
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(img_dir / f"im{i}.png"), rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    (img_dir / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    code = main(["sanity", path, str(img_dir), "-o", str(out), "--seed", "5", "--save-model", "--provider", "cpu"])
    printed = capsys.readouterr()
    assert code == 1  # one image failed, the others were used
    assert "broken.png" in printed.err
    record = json.loads((out / "sanity.json").read_text())
    assert record["images"] == 3 and len(record["failures"]) == 1
    assert record["randomisation"]["seed"] == 5
    # the warnings and provenance that report.json carries: a group too small, each input's SHA-256
    assert any(w.startswith("one group of") for w in record["warnings"])
    import hashlib

    used = {p["file"]: p["sha256"] for p in record["provenance"]["inputs"]}
    assert used == {str(img_dir / f"im{i}.png"): hashlib.sha256((img_dir / f"im{i}.png").read_bytes()).hexdigest() for i in range(3)}
    assert record["provenance"]["versions"]["numpy"] == np.__version__
    assert f"Spearman {record['trained_vs_randomised']['spearman']:.2f}" in printed.out
    for name in ("trained.png", "randomised.png", "sanity.png", "randomised.onnx"):
        assert (out / name).is_file()
    side = cv2.imread(str(out / "sanity.png"))
    left = cv2.imread(str(out / "trained.png"))
    assert side.shape[1] > 2 * left.shape[1]


def test_sanity_command_reports_a_quantised_model_in_one_line(save_model, tmp_path, capsys):
    import cv2

    from pfv_onnx.cli import main

    path = save_model(graphs.case("qdq").model, "sanity_qdq")
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((16, 16, 3), np.uint8))
    code = main(["sanity", path, str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--provider", "cpu", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "quantised" in err[0] and "randomise the float model" in err[0]


@pytest.mark.parametrize("module", ["skimage.metrics", "scipy.stats"])
def test_sanity_without_its_extra_fails_in_one_line_naming_it(module, save_model, tmp_path, capsys, monkeypatch):
    import cv2

    from pfv_onnx.cli import main

    path = save_model(graphs.case("vgg").model, "sanity_vgg")
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((40, 50, 3), np.uint8))
    monkeypatch.setitem(__import__("sys").modules, module, None)  # the import now fails
    code = main(["sanity", path, str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--provider", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "pfv-onnx[sanity]" in err[0]
    assert not (tmp_path / "o").exists()  # refused before any work
    with pytest.raises(PfvError, match=r"pfv-onnx\[sanity\]"):
        sanity.sanity_check(path, np.zeros((1, 3, 24, 32), np.float32))

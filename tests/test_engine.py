"""The engine end to end on the test graphs, against the NumPy reference.

Every expected number comes from activations read with plain onnxruntime (graphs.fetch)
and the reference implementation (reference.py); every expected choice of feature maps
is written by hand in graphs.py. Nothing expected is computed by the engine.
"""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import graphs
import reference as ref
from pfv_onnx import PFV, FeatureMap, Layout, PfvError, inspect
from pfv_onnx.errors import InputError
from pfv_onnx.feature_maps import Role
from pfv_onnx.self_check import SelfCheck

CASES = list(graphs.CASE_FACTORIES)
ERROR_CASES = list(graphs.ERROR_FACTORIES)
HAS_CUDA_EP = "CUDAExecutionProvider" in ort.get_available_providers()

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

_engines: dict[tuple, PFV] = {}


@pytest.fixture
def engine(save_model):
    """engine(case, **options) -> PFV on the case's model file (cached per case and options)."""

    def _make(case: graphs.GraphCase, cache: bool = True, **kw) -> PFV:
        key = (case.name, tuple(sorted((k, repr(v)) for k, v in kw.items())))
        if cache and key in _engines:
            return _engines[key]
        pfv = PFV(save_model(case.model, case.name), provider="cpu", **kw)
        if cache:
            _engines[key] = pfv
        return pfv

    return _make


def same_tensor(got: str, expected: str, case: graphs.GraphCase) -> bool:
    """The engine reports the tensor itself; for a quantized map it may report the name of
    the DequantizeLinear it appended, which must still carry the tensor's name."""
    if got == expected:
        return True
    return bool(case.dequant) and expected in case.dequant and (got.endswith(expected) or got.startswith(expected))


def assert_names(got: list[str], expected: list[str], case: graphs.GraphCase):
    assert len(got) == len(expected) and all(same_tensor(g, e, case) for g, e in zip(got, expected)), (
        f"{case.name}: engine chose {got}, expected {expected}")


def hw(case: graphs.GraphCase, batch: np.ndarray) -> tuple[int, int]:
    return graphs.hw_of(batch.shape, case.layout)


def reference_for(case, batch, res=None, names=None, **kw) -> ref.Reference:
    """The reference on activations read with plain onnxruntime, signs aligned to ``res``."""
    names = list(names if names is not None else case.all_expected)
    maps = graphs.case_maps(case, batch, names)
    return ref.pfv(maps[names[-1]], [maps[n] for n in names[:-1]], hw(case, batch),
                   align_to=None if res is None else res.components, **kw)


def assert_matches(res, want: ref.Reference, case: graphs.GraphCase, rgb_tol: float | None = None):
    tol = case.rgb_tol if rgb_tol is None else rgb_tol
    assert res.rgb.shape == want.rgb.shape
    err = float(np.abs(res.rgb.astype(np.float64) - want.rgb).max())
    assert err <= tol, f"{case.name}: rgb differs from the reference by {err:.3g} (tolerance {tol:g})"
    scale = float(np.abs(want.components).max())
    cerr = float(np.abs(res.components.astype(np.float64) - want.components).max())
    assert cerr <= 1e-4 * scale, f"{case.name}: components differ by {cerr:.3g} (scale {scale:.3g})"
    np.testing.assert_allclose(res.eigenvalues, want.eigenvalues, rtol=1e-4, atol=1e-7 * want.all_eigenvalues[0])
    np.testing.assert_allclose(res.explained_variance_ratio, want.explained_variance_ratio, atol=1e-5)


def producing_op(model: onnx.ModelProto, name: str) -> str | None:
    for node in model.graph.node:
        if name in node.output:
            return node.op_type
    return None


def node_index(model: onnx.ModelProto) -> dict[str, int]:
    return {out: i for i, node in enumerate(model.graph.node) for out in node.output}


# ---------------------------------------------------------------------------
# the automatic choice
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_automatic_choice(name, engine):
    case = graphs.case(name)
    res = engine(case).explain(case.batch())
    assert_names(res.feature_maps, case.all_expected, case)


@pytest.mark.parametrize("name", CASES)
def test_inspect_reports_the_choice(name, save_model):
    case = graphs.case(name)
    rep = inspect(save_model(case.model, case.name), size=case.image_hw)
    assert rep.input_name == case.input_name
    assert Layout(rep.input_layout) == Layout(case.layout)
    assert tuple(rep.size) == case.image_hw
    assert same_tensor(rep.decomposed.name, case.expected_decomposed, case), rep.decomposed.name
    assert_names([m.name for m in rep.weighting], case.expected_weighting, case)
    assert rep.decomposed.reason.strip(), "no reason given for E_L"
    assert all(m.reason.strip() for m in rep.weighting), "no reason given for a weighting map"
    assert Role(rep.decomposed.role) == Role.DECOMPOSED
    assert all(Role(m.role) == Role.WEIGHTING for m in rep.weighting)
    cand = {m.name: m for m in rep.candidates}
    roles = [Role(m.role) for m in rep.candidates]
    assert roles.count(Role.DECOMPOSED) == 1
    assert roles.count(Role.WEIGHTING) == len(case.expected_weighting)
    assert rep.decomposed.name in cand and all(m.name in cand for m in rep.weighting)
    # plumbing and the graph input are never candidates
    assert case.input_name not in cand
    assert not any(m.op in ("Transpose", "Cast", "Identity") for m in rep.candidates)
    # candidates in graph order
    idx = node_index(case.model)
    order = [idx[m.name] for m in rep.candidates if m.name in idx]
    assert order == sorted(order), "candidates are not in graph order"


@pytest.mark.parametrize("name", CASES)
def test_feature_map_records(name, engine):
    """res.maps / maps(size): name, producing op, own-layout shape with batch 1, layout, role."""
    case = graphs.case(name)
    b = case.batch()
    res = engine(case).explain(b)
    assert [m.name for m in res.maps] == res.feature_maps
    assert all(isinstance(m, FeatureMap) for m in res.maps)
    _, raw = graphs.fetch(case.model, case.all_expected, b, case.input_name, case.fixed_batch)
    for rec, exp in zip(res.maps, case.all_expected):
        assert tuple(rec.shape) == (1, *raw[exp].shape[1:]), (exp, rec.shape, raw[exp].shape)
        assert Layout(rec.layout) == Layout(case.map_layouts.get(exp, "NCHW")), exp
        if not case.dequant:
            assert rec.op == producing_op(case.model, exp), (exp, rec.op)
    assert Role(res.maps[-1].role) == Role.DECOMPOSED
    assert all(Role(m.role) == Role.WEIGHTING for m in res.maps[:-1])
    recs = engine(case).maps(case.image_hw)
    assert [m.name for m in recs] == res.feature_maps


@pytest.mark.parametrize("name", ERROR_CASES)
def test_no_spatial_map_is_a_clear_error(name, save_model):
    case = graphs.case(name)
    with pytest.raises(PfvError):
        PFV(save_model(case.model, case.name), provider="cpu").explain(case.batch())


# ---------------------------------------------------------------------------
# numbers against the reference
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("hierarchical", [False, True], ids=["flat", "hierarchical"])
@pytest.mark.parametrize("name", CASES)
def test_matches_reference(name, hierarchical, engine):
    case = graphs.case(name)
    b = case.batch(seed=1)
    res = engine(case, hierarchical=hierarchical).explain(b)
    assert_matches(res, reference_for(case, b, res, hierarchical=hierarchical), case)


@pytest.mark.parametrize("name", CASES)
def test_sign_rule_is_the_documented_one(name, engine):
    """Each component's projection has a positive third moment (docs/API.md); runs repeat exactly."""
    case = graphs.case(name)
    b = case.batch(seed=2)
    pfv = engine(case)
    res = pfv.explain(b)
    want = reference_for(case, b, None, use_sign_rule=True)
    p = want.components.transpose(0, 2, 3, 1).reshape(-1, 3)
    m3 = np.abs(np.sum(p**3, axis=0)) / np.sum(np.abs(p) ** 3, axis=0)
    got = res.components.astype(np.float64)
    for i in range(3):
        if m3[i] < 1e-3:  # too symmetric for float32 to decide reliably
            continue
        corr = float(np.sum(got[:, i] * want.components[:, i]))
        assert corr > 0, f"{case.name}: component {i} has the opposite sign of the documented rule"
    again = pfv.explain(b)
    np.testing.assert_array_equal(again.rgb, res.rgb)
    np.testing.assert_array_equal(again.components, res.components)


@pytest.mark.parametrize("name", CASES)
def test_original_outputs_unchanged(name, engine):
    case = graphs.case(name)
    b = case.batch(seed=3)
    res = engine(case).explain(b)
    plain = graphs.original_outputs(case, b)
    assert list(res.outputs) == [o.name for o in case.model.graph.output]
    for k, v in plain.items():
        assert res.outputs[k].dtype == v.dtype and res.outputs[k].shape == v.shape, k
        np.testing.assert_allclose(res.outputs[k], v, rtol=case.out_rtol, atol=case.out_atol, err_msg=k)


@pytest.mark.parametrize("name", CASES)
def test_result_fields_contract(name, engine):
    case = graphs.case(name)
    b = case.batch(seed=4)
    n = b.shape[0]
    h, w = hw(case, b)
    res = engine(case).explain(b)
    assert isinstance(res.rgb, np.ndarray) and res.rgb.dtype == np.float32
    assert res.rgb.shape == (n, h, w, 3)
    assert np.isfinite(res.rgb).all() and res.rgb.min() >= 0.0 and res.rgb.max() <= 1.0
    assert res.rgb.min() == pytest.approx(0.0, abs=1e-6) and res.rgb.max() == pytest.approx(1.0, abs=1e-6)
    e_l = graphs.case_maps(case, b, [case.expected_decomposed])[case.expected_decomposed]
    assert isinstance(res.components, np.ndarray) and res.components.dtype == np.float32
    assert res.components.shape == (n, 3, *e_l.shape[2:])
    for arr in (res.eigenvalues, res.explained_variance_ratio):
        assert isinstance(arr, np.ndarray) and arr.dtype == np.float64 and arr.shape == (3,)
    assert (np.diff(res.eigenvalues) <= 0).all() and (res.eigenvalues > 0).all()
    evr = res.explained_variance_ratio
    assert (evr > 0).all() and (evr <= 1).all() and evr.sum() <= 1 + 1e-6
    assert isinstance(res.feature_maps, list) and all(isinstance(s, str) for s in res.feature_maps)
    assert isinstance(res.outputs, dict)
    for v in res.outputs.values():
        assert isinstance(v, np.ndarray) and v.shape[0] == n


@pytest.mark.parametrize("name", CASES)
def test_pfv_attributes(name, engine, save_model):
    case = graphs.case(name)
    pfv = engine(case)
    path = save_model(case.model, case.name)
    assert pfv.input_name == case.input_name
    assert Layout(pfv.input_layout) == Layout(case.layout)
    assert tuple(pfv.input_size) == tuple(case.static_size)
    assert pfv.input_channels == case.channels
    assert pfv.fixed_batch == case.fixed_batch
    assert pfv.provider == "cpu"
    assert list(pfv.output_names) == [o.name for o in case.model.graph.output]
    with open(path, "rb") as f:
        assert pfv.model_sha256 == hashlib.sha256(f.read()).hexdigest()


# ---------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_permuting_the_batch_permutes_the_result(name, engine):
    case = graphs.case(name)
    b = case.batch(n=5, seed=5)
    perm = np.array([3, 0, 4, 1, 2])
    pfv = engine(case)
    a, p = pfv.explain(b), pfv.explain(b[perm])
    # float32 sums taken in another order: differences of a few 1e-5 at most
    np.testing.assert_allclose(p.rgb, a.rgb[perm], atol=max(1e-4, case.rgb_tol / 10))
    np.testing.assert_allclose(p.components, a.components[perm], atol=1e-5 * np.abs(a.components).max())
    np.testing.assert_allclose(p.eigenvalues, a.eigenvalues, rtol=1e-5)
    np.testing.assert_allclose(p.explained_variance_ratio, a.explained_variance_ratio, atol=1e-6)
    assert p.feature_maps == a.feature_maps
    for k in a.outputs:
        np.testing.assert_allclose(p.outputs[k], a.outputs[k][perm], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", CASES)
def test_batch_of_one(name, engine):
    case = graphs.case(name)
    b = case.batch(n=1, seed=6)
    res = engine(case).explain(b)
    assert res.rgb.shape == (1, *hw(case, b), 3)
    assert_matches(res, reference_for(case, b, res), case)


@pytest.mark.parametrize("hierarchical", [False, True], ids=["flat", "hierarchical"])
def test_scaling_every_map_changes_nothing(hierarchical, save_model):
    """A bias-free ReLU net is positively homogeneous: input x c scales every map by c."""
    case = graphs.vgg(bias=False, name="vgg_nobias")
    pfv = PFV(save_model(case.model, case.name), provider="cpu", hierarchical=hierarchical)
    b = case.batch(seed=7)
    a, s = pfv.explain(b), pfv.explain(b * np.float32(8.0))
    np.testing.assert_allclose(s.rgb, a.rgb, atol=1e-4)
    np.testing.assert_allclose(s.components, 8.0 * a.components, atol=1e-4 * 8.0 * np.abs(a.components).max())
    np.testing.assert_allclose(s.eigenvalues, 64.0 * a.eigenvalues, rtol=1e-4)
    np.testing.assert_allclose(s.explained_variance_ratio, a.explained_variance_ratio, atol=1e-6)
    assert_matches(a, reference_for(case, b, a, hierarchical=hierarchical), case)


@pytest.mark.parametrize("hierarchical", [False, True], ids=["flat", "hierarchical"])
def test_scaling_the_decomposed_map_changes_nothing(hierarchical, save_model):
    """The last conv's weights and bias x 5: E_L x 5, the earlier maps unchanged."""
    base, scaled = graphs.vgg(), graphs.vgg(last_scale=5.0, name="vgg_x5")
    pa = PFV(save_model(base.model, "vgg_base"), provider="cpu", hierarchical=hierarchical)
    pb = PFV(save_model(scaled.model, scaled.name), provider="cpu", hierarchical=hierarchical)
    b = base.batch(seed=8)
    a, s = pa.explain(b), pb.explain(b)
    assert s.feature_maps == a.feature_maps
    np.testing.assert_allclose(s.rgb, a.rgb, atol=1e-4)
    np.testing.assert_allclose(s.components, 5.0 * a.components, atol=1e-4 * 5.0 * np.abs(a.components).max())
    np.testing.assert_allclose(s.eigenvalues, 25.0 * a.eigenvalues, rtol=1e-4)


@pytest.mark.parametrize("hierarchical", [False, True], ids=["flat", "hierarchical"])
def test_scaling_the_input_of_a_linear_net(hierarchical, engine):
    case = graphs.case("linear_two")
    pfv = engine(case, hierarchical=hierarchical)
    b = case.batch(seed=9)
    a, s = pfv.explain(b), pfv.explain(b * np.float32(0.01))
    np.testing.assert_allclose(s.rgb, a.rgb, atol=1e-4)
    np.testing.assert_allclose(s.components, 0.01 * a.components, atol=1e-6 * np.abs(a.components).max())


def test_zero_variance_features_give_finite_output(save_model):
    case = graphs.linear_probe(channels=6, size=(5, 7), name="linear_probe_6")
    pfv = PFV(save_model(case.model, case.name), provider="cpu")
    b = make_probe_batch(4, 6, 5, 7, seed=10)
    b[:, 1] = 3.0  # constant channel
    b[:, 4] = 0.0  # dead channel
    res = pfv.explain(b)
    for arr in (res.rgb, res.components, res.eigenvalues, res.explained_variance_ratio):
        assert np.isfinite(arr).all()
    assert_matches(res, reference_for(case, b, res), case)


def test_constant_decomposed_map_is_refused(save_model):
    """Every feature constant: the map would be blank, so it is an error that says why."""
    case = graphs.linear_probe(channels=6, size=(5, 7), name="linear_probe_6")
    pfv = PFV(save_model(case.model, case.name), provider="cpu")
    b = np.ones((3, 6, 5, 7), np.float32) * np.arange(6, dtype=np.float32)[None, :, None, None]
    with pytest.raises(InputError, match="same at every position"):
        pfv.explain(b)


def test_dead_relu_channels_in_a_real_net(save_model):
    """A conv whose output channels are all negative before the ReLU: zero-variance maps."""
    base = graphs.vgg()
    m = onnx.ModelProto()
    m.CopyFrom(base.model)
    inits = {i.name: i for i in m.graph.initializer}
    conv = next(n for n in m.graph.node if n.output[0] == "/features/features.12/Conv_output_0")
    w = onnx.numpy_helper.to_array(inits[conv.input[1]]).copy()
    bias = onnx.numpy_helper.to_array(inits[conv.input[2]]).copy()
    w[10:] = 0.0
    bias[10:] = -1.0
    inits[conv.input[1]].CopyFrom(onnx.numpy_helper.from_array(w, conv.input[1]))
    inits[conv.input[2]].CopyFrom(onnx.numpy_helper.from_array(bias, conv.input[2]))
    case = graphs.GraphCase("vgg_dead", m, base.input_name, base.input_shape, base.layout,
                            base.expected_decomposed, base.expected_weighting)
    res = PFV(save_model(m, case.name), provider="cpu").explain(case.batch())
    assert np.isfinite(res.rgb).all() and np.isfinite(res.components).all()
    assert_matches(res, reference_for(case, case.batch(), res), case)


def make_probe_batch(n, c, h, w, seed):
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((c, c)) * (0.7 ** np.arange(c))[None, :]
    x = rng.standard_normal((n * h * w, c)) ** 2 @ mix.T
    return x.reshape(n, h, w, c).transpose(0, 3, 1, 2).astype(np.float32).copy()


# ---------------------------------------------------------------------------
# k and the other options
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 4])
def test_k_components(k, engine):
    case = graphs.case("resnet")
    b = case.batch(seed=11)
    res = engine(case, k=k).explain(b)
    assert res.rgb.shape[-1] == k and res.components.shape[1] == k
    assert res.eigenvalues.shape == (k,) and res.explained_variance_ratio.shape == (k,)
    assert_matches(res, reference_for(case, b, res, k=k), case)
    over = engine(case).explain(b, k=k)
    np.testing.assert_allclose(over.rgb, res.rgb, atol=1e-6)


def test_k_larger_than_channels_is_an_error(engine, save_model):
    case = graphs.case("vgg")  # E_L has 16 channels
    with pytest.raises(PfvError):
        PFV(save_model(case.model, case.name), provider="cpu", k=17).explain(case.batch())
    with pytest.raises(PfvError):
        engine(case).explain(case.batch(), k=17)


def test_k_larger_than_observations_is_an_error(save_model):
    case = graphs.linear_probe(channels=8, size=(2, 2), name="linear_probe_2x2")
    pfv = PFV(save_model(case.model, case.name), provider="cpu")
    b = make_probe_batch(1, 8, 2, 2, seed=12)  # 4 observations
    with pytest.raises(PfvError):
        pfv.explain(b, k=5)


@pytest.mark.parametrize("n_sigma", [0.5, 2.0])
def test_n_sigma(n_sigma, engine):
    case = graphs.case("se")
    b = case.batch(seed=13)
    res = engine(case, n_sigma=n_sigma).explain(b)
    assert_matches(res, reference_for(case, b, res, n_sigma=n_sigma), case)
    over = engine(case).explain(b, n_sigma=n_sigma)
    np.testing.assert_allclose(over.rgb, res.rgb, atol=1e-6)


def test_hierarchical_override_at_explain(engine):
    case = graphs.case("vgg")
    b = case.batch(seed=14)
    a = engine(case, hierarchical=True).explain(b)
    o = engine(case).explain(b, hierarchical=True)
    np.testing.assert_allclose(o.rgb, a.rgb, atol=1e-6)
    flat = engine(case).explain(b)
    assert np.abs(flat.rgb - a.rgb).max() > 1e-2, "hierarchical and flat weighting gave the same picture"


VGG_EL = "/features/features.13/Relu_output_0"
VGG_S1 = "/features/features.3/Relu_output_0"
VGG_S2 = "/features/features.8/Relu_output_0"


def test_explicit_layer(engine):
    case = graphs.case("vgg")
    b = case.batch(seed=15)
    res = engine(case, layer=VGG_S2).explain(b)
    assert res.feature_maps == [VGG_S1, VGG_S2]
    assert_matches(res, reference_for(case, b, res, names=[VGG_S1, VGG_S2]), case)


def test_explicit_layer_glob(engine):
    case = graphs.case("vgg")
    res = engine(case, layer="*features.11/Relu*").explain(case.batch())
    assert res.feature_maps[-1] == "/features/features.11/Relu_output_0"


def test_unknown_layer_names_a_close_candidate(save_model):
    case = graphs.case("vgg")
    with pytest.raises(PfvError) as err:
        PFV(save_model(case.model, case.name), provider="cpu", layer="/features/features.13/Relu_output").explain(
            case.batch())
    assert VGG_EL in str(err.value)


def test_unknown_weight_layer_is_an_error(save_model):
    case = graphs.case("vgg")
    with pytest.raises(PfvError):
        PFV(save_model(case.model, case.name), provider="cpu", weight_layers=["no_such_tensor"]).explain(case.batch())


@pytest.mark.parametrize("hierarchical", [False, True], ids=["flat", "hierarchical"])
def test_no_weighting(hierarchical, engine):
    case = graphs.case("vgg")
    b = case.batch(seed=16)
    res = engine(case, weight_layers=[], hierarchical=hierarchical).explain(b)
    assert res.feature_maps == [VGG_EL]
    assert_matches(res, reference_for(case, b, res, names=[VGG_EL], hierarchical=hierarchical), case)


@pytest.mark.parametrize("hierarchical", [False, True], ids=["flat", "hierarchical"])
def test_explicit_weight_layers(hierarchical, engine):
    case = graphs.case("vgg")
    b = case.batch(seed=17)
    res = engine(case, weight_layers=[VGG_S2], hierarchical=hierarchical).explain(b)
    assert res.feature_maps == [VGG_S2, VGG_EL]
    assert_matches(res, reference_for(case, b, res, names=[VGG_S2, VGG_EL], hierarchical=hierarchical), case)


def test_batch_size_chunks_give_the_same_result(engine):
    case = graphs.case("resnet")
    b = case.batch(n=5, seed=18)
    whole = engine(case).explain(b)
    chunked = engine(case).explain(b, batch_size=2)
    np.testing.assert_allclose(chunked.rgb, whole.rgb, atol=1e-5)
    np.testing.assert_allclose(chunked.components, whole.components, atol=1e-5 * np.abs(whole.components).max())
    np.testing.assert_allclose(chunked.eigenvalues, whole.eigenvalues, rtol=1e-5)
    for k in whole.outputs:
        np.testing.assert_allclose(chunked.outputs[k], whole.outputs[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", CASES)
def test_forward_pass_holds_the_maps(name, engine):
    """forward(): E_L as NCHW float, the weighting maps as channel sums, the original outputs."""
    case = graphs.case(name)
    b = case.batch(seed=19)
    fp = engine(case).forward(b)
    maps = graphs.case_maps(case, b)
    e = np.asarray(fp.decomposed, dtype=np.float64)
    want = maps[case.expected_decomposed]
    assert e.shape == want.shape
    np.testing.assert_allclose(e, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert len(fp.weights) == len(case.expected_weighting)
    for s, nm in zip(fp.weights, case.expected_weighting):
        s = np.asarray(s, dtype=np.float64)
        want_s = maps[nm].sum(axis=1, keepdims=True)
        assert s.shape == want_s.shape, (nm, s.shape)
        tol = 2e-3 if case.rgb_tol > 1e-4 else 1e-5  # fp16 sums
        np.testing.assert_allclose(s, want_s, rtol=tol, atol=tol * np.abs(want_s).max(), err_msg=nm)
    assert fp.n == b.shape[0]
    assert tuple(fp.input_hw) == hw(case, b)


def test_forward_then_decompose_equals_explain(engine):
    case = graphs.case("se")
    b = case.batch(n=6, seed=20)
    pfv = engine(case)
    whole = pfv.explain(b)
    res = pfv.decompose([pfv.forward(b[:2]), pfv.forward(b[2:5]), pfv.forward(b[5:])])
    np.testing.assert_allclose(res.rgb, whole.rgb, atol=1e-5)
    np.testing.assert_allclose(res.eigenvalues, whole.eigenvalues, rtol=1e-5)
    res_h = pfv.decompose([pfv.forward(b[:3]), pfv.forward(b[3:])], hierarchical=True, k=2)
    assert_matches(res_h, reference_for(case, b, res_h, hierarchical=True, k=2), case)


# ---------------------------------------------------------------------------
# layouts, sizes, inputs
# ---------------------------------------------------------------------------


def test_dynamic_hw_two_sizes(engine):
    case = graphs.case("dynhw")
    pfv = engine(case)
    for shape in [case.input_shape, *case.alt_shapes]:
        b = case.batch(shape=shape, seed=21)
        for hier in (False, True):
            res = pfv.explain(b, hierarchical=hier)
            assert res.rgb.shape == (shape[0], shape[2], shape[3], 3)
            assert res.feature_maps == case.all_expected
            assert_matches(res, reference_for(case, b, res, hierarchical=hier), case)
        recs = pfv.maps((shape[2], shape[3]))
        maps = graphs.case_maps(case, b)
        assert [tuple(r.shape) for r in recs] == [(1, *maps[n].shape[1:]) for n in case.all_expected]


def test_static_model_rejects_another_size(engine):
    case = graphs.case("vgg")
    with pytest.raises(PfvError):
        engine(case).explain(case.batch(shape=(2, 3, 32, 32)))


def test_wrong_channels_and_rank_are_errors(engine):
    case = graphs.case("resnet")
    with pytest.raises(PfvError):
        engine(case).explain(np.zeros((2, 4, 32, 32), np.float32))
    with pytest.raises(PfvError):
        engine(case).explain(np.zeros((3, 32, 32), np.float32))


def test_nhwc_model_rejects_an_nchw_batch(engine):
    case = graphs.case("nhwc_body")
    with pytest.raises(PfvError):
        engine(case).explain(np.zeros((2, 3, 20, 28), np.float32))


@pytest.mark.parametrize("name", ["tf2onnx_nhwc", "nhwc_body"])
def test_layout_override_agrees(name, engine):
    case = graphs.case(name)
    b = case.batch(seed=22)
    a = engine(case).explain(b)
    o = engine(case, layout="NHWC").explain(b)
    assert o.feature_maps == a.feature_maps
    np.testing.assert_allclose(o.rgb, a.rgb, atol=1e-6)


def test_several_inputs_need_a_name(save_model):
    case = graphs.two_inputs()
    path = save_model(case.model, case.name)
    with pytest.raises(PfvError):
        PFV(path, provider="cpu").explain(case.batch())


def test_external_data_beside_the_model(tmp_path, monkeypatch):
    """Weights in an external file beside the model resolve from the model's folder, not the cwd."""
    case = graphs.case("resnet")
    folder = tmp_path / "model"
    folder.mkdir()
    path = folder / "resnet_ext.onnx"
    m = onnx.ModelProto()
    m.CopyFrom(case.model)
    onnx.save(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="resnet_ext.onnx.data", size_threshold=0)
    assert (folder / "resnet_ext.onnx.data").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    b = case.batch(seed=27)
    res = PFV(str(path), provider="cpu").explain(b)
    assert res.feature_maps == case.all_expected
    assert_matches(res, reference_for(case, b, res), case)


def test_metadata_is_read(save_model):
    case = graphs.case("resnet")
    m = onnx.ModelProto()
    m.CopyFrom(case.model)
    onnx.helper.set_model_props(m, {"author": "pfv tests", "labels": "a,b,c"})
    pfv = PFV(save_model(m, "resnet_meta"), provider="cpu")
    assert pfv.metadata == {"author": "pfv tests", "labels": "a,b,c"}


# ---------------------------------------------------------------------------
# the rewritten model
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_save_surgery(name, engine, tmp_path):
    case = graphs.case(name)
    out = tmp_path / f"{name}_surgery.onnx"
    engine(case).save_surgery(out, size=case.image_hw)
    onnx.checker.check_model(str(out))
    m = onnx.load(str(out))
    orig = {o.name: o for o in case.model.graph.output}
    names = [o.name for o in m.graph.output]
    assert names[: len(orig)] == list(orig), "the original outputs must stay first and in order"
    for o in m.graph.output[: len(orig)]:
        assert o.type.tensor_type.elem_type == orig[o.name].type.tensor_type.elem_type
    assert len(names) > len(orig)
    b = case.batch(seed=23)
    got = graphs.run(m, {case.input_name: b}, case.fixed_batch)
    plain = graphs.original_outputs(case, b)
    for k, v in plain.items():
        np.testing.assert_allclose(got[k], v, rtol=case.out_rtol, atol=case.out_atol, err_msg=k)
    # the added outputs carry E_L and the weighting maps' channel sums
    maps = graphs.case_maps(case, b)
    extra = [np.asarray(got[k], dtype=np.float64) for k in names[len(orig):]]

    def carried(target: np.ndarray, tol: float) -> bool:
        for a in extra:
            for t in (target, target.transpose(0, 2, 3, 1)):
                if a.size == t.size and np.allclose(a.reshape(t.shape), t, rtol=tol, atol=tol * np.abs(t).max()):
                    return True
        return False

    tol = 2e-3 if case.rgb_tol > 1e-4 else 1e-5
    assert carried(maps[case.expected_decomposed], tol), "E_L is not among the added outputs"
    for nm in case.expected_weighting:
        assert carried(maps[nm].sum(axis=1, keepdims=True), tol), f"the channel sum of {nm} is not an output"


# ---------------------------------------------------------------------------
# providers and the GPU
# ---------------------------------------------------------------------------


@pytest.mark.skipif(HAS_CUDA_EP, reason="onnxruntime has the CUDA provider here")
def test_cuda_provider_without_cuda_is_an_error(save_model):
    case = graphs.case("resnet")
    with pytest.raises(PfvError):
        PFV(save_model(case.model, case.name), provider="cuda").explain(case.batch())


@pytest.mark.skipif(HAS_CUDA_EP, reason="onnxruntime has the CUDA provider here")
def test_auto_provider_falls_back_to_cpu(save_model):
    case = graphs.case("resnet")
    pfv = PFV(save_model(case.model, case.name), provider="auto")
    assert pfv.provider == "cpu"
    b = case.batch(seed=24)
    res = pfv.explain(b)
    assert_matches(res, reference_for(case, b, res), case)


def _host(a) -> np.ndarray:
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["vgg", "resnet", "nhwc_body", "qop", "fp16"])
@pytest.mark.parametrize("hierarchical", [False, True], ids=["flat", "hierarchical"])
def test_cupy_backend_matches_numpy(name, hierarchical, engine):
    """The same maps (read on the CPU) decomposed with CuPy arrays and with NumPy arrays."""
    import cupy
    from pfv_onnx.pipeline import ForwardPass

    case = graphs.case(name)
    b = case.batch(seed=25)
    pfv = engine(case)
    fp = pfv.forward(b)
    host = ForwardPass(np.asarray(_host(fp.decomposed)), [np.asarray(_host(w)) for w in fp.weights],
                       fp.outputs, fp.input_hw)
    dev = ForwardPass(cupy.asarray(host.decomposed), [cupy.asarray(w) for w in host.weights], fp.outputs,
                      fp.input_hw)
    a = pfv.decompose([host], hierarchical=hierarchical)
    g = pfv.decompose([dev], hierarchical=hierarchical)
    np.testing.assert_allclose(_host(g.rgb), _host(a.rgb), atol=1e-4)
    np.testing.assert_allclose(_host(g.components), _host(a.components), atol=1e-4 * np.abs(_host(a.components)).max())
    np.testing.assert_allclose(_host(g.eigenvalues), _host(a.eigenvalues), rtol=1e-4)
    assert_matches(a, reference_for(case, b, a, hierarchical=hierarchical), case)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA_EP, reason="onnxruntime has no CUDA provider here")
def test_cuda_provider_matches_reference(save_model):
    case = graphs.case("resnet")
    pfv = PFV(save_model(case.model, case.name), provider="cuda")
    assert pfv.provider == "cuda"
    b = case.batch(seed=26)
    res = pfv.explain(b)
    assert_matches(res, reference_for(case, b, res), case, rgb_tol=1e-3)


# ---------------------------------------------------------------------------
# the rewritten graph's channel sums, the model's memory, the self-check
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vgg", "resnet", "tf2onnx_nhwc", "nhwc_body", "qop", "fp16"])
def test_channel_sum_nodes_follow_the_map_layout(name, engine, tmp_path):
    """NCHW maps are summed by a 1x1 Conv (then a Slice of its channel 0), NHWC maps by ReduceSum;
    either way the tapped output equals the map summed over its channels (test_forward_pass_holds_the_maps)."""
    case = graphs.case(name)
    pfv = engine(case)
    saved = onnx.load(str(pfv.save_surgery(tmp_path / "rewritten.onnx")))
    producer = {o: n for n in saved.graph.node for o in n.output}
    for fm in pfv.analysis().weighting:
        node = producer[f"pfv_onnx/{fm.name}/channel_sum"]
        if fm.layout is Layout.NCHW:
            assert node.op_type == "Slice", (fm.name, node.op_type)
            conv = producer[node.input[0]]
            assert conv.op_type == "Conv"
            kernel = next(t for t in saved.graph.initializer if t.name == conv.input[1])
            w = onnx.numpy_helper.to_array(kernel)
            assert w.shape[1:] == (fm.channels, 1, 1) and w.shape[0] % 8 == 0 and np.all(w == 1)
        else:
            assert node.op_type == "ReduceSum", (fm.name, node.op_type)


@pytest.mark.parametrize("name", CASES)
def test_shape_inference_without_weights_sees_the_same_shapes(name):
    """The weightless copy used for analysis types every tensor as the full model does."""
    from pfv_onnx import model_io

    case = graphs.case(name)
    spec = model_io.image_input(case.model, case.input_name)
    dims = tuple(case.input_shape)
    full = model_io.infer_tensor_info(model_io.with_pinned_input(case.model, spec, dims, weights=True))
    light_model = model_io.with_pinned_input(case.model, spec, dims)
    assert model_io.infer_tensor_info(light_model) == full
    assert [n.name for n in light_model.graph.initializer] == [n.name for n in case.model.graph.initializer]


def test_weightless_copy_is_small_and_leaves_the_model_alone():
    from pfv_onnx import model_io

    case = graphs.vgg()
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    big = onnx.numpy_helper.from_array(np.ones((256, 256), np.float32), "big_unused_weight")
    model.graph.initializer.append(big)
    before = model.SerializeToString()
    light = model_io.without_weights(model)
    assert model.SerializeToString() == before
    stub = next(t for t in light.graph.initializer if t.name == "big_unused_weight")
    assert list(stub.dims) == [256, 256] and stub.data_type == onnx.TensorProto.FLOAT
    assert not stub.raw_data and not stub.float_data
    assert light.ByteSize() < model.ByteSize() - 256 * 256 * 4 + 4096
    assert [n.name for n in light.graph.node] == [n.name for n in model.graph.node]


def test_new_input_size_after_construction_loads_the_model_again(save_model, tmp_path):
    """PFV lets the protobuf go once its session is built; a new size reads the file again."""
    case = graphs.case("dynhw")
    path = save_model(case.model, "dynhw_reload")
    pfv = PFV(path, provider="cpu")
    first = case.batch(shape=case.input_shape, seed=4)
    pfv.explain(first)
    other = case.alt_shapes[0]
    b = case.batch(shape=other, seed=5)
    res = pfv.explain(b)
    assert_matches(res, reference_for(case, b, res, hierarchical=False), case)


def test_model_file_changed_before_a_new_size_is_an_error(tmp_path):
    case = graphs.case("dynhw")
    path = tmp_path / "dynhw.onnx"
    onnx.save(case.model, str(path))
    pfv = PFV(path, provider="cpu")
    pfv.explain(case.batch(shape=case.input_shape, seed=4))
    changed = onnx.ModelProto()
    changed.CopyFrom(case.model)
    changed.producer_name = "someone else"
    onnx.save(changed, str(path))
    with pytest.raises(PfvError, match="changed since it was loaded"):
        pfv.explain(case.batch(shape=case.alt_shapes[0], seed=5))
    pfv.explain(case.batch(shape=case.input_shape, seed=6))  # the size it has a session for still runs


def test_self_check_passes_on_a_sound_rewrite(engine):
    case = graphs.case("resnet")
    pfv = engine(case, cache=False)
    assert pfv.self_check_result is None
    pfv.forward(case.batch(n=5, seed=8))
    assert pfv.self_check_result.startswith("ok")


def test_exiting_while_the_self_check_session_is_built_is_clean(tmp_path):
    """A process that exits (a user mistake, every image unreadable, Ctrl-C) while the prepared
    session of the original model is still being built ends normally, not with an abort."""
    import subprocess
    import sys

    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "input"
    for i in range(600):  # a graph that onnxruntime takes a while to optimise
        inits += [numpy_helper.from_array(rng.normal(0, 0.1, (16, 16 if i else 3, 3, 3)).astype(np.float32), f"w{i}")]
        nodes += [helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]), helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        x = f"r{i}"
    nodes += [helper.make_node("GlobalAveragePool", [x], ["g"]), helper.make_node("Flatten", ["g"], ["logits"])]
    graph = helper.make_graph(
        nodes, "deep", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 16])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "deep.onnx"
    onnx.save(model, path)
    code = f"import sys; from pfv_onnx import PFV; p = PFV({str(path)!r}, provider='cpu'); p.prepare_self_check(); sys.exit(3)"
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert done.returncode == 3, done.stderr[-500:]


def test_self_check_prepared_in_the_background_gives_the_same_verdict(engine, monkeypatch):
    """prepare_self_check builds the original model's session on another thread; the first
    forward pass then runs it (once) and reaches the verdict a self-check made on the spot does."""
    import threading

    from pfv_onnx import runtime

    case = graphs.case("resnet")
    batch = case.batch(n=5, seed=8)
    on_the_spot = engine(case, cache=False)
    on_the_spot.forward(batch)
    made_on: list[str] = []
    real = runtime.create_session

    def spy(*args, **kwargs):
        made_on.append(threading.current_thread().name)
        return real(*args, **kwargs)

    prepared = engine(case, cache=False)
    monkeypatch.setattr(runtime, "create_session", spy)
    prepared.prepare_self_check()
    prepared.prepare_self_check()  # a second call builds nothing more
    fp = prepared.forward(batch)
    assert made_on == ["pfv-self-check"] and prepared.self_check_result == on_the_spot.self_check_result
    assert prepared.self_check_result.startswith("ok")
    np.testing.assert_array_equal(fp.outputs[case.model.graph.output[0].name], on_the_spot.forward(batch).outputs[case.model.graph.output[0].name])
    prepared.prepare_self_check()  # after the check: nothing to build
    prepared.forward(batch)
    assert made_on == ["pfv-self-check"]


def test_self_check_warns_when_the_original_outputs_change(engine, monkeypatch):
    """The check compares the original model's outputs on the first images with the rewritten
    model's; a difference (here put into the original's side) is reported, not hidden."""
    case = graphs.case("vgg")
    pfv = engine(case, cache=False)
    real = SelfCheck.reference

    def shifted(self, chunk, quiet=False):
        out = real(self, chunk, quiet)
        return {k: np.asarray(v) + 0.5 * (np.abs(np.asarray(v)).max() + 1) for k, v in out.items()}

    monkeypatch.setattr(SelfCheck, "reference", shifted)
    with pytest.warns(RuntimeWarning, match="change by up to"):
        pfv.forward(case.batch(n=4, seed=9))
    assert not pfv.self_check_result.startswith("ok")


def test_self_check_pairs_images_and_skips_batch_statistics():
    from pfv_onnx.self_check import same_images as _same_images

    per_image = np.arange(12.0).reshape(6, 2)
    stat = np.array([3.0])  # no batch axis: depends on the whole batch
    ref = {"logits": per_image[:2], "stat": np.array([1.0])}
    got = {"logits": per_image, "stat": stat}
    a, b = _same_images(ref, got, 2, 6, ["logits", "stat"])
    assert list(a) == ["logits"] and np.array_equal(b["logits"], per_image[:2])
    a, b = _same_images({"logits": per_image, "stat": stat}, got, 6, 6, ["logits", "stat"])
    assert list(a) == ["logits", "stat"]


def test_spinning_option_reaches_onnxruntime(save_model):
    """spinning=False (what the command line asks for) sets onnxruntime's allow_spinning to 0;
    the default spins within a pass and stops when it returns."""
    import argparse

    from pfv_onnx.cli import _args

    path = save_model(graphs.case("vgg").model, "vgg")

    def entry(pfv: PFV, key: str, default: str) -> str:
        (sess, _), = pfv._sessions.values()
        options = sess.session.get_session_options()
        try:
            return options.get_session_config_entry(key)
        except Exception:  # not set: onnxruntime's default
            return default

    def allow_spinning(pfv: PFV) -> str:
        return entry(pfv, "session.intra_op.allow_spinning", "1")

    api = PFV(path, provider="cpu")
    assert allow_spinning(api) == "1"
    # the API's workers spin within a pass only: after it they stop, leaving the cores to the math
    assert entry(api, "session.force_spinning_stop", "0") == "1"
    assert allow_spinning(PFV(path, provider="cpu", spinning=False)) == "0"
    assert allow_spinning(_args.build_pfv(argparse.Namespace(model=path, provider="cpu"))) == "0"


def test_colour_scaling_leaves_the_components_alone_when_the_weighting_returns_them(save_model):
    """k above OpenCV's channel limit, E_L at input resolution, no weighting: the weighted array is
    the components array itself, and scaling the colours must not overwrite it."""
    case = graphs.linear_probe(channels=140)
    pfv = PFV(save_model(case.model, "linear_probe_140"), provider="cpu")
    x = case.batch(n=8, seed=30)
    res = pfv.explain(x, k=130)
    rows = x.transpose(0, 2, 3, 1).reshape(-1, 140).astype(np.float64)
    V = np.asarray(res.basis.directions, dtype=np.float64)
    P = (rows - rows.mean(axis=0)) @ V
    want = P.reshape(8, 6, 5, 130).transpose(0, 3, 1, 2)
    assert res.components.min() < 0 < res.components.max()
    np.testing.assert_allclose(res.components, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())
    assert 0.0 <= res.rgb.min() and res.rgb.max() <= 1.0


def _scalar_statistic_model() -> onnx.ModelProto:
    """A CNN whose only output has no batch axis: the mean activation over the whole batch."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(5)
    w = onnx.numpy_helper.from_array(rng.standard_normal((6, 3, 3, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["features"]),
        helper.make_node("ReduceMean", ["features"], ["mean"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "scalar_statistic", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("mean", TensorProto.FLOAT, [])], [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _batch_centred_model() -> onnx.ModelProto:
    """Per-image logits minus their mean over the batch: every image's output depends on the others."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(6)
    inits = [
        onnx.numpy_helper.from_array(rng.standard_normal((6, 3, 3, 3)).astype(np.float32), "w"),
        onnx.numpy_helper.from_array(rng.standard_normal((4, 6)).astype(np.float32), "fc"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["features"]),
        helper.make_node("GlobalAveragePool", ["features"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc"], ["raw"], transB=1),
        helper.make_node("ReduceMean", ["raw"], ["batch_mean"], axes=[0], keepdims=1),
        helper.make_node("Sub", ["raw", "batch_mean"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "batch_centred", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("build", [_scalar_statistic_model, _batch_centred_model])
def test_self_check_uses_the_whole_chunk_when_two_images_cannot_settle_it(build, save_model, monkeypatch):
    """An output without a batch axis cannot be compared on two images, and one that mixes the
    images differs on two: the whole first chunk decides, and a sound rewrite gives no warning."""
    import warnings

    pfv = PFV(save_model(build(), build.__name__), provider="cpu")
    sizes = []
    real = SelfCheck.reference

    def spy(self, chunk, quiet=False):
        sizes.append(len(chunk))
        return real(self, chunk, quiet)

    monkeypatch.setattr(SelfCheck, "reference", spy)
    x = np.random.default_rng(7).standard_normal((5, 3, 8, 8)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        pfv.forward(x)
    assert sizes == [2, 5]
    assert pfv.self_check_result.startswith("ok")


def test_self_check_retries_on_the_chunk_when_the_model_refuses_two_images(engine, monkeypatch):
    from pfv_onnx.errors import ModelError

    case = graphs.case("vgg")
    pfv = engine(case, cache=False)
    real = SelfCheck.reference
    sizes = []

    def picky(self, chunk, quiet=False):
        sizes.append(len(chunk))
        if len(chunk) == 2:
            if quiet:
                return None
            raise ModelError("runs only at the batch it was made for")
        return real(self, chunk, quiet)

    monkeypatch.setattr(SelfCheck, "reference", picky)
    pfv.forward(case.batch(n=4, seed=3))
    assert sizes == [2, 4] and pfv.self_check_result.startswith("ok")


def test_model_is_read_again_from_where_it_was_whatever_the_working_directory(tmp_path, monkeypatch):
    case = graphs.case("dynhw")
    (tmp_path / "models").mkdir()
    onnx.save(case.model, str(tmp_path / "models" / "dynhw.onnx"))
    monkeypatch.chdir(tmp_path)
    pfv = PFV("models/dynhw.onnx", provider="cpu")
    pfv.explain(case.batch(shape=case.input_shape, seed=4))
    monkeypatch.chdir(tmp_path / "models")
    res = pfv.explain(case.batch(shape=case.alt_shapes[0], seed=5))
    assert res.rgb.shape[0] == case.alt_shapes[0][0]


def test_conv_sums_only_off_cuda(engine, tmp_path):
    """The CUDA provider may run convolutions in TF32: there the sums stay ReduceSum."""
    from pfv_onnx import surgery

    case = graphs.case("vgg")
    pfv = engine(case)
    analysis = pfv.analysis()
    for conv, want in ((True, {"Conv", "Slice"}), (False, {"ReduceSum"})):
        rewritten, _ = surgery.rewrite(onnx.load(str(pfv.model_path)), analysis, conv_sums=conv)
        ops = {n.op_type for n in rewritten.graph.node if n.output[0].startswith("pfv_onnx/") and "channel_sum" in n.output[0]}
        assert ops == want, (conv, ops)


def test_pfv_holds_no_copy_of_the_model_once_built(tmp_path):
    """The weights live in the session; the protobuf is read again when needed (here by
    save_surgery), so a file changed after construction is noticed there."""
    case = graphs.case("vgg")
    path = tmp_path / "vgg.onnx"
    onnx.save(case.model, str(path))
    pfv = PFV(path, provider="cpu")
    changed = onnx.ModelProto()
    changed.CopyFrom(case.model)
    changed.doc_string = "edited"
    onnx.save(changed, str(path))
    with pytest.raises(PfvError, match="changed since it was loaded"):
        pfv.save_surgery(tmp_path / "first.onnx")
    onnx.save(case.model, str(path))  # the file as it was: read again, it serves
    pfv.save_surgery(tmp_path / "second.onnx")
    with pytest.raises(PfvError, match="changed since it was loaded"):
        onnx.save(changed, str(path))
        pfv.save_surgery(tmp_path / "third.onnx")  # and save_surgery kept no copy either

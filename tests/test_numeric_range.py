"""PFV does not depend on the scale of a map: any finite float32 map gives the unscaled
net's picture, and a decomposition that would end blank or non-finite is refused."""

from __future__ import annotations

import cv2
import graphs
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from pfv_onnx import PFV, pca, weighting
from pfv_onnx.cli import main
from pfv_onnx.errors import InputError

CONVS = ["/features/features.{}/Conv_output_0".format(i) for i in (0, 2, 5, 7, 10, 12)]


def scaled_convs(case: graphs.GraphCase, factors: dict[int, float], name: str) -> graphs.GraphCase:
    """The case's model with conv i's weights (and bias) multiplied by ``factors[i]`` (index in CONVS)."""
    m = onnx.ModelProto()
    m.CopyFrom(case.model)
    inits = {t.name: t for t in m.graph.initializer}
    for node in m.graph.node:
        if node.op_type == "Conv" and node.output[0] in CONVS:
            f = factors.get(CONVS.index(node.output[0]), 1.0)
            for param in node.input[1:]:
                arr = numpy_helper.to_array(inits[param]).astype(np.float64) * f
                inits[param].CopyFrom(numpy_helper.from_array(arr.astype(np.float32), param))
    m.graph.name = name
    return graphs.GraphCase(name, m, case.input_name, case.input_shape, case.layout, case.expected_decomposed, case.expected_weighting)


def peaks(case: graphs.GraphCase, batch: np.ndarray) -> dict[str, float]:
    names = [case.expected_decomposed, *case.expected_weighting]
    _, maps = graphs.fetch(case.model, names, batch)
    return {n: float(np.abs(maps[n]).max()) for n in names}


# Each: (base net, conv factors, which variants keep the picture, E_L's peak at least, weighting peaks at least).
# Bias-free nets are positively homogeneous: conv i x f scales every later map by f.
SCALINGS = {
    # E_L alone x 1e10 .. 1e30 (the last conv's weights and bias)
    "E_L_1e10": (True, {5: 1e10}, ("flat", "hierarchical"), 1e9, 0.0),
    "E_L_1e30": (True, {5: 1e30}, ("flat", "hierarchical"), 1e29, 0.0),
    # every map x 1e20 (the first conv of a bias-free net)
    "all_1e20": (False, {0: 1e20}, ("flat", "hierarchical"), 1e19, 1e19),
    # the weighting maps x 1e25, E_L unchanged
    "weights_1e25": (False, {0: 1e25, 4: 1e-25}, ("flat", "hierarchical"), 0.0, 1e24),
    # every conv x 1e5: maps from ~1e10 (first weighting map) to ~1e30 (E_L); a per-map factor
    # changes the flat variant's sum of weighting maps, so only the hierarchical one is invariant
    "each_1e5": (False, {i: 1e5 for i in range(6)}, ("hierarchical",), 1e28, 1e9),
}


@pytest.mark.parametrize("which", sorted(SCALINGS))
def test_scaled_maps_give_the_unscaled_picture(which, save_model):
    bias, factors, variants, min_el, min_w = SCALINGS[which]
    base = graphs.vgg(bias=bias, name=f"vgg_bias{int(bias)}")
    scaled = scaled_convs(base, factors, f"vgg_{which}")
    batch = base.batch(seed=3)
    # independently: the maps really are that large, and finite
    p = peaks(scaled, batch)
    assert all(np.isfinite(v) for v in p.values())
    assert p[base.expected_decomposed] >= min_el
    assert min(p[w] for w in base.expected_weighting) >= min_w
    for variant in variants:
        h = variant == "hierarchical"
        with np.errstate(over="raise", invalid="raise", divide="raise"):  # no overflow anywhere (the test config turns warnings into errors too)
            a = PFV(save_model(base.model, base.name), provider="cpu", hierarchical=h).explain(batch)
            s = PFV(save_model(scaled.model, scaled.name), provider="cpu", hierarchical=h).explain(batch)
        assert s.feature_maps == a.feature_maps
        assert np.isfinite(s.rgb).all() and np.ptp(s.rgb) > 0.5
        np.testing.assert_allclose(s.rgb, a.rgb, atol=1e-4, err_msg=variant)
        ratio = np.abs(s.components).max() / np.abs(a.components).max()
        np.testing.assert_allclose(s.components, a.components * ratio, atol=1e-4 * np.abs(s.components).max())
        np.testing.assert_allclose(s.eigenvalues / s.eigenvalues[0], a.eigenvalues / a.eigenvalues[0], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(s.explained_variance_ratio, a.explained_variance_ratio, atol=1e-5)


@pytest.mark.parametrize("scale", [2.0**-90, 2.0**-50, 2.0**60, 2.0**100])
def test_pca_of_scaled_rows_is_the_scaled_pca(scale):
    """Against a float64 eigendecomposition written here: directions unchanged, projections and
    eigenvalues scaled, for rows far outside the range where float32 squares are finite."""
    rng = np.random.default_rng(4)
    X = (rng.standard_normal((500, 12)) * 0.7 ** np.arange(12)).astype(np.float32)
    Xs = X * np.float32(scale)
    basis, P = pca.fit(Xs, 3)
    X64 = X.astype(np.float64)
    vals, vecs = np.linalg.eigh(np.cov(X64, rowvar=False))
    vals, vecs = vals[::-1][:3], vecs[:, ::-1][:, :3]
    vecs = vecs * np.sign((((X64 - X64.mean(0)) @ vecs) ** 3).sum(0))  # the sign rule: positive third moment
    np.testing.assert_allclose(basis.directions, vecs, atol=1e-5)
    np.testing.assert_allclose(basis.eigenvalues, vals * scale**2, rtol=1e-5)
    np.testing.assert_allclose(basis.mean, X64.mean(0) * scale, rtol=1e-5, atol=1e-6 * scale)
    ref = (X64 - X64.mean(0)) @ vecs * scale
    np.testing.assert_allclose(P, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("scale", [1e-36, 1e-30, 1e25, 1e36])
def test_colour_scaling_of_huge_and_tiny_maps(scale):
    """z-score, clip, min-max in float64 written here, against the float32 scaling of x * scale."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 40, 50)) ** 3
    z = np.clip((x - x.mean()) / x.std(), -1.0, 1.0)
    ref = (z - z.min()) / (z.max() - z.min())
    xs = (x * scale).astype(np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        got = weighting.scale_colours(xs)
    np.testing.assert_allclose(got, ref, atol=1e-5)


@pytest.mark.parametrize("k", [3, 130], ids=["per-image", "generic"])
def test_flat_weighting_of_huge_maps_keeps_the_colours(k):
    """upsample(P) * sum upsample(S), both ~1e30: the product would overflow float32. The
    colours equal those of the float64 product (computed here with the NumPy path's resize
    checked against the generic gather path: k = 130 takes the array-module-generic path)."""
    rng = np.random.default_rng(6)
    P = rng.standard_normal((2, k, 4, 5)).astype(np.float32)
    S = [rng.random((2, 1, 8, 10)).astype(np.float32), rng.random((2, 1, 16, 20)).astype(np.float32)]
    big_P, big_S = P * np.float32(1e30), [s * np.float32(1e30) for s in S]
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        got = weighting.scale_colours(np.ascontiguousarray(weighting.flat(big_P, big_S, (16, 20))))
    up = weighting.resize_bilinear_gather(P.astype(np.float64), (16, 20)).astype(np.float64)
    A = sum(weighting.resize_bilinear_gather(s, (16, 20)).astype(np.float64) for s in S)
    m = up * A
    z = np.clip((m - m.mean()) / m.std(), -1.0, 1.0)
    ref = (z - z.min()) / (z.max() - z.min())
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_hierarchical_weighting_of_tiny_maps():
    """Weighting maps ~1e-42 (subnormal: 1 / max would overflow float32) weight as their unscaled selves."""
    rng = np.random.default_rng(7)
    P = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    S = [rng.random((2, 1, 8, 10)).astype(np.float32) + 0.5]
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        tiny = weighting.hierarchical(P, [S[0] * np.float32(1e-30) * np.float32(1e-12)], (16, 20))
    plain = weighting.hierarchical(P, S, (16, 20))
    np.testing.assert_allclose(np.asarray(tiny), np.asarray(plain), atol=1e-3 * np.abs(plain).max())


def constant_case() -> graphs.GraphCase:
    """vgg with the last conv's weights zero and its bias negative: E_L (after the ReLU) is 0 everywhere."""
    base = graphs.vgg()
    m = onnx.ModelProto()
    m.CopyFrom(base.model)
    inits = {t.name: t for t in m.graph.initializer}
    conv = next(n for n in m.graph.node if n.output[0] == CONVS[5])
    for param, value in zip(conv.input[1:], (0.0, -1.0)):
        arr = np.full_like(numpy_helper.to_array(inits[param]), value)
        inits[param].CopyFrom(numpy_helper.from_array(arr, param))
    return graphs.GraphCase("vgg_dead_EL", m, base.input_name, base.input_shape, base.layout, base.expected_decomposed, base.expected_weighting)


def test_a_constant_decomposed_map_is_an_error_with_a_reason(save_model):
    case = constant_case()
    batch = case.batch(seed=2)
    _, maps = graphs.fetch(case.model, [case.expected_decomposed], batch)
    assert not maps[case.expected_decomposed].any()  # independently: E_L is all zero
    with pytest.raises(InputError, match=r"same at every position.*--layer"):
        PFV(save_model(case.model, case.name), provider="cpu").explain(batch)


def test_a_constant_decomposed_map_exits_2_on_the_command_line(tmp_path, capsys):
    case = constant_case()
    path = tmp_path / "dead.onnx"
    onnx.save(case.model, str(path))
    rng = np.random.default_rng(3)
    imgs = []
    for i in range(2):
        p = tmp_path / f"im{i}.png"
        cv2.imwrite(str(p), rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
        imgs.append(str(p))
    assert main(["run", str(path), *imgs, "-o", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "same at every position" in err and "Traceback" not in err


@pytest.mark.gpu
def test_huge_maps_on_cupy_match_numpy():
    """The array-module-generic path (CuPy) with maps ~1e30: the PCA, the flat weighting and the
    colour scaling give what the NumPy path gives."""
    import cupy

    rng = np.random.default_rng(8)
    X = (rng.standard_normal((500, 12)) * 0.7 ** np.arange(12) * 1e30).astype(np.float32)
    b_np, P_np = pca.fit(X, 3)
    b_cp, P_cp = pca.fit(cupy.asarray(X), 3)
    np.testing.assert_allclose(b_cp.directions, b_np.directions, atol=1e-5)
    np.testing.assert_allclose(b_cp.eigenvalues, b_np.eigenvalues, rtol=1e-5)
    np.testing.assert_allclose(cupy.asnumpy(P_cp), P_np, atol=1e-5 * np.abs(P_np).max())
    P = (rng.standard_normal((2, 3, 4, 5)) * 1e30).astype(np.float32)
    S = [(rng.random((2, 1, 8, 10)) * 1e30).astype(np.float32)]
    want = weighting.scale_colours(np.ascontiguousarray(weighting.flat(P, S, (16, 20))))
    got = weighting.scale_colours(weighting.flat(cupy.asarray(P), [cupy.asarray(s) for s in S], (16, 20)))
    np.testing.assert_allclose(cupy.asnumpy(got), want, atol=1e-4)

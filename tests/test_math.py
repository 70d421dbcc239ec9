"""The method's math: the NumPy reference checked against independent facts, the test
graphs checked as fixtures, and the engine's math checked against analytic values
through the public API and through thin adapters to ``pfv_onnx.pca`` / ``pfv_onnx.weighting``.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphs
import reference as ref

# ---------------------------------------------------------------------------
# adapters to the engine's low-level functions (retarget here if names change)
# ---------------------------------------------------------------------------


def engine_resize(x: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(N, c, h, w) float32 -> (N, c, H, W) with the engine's bilinear resize."""
    from pfv_onnx import weighting

    return np.asarray(weighting.resize_bilinear(np.ascontiguousarray(x, dtype=np.float32), tuple(hw)))


def engine_resize_gather(x: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """The engine's array-module (non-OpenCV) resize path, the one CuPy uses."""
    from pfv_onnx import weighting

    return np.asarray(weighting.resize_bilinear_gather(np.ascontiguousarray(x, dtype=np.float32), tuple(hw)))


def engine_weight(p: np.ndarray, sums: list[np.ndarray], hw: tuple[int, int], hierarchical: bool) -> np.ndarray:
    """P (N, k, h, w) weighted by channel sums S_l (N, 1, H_l, W_l), earliest first."""
    from pfv_onnx import weighting

    fn = weighting.hierarchical if hierarchical else weighting.flat
    return np.asarray(fn(p.astype(np.float32), [s.astype(np.float32) for s in sums], tuple(hw)))


def engine_colour_scale(x: np.ndarray, n_sigma: float) -> np.ndarray:
    from pfv_onnx import weighting

    return np.asarray(weighting.scale_colours(x.astype(np.float32), n_sigma))


def engine_fit(x: np.ndarray, k: int):
    """Rows X (M, C) -> (eigenvalues (k,), explained-variance ratio (k,), directions (C, k), P (M, k))."""
    from pfv_onnx import pca

    basis, p = pca.fit(np.ascontiguousarray(x, dtype=np.float32), k)
    return (np.asarray(basis.eigenvalues), np.asarray(basis.explained_variance_ratio),
            np.asarray(basis.directions), np.asarray(p))


# ---------------------------------------------------------------------------
# data with a known covariance
# ---------------------------------------------------------------------------


def designed_rows(m: int, eigenvalues, seed: int = 0, mean=None):
    """Rows X (M, C) whose sample covariance is exactly R diag(eigenvalues) R^T.

    Returns (X, R) with R orthogonal (its columns are the principal directions)."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    c = len(lam)
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, c))
    a -= a.mean(axis=0)
    q, _ = np.linalg.qr(a)  # orthonormal columns, each of zero mean
    r, _ = np.linalg.qr(rng.standard_normal((c, c)))
    x = (q * np.sqrt(lam * (m - 1))) @ r.T
    # make the projections skewed so the sign rule is decided by a clear margin
    if mean is None:
        mean = rng.standard_normal(c)
    return x + mean, r


# ---------------------------------------------------------------------------
# the reference itself
# ---------------------------------------------------------------------------


def test_interp_matrix_hand_example():
    # 2 -> 4: sources -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to the last pixel)
    r = ref.interp_matrix(2, 4)
    np.testing.assert_allclose(r @ np.array([0.0, 1.0]), [0.0, 0.25, 0.75, 1.0])
    # 4 -> 2: sources 0.5 and 2.5, the mean of each pair
    np.testing.assert_allclose(ref.interp_matrix(4, 2) @ np.array([0.0, 2.0, 4.0, 8.0]), [1.0, 6.0])
    # 3 -> 5: scale 0.6, sources -0.2, 0.4, 1.0, 1.6, 2.2
    np.testing.assert_allclose(ref.interp_matrix(3, 5) @ np.array([0.0, 10.0, 20.0]), [0.0, 4.0, 10.0, 16.0, 20.0])


@pytest.mark.parametrize("n_in,n_out", [(1, 5), (3, 3), (7, 7), (4, 9), (9, 4), (6, 24), (5, 13)])
def test_interp_matrix_rows_are_convex(n_in, n_out):
    r = ref.interp_matrix(n_in, n_out)
    assert r.shape == (n_out, n_in)
    assert (r >= 0).all()
    np.testing.assert_allclose(r.sum(axis=1), 1.0)
    if n_in == n_out:
        np.testing.assert_array_equal(r, np.eye(n_in))


@pytest.mark.parametrize("src,dst", [((4, 5), (8, 10)), ((3, 4), (24, 32)), ((6, 8), (20, 28)),
                                     ((7, 5), (16, 16)), ((8, 8), (4, 4)), ((12, 16), (6, 8)), ((5, 7), (5, 7))])
def test_reference_resize_matches_opencv(src, dst):
    x = np.random.default_rng(1).standard_normal((3, *src)).astype(np.float32)
    ours = ref.resize(x, dst)
    cv = np.stack([cv2.resize(ch, (dst[1], dst[0]), interpolation=cv2.INTER_LINEAR) for ch in x])
    np.testing.assert_allclose(ours, cv, atol=2e-5)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), oh=st.integers(1, 20), ow=st.integers(1, 20),
       c=st.floats(-5, 5, allow_nan=False))
def test_reference_resize_properties(h, w, oh, ow, c):
    # constants stay constant, the range never grows, the map is linear
    x = np.random.default_rng(h * 31 + w).standard_normal((2, h, w))
    np.testing.assert_allclose(ref.resize(np.full((1, h, w), c), (oh, ow)), c, atol=1e-12)
    y = ref.resize(x, (oh, ow))
    assert y.shape == (2, oh, ow)
    assert y.min() >= x.min() - 1e-12 and y.max() <= x.max() + 1e-12
    np.testing.assert_allclose(ref.resize(3 * x + 1, (oh, ow)), 3 * y + 1, atol=1e-12)


def test_reference_colour_scale():
    assert (ref.colour_scale(np.full((2, 3, 4, 4), 5.0)) == 0).all()
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5)) * 4 + 2
    y = ref.colour_scale(x, 1.0)
    assert y.min() == 0.0 and y.max() == 1.0
    # the clip at one sigma: everything beyond saturates
    z = (x - x.mean()) / x.std()
    assert (y[z >= 1] == 1.0).all() and (y[z <= -1] == 0.0).all()
    # monotone and affine inside the clip
    inside = np.abs(z) < 1
    np.testing.assert_allclose(y[inside], (z[inside] + 1) / 2, atol=1e-12)
    # invariant to a positive affine map of the input
    np.testing.assert_allclose(ref.colour_scale(3 * x - 7), y, atol=1e-12)


def test_reference_principal_analytic():
    lam = np.array([9.0, 4.0, 1.0, 0.25, 0.01])
    x, r = designed_rows(200, lam)
    e = x.reshape(4, 5, 10, 5).transpose(0, 3, 1, 2)  # N=4, h=5, w=10, C=5
    out = ref.pfv(e, k=3)
    np.testing.assert_allclose(out.eigenvalues, lam[:3], rtol=1e-10)
    np.testing.assert_allclose(out.all_eigenvalues, lam, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out.explained_variance_ratio, lam[:3] / lam.sum(), rtol=1e-10)
    # directions are R's columns up to sign
    dots = np.abs(np.sum(out.directions * r[:, :3], axis=0))
    np.testing.assert_allclose(dots, 1.0, atol=1e-9)
    # the sample covariance agrees with numpy's
    cov = np.cov(x, rowvar=False)
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(cov))[::-1], lam, rtol=1e-9, atol=1e-12)


def test_reference_signs_and_alignment():
    x, _ = designed_rows(120, [5.0, 2.0, 1.0, 0.5])
    e = x.reshape(2, 6, 10, 4).transpose(0, 3, 1, 2)
    base = ref.pfv(e, k=3, image_hw=(12, 20))
    flipped = ref.pfv(e, k=3, image_hw=(12, 20), signs=[1, -1, -1])
    np.testing.assert_allclose(flipped.components[:, 1:], -base.components[:, 1:])
    aligned = ref.pfv(e, k=3, image_hw=(12, 20), align_to=flipped.components.astype(np.float32))
    np.testing.assert_allclose(aligned.rgb, flipped.rgb)
    ruled = ref.pfv(e, k=3, use_sign_rule=True)
    p = ruled.components.transpose(0, 2, 3, 1).reshape(-1, 3)
    assert (np.sum(p**3, axis=0) > 0).all()


def test_reference_weighting_by_hand():
    # one component, one 1x1 E_L position per image, a 2x2 weighting map: the weighted map
    # is the constant P times the weighting map
    e = np.zeros((2, 2, 1, 1))
    e[0, :, 0, 0] = [1.0, 0.0]
    e[1, :, 0, 0] = [-1.0, 0.0]
    s = np.arange(2 * 3 * 2 * 2, dtype=np.float64).reshape(2, 3, 2, 2) + 1
    out = ref.pfv(e, [s], (2, 2), k=1)
    p = out.components[:, 0, 0, 0]
    np.testing.assert_allclose(np.abs(p), [1.0, 1.0])
    np.testing.assert_allclose(out.weighted[:, 0], p[:, None, None] * s.sum(axis=1))
    hier = ref.pfv(e, [s], (2, 2), k=1, hierarchical=True)
    ssum = s.sum(axis=1)
    np.testing.assert_allclose(hier.weighted[:, 0], hier.components[:, 0, 0, 0][:, None, None] * ssum / ssum.max())


# ---------------------------------------------------------------------------
# the test graphs as fixtures: what the cases claim must hold
# ---------------------------------------------------------------------------

CASES = list(graphs.CASE_FACTORIES)


@pytest.mark.parametrize("name", CASES)
def test_case_maps_are_ordered_by_resolution(name):
    c = graphs.case(name)
    maps = graphs.case_maps(c, c.batch())
    hws = [maps[n].shape[2:] for n in c.all_expected]
    n = c.input_shape[0]
    for nm in c.all_expected:
        assert maps[nm].shape[0] == n, nm
    # strictly decreasing resolutions, none larger than the image, E_L the smallest
    areas = [h * w for h, w in hws]
    assert areas == sorted(areas, reverse=True) and len(set(areas)) == len(areas), hws
    assert hws[0][0] <= c.image_hw[0] and hws[0][1] <= c.image_hw[1]
    assert min(hws[-1]) > 1
    assert c.input_name not in c.all_expected


@pytest.mark.parametrize("name", CASES)
def test_case_principal_components_well_separated(name):
    """Leading eigenvalues apart enough that float32 and float64 agree on the directions."""
    c = graphs.case(name)
    maps = graphs.case_maps(c, c.batch())
    out = ref.pfv(maps[c.expected_decomposed], k=3)
    lam = out.all_eigenvalues
    ratios = lam[:3] / lam[1:4]
    assert (ratios > 1.08).all(), ratios


@pytest.mark.parametrize("name", CASES)
def test_case_activations_do_not_depend_on_marking(name):
    """The premise of every comparison: marking tensors as outputs, or not optimising the
    graph, changes neither the maps nor the original outputs."""
    c = graphs.case(name)
    b = c.batch()
    plain = graphs.original_outputs(c, b)
    outs_all, maps_all = graphs.fetch(c.model, c.all_expected, b, c.input_name, c.fixed_batch)
    for k, v in plain.items():
        np.testing.assert_allclose(outs_all[k], v, rtol=1e-5, atol=1e-5, err_msg=k)
    for nm in c.all_expected:
        _, alone = graphs.fetch(c.model, [nm], b, c.input_name, c.fixed_batch)
        np.testing.assert_allclose(alone[nm].astype(np.float64), maps_all[nm].astype(np.float64),
                                   rtol=1e-5, atol=1e-5, err_msg=nm)
    _, slow = graphs.fetch(c.model, c.all_expected, b, c.input_name, c.fixed_batch, optimize=False)
    for nm in c.all_expected:
        a, o = slow[nm].astype(np.float64), maps_all[nm].astype(np.float64)
        off = np.abs(a - o) > 1e-3 + 1e-3 * np.abs(o)
        if off.any():
            # An optimised QDQ graph runs integer kernels, the unoptimised one float kernels
            # between the Q/DQ pairs; a value at a rounding or clipping edge can land a few
            # quantisation steps apart (measured with onnxruntime 1.32: 1 of 8192 values 0.25
            # apart on a range of 7.2; 10 of 4096 one step apart). Allow that on a few
            # elements, no more.
            assert off.mean() < 1e-2, (nm, off.mean())
            assert np.abs(a - o)[off].max() <= 0.05 * np.ptp(o), nm


def test_qop_dequant_parameters_match_graph():
    """The dequantization the tests apply uses the QLinearConv's own output scale and zero point."""
    c = graphs.case("qop")
    inits = {i.name: i for i in c.model.graph.initializer}
    from onnx import numpy_helper

    for node in c.model.graph.node:
        if node.op_type == "QLinearConv" and node.output[0] in c.dequant:
            scale = float(numpy_helper.to_array(inits[node.input[6]]))
            zp = int(numpy_helper.to_array(inits[node.input[7]]))
            assert c.dequant[node.output[0]] == (scale, zp)


# ---------------------------------------------------------------------------
# the engine's math through the public API, against analytic values
# ---------------------------------------------------------------------------


def probe_batch(x_rows: np.ndarray, n: int, c: int, h: int, w: int) -> np.ndarray:
    return x_rows.reshape(n, h, w, c).transpose(0, 3, 1, 2).astype(np.float32).copy()


@pytest.fixture(scope="module")
def probe(save_model):
    case = graphs.linear_probe(channels=5, size=(6, 5))
    return case, save_model(case.model, "linear_probe_5")


def test_engine_eigenvalues_analytic(probe):
    from pfv_onnx import PFV

    case, path = probe
    lam = np.array([8.0, 3.0, 1.5, 0.4, 0.1])
    x, r = designed_rows(4 * 6 * 5, lam, seed=3)
    batch = probe_batch(x, 4, 5, 6, 5)
    res = PFV(path, provider="cpu").explain(batch)
    assert res.feature_maps == ["features"]
    np.testing.assert_allclose(res.eigenvalues, lam[:3], rtol=1e-4)
    np.testing.assert_allclose(res.explained_variance_ratio, lam[:3] / lam.sum(), rtol=1e-4)
    # components are the centred rows projected on R's columns, up to sign
    p = (x - x.mean(axis=0)) @ r[:, :3]
    got = res.components.transpose(0, 2, 3, 1).reshape(-1, 3).astype(np.float64)
    s = np.sign(np.sum(got * p, axis=0))
    np.testing.assert_allclose(got, p * s, atol=1e-4 * np.abs(p).max())
    # ...and the sign is the documented one: positive third moment
    assert (np.sum(got.astype(np.float64) ** 3, axis=0) > 0).all()
    # no weighting map: rgb is the colour-scaled upsampled components (here no upsampling)
    want = ref.colour_scale(got.reshape(4, 6, 5, 3).transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(res.rgb, want, atol=1e-4)


def test_engine_k_equals_channels_and_one(probe):
    from pfv_onnx import PFV

    case, path = probe
    lam = np.array([8.0, 3.0, 1.5, 0.4, 0.1])
    x, _ = designed_rows(120, lam, seed=4)
    batch = probe_batch(x, 4, 5, 6, 5)
    pfv = PFV(path, provider="cpu")
    res5 = pfv.explain(batch, k=5)
    np.testing.assert_allclose(res5.eigenvalues, lam, rtol=1e-4)
    np.testing.assert_allclose(res5.explained_variance_ratio.sum(), 1.0, rtol=1e-5)
    assert res5.rgb.shape == (4, 6, 5, 5) and res5.components.shape == (4, 5, 6, 5)
    res1 = pfv.explain(batch, k=1)
    np.testing.assert_allclose(res1.eigenvalues, lam[:1], rtol=1e-4)
    assert res1.rgb.shape == (4, 6, 5, 1)


def test_engine_mean_does_not_matter(probe):
    """Adding a constant vector to every row of X (E_L's mean) changes nothing but the mean."""
    from pfv_onnx import PFV

    case, path = probe
    x, _ = designed_rows(120, [6.0, 2.0, 1.0, 0.5, 0.2], seed=5, mean=np.zeros(5))
    pfv = PFV(path, provider="cpu")
    a = pfv.explain(probe_batch(x, 4, 5, 6, 5))
    b = pfv.explain(probe_batch(x + np.array([3.0, -2.0, 10.0, 0.5, 1.0]), 4, 5, 6, 5))
    np.testing.assert_allclose(b.eigenvalues, a.eigenvalues, rtol=1e-4)
    np.testing.assert_allclose(b.components, a.components, atol=1e-4 * np.abs(a.components).max())
    np.testing.assert_allclose(b.rgb, a.rgb, atol=1e-4)


# ---------------------------------------------------------------------------
# the engine's low-level functions through the adapters
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("src,dst", [((4, 5), (8, 10)), ((3, 4), (24, 32)), ((6, 8), (20, 28)),
                                     ((7, 5), (16, 16)), ((12, 16), (6, 8)), ((5, 7), (5, 7)), ((1, 1), (3, 4))])
def test_engine_resize_matches_reference(src, dst):
    x = np.random.default_rng(2).standard_normal((2, 3, *src)).astype(np.float32)
    want = ref.resize(x, dst)
    np.testing.assert_allclose(engine_resize(x, dst), want, atol=1e-5)
    np.testing.assert_allclose(engine_resize_gather(x, dst), want, atol=1e-5)


@pytest.mark.parametrize("hierarchical", [False, True])
def test_engine_weighting_matches_reference(hierarchical):
    rng = np.random.default_rng(3)
    p = rng.standard_normal((2, 3, 3, 4))
    sums = [rng.uniform(0, 2, (2, 1, 12, 16)), rng.uniform(0, 2, (2, 1, 6, 8))]
    want = ref.weight(p, sums, (24, 32), hierarchical)
    got = engine_weight(p, sums, (24, 32), hierarchical)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(engine_weight(p, [], (24, 32), hierarchical), ref.resize(p, (24, 32)), atol=1e-5)


@pytest.mark.parametrize("n_sigma", [0.5, 1.0, 2.5])
def test_engine_colour_scale_matches_reference(n_sigma):
    x = np.random.default_rng(4).standard_normal((3, 3, 7, 9)) ** 3
    np.testing.assert_allclose(engine_colour_scale(x, n_sigma), ref.colour_scale(x, n_sigma), atol=1e-5)
    assert (engine_colour_scale(np.full((1, 3, 2, 2), 4.0), n_sigma) == 0).all()


@pytest.mark.parametrize("m,c", [(300, 6), (4, 10)])  # covariance path and Gram path
def test_engine_fit_matches_reference(m, c):
    rng = np.random.default_rng(5)
    lam = np.sort(rng.uniform(0.1, 5.0, c))[::-1] * np.linspace(3, 1, c)
    x, _ = designed_rows(m, lam, seed=6) if m > c else (rng.standard_normal((m, c)) * np.sqrt(lam), None)
    k = 3
    e = x.reshape(1, m, 1, c).transpose(0, 3, 1, 2)
    want = ref.pfv(e, k=k, use_sign_rule=True)
    vals, evr, v, p = engine_fit(x, k)
    np.testing.assert_allclose(vals, want.eigenvalues, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(evr, want.explained_variance_ratio, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(v, want.directions, atol=1e-4)
    pw = want.components.transpose(0, 2, 3, 1).reshape(-1, k)
    np.testing.assert_allclose(p, pw, atol=1e-4 * np.abs(pw).max())


# ---------------------------------------------------------------------------
# the same low-level functions on CuPy arrays
# ---------------------------------------------------------------------------


@pytest.mark.gpu
def test_cupy_low_level_matches_numpy():
    import cupy

    from pfv_onnx import pca, weighting

    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    np.testing.assert_allclose(cupy.asnumpy(weighting.resize_bilinear(cupy.asarray(x), (20, 28))),
                               ref.resize(x, (20, 28)), atol=1e-5)
    p = rng.standard_normal((2, 3, 3, 4)).astype(np.float32)
    sums = [rng.uniform(0, 2, (2, 1, 12, 16)).astype(np.float32), rng.uniform(0, 2, (2, 1, 6, 8)).astype(np.float32)]
    for hier in (False, True):
        fn = weighting.hierarchical if hier else weighting.flat
        got = cupy.asnumpy(fn(cupy.asarray(p), [cupy.asarray(s) for s in sums], (24, 32)))
        np.testing.assert_allclose(got, ref.weight(p, sums, (24, 32), hier), rtol=1e-5, atol=1e-5)
    y = rng.standard_normal((3, 3, 7, 9)).astype(np.float32) ** 3
    np.testing.assert_allclose(cupy.asnumpy(weighting.scale_colours(cupy.asarray(y), 1.0)), ref.colour_scale(y), atol=1e-5)
    rows, _ = designed_rows(300, [5.0, 3.0, 2.0, 1.0, 0.5, 0.2], seed=8)
    basis_np, p_np = pca.fit(rows.astype(np.float32), 3)
    basis_cp, p_cp = pca.fit(cupy.asarray(rows.astype(np.float32)), 3)
    np.testing.assert_allclose(np.asarray(basis_cp.eigenvalues), basis_np.eigenvalues, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(basis_cp.directions), basis_np.directions, atol=1e-4)
    np.testing.assert_allclose(cupy.asnumpy(p_cp), p_np, atol=1e-4 * np.abs(p_np).max())


@pytest.mark.gpu
def test_cupy_fit_with_a_host_scratch_centres_on_the_device(tmp_path):
    """A scratch is host memory: CuPy rows are centred on the device, the result unchanged."""
    import cupy

    from pfv_onnx import pca

    rows, _ = designed_rows(300, [5.0, 3.0, 2.0, 1.0, 0.5, 0.2], seed=9)
    X = cupy.asarray(rows.astype(np.float32))
    made: list[np.memmap] = []

    def scratch(shape, dtype):
        made.append(np.memmap(tmp_path / f"scratch-{len(made)}", dtype=dtype, mode="w+", shape=shape))
        return made[-1]

    basis_plain, p_plain = pca.fit(X, 3)
    basis_scratch, p_scratch = pca.fit(X, 3, scratch=scratch)
    np.testing.assert_array_equal(np.asarray(basis_scratch.directions), np.asarray(basis_plain.directions))
    np.testing.assert_array_equal(cupy.asnumpy(p_scratch), cupy.asnumpy(p_plain))


def test_fit_of_memory_mapped_rows_out_of_range_stays_out_of_memory(tmp_path):
    """Rows beyond float32's safe range are rescaled before the fit: with a scratch, into the
    scratch a block at a time, so memory-mapped rows are never copied whole into RAM; the
    result is the in-memory fit's, bit for bit."""
    import tracemalloc

    from pfv_onnx import pca

    rng = np.random.default_rng(11)
    rows = (rng.standard_normal((40_000, 128)) * np.linspace(4.0, 0.5, 128)).astype(np.float32) * np.float32(2.0**60)
    path = tmp_path / "rows"
    np.memmap(path, dtype=np.float32, mode="w+", shape=rows.shape)[:] = rows
    X = np.memmap(path, dtype=np.float32, mode="r", shape=rows.shape)
    want_basis, want_p = pca.fit(rows, 3)
    del rows

    def scratch(shape, dtype):
        scratch.count += 1
        return np.memmap(tmp_path / f"scratch-{scratch.count}", dtype=dtype, mode="w+", shape=shape)

    scratch.count = 0
    tracemalloc.start()
    try:
        got_basis, got_p = pca.fit(X, 3, scratch=scratch)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    mapped = X.nbytes
    assert peak < mapped / 4, f"the fit held {peak / 2**20:.1f} MiB beside {mapped / 2**20:.1f} MiB of mapped rows"
    assert np.array_equal(got_basis.directions, want_basis.directions)
    assert np.array_equal(got_basis.eigenvalues, want_basis.eigenvalues)
    assert np.array_equal(got_p, want_p)


@pytest.mark.parametrize("n_sigma", [0.5, 1.0, 2.0])
def test_scale_colours_in_place_equals_the_reference(n_sigma):
    """overwrite=True writes into the input (no second array of its size) and gives the same colours."""
    from pfv_onnx import weighting

    rng = np.random.default_rng(11)
    base = rng.standard_normal((3, 9, 7, 4)).astype(np.float32) ** 3
    x = base.copy().transpose(0, 3, 1, 2)  # a transposed view, as the weighting returns it
    out = weighting.scale_colours(x, n_sigma, overwrite=True)
    np.testing.assert_allclose(out, ref.colour_scale(base.transpose(0, 3, 1, 2).astype(np.float64), n_sigma), atol=1e-5)
    assert np.shares_memory(out, x)
    kept = base.copy()
    weighting.scale_colours(kept, n_sigma)
    np.testing.assert_array_equal(kept, base)  # without overwrite the input is untouched


def test_scale_colours_in_place_on_a_strided_view_still_answers():
    """Every other column: no flat view exists, so the result goes to a new array, still right."""
    from pfv_onnx import weighting

    rng = np.random.default_rng(12)
    full = rng.standard_normal((2, 3, 8, 10)).astype(np.float32)
    x = full[:, :, :, ::2]
    out = weighting.scale_colours(x, 1.0, overwrite=True)
    np.testing.assert_allclose(out, ref.colour_scale(np.ascontiguousarray(x).astype(np.float64), 1.0), atol=1e-5)

"""A basis fitted over many images: against plain NumPy, merged from shards, fixed colours.

Expected numbers come from activations read with plain onnxruntime (graphs.case_maps) and
NumPy written here (np.cov, np.linalg.eigh, reference.resize); nothing expected is computed
by the code under test.
"""

from __future__ import annotations

import hashlib
import json
from functools import reduce
from pathlib import Path

import cv2
import numpy as np
import pytest

import graphs
import reference as ref
from pfv_onnx import PFV, PfvError
from pfv_onnx import basis as B
from pfv_onnx.cli import main
from pfv_onnx.weighting import hierarchical as weigh_hierarchical
from pfv_onnx.weighting import scale_colours

K = 3


@pytest.fixture(scope="module")
def case() -> graphs.GraphCase:
    return graphs.vgg()  # E_L 16 x 6 x 8, two weighting maps, dynamic batch


@pytest.fixture(scope="module")
def model(save_model, case) -> str:
    return save_model(case.model, "basis_vgg")


@pytest.fixture(scope="module")
def pfv(model) -> PFV:
    return PFV(model, provider="cpu")


@pytest.fixture(scope="module")
def images(case) -> np.ndarray:
    return case.batch(24, seed=7)


@pytest.fixture(scope="module")
def fitted(pfv, images) -> B.FittedBasis:
    return B.fit(pfv, images, k=K, batch_size=5)  # chunks of 5, the last of 4


@pytest.fixture(scope="module")
def maps(case, images) -> dict[str, np.ndarray]:
    return graphs.case_maps(case, images)  # float64 NCHW, read without the engine


def _rows(E: np.ndarray) -> np.ndarray:
    n, c, h, w = E.shape
    return E.transpose(0, 2, 3, 1).reshape(n * h * w, c)


def _weighted(comps: np.ndarray, sums: list[np.ndarray], hw: tuple[int, int], hierarchical: bool, peaks=None) -> np.ndarray:
    """Weighted projections in plain NumPy; ``sums`` are channel sums (N, H_l, W_l); fixed ``peaks`` optional."""
    if hierarchical:
        out = comps
        for i in reversed(range(len(sums))):
            s = sums[i]
            peak = s.max() if peaks is None else peaks[i]
            out = ref.resize(out, s.shape[-2:]) * (s / peak)[:, None]
        return ref.resize(out, hw)
    a = sum(ref.resize(s, hw) for s in sums)
    return ref.resize(comps, hw) * a[:, None]


def _sums(case, maps) -> list[np.ndarray]:
    return [maps[name].sum(axis=1) for name in case.expected_weighting]


# --------------------------------------------------------------------------- against NumPy


def test_directions_are_the_leading_eigenvectors_of_the_pooled_covariance(case, maps, fitted):
    X = _rows(maps[case.expected_decomposed])
    cov = np.cov(X, rowvar=False)  # sample covariance, ddof 1
    vals, vecs = np.linalg.eigh(cov)
    vals, vecs = vals[::-1], vecs[:, ::-1]
    np.testing.assert_allclose(fitted.eigenvalues, vals[:K], rtol=1e-5)
    np.testing.assert_allclose(fitted.total_variance, np.trace(cov), rtol=1e-5)
    np.testing.assert_allclose(fitted.explained_variance_ratio, vals[:K] / vals.sum(), rtol=1e-5)
    np.testing.assert_allclose(fitted.mean, X.mean(axis=0), atol=1e-5)
    assert fitted.n_observations == X.shape[0] and fitted.n_images == 24
    signs = np.sign(np.sum(fitted.directions * vecs[:, :K], axis=0))
    np.testing.assert_allclose(fitted.directions, vecs[:, :K] * signs, atol=1e-5)
    # the sign rule: every projection's third moment is positive over the whole data set
    P = (X - X.mean(axis=0)) @ fitted.directions
    assert np.all((P**3).sum(axis=0) > 0)


@pytest.mark.parametrize("name", ["linear_probe", "tf2onnx_nhwc", "fixed1", "resnet"])
def test_fit_on_other_layouts_and_graphs(save_model, name):
    """No weighting map, an NHWC graph, a fixed batch of one, residual blocks."""
    c = graphs.linear_probe() if name == "linear_probe" else graphs.case(name)
    fit_pfv = PFV(save_model(c.model, c.name), provider="cpu")
    batch = c.batch(7, seed=2)
    got = B.fit(fit_pfv, batch, k=2, batch_size=3)
    X = _rows(graphs.case_maps(c, batch)[c.expected_decomposed])
    vals, vecs = np.linalg.eigh(np.cov(X, rowvar=False))
    np.testing.assert_allclose(got.eigenvalues, vals[::-1][:2], rtol=1e-4)
    np.testing.assert_allclose(np.abs(np.sum(got.directions * vecs[:, ::-1][:, :2], axis=0)), 1.0, atol=1e-5)
    assert got.tensors == c.all_expected and len(got.weight_peaks) == len(c.expected_weighting)
    alone = fit_pfv.explain(batch[1:2], basis=got, hierarchical=True).rgb[0]
    np.testing.assert_allclose(fit_pfv.explain(batch[:3], basis=got, hierarchical=True).rgb[1], alone, atol=1e-5)


def test_weighting_peaks_are_the_maxima_over_all_images(case, maps, fitted):
    want = [s.max() for s in _sums(case, maps)]
    np.testing.assert_allclose(fitted.weight_peaks, want, rtol=1e-5)
    assert fitted.tensors == case.all_expected


@pytest.mark.parametrize("hierarchical", [False, True])
def test_colour_statistics_are_those_of_all_weighted_projections(case, maps, fitted, hierarchical):
    E = maps[case.expected_decomposed]
    n, _, h, w = E.shape
    X = _rows(E)
    P = (X - X.mean(axis=0)) @ fitted.directions
    comps = P.reshape(n, h, w, K).transpose(0, 3, 1, 2)
    weighted = _weighted(comps, _sums(case, maps), case.image_hw, hierarchical)
    mean, std = fitted.colour["hierarchical" if hierarchical else "flat"]
    np.testing.assert_allclose([mean, std], [weighted.mean(), weighted.std()], rtol=1e-4, atol=1e-7 * weighted.std())


def test_fit_over_one_batch_matches_the_per_batch_decomposition(pfv, images, fitted):
    """Same data, same PCA and sign rule: the streamed fit agrees with explain()'s basis."""
    res = pfv.explain(images)
    np.testing.assert_allclose(fitted.directions, res.basis.directions, atol=1e-4)
    np.testing.assert_allclose(fitted.eigenvalues, res.eigenvalues, rtol=1e-4)


# --------------------------------------------------------------------------- shards


def test_shards_merged_equal_the_fit_over_everything(pfv, images, fitted):
    shards = [images[:7], images[7:15], images[15:]]
    covs = [B.covariance_statistics(pfv, s, batch_size=3) for s in shards]
    # one shard's statistics go through bytes, as between processes
    covs[1] = B.stats_from_bytes(B.stats_to_bytes(covs[1]))
    assert not np.allclose(covs[0].shift, covs[2].shift)  # merging must re-express the sums
    cov = reduce(lambda a, b: a.merge(b), covs)
    dirs = cov.principal(K)
    projs = [B.projection_statistics(pfv, s, dirs, cov.peaks, batch_size=4) for s in shards]
    projs[0] = B.stats_from_bytes(B.stats_to_bytes(projs[0]))
    proj = reduce(lambda a, b: a.merge(b), projs)
    merged = B.finish(pfv, cov, dirs, proj)
    assert merged.n_images == fitted.n_images and merged.n_observations == fitted.n_observations
    for name in ("mean", "directions", "eigenvalues"):
        np.testing.assert_allclose(getattr(merged, name), getattr(fitted, name), rtol=1e-6, atol=1e-9, err_msg=name)
    np.testing.assert_allclose(merged.total_variance, fitted.total_variance, rtol=1e-6)
    np.testing.assert_allclose(merged.weight_peaks, fitted.weight_peaks, rtol=1e-6)
    for v in B.VARIANTS:
        np.testing.assert_allclose(merged.colour[v], fitted.colour[v], rtol=1e-6, err_msg=v)


def test_merge_of_shifted_sums_is_exact():
    """Statistics around very different shifts merge to those of the pooled rows."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((50, 4)) * [1, 2, 3, 4] + 1000.0
    b = rng.standard_normal((70, 4)) - 500.0

    def chunk(rows):
        return _Chunk(rows.reshape(-1, 1, 1, 4).transpose(0, 3, 1, 2).astype(np.float32), [], (1, 1))

    sa, sb = B.CovarianceStats().add(chunk(a)), B.CovarianceStats().add(chunk(b))
    both = np.concatenate([a, b]).astype(np.float32).astype(np.float64)
    m = sa.merge(sb)
    np.testing.assert_allclose(m.mean(), both.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(m.scatter() / (len(both) - 1), np.cov(both, rowvar=False), rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------- fixed colours


@pytest.mark.parametrize("hierarchical", [False, True])
def test_same_image_same_colours_in_any_batch_with_a_fitted_basis(pfv, images, fitted, hierarchical):
    i = 3
    alone = pfv.explain(images[i : i + 1], basis=fitted, hierarchical=hierarchical).rgb[0]
    first = pfv.explain(images[0:6], basis=fitted, hierarchical=hierarchical).rgb[i]
    other_batch = np.concatenate([images[10:20], images[i : i + 1]])
    last = pfv.explain(other_batch, basis=fitted, hierarchical=hierarchical).rgb[-1]
    np.testing.assert_allclose(first, alone, atol=1e-5)
    np.testing.assert_allclose(last, alone, atol=1e-5)
    # without the basis, the image's colours depend on its batch
    free_first = pfv.explain(images[0:6], hierarchical=hierarchical).rgb[i]
    free_last = pfv.explain(other_batch, hierarchical=hierarchical).rgb[-1]
    assert np.abs(free_first - free_last).max() > 0.05


@pytest.mark.parametrize("hierarchical", [False, True])
def test_fixed_colours_follow_the_fitted_statistics(case, pfv, images, fitted, hierarchical):
    """rgb = (clip((weighted - mean) / std, -1, 1) + 1) / 2 with the fitted mean, std and peaks."""
    batch = images[5:9]
    res = pfv.explain(batch, basis=fitted, hierarchical=hierarchical)
    assert res.basis is fitted
    np.testing.assert_array_equal(res.eigenvalues, fitted.eigenvalues)
    m = graphs.case_maps(case, batch)
    E = m[case.expected_decomposed]
    n, _, h, w = E.shape
    P = (_rows(E) - fitted.mean) @ fitted.directions
    comps = P.reshape(n, h, w, K).transpose(0, 3, 1, 2)
    weighted = _weighted(comps, _sums(case, m), case.image_hw, hierarchical, peaks=fitted.weight_peaks)
    mean, std = fitted.colour["hierarchical" if hierarchical else "flat"]
    want = (np.clip((weighted - mean) / std, -1, 1) + 1) / 2
    np.testing.assert_allclose(res.rgb, want.transpose(0, 2, 3, 1), atol=1e-4)


def test_scale_colours_with_given_statistics():
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32) * 3 + 1
    got = scale_colours(x, 2.0, mean=0.5, std=4.0)
    want = (np.clip((x.astype(np.float64) - 0.5) / 4.0, -2, 2) + 2) / 4
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert not np.any(scale_colours(x, 1.0, mean=0.5, std=0.0))


def test_hierarchical_with_given_peaks():
    rng = np.random.default_rng(1)
    P = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    S = [np.abs(rng.standard_normal((2, 1, 4, 4))).astype(np.float32)]
    got = weigh_hierarchical(P, S, (8, 8), peaks=[10.0])
    want = ref.resize(ref.resize(P, (4, 4)) * (S[0] / 10.0), (8, 8))
    np.testing.assert_allclose(got, want, atol=1e-5)


# --------------------------------------------------------------------------- the file, and refusals


def test_save_and_load_keep_everything(tmp_path, model, pfv, fitted):
    prep = {"preset": "imagenet", "size": [24, 32]}
    withprep = B.FittedBasis(**{**fitted.__dict__, "preprocessing": prep})
    path = withprep.save(tmp_path / "basis.npz")
    back = B.load(path, pfv)
    for name in ("mean", "directions", "eigenvalues"):
        np.testing.assert_array_equal(getattr(back, name), getattr(fitted, name))
    assert back.colour == {v: tuple(fitted.colour[v]) for v in B.VARIANTS}
    assert back.weight_peaks == fitted.weight_peaks and back.total_variance == fitted.total_variance
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
    assert meta["model_sha256"] == hashlib.sha256(Path(model).read_bytes()).hexdigest()
    assert [*meta["weighting"], meta["decomposed"]] == graphs.vgg().all_expected
    assert meta["preprocessing"] == prep and meta["k"] == K


def test_refused_for_another_model(tmp_path, save_model, images, fitted):
    other = graphs.vgg(last_scale=2.0, name="vgg_scaled")  # same tensors and shapes, other weights
    opfv = PFV(save_model(other.model, "basis_vgg_scaled"), provider="cpu")
    with pytest.raises(PfvError, match="another model"):
        opfv.explain(images[:2], basis=fitted)
    path = fitted.save(tmp_path / "b.npz")
    with pytest.raises(PfvError, match="another model"):
        B.load(path, opfv)


def test_refused_for_other_feature_maps(model, images, fitted, case):
    other_layer = PFV(model, provider="cpu", layer=case.expected_weighting[-1])
    with pytest.raises(PfvError, match="feature maps"):
        other_layer.explain(images[:2], basis=fitted)


def test_bad_basis_files_are_refused(tmp_path):
    with pytest.raises(PfvError, match="does not exist"):
        B.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(PfvError, match="not a basis file"):
        B.load(tmp_path / "plain.npz")
    np.savez(tmp_path / "pickled.npz", meta=np.array([{"format": B.FORMAT}], dtype=object))
    with pytest.raises(PfvError, match="not a basis file"):
        B.load(tmp_path / "pickled.npz")


def test_fit_refuses_what_it_cannot_do(pfv, images):
    with pytest.raises(PfvError, match="twice"):
        B.fit(pfv, iter([images[:4], images[4:8]]))
    with pytest.raises(PfvError, match="k=17"):
        B.fit(pfv, images[:4], k=17)  # E_L has 16 channels
    with pytest.raises(PfvError, match="no images"):
        B.fit(pfv, [])
    # a function returning fresh batches, or a list of batches, are fine
    a = B.fit(pfv, lambda: (images[i : i + 4] for i in range(0, 12, 4)))
    b = B.fit(pfv, [images[0:4], images[4:8], images[8:12]])
    np.testing.assert_allclose(a.directions, b.directions, atol=1e-12)


# --------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fit_images")
    rng = np.random.default_rng(5)
    for i in range(10):
        img = (rng.random((30 + 2 * i, 40, 3)) * 120).astype(np.uint8)
        cv2.circle(img, (8 + 2 * i, 14), 6, (40 * (i % 5), 255, 255 - 20 * i), -1)
        cv2.imwrite(str(d / f"img{i:02d}.png"), img)
    return d


def test_cli_fit_then_run_gives_fixed_colours(tmp_path, model, image_dir, capsys):
    basis_file = tmp_path / "basis.npz"
    (tmp_path / "broken").mkdir()
    bad = tmp_path / "broken" / "bad.png"
    bad.write_text("not an image")
    code = main(["fit", model, str(image_dir), str(bad), "-o", str(basis_file), "--batch-size", "3", "--provider", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and "bad.png" in err  # the unreadable file is reported, the fit goes on
    fitted = B.load(basis_file)
    assert fitted.n_images == 10 and fitted.preprocessing["size"] == [24, 32]
    files = sorted(image_dir.glob("*.png"))
    rows = {}
    for name, inputs, extra in (("a", files[:4], ["--group-size", "2"]), ("b", files[2:], [])):
        out = tmp_path / name
        assert main(["run", model, *map(str, inputs), "-o", str(out), "-q", "--basis", str(basis_file), *extra]) == 0
        with np.load(out / "pfv.npz") as z:
            rows[name] = {Path(f).name: z["rgb"][i] for i, f in enumerate(z["files"])}
        report = json.loads((out / "report.json").read_text())
        assert report["pfv"]["basis"] == str(basis_file)
    shared = files[2].name  # in group 1 of run a, among eight images in run b
    np.testing.assert_allclose(rows["a"][shared], rows["b"][shared], atol=1e-5)


def test_cli_run_refuses_a_basis_of_another_model(tmp_path, save_model, model, image_dir, capsys):
    basis_file = tmp_path / "basis.npz"
    assert main(["fit", model, str(image_dir), "-o", str(basis_file), "-q", "--provider", "cpu"]) == 0
    other = save_model(graphs.vgg(last_scale=2.0, name="vgg_scaled").model, "basis_vgg_scaled")
    code = main(["run", other, str(image_dir), "-o", str(tmp_path / "out"), "-q", "--basis", str(basis_file)])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and "another model" in err[0]


# --------------------------------------------------------------------------- GPU


def _Chunk(activations, weights, input_hw):
    """A forward pass without model outputs (the statistics do not read them)."""
    from pfv_onnx.pipeline import ForwardPass

    return ForwardPass(activations, weights, {}, input_hw)


@pytest.mark.gpu
def test_statistics_on_the_gpu_equal_those_on_the_cpu():
    import cupy as cp

    rng = np.random.default_rng(4)
    E = rng.standard_normal((6, 8, 5, 7)).astype(np.float32) + 2
    S = [np.abs(rng.standard_normal((6, 1, 10, 14))).astype(np.float32)]
    cpu = B.CovarianceStats().add(_Chunk(E, S, (20, 28)))
    gpu = B.CovarianceStats().add(_Chunk(cp.asarray(E), [cp.asarray(s) for s in S], (20, 28))).host()
    for name in ("shift", "total", "outer", "peaks"):
        np.testing.assert_allclose(getattr(gpu, name), getattr(cpu, name), rtol=1e-9, atol=1e-9, err_msg=name)
    dirs = cpu.principal(K)
    pc = B.ProjectionStats().add(_Chunk(E, S, (20, 28)), dirs, cpu.peaks)
    pg = B.ProjectionStats().add(_Chunk(cp.asarray(E), [cp.asarray(s) for s in S], (20, 28)), dirs, cpu.peaks)
    np.testing.assert_allclose(pg.third, pc.third, rtol=1e-4)
    for v in B.VARIANTS:
        np.testing.assert_allclose(pg.moments[v].mean, pc.moments[v].mean, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(pg.moments[v].m2, pc.moments[v].m2, rtol=1e-4)

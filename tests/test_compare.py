"""pfv-onnx compare: the comparison's pieces against independent computations, and the
evidence on copies of the bundled EfficientNet-Lite0 made here (byte copy, int8 QDQ, fp16,
a late layer re-drawn, a planted shortcut)."""

from __future__ import annotations

import json
import shutil

import cv2
import derived_models as dm
import graphs
import numpy as np
import onnx
import pytest
from scipy.stats import ortho_group

from pfv_onnx import compare
from pfv_onnx.cli import main

# The gate's threshold, fixed before the shortcut and re-drawn copies were compared, from the
# largest drift of the copies that must pass (measured on the 7 photos plus 7 patched copies,
# k = 3): byte copy 0, fp16 < 5e-5, int8 QDQ 0.076 (0.049 since its maps are tapped as the fused int8 model computes them); twice the int8 copy's, rounded.
D = 0.15
PATCH_AT = [(0.08, 0.08), (0.6, 0.6), (0.1, 0.65), (0.65, 0.1)]


# --------------------------------------------------------------------------- pure functions


def test_image_drift_is_one_minus_pearson_per_image():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 3, 4, 6)).astype(np.float32)
    b = (a + rng.standard_normal(a.shape) * np.array([0.0, 0.3, 1.0, 3.0, 30.0])[:, None, None, None]).astype(np.float32)
    b[0] *= 7.0  # a scale changes nothing
    got = compare.image_drift(a, b)
    want = [max(0.0, 1.0 - np.corrcoef(a[i].ravel(), b[i].ravel())[0, 1]) for i in range(5)]
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert got[0] < 1e-6 and np.all(np.diff(got[1:4]) > 0)
    np.testing.assert_allclose(compare.image_drift(a, -a), 1.0)  # anti-correlated: clipped to 1
    np.testing.assert_allclose(compare.image_drift(a * np.float32(1e30), a * np.float32(1e-30)), 0.0, atol=1e-6)


@pytest.mark.parametrize("rows", [40, 400], ids=["gram", "covariance"])
def test_linear_cka_against_hsic(rows):
    """CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with the centring matrix, written here."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((rows, 30))
    Y = X[:, :20] @ rng.standard_normal((20, 25)) + 0.5 * rng.standard_normal((rows, 25))
    H = np.eye(rows) - 1.0 / rows
    K, L = X @ X.T, Y @ Y.T
    hsic = lambda A, B: np.trace(A @ H @ B @ H)  # noqa: E731
    want = hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))
    got = compare.linear_cka(X.astype(np.float32), Y.astype(np.float32))
    assert got == pytest.approx(want, rel=1e-4)
    Q = ortho_group.rvs(30, random_state=2)
    assert compare.linear_cka(X, 3.0 * X @ Q + 5.0) == pytest.approx(1.0, abs=1e-9)  # rotation, scale, shift


def test_procrustes_recovers_a_rotation():
    rng = np.random.default_rng(3)
    src = rng.standard_normal((6, 3, 5, 5)).astype(np.float32)
    Q = ortho_group.rvs(3, random_state=4)
    tgt = compare.rotate(src, Q)
    np.testing.assert_allclose(compare.procrustes(src, tgt), Q, atol=1e-5)
    np.testing.assert_allclose(compare.image_drift(compare.rotate(src, compare.procrustes(src, tgt)), tgt), 0.0, atol=1e-6)


def test_channel_evidence_from_correlations_not_counts():
    rng = np.random.default_rng(5)
    E = rng.standard_normal((4, 32, 6, 6)).astype(np.float32)
    noisy = (E * 3.0 + 0.3 * rng.standard_normal(E.shape)).astype(np.float32)
    same = compare.channel_evidence(E, noisy)
    assert same.same and same.matched_share == 1.0 and same.median_correlation > 0.9
    shuffled = compare.channel_evidence(E, noisy[:, rng.permutation(32)])  # same count, other channels
    assert not shuffled.same and shuffled.matched_share < 0.2
    assert not compare.channel_evidence(E, noisy[:, :16]).same


# --------------------------------------------------------------------------- the evidence


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Four photographs and the same four with a magenta square, as PNG files."""
    folder = tmp_path_factory.mktemp("compare_photos")
    paths = []
    for src, where in zip(dm.PHOTOS[:4], PATCH_AT):
        bgr = cv2.imread(str(src))
        for tag, img in (("", bgr), ("_patched", dm.add_patch(bgr, where))):
            p = folder / f"{src.stem}{tag}.png"
            cv2.imwrite(str(p), img)
            paths.append(p)
    return paths


@pytest.fixture(scope="module")
def derived(tmp_path_factory, photos):
    """The copies as files: byte copy, fp16, a late layer re-drawn, the planted shortcut."""
    folder = tmp_path_factory.mktemp("compare_models")
    base = onnx.load(str(dm.EFFICIENTNET))
    out = {"copy": folder / "copy.onnx"}
    shutil.copyfile(dm.EFFICIENTNET, out["copy"])
    # the shortcut's channels: E_L's 64 most varying channels over the clean photos (onnxruntime alone)
    clean = dm.photo_batch([p for p in photos if "_patched" not in p.name])
    _, maps = graphs.fetch(base, [dm.EFFICIENTNET_EL], clean)
    variance = maps[dm.EFFICIENTNET_EL].transpose(1, 0, 2, 3).reshape(1280, -1).var(axis=1)
    channels = np.argsort(-variance)[:64]
    models = {
        "fp16": dm.to_fp16(base),
        "redrawn": dm.redrawn(base, dm.conv_weight(base, "/_blocks.15/_depthwise_conv/Conv")),
        "shortcut": dm.with_patch_detector(base, channels, cancel=True),
    }
    for name, m in models.items():
        out[name] = folder / f"{name}.onnx"
        onnx.save(m, str(out[name]))
    return out


def run_compare(candidate, photos, out, *extra):
    code = main(["compare", str(dm.EFFICIENTNET), str(candidate), *map(str, photos), "-o", str(out), "-q", "--fail-over", str(D), *extra])
    return code, json.loads((out / "compare.json").read_text())


def test_byte_copy_has_no_drift(derived, photos, tmp_path):
    """Also: a file that is no image is reported (exit 1) and the others are compared."""
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a picture")
    code, report = run_compare(derived["copy"], [*photos, bad], tmp_path / "o")
    assert code == 1
    assert len(report["failures"]) == 1 and report["failures"][0]["file"].endswith("broken.png")
    s = report["summary"]
    assert s["channels"] == "same" and s["drift_max"] == 0.0 and s["top1_agreement"] == 1.0
    assert s["cka"] == pytest.approx(1.0, abs=1e-9)
    # every output named in the issue is there
    names = [r["name"] for r in report["images"]]
    assert sorted(names) == sorted(p.stem for p in photos)
    for r in report["images"]:
        assert {"name", "drift", "top1_reference", "top1_candidate"} <= set(r)
        pic = cv2.imread(str(tmp_path / "o" / r["picture"]))
        assert pic is not None and pic.shape[1] > 3 * pic.shape[0]  # four panels side by side
    assert cv2.imread(str(tmp_path / "o" / "compare_mosaic.png")) is not None
    page = (tmp_path / "o" / "compare.html").read_text()
    assert page.count("data:image/jpeg;base64,") == len(photos)  # self-contained: pictures embedded,
    assert 'src="http' not in page and "<link" not in page and "<script" not in page  # nothing fetched


def test_int8_copy_drifts_little(efficientnet_int8, photos, tmp_path):
    code, report = run_compare(efficientnet_int8, photos, tmp_path / "o")
    s = report["summary"]
    assert code == 0, s
    assert s["channels"] == "same" and 0.0 < s["drift_max"] < D
    assert s["cka"] > 0.9


def test_fp16_copy_drifts_little(derived, photos, tmp_path):
    code, report = run_compare(derived["fp16"], photos, tmp_path / "o")
    s = report["summary"]
    assert code == 0, s
    assert s["channels"] == "same" and s["drift_max"] < D and s["top1_agreement"] == 1.0
    # tapping an fp16 graph's maps rounds them to float16 once more: within that rounding, no warning
    assert not any("outputs change" in w for w in s["warnings"])


def test_fp16_self_check_allows_one_float16_rounding(derived):
    """The tapped float16 maps move the outputs by 2.7e-4 (relative): under float16's unit
    roundoff (4.9e-4), above the float32 tolerance (1e-4): "ok", saying why."""
    import warnings

    from pfv_onnx import PFV

    pfv = PFV(str(derived["fp16"]), provider="cpu")
    assert {fm.dtype for fm in pfv.maps()} == {"float16"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the self-check's warning fails the test
        pfv.explain(dm.photo_batch())
    assert pfv.self_check_result.startswith("ok") and "float16 rounding" in pfv.self_check_result


def test_redrawn_late_layer_drifts_on_every_image(derived, photos, tmp_path):
    code, report = run_compare(derived["redrawn"], photos, tmp_path / "o")
    s = report["summary"]
    assert code == 3
    assert s["channels"] == "procrustes"  # the re-drawn channels are not the reference's: the evidence says so
    assert min(r["drift"] for r in report["images"]) > D


def test_planted_shortcut_is_caught_although_predictions_agree(derived, photos, tmp_path):
    """The shortcut copy's outputs equal the reference's (checked with onnxruntime alone), yet
    on the patched photos it looks at the patch: the gate fails on it and passes the others."""
    import onnxruntime as ort

    batch = dm.photo_batch(photos)
    ref = ort.InferenceSession(str(dm.EFFICIENTNET)).run(None, {"input": batch})[0]
    cut = ort.InferenceSession(str(derived["shortcut"])).run(None, {"input": batch})[0]
    assert np.mean(ref.argmax(axis=1) == cut.argmax(axis=1)) >= 0.95
    code, report = run_compare(derived["shortcut"], photos, tmp_path / "o")
    s = report["summary"]
    assert code == 3 and s["drift_max"] > D and s["top1_agreement"] >= 0.95
    drift = {r["name"]: r["drift"] for r in report["images"]}
    assert all(v < 1e-3 for k, v in drift.items() if not k.endswith("_patched"))  # no magenta: the reference's own map
    # the median image is a clean one: as a quantile gate, the same run passes
    code, report = run_compare(derived["shortcut"], photos, tmp_path / "q", "--fail-quantile", "0.5")
    assert code == 0 and report["summary"]["gate"]["compared_drift"] <= D


def test_candidate_preprocessing_override(derived, photos, tmp_path):
    """--candidate-preset changes only the candidate's input: the byte copy then drifts."""
    code, report = run_compare(derived["copy"], photos[:2], tmp_path / "o", "--candidate-preset", "imagenet")
    pre = report["summary"]["preprocessing"]
    assert pre["reference"]["preset"] == "inception" and pre["candidate"]["preset"] == "imagenet"
    assert report["summary"]["drift_max"] > 0.0


def test_usage_errors_exit_2(derived, photos, tmp_path, capsys):
    assert main(["compare", str(dm.EFFICIENTNET), str(derived["copy"]), str(photos[0]), "-o", str(tmp_path), "--fail-quantile", "0.5"]) == 2
    assert "--fail-quantile needs --fail-over" in capsys.readouterr().err
    assert main(["compare", str(dm.EFFICIENTNET), str(tmp_path / "missing.onnx"), str(photos[0]), "-o", str(tmp_path)]) == 2

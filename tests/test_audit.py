"""Audit flags: the atypical-for-its-class distance against a plain NumPy computation, and
planted outliers found on the bundled synthetic-shapes model.

The planted-outlier threshold (precision at k of at least 4 of 6, chance 6/48) was fixed before
the test was first run; the seed (21) was not used while the signature was chosen.
"""

from __future__ import annotations

import numpy as np
import pytest

from pfv_onnx.audit import audit_flags, mean_colours


def test_atypicality_by_hand():
    rng = np.random.default_rng(0)
    colours = rng.normal(0.5, 0.02, size=(12, 3))
    classes = [0] * 5 + [1] * 5 + [2] * 2  # class 2 is too small to judge
    colours[3] += [0.3, 0.0, 0.0]  # one image far from its class
    flags = audit_flags(colours, classes, [0.9] * 11 + [0.2])
    # the same distance written out: class medians, MAD of the residuals pooled over classes 0 and 1
    res = np.concatenate([colours[:5] - np.median(colours[:5], 0), colours[5:10] - np.median(colours[5:10], 0)])
    scale = 1.4826 * np.median(np.abs(res), axis=0)
    expected = np.sqrt(np.mean((res / scale) ** 2, axis=1))
    assert np.allclose(flags.atypicality[:10], expected)
    assert np.isnan(flags.atypicality[10:]).all() and not flags.atypical[10:].any()
    assert flags.atypical.tolist() == [i == 3 for i in range(12)]
    assert flags.rank[3] == 0 and sorted(flags.rank.tolist()) == list(range(12))
    assert flags.low_confidence.tolist() == [False] * 11 + [True]
    assert flags.record(3)["atypical"] is True and flags.record(10)["atypicality"] is None


def test_groups_are_judged_apart():
    """The same colours mean different things in two decompositions: an image is compared with its own group only."""
    spread = lambda n: np.linspace(-0.01, 0.01, n)[:, None] * [1.0, -1.0, 0.5]  # noqa: E731
    colours = np.concatenate([0.5 + spread(15), 0.9 + spread(5)])
    flags = audit_flags(colours, [0] * 20, [None] * 20, groups=[0] * 15 + [1] * 5)
    assert not flags.atypical.any() and not flags.low_confidence.any()
    together = audit_flags(colours, [0] * 20, [None] * 20)
    assert together.atypical.tolist() == [False] * 15 + [True] * 5


def test_mean_colours_of_uint8_and_float_maps_agree():
    rng = np.random.default_rng(1)
    rgb = rng.random((3, 5, 7, 3)).astype(np.float32)
    u8 = np.rint(rgb * 255).astype(np.uint8)
    assert np.allclose(mean_colours(rgb), rgb.reshape(3, -1, 3).mean(axis=1))
    assert np.allclose(mean_colours(u8), mean_colours(rgb), atol=1 / 255)


def _planted_set(seed: int):
    """42 synthetic images (14 per class) and 6 discs carrying a large "(c)" watermark, RGB uint8."""
    import cv2

    synthetic = pytest.importorskip("pfv_onnx_models.synthetic")
    rng = np.random.default_rng(seed)
    images, planted = [], []
    for c in range(3):
        for _ in range(14):
            images.append(synthetic.make_sample(rng, 64, classes=[c])[0])
            planted.append(False)
    for _ in range(6):
        im = synthetic.make_sample(rng, 64, classes=[0])[0].copy()
        cv2.putText(im, "(c)", (4, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2, cv2.LINE_AA)
        images.append(im)
        planted.append(True)
    return np.stack(images), np.array(planted)


def test_planted_watermarks_are_the_most_atypical():
    """48 synthetic images, 14 of each class, plus 6 discs carrying a large "(c)" watermark;
    one decomposition; images ranked by atypicality for their predicted class. Measured:
    precision at 6 = 1.00 for seed 21 (seeds 11-13, used while choosing the signature: 1.00 each);
    chance 0.125."""
    bundled = pytest.importorskip("pfv_onnx_models")
    synthetic = pytest.importorskip("pfv_onnx_models.synthetic")
    from pfv_onnx import PFV

    images, planted = _planted_set(21)
    res = PFV(bundled.model_path("synthetic-shapes"), provider="cpu").explain(synthetic.to_input(images))
    logits = next(iter(res.outputs.values()))
    scores = 1 / (1 + np.exp(-logits.max(axis=1)))
    flags = audit_flags(mean_colours(res.rgb), logits.argmax(axis=1).tolist(), scores.tolist())
    top = np.argsort(flags.rank)[: planted.sum()]
    precision = planted[top].mean()
    print(f"\nplanted watermarks: precision at {planted.sum()} = {precision:.2f}, flagged {int(flags.atypical.sum())} "
          f"({int((flags.atypical & planted).sum())} planted), chance {planted.mean():.3f}")
    assert precision >= 4 / 6


def test_the_page_flags_the_planted_watermarks(tmp_path):
    """The same kind of set (seed 22) through ``pfv-onnx run``: the page's most atypical cards are
    the watermarked files (precision at 6 of at least 4 of 6, fixed before the first run), and the
    low-confidence flag follows the scores in report.json."""
    import json
    import re

    import cv2

    bundled = pytest.importorskip("pfv_onnx_models")
    from pfv_onnx.cli import main

    images, planted = _planted_set(22)
    folder = tmp_path / "images"
    folder.mkdir()
    names = []
    for i, (im, p) in enumerate(zip(images, planted)):
        names.append(f"{'mark' if p else 'clean'}{i:02d}.png")
        cv2.imwrite(str(folder / names[-1]), cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    assert main(["run", str(bundled.model_path("synthetic-shapes")), str(folder), "-o", str(out), "-q", "--provider", "cpu"]) == 0
    text = (out / "report.html").read_text(encoding="utf-8")
    cards = re.findall(r'<article class="card"[^>]*data-file="([^"]*)"[^>]*data-score="([^"]*)" data-atypicality="([^"]*)" data-flags="([^"]*)"', text)
    assert len(cards) == len(names)
    ranked = sorted(cards, key=lambda c: -float(c[2] or "-1"))
    precision = np.mean(["mark" in c[0].rsplit("/", 1)[-1] for c in ranked[:6]])
    print(f"\npage, planted watermarks: precision at 6 = {precision:.2f}")
    assert precision >= 4 / 6
    scores = {im["file"]: im["prediction"]["score"] for im in json.loads((out / "report.json").read_text())["images"]}
    for file, _, _, flags in cards:
        assert ("low" in flags.split()) == (scores[file] < 0.5), file


def test_median_colours_of_8bit_maps_equal_numpys_median():
    """The histogram median of uint8 maps against np.median, for odd and even pixel counts and ties."""
    from pfv_onnx.audit import median_colours

    rng = np.random.default_rng(7)
    maps = rng.integers(0, 256, (5, 6, 7, 3), dtype=np.uint8)
    maps[1] = 9
    maps[2, :3], maps[2, 3:] = 10, 20  # the middle two differ: their mean
    for m in (maps, maps[:, :, :6]):
        want = np.median(m.reshape(len(m), -1, 3).astype(np.float64), axis=1) / 255.0
        np.testing.assert_array_equal(median_colours(m), want)
    floats = rng.random((2, 4, 4, 3))
    np.testing.assert_allclose(median_colours(floats), np.median(floats.reshape(2, -1, 3), axis=1))


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_colours_of_8bit_maps_against_numpy_for_any_component_count(k):
    """Mean and median colours of uint8 maps against float64 NumPy, for 1 to 5 components
    (OpenCV counts up to 4 channels at once; 5 takes another path) and an odd pixel count."""
    from pfv_onnx.audit import median_colours

    rng = np.random.default_rng(k)
    maps = rng.integers(0, 256, (4, 9, 11, k), dtype=np.uint8)
    maps[0] = 255
    flat = maps.reshape(4, -1, k).astype(np.float64)
    np.testing.assert_array_equal(mean_colours(maps), flat.sum(axis=1) / flat.shape[1] / 255.0)
    np.testing.assert_array_equal(median_colours(maps), np.median(flat, axis=1) / 255.0)
    sliced = maps[:, 1:8:2]  # not contiguous
    flat = sliced.reshape(4, -1, k).astype(np.float64)
    np.testing.assert_array_equal(mean_colours(sliced), flat.sum(axis=1) / flat.shape[1] / 255.0)
    np.testing.assert_array_equal(median_colours(sliced), np.median(flat, axis=1) / 255.0)

"""The optional dark-where-weak display: by hand, and whether it localises better on the synthetic model.

The localisation figures use the pointing game and ROC AUC of tests/test_evidence.py, computed
here in plain NumPy on the same held-out set (seed 1234). Thresholds: set from the values
measured when this test was written (in the docstring), with a margin.
"""

from __future__ import annotations

import numpy as np
import pytest

from pfv_onnx.display import dark_where_weak, weighted_magnitude, weighted_projection


def test_dark_where_weak_by_hand():
    rgb = np.full((1, 2, 3, 3), 0.5, np.float32)
    rgb[0, 0, 0] = [1.0, 0.2, 0.6]
    mag = np.array([[[4.0, 2.0, 1.0], [0.0, 8.0, 4.0]]])
    out = dark_where_weak(rgb, mag, percentile=100.0)  # 8 is full brightness
    expected = rgb * (mag / 8.0)[..., None]
    assert np.allclose(out, expected, atol=1e-7)
    assert dark_where_weak(rgb, np.zeros((1, 2, 3))).max() == 0.0
    with pytest.raises(ValueError):
        dark_where_weak(rgb, mag[:, :1])


def _hits_and_auc(saliency: np.ndarray, masks, tolerance: float = 2.0) -> tuple[float, float]:
    """Share of images whose most salient pixel lies within ``tolerance`` px of an object, and the mean per-image AUC."""
    from scipy.stats import rankdata

    hits, aucs = [], []
    for m, objs in zip(saliency, masks):
        union = np.zeros(m.shape, bool)
        for _, mask in objs:
            union |= mask
        ys, xs = np.nonzero(union)
        y, x = np.unravel_index(np.argmax(m), m.shape)
        hits.append(float(np.min(np.hypot(ys - y, xs - x))) <= tolerance)
        r = rankdata(m.ravel())
        pos = union.ravel()
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        aucs.append((r[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(np.mean(hits)), float(np.mean(aucs))


def _distance_from_median_colour(maps: np.ndarray) -> np.ndarray:
    median = np.median(maps.reshape(-1, maps.shape[-1]), axis=0)
    return np.sqrt(((maps - median) ** 2).sum(axis=-1))


def test_dark_where_weak_points_at_the_objects_more_often():
    """48 held-out synthetic images (seed 1234), 1-3 objects each. Measured: the most salient
    pixel (distance from the set's median colour) lies within 2 px of an object in 0.71 of the
    published maps and 0.96 of the dark-where-weak ones (seed 77: 0.71 and 0.92); per-image AUC
    0.936 and 0.944 (seed 77: 0.919 and 0.924)."""
    bundled = pytest.importorskip("pfv_onnx_models")
    synthetic = pytest.importorskip("pfv_onnx_models.synthetic")
    from pfv_onnx import PFV

    images, _, masks = synthetic.make_dataset(48, seed=1234, size=64, min_objects=1, max_objects=3)
    batch = synthetic.to_input(images)
    pfv = PFV(bundled.model_path("synthetic-shapes"), provider="cpu")
    res = pfv.explain(batch)
    mag = weighted_magnitude(pfv, batch, res)
    assert mag.shape == res.rgb.shape[:3] and np.isfinite(mag).all() and mag.min() >= 0
    default_hits, default_auc = _hits_and_auc(_distance_from_median_colour(res.rgb.astype(np.float64)), masks)
    dark_hits, dark_auc = _hits_and_auc(_distance_from_median_colour(dark_where_weak(res.rgb, mag).astype(np.float64)), masks)
    print(f"\npointing (2 px): published {default_hits:.3f}, dark where weak {dark_hits:.3f}; AUC {default_auc:.3f}, {dark_auc:.3f}")
    assert dark_hits >= default_hits + 0.1
    assert dark_auc >= default_auc - 0.02


@pytest.mark.parametrize("hierarchical", [False, True])
def test_weighted_projection_is_what_the_colour_scaling_scaled(hierarchical):
    """Where no channel is clipped, the published map is one affine function of the weighted
    projection for every component (the batch colour scaling is one z-score over the whole array):
    a least-squares line through all unclipped values fits to float32 precision."""
    bundled = pytest.importorskip("pfv_onnx_models")
    synthetic = pytest.importorskip("pfv_onnx_models.synthetic")
    from pfv_onnx import PFV

    images, _, _ = synthetic.make_dataset(6, seed=5, size=64, min_objects=1, max_objects=2)
    batch = synthetic.to_input(images)
    pfv = PFV(bundled.model_path("synthetic-shapes"), provider="cpu", hierarchical=hierarchical)
    res = pfv.explain(batch)
    mapped = weighted_projection(pfv, batch, res).transpose(0, 2, 3, 1)
    rgb = res.rgb.astype(np.float64)
    inside = (rgb > 1e-3) & (rgb < 1 - 1e-3)
    assert inside.mean() > 0.3
    x, y = mapped[inside], rgb[inside]
    a, b = np.polyfit(x, y, 1)
    assert a > 0 and np.abs(a * x + b - y).max() < 1e-4
    assert np.allclose(weighted_magnitude(pfv, batch, res), np.sqrt((mapped**2).sum(axis=-1)))

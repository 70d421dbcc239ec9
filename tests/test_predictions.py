"""Class predictions: top classes against a softmax written here, a decision taken over all
rows, and memory that does not hold every row's probabilities at once."""

from __future__ import annotations

import tracemalloc

import numpy as np

from pfv_onnx.predictions import class_scores, predictions


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x.astype(np.float64) - x.astype(np.float64).max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_top_classes_match_an_independent_softmax_across_many_rows():
    rng = np.random.default_rng(3)
    scores = rng.normal(0, 3, (1300, 1000)).astype(np.float32)  # several megabytes of float64: more than one part
    labels = [f"c{i}" for i in range(1000)]
    records, name = predictions({"logits": scores}, len(scores), labels)
    assert name == "logits" and len(records) == len(scores)
    ref = _softmax(scores)
    for i in (0, 1, 523, 524, 999, 1299):
        best = np.argsort(-ref[i], kind="stable")[:5]
        assert [e["class"] for e in records[i]["top5"]] == best.tolist()
        assert records[i]["class"] == best[0] and records[i]["label"] == f"c{best[0]}"
        assert np.allclose([e["score"] for e in records[i]["top5"]], ref[i, best], atol=1e-6)
    probs, _ = class_scores({"logits": scores}, len(scores))
    assert np.allclose(probs, ref, rtol=1e-12, atol=1e-15)


def test_rows_count_as_probabilities_only_when_every_row_is_one():
    rng = np.random.default_rng(4)
    p = rng.random((1300, 1000))
    p /= p.sum(axis=1, keepdims=True)
    records, _ = predictions({"p": p.astype(np.float32)}, len(p), None)
    assert np.isclose(records[0]["score"], p[0].max(), atol=1e-6)  # kept as they are
    mixed = p.copy()
    mixed[-1] *= 3.0  # the last row no longer sums to 1: every row goes through the softmax
    records, _ = predictions({"p": mixed.astype(np.float32)}, len(mixed), None)
    ref = _softmax(mixed.astype(np.float32))
    assert np.isclose(records[0]["score"], ref[0].max(), atol=1e-6)
    assert not np.isclose(records[0]["score"], p[0].max(), atol=1e-6)
    bad = mixed.copy()
    bad[-1, 0] = np.nan
    assert predictions({"p": bad}, len(bad), None) == ([None] * len(bad), "p")


def test_predictions_do_not_hold_every_rows_probabilities(tmp_path):
    """1,500 images of 10,000 classes: their float64 probabilities alone would be 120 MB."""
    n, classes = 1500, 10_000
    scores = np.lib.format.open_memmap(tmp_path / "scores.npy", mode="w+", dtype=np.float32, shape=(n, classes))
    rng = np.random.default_rng(5)
    for start in range(0, n, 100):
        scores[start : start + 100] = rng.normal(0, 2, (min(100, n - start), classes))
    scores.flush()
    mapped = np.load(tmp_path / "scores.npy", mmap_mode="r")
    tracemalloc.start()
    try:
        records, _ = predictions({"logits": mapped}, n, None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(records) == n
    assert peak < 40e6, f"peak {peak / 1e6:.0f} MB"

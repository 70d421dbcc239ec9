"""The model's predictions from its outputs: top classes per image, with labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predictions(outputs: dict[str, np.ndarray], n: int, labels: Sequence[str] | None, order: Sequence[str] | None = None) -> tuple[list[dict[str, Any] | None], str | None]:
    """Top classes per image from the first output shaped (n, classes).

    Scores are the output itself when its rows already are probabilities (non-negative,
    summing to 1), else its softmax. Returns the per-image records (None when no output
    looks like class scores) and the output's name.
    """
    names = list(order) if order else list(outputs)
    for name in names:
        arr = outputs.get(name)
        if arr is None:
            continue
        a = np.asarray(arr)
        if a.ndim < 2 or a.shape[0] != n or not np.issubdtype(a.dtype, np.floating):
            continue
        a = a.reshape(n, -1) if all(s == 1 for s in a.shape[2:]) else None
        if a is None or a.shape[1] < 2:
            continue
        a = a.astype(np.float64)
        if not np.isfinite(a).all():
            return [None] * n, name
        sums = a.sum(axis=1)
        probs = a if (a.min() >= 0 and np.allclose(sums, 1.0, atol=1e-3)) else _softmax(a)
        records: list[dict[str, Any] | None] = []
        for row in probs:
            top = np.argsort(-row, kind="stable")[:5]
            entries = [
                {"class": int(c), "label": _label(labels, int(c), probs.shape[1]), "score": round(float(row[c]), 6)}
                for c in top
            ]
            records.append({**entries[0], "top5": entries})
        return records, name
    return [None] * n, None


def _label(labels: Sequence[str] | None, c: int, classes: int) -> str | None:
    if not labels:
        return None
    if len(labels) == classes:
        return labels[c]
    if len(labels) == classes - 1:  # a leading "background" class (TF-slim style, 1001 outputs)
        return "background" if c == 0 else labels[c - 1]
    return None


def caption(pred: dict[str, Any] | None, name: str, group: int | None) -> str:
    """A mosaic tile's caption: the predicted label (or class), prefixed by its group when there are several."""
    if pred is None:
        text = name
    elif pred.get("label"):
        text = str(pred["label"]).split(",")[0]
    else:
        text = f"class {pred['class']}"
    return f"g{group}: {text}" if group is not None else text

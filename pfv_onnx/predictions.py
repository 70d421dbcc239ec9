"""Class predictions from a model's outputs: probabilities, top classes and their names."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

TOP = 5


def softmax(x: np.ndarray, *, overwrite: bool = False) -> np.ndarray:
    """Row-wise softmax of (n, classes) scores, in float64; ``overwrite``: a float64 ``x`` may hold
    the result (a run's group may have many rows)."""
    z = x if overwrite and isinstance(x, np.ndarray) and x.dtype == np.float64 else np.array(x, dtype=np.float64)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def label_for(labels: Sequence[str] | None, c: int, classes: int) -> str | None:
    """The name of class ``c`` of ``classes``: one label per class, or one fewer when the model
    has a leading background class (TF-slim style, 1001 outputs); None when the counts differ."""
    if not labels:
        return None
    if len(labels) == classes:
        return labels[c]
    if len(labels) == classes - 1:
        return "background" if c == 0 else labels[c - 1]
    return None


def labels_fit(labels: Sequence[str] | None, classes: int | None) -> bool:
    """Whether ``labels`` name ``classes`` classes (see :func:`label_for`); True when either is unknown."""
    return not labels or classes is None or len(labels) in (classes, classes - 1)


# Rows per part of the class scores: at most about this many bytes of float64 probabilities at a
# time, so a run's group of any size never holds all of them (a run's outputs may be memory-mapped).
_PART_BYTES = 4 << 20


def _class_output(outputs: Mapping[str, Any], n: int, order: Sequence[str] | None) -> tuple[np.ndarray | None, str | None]:
    """The first output shaped (n, classes) (trailing 1s allowed) as an (n, classes) array (a view
    where it can be: a memory-mapped output stays on disk), and its name; (None, None) if none."""
    for name in list(order) if order else list(outputs):
        arr = outputs.get(name)
        if arr is None:
            continue
        a = np.asarray(arr)
        if a.ndim < 2 or a.shape[0] != n or not np.issubdtype(a.dtype, np.floating):
            continue
        if not all(s == 1 for s in a.shape[2:]) or a.shape[1] < 2:
            continue
        return a.reshape(n, -1), name
    return None, None


def _parts(a: np.ndarray) -> range:
    return range(0, a.shape[0], max(1, _PART_BYTES // (8 * max(a.shape[1], 1))))


def _kind(a: np.ndarray) -> str | None:
    """"probabilities" when every row already is one (non-negative, summing to 1), "scores" when
    they go through a softmax, None when a value is NaN or Inf: decided over all rows, a part at a time."""
    step = _parts(a).step
    finite = nonnegative = sums_to_one = True
    for start in _parts(a):
        part = a[start : start + step].astype(np.float64)
        finite = finite and bool(np.isfinite(part).all())
        nonnegative = nonnegative and bool(part.min() >= 0)
        sums_to_one = sums_to_one and bool(np.allclose(part.sum(axis=1), 1.0, atol=1e-3))
    if not finite:
        return None
    return "probabilities" if nonnegative and sums_to_one else "scores"


def _scores(outputs: Mapping[str, Any], n: int, order: Sequence[str] | None) -> tuple[np.ndarray | None, str | None, str | None]:
    """The class-score output as (n, classes), its kind (see :func:`_kind`) and its name; the
    array is None when there is none or when it holds NaN or Inf."""
    a, name = _class_output(outputs, n, order)
    kind = _kind(a) if a is not None else None
    return (a if kind is not None else None), kind, name


def _probabilities(part: np.ndarray, kind: str) -> np.ndarray:
    z = part.astype(np.float64)  # a copy
    return z if kind == "probabilities" else softmax(z, overwrite=True)


def class_scores(outputs: Mapping[str, Any], n: int, order: Sequence[str] | None = None) -> tuple[np.ndarray | None, str | None]:
    """The first output shaped (n, classes) (trailing 1s allowed) as float64 probabilities.

    Rows that already are probabilities (non-negative, summing to 1) are kept, others go
    through a softmax. Returns ``(probabilities, output name)``; ``(None, name)`` when that
    output holds NaN or Inf, ``(None, None)`` when no output looks like class scores.
    """
    a, kind, name = _scores(outputs, n, order)
    return (None, name) if a is None else (_probabilities(a, kind), name)  # type: ignore[arg-type]


def predictions(
    outputs: Mapping[str, Any], n: int, labels: Sequence[str] | None, order: Sequence[str] | None = None, top: int = TOP
) -> tuple[list[dict[str, Any] | None], str | None]:
    """Top classes per image from the first output shaped (n, classes) (see :func:`class_scores`).

    Returns one record per image, ``{"class", "label", "score", "top5"}`` (``top5`` holds the
    ``top`` best as ``{"class", "label", "score"}``; ``label`` is None without fitting labels),
    or None for each image when no output looks like class scores; and the output's name.
    The probabilities are made a part of the rows at a time (the same values as all at once).
    """
    a, kind, name = _scores(outputs, n, order)
    if a is None or kind is None:
        return [None] * n, name
    records: list[dict[str, Any] | None] = []
    classes = a.shape[1]
    step = _parts(a).step
    for start in _parts(a):
        for row in _probabilities(a[start : start + step], kind):
            best = np.argsort(-row, kind="stable")[:top]
            entries = [{"class": int(c), "label": label_for(labels, int(c), classes), "score": round(float(row[c]), 6)} for c in best]
            records.append({**entries[0], "top5": entries})
    return records, name

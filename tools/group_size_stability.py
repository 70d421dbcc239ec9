"""How many images a group needs for stable components: subspace similarity to a larger set's basis.

For each group size n, groups of n images are drawn from an image set; each group's top-k
principal subspace of E_L is compared with the subspace of the whole set by
``||U_group^T U_all||_F^2 / k`` (the mean squared cosine of the principal angles: 1 = the
same subspace, k/C for unrelated random ones). Also reported: |cos| between the first
components. Two image sets: the bundled photos (distinct scenes), and crops of them (four
overlapping 60 % crops and the whole image per photo, flipped or not) for sizes beyond 7.

    python tools/group_size_stability.py [--model efficientnet-lite0] [--draws 20]
"""

from __future__ import annotations

import argparse
import itertools
import math

import numpy as np


def _crops(bgr: np.ndarray) -> list[np.ndarray]:
    h, w = bgr.shape[:2]
    ch, cw = int(0.6 * h), int(0.6 * w)
    out = [bgr]
    for j, (y, x) in enumerate([(0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw)]):
        crop = bgr[y : y + ch, x : x + cw]
        out.append(crop[:, ::-1] if j % 2 else crop)
    return out


def _observations(pfv, prep, images):
    from pfv_onnx import pca
    from pfv_onnx.inputs import preprocess, stack_batch

    rows = []
    for i in range(0, len(images), 16):
        fp = pfv.forward(stack_batch([preprocess(b, prep) for b in images[i : i + 16]], prep.layout))
        rows.append(np.asarray(fp.decomposed, dtype=np.float32))
    E = np.concatenate(rows)
    hw = E.shape[2] * E.shape[3]
    return pca.observations(E), hw


def _basis(X, k):
    from pfv_onnx import pca

    return np.asarray(pca.fit(X, k)[0].directions, dtype=np.float64)


def measure(pfv, prep, images, sizes, draws, k, seed=0):
    X, hw = _observations(pfv, prep, images)
    ref = _basis(X, k)
    rng = np.random.default_rng(seed)
    n = len(images)
    table = []
    for size in sizes:
        if size > n:
            continue
        if math.comb(n, size) <= draws:
            picks = list(itertools.combinations(range(n), size))
        else:
            picks = [tuple(sorted(rng.choice(n, size, replace=False))) for _ in range(draws)]
        sub, first = [], []
        for pick in picks:
            rows = np.concatenate([X[i * hw : (i + 1) * hw] for i in pick])
            U = _basis(rows, k)
            sub.append(float(np.sum((U.T @ ref) ** 2) / k))
            first.append(float(abs(U[:, 0] @ ref[:, 0])))
        table.append((size, len(picks), np.mean(sub), np.min(sub), np.mean(first)))
    return table, ref.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--draws", type=int, default=20, help="groups drawn per size (all when fewer exist)")
    parser.add_argument("--k", type=int, default=3)
    args = parser.parse_args()

    import pfv_onnx_models as bundled

    from pfv_onnx import PFV
    from pfv_onnx.config import resolve_config
    from pfv_onnx.inputs import decode_image

    pfv = PFV(bundled.model_path(args.model), provider="cpu")
    prep = resolve_config(pfv).preprocessing
    photos = [decode_image(p).bgr for p in bundled.demo_images()]
    crops = [c for b in photos for c in _crops(b)]
    for title, images, sizes in (
        (f"{len(photos)} photos", photos, (1, 2, 3, 5)),
        (f"{len(crops)} crops of them", crops, (1, 2, 3, 5, 8, 16)),
    ):
        table, channels = measure(pfv, prep, images, sizes, args.draws, args.k)
        print(f"\n{args.model}, {title}: top-{args.k} subspace similarity to the all-images basis (C = {channels}; random: {args.k / channels:.3f})")
        print("  n  groups  mean   min    |cos| first component")
        for size, count, mean, low, first in table:
            print(f"{size:3d}  {count:6d}  {mean:.3f}  {low:.3f}  {first:.3f}")


if __name__ == "__main__":
    main()

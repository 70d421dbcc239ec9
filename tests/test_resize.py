"""The batch resize against the test suite's own NumPy bilinear resize, at any channel count."""

import numpy as np
import pytest

from pfv_onnx import weighting

from reference import resize as reference_resize


SHAPES = [(1, 3), (48, 3), (100, 3), (3, 200), (1, 600)]  # 600 stacked channels: past OpenCV's 512
CASES = [
    *((n, c, (6, 9), (50, 31)) for n, c in SHAPES),
    *((n, c, (14, 14), (14, 14)) for n, c in SHAPES),
    # the full 7 -> 224 upsampling at the counts the weighting meets (the float64 reference is slow there)
    (1, 3, (7, 7), (224, 224)), (48, 3, (7, 7), (224, 224)), (1, 600, (7, 7), (56, 56)),
]


@pytest.mark.parametrize("n, c, src, dst", CASES)
def test_resize_matches_reference_for_any_number_of_stacked_channels(n, c, src, dst):
    # OpenCV resizes at most a limited number of channels at once; the batch stacks images x
    # components as channels, so large batches must still come out right.
    x = np.random.default_rng(n * c).standard_normal((n, c, *src)).astype(np.float32)
    want = reference_resize(x.astype(np.float64), dst)
    got = weighting.resize_bilinear(x, dst)
    assert got.shape == (n, c, *dst)
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(weighting.resize_bilinear_gather(x, dst), want, atol=1e-5)

"""The batch resize against the test suite's own NumPy bilinear resize, at any channel count."""

import numpy as np
import pytest

from pfv_onnx import weighting

from reference import resize as reference_resize


@pytest.mark.parametrize("n, c", [(1, 3), (48, 3), (100, 3), (3, 200), (1, 600)])
@pytest.mark.parametrize("src, dst", [((7, 7), (224, 224)), ((6, 9), (50, 31)), ((14, 14), (14, 14))])
def test_resize_matches_reference_for_any_number_of_stacked_channels(n, c, src, dst):
    # OpenCV resizes at most a limited number of channels at once; the batch stacks images x
    # components as channels, so large batches must still come out right.
    x = np.random.default_rng(n * c).standard_normal((n, c, *src)).astype(np.float32)
    want = reference_resize(x.astype(np.float64), dst)
    got = weighting.resize_bilinear(x, dst)
    assert got.shape == (n, c, *dst)
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(weighting.resize_bilinear_gather(x, dst), want, atol=1e-5)

"""Maps to pictures (pfv_onnx.render)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pfv_onnx import render


def test_map_to_bgr_channel_order_and_k():
    rgb = np.zeros((2, 2, 3), np.float32)
    rgb[..., 0] = 1.0  # component 1 = red
    bgr = render.map_to_bgr(rgb)
    np.testing.assert_array_equal(bgr[0, 0], [0, 0, 1])  # OpenCV order: B, G, R
    gray = render.map_to_bgr(np.full((2, 2, 1), 0.25, np.float32))
    np.testing.assert_allclose(gray, 0.25)
    two = render.map_to_bgr(np.stack([np.full((1, 1), 0.2), np.full((1, 1), 0.7)], axis=-1))
    np.testing.assert_allclose(two[0, 0], [0.0, 0.7, 0.2])
    four = render.map_to_bgr(np.ones((1, 1, 4)) * [0.1, 0.2, 0.3, 0.9])
    np.testing.assert_allclose(four[0, 0], [0.3, 0.2, 0.1])
    nan = render.map_to_bgr(np.full((1, 1, 3), np.nan))
    np.testing.assert_array_equal(nan, 0)


def test_map_picture_upsampled_to_image_size():
    rgb = np.zeros((7, 7, 3), np.float32)
    rgb[..., 1] = 1.0  # all green
    pic = render.map_picture(rgb, (300, 451))
    assert pic.shape == (300, 451, 3) and pic.dtype == np.uint8
    assert (pic[..., 1] == 255).all() and (pic[..., [0, 2]] == 0).all()


def test_map_picture_bilinear_half_pixel_centres():
    rgb = np.zeros((1, 2, 3), np.float32)
    rgb[0, 1] = 1.0  # left pixel 0, right pixel 1
    pic = render.map_picture(rgb, (1, 4))
    # half-pixel centres: output x=0..3 samples input at -0.25, 0.25, 0.75, 1.25 -> 0, .25, .75, 1
    np.testing.assert_array_equal(pic[0, :, 0], [0, 64, 191, 255])


def test_map_picture_crop_box_leaves_the_rest_black():
    rgb = np.ones((4, 4, 3), np.float32)
    pic = render.map_picture(rgb, (20, 60), box=(20, 0, 40, 20))
    assert (pic[:, 20:40] == 255).all()
    assert (pic[:, :20] == 0).all() and (pic[:, 40:] == 0).all()


def test_overlay_alpha():
    img = np.full((5, 6, 3), 100, np.uint8)
    m = np.full((5, 6, 3), 200, np.uint8)
    np.testing.assert_array_equal(render.overlay(img, m, 0.0), img)
    np.testing.assert_array_equal(render.overlay(img, m, 1.0), m)
    np.testing.assert_array_equal(render.overlay(img, m, 0.5), np.full((5, 6, 3), 150, np.uint8))
    boxed = render.overlay(img, m, 1.0, box=(0, 0, 3, 5))
    assert (boxed[:, :3] == 200).all() and (boxed[:, 3:] == 50).all()  # outside: image at half
    with pytest.raises(ValueError, match="differ in size"):
        render.overlay(img, m[:4], 0.5)


def test_letterbox_keeps_aspect():
    img = np.zeros((50, 100, 3), np.uint8)
    tile = render.letterbox(img, 40)
    assert tile.shape == (40, 40, 3)
    assert (tile[:10] == 255).all() and (tile[30:] == 255).all() and (tile[10:30] == 0).all()


def test_mosaic_layout_images_above_maps_with_captions():
    n, tile, gap = 10, 32, 4
    images = [np.full((20, 30, 3), 10 * i, np.uint8) for i in range(n)]
    maps = [np.full((20, 30, 3), (0, 0, 255), np.uint8) for _ in range(n)]
    pic = render.mosaic(images, maps, [f"class {i}" for i in range(n)], columns=4, tile=tile, gap=gap)
    rows = 3  # 10 images in rows of 4
    block = 2 * tile + gap + 20 + 2 * gap
    assert pic.shape == (rows * block + gap, 4 * tile + 5 * gap, 3)
    # first image tile top-left, its map below it
    centre = (gap + tile // 2, gap + tile // 2)
    assert tuple(pic[centre]) == (0, 0, 0)
    assert tuple(pic[gap + tile + gap + tile // 2, gap + tile // 2]) == (0, 0, 255)
    # a caption is drawn (dark pixels) in the strip under the first map
    strip = pic[gap + 2 * tile + gap : gap + 2 * tile + gap + 20, gap : gap + tile]
    assert (strip.min(axis=2) < 128).any()
    # no caption strip without captions
    plain = render.mosaic(images[:2], maps[:2], None, tile=tile, gap=gap)
    assert plain.shape == (2 * tile + 3 * gap + gap, 2 * tile + 3 * gap, 3)


def test_mosaic_rejects_mismatched_lists():
    img = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="as many maps as images"):
        render.mosaic([img, img], [img])
    with pytest.raises(ValueError, match="one caption per image"):
        render.mosaic([img], [img], ["a", "b"])


def test_fit_text_shortens_and_strips_non_ascii():
    text, scale = render.fit_text("a very long class name that cannot fit anywhere", 60)
    assert text.endswith("..")
    assert cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] <= 60
    assert render.fit_text("café", 200)[0] == "caf?"


def test_encode_png_round_trip_and_deterministic():
    rng = np.random.default_rng(0)
    pic = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    data = render.encode_png(pic)
    assert data == render.encode_png(pic)
    back = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(back, pic)


@pytest.mark.parametrize("libdeflate", [True, False])
def test_encode_png_is_lossless_for_other_decoders(libdeflate, monkeypatch):
    """Smooth maps and noise, odd sizes, with libdeflate and with OpenCV's zlib: Pillow and
    OpenCV both decode exactly the pixels."""
    import io
    import sys

    from PIL import Image

    if not libdeflate:
        monkeypatch.setitem(sys.modules, "deflate", None)  # import fails: OpenCV writes the file
    rng = np.random.default_rng(4)
    y, x = np.mgrid[0:61, 0:97]
    smooth = np.stack([(x * 2.6) % 256, (y * 4.1) % 256, (x + y) % 256], axis=-1).astype(np.uint8)
    for pic in (smooth, rng.integers(0, 256, (5, 3, 3), dtype=np.uint8), np.zeros((1, 1, 3), np.uint8)):
        data = render.encode_png(pic)
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))[:, :, ::-1], pic)
        np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), pic)


@pytest.mark.parametrize("k", [3, 4])
def test_map_to_bgr_clips_and_zeroes_nan(k):
    rng = np.random.default_rng(6)
    x = rng.random((9, 11, k), dtype=np.float32) * 1.4 - 0.2
    x[0, 0, 0], x[1, 1, 1], x[2, 2, 2] = np.nan, np.inf, -np.inf
    want = np.clip(np.nan_to_num(x[:, :, :3].astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0), 0, 1)[:, :, ::-1]
    np.testing.assert_array_equal(render.map_to_bgr(x), want.astype(np.float32))


def test_float_to_uint8_rounds_and_saturates_like_numpy():
    """The one-pass OpenCV conversion of a map in [0, 1] equals clip(rint(255 x)) exactly, 255 x in float32."""
    rng = np.random.default_rng(3)
    x = rng.random((37, 41, 3), dtype=np.float32)
    x[0, :, 0] = (np.arange(41, dtype=np.float32) + 0.5) / 255  # halfway cases: round half to even
    x[1, :3, 1] = [0.0, 1.0, np.nextafter(np.float32(1), np.float32(0))]
    want = np.clip(np.rint(x * np.float32(255)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(render._to_u8(x), want)
    np.testing.assert_array_equal(render._to_u8(x[:, :, :1]), want[:, :, :1])


def test_encode_jpeg_keeps_colour_at_full_resolution():
    """Thin colour stripes survive (4:4:4): with 4:2:0 chroma subsampling they would blur."""
    pic = np.zeros((32, 32, 3), np.uint8)
    pic[:, 0::2] = (0, 0, 255)  # red and blue columns, one pixel wide
    pic[:, 1::2] = (255, 0, 0)
    back = cv2.imdecode(np.frombuffer(render.encode_jpeg(pic), np.uint8), cv2.IMREAD_COLOR)
    assert back.shape == pic.shape
    assert np.abs(back.astype(int) - pic.astype(int)).mean() < 12
    assert render.encode_jpeg(pic) == render.encode_jpeg(pic)


def test_component_ends_are_one_channel_at_each_end():
    from pfv_onnx.render import component_ends

    ends = component_ends(3)
    assert len(ends) == 3
    for c, (lo, mid, hi) in enumerate(ends):
        assert mid == (0.5, 0.5, 0.5)
        assert [v for i, v in enumerate(lo) if i != c] == [0.5, 0.5] and lo[c] == 0.0
        assert hi[c] == 1.0
    assert component_ends(1) == [((0.0, 0.0, 0.0), (0.5, 0.5, 0.5), (1.0, 1.0, 1.0))]
    assert len(component_ends(5)) == 3 and component_ends(2)[0][1] == (0.5, 0.5, 0.0)  # blue is not drawn with k = 2


def test_diverging_picture_by_hand():
    from pfv_onnx.render import DIVERGING_NEG, DIVERGING_POS, diverging

    v = np.array([[-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0]])
    pic = diverging(v, 1.0)[0, :, ::-1].astype(float)  # as R, G, B
    white = np.array([255.0, 255.0, 255.0])
    expected = [DIVERGING_NEG, DIVERGING_NEG, (white + np.array(DIVERGING_NEG)) / 2, white, (white + np.array(DIVERGING_POS)) / 2, DIVERGING_POS, DIVERGING_POS]
    assert np.abs(pic - np.array(expected, float)).max() <= 0.5


def test_mosaic_colour_key_shows_each_components_ends():
    from pfv_onnx.render import KEY_ROW, mosaic

    img = np.full((20, 20, 3), 128, np.uint8)
    plain = mosaic([img], [img], ["x"], tile=40)
    keyed = mosaic([img], [img], ["x"], tile=40, key=3)
    assert keyed.shape[1] == plain.shape[1] and np.array_equal(keyed[: plain.shape[0]], plain)
    strip = keyed[plain.shape[0] :]
    assert strip.shape[0] >= 4 * KEY_ROW
    for c in range(3):  # along each bar: the channel rises from 0 to 255, the others stay at the middle
        row = strip[2 + c * KEY_ROW + KEY_ROW // 2]
        coloured = row[(row != 255).any(axis=1) & (np.abs(row.astype(int) - 128) <= 1).sum(axis=1).astype(bool)]
        bgr = 2 - c
        assert coloured[:, bgr].min() <= 2 and coloured[:, bgr].max() >= 253
        others = [i for i in range(3) if i != bgr]
        assert np.abs(coloured[:, others].astype(int) - 128).max() <= 1

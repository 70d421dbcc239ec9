"""Finding, decoding and preprocessing images (pfv_onnx.inputs)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from pfv_onnx.errors import InputError, PfvError
from pfv_onnx.inputs import (
    BadImageError,
    collect_images,
    crop_box,
    decode_bytes,
    decode_image,
    exif_orientation,
    make_preprocessing,
    preprocess,
    stack_batch,
)


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def _jpeg(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return buf.tobytes()


def _exif_orientation(value: int) -> bytes:
    """A little-endian EXIF block with one tag: Orientation = value."""
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, value, 0) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd


def _block_image(h: int = 40, w: int = 60) -> np.ndarray:
    """Black with a white block in the top-left corner, to see rotations."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:10, :20] = 255
    return img


# --------------------------------------------------------------------------- collect_images


def test_collect_folder_recursive_sorted_and_skips(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "deep").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    png = _png(_block_image())
    for rel in ["z.png", "b/y.PNG", "a/deep/x.jpg", "a/m.png", ".hidden/h.png", ".DS_Store"]:
        (tmp_path / rel).write_bytes(png)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "noext").write_bytes(png)  # an image without extension, found by content
    got = collect_images([tmp_path])
    rel = [p.relative_to(tmp_path).as_posix() for p in got.files]
    assert rel == ["a/deep/x.jpg", "a/m.png", "b/y.PNG", "noext", "z.png"]
    assert [Path(f).name for f, _ in got.skipped] == ["notes.txt"]
    assert got.missing == []


def test_collect_files_globs_missing_and_dedup(tmp_path):
    png = _png(_block_image())
    for name in ["c.png", "a.png", "b.jpg"]:
        (tmp_path / name).write_bytes(png)
    (tmp_path / "odd.dat").write_bytes(b"whatever")
    got = collect_images(
        [
            tmp_path / "odd.dat",  # named directly: kept whatever its extension
            str(tmp_path / "*.png"),
            tmp_path / "a.png",  # already found by the pattern
            tmp_path / "nope.png",
            str(tmp_path / "*.gif"),
        ]
    )
    assert [p.name for p in got.files] == ["odd.dat", "a.png", "c.png"]
    reasons = dict(got.missing)
    assert reasons[str(tmp_path / "nope.png")] == "no such file or folder"
    assert reasons[str(tmp_path / "*.gif")] == "no file matches this pattern"


def test_collect_is_deterministic(tmp_path):
    png = _png(_block_image())
    for i in range(20):
        (tmp_path / f"img{i:02d}.png").write_bytes(png)
    first = collect_images([tmp_path]).files
    assert first == collect_images([tmp_path]).files
    assert first == sorted(first)


# --------------------------------------------------------------------------- decoding


def test_decode_grayscale_png(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    p = tmp_path / "g.png"
    p.write_bytes(_png(gray))
    img = decode_image(p)
    assert img.bgr.shape == (3, 4, 3) and img.bgr.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(img.bgr[:, :, c], gray)
    assert "grayscale" in img.notes


def test_decode_16bit_png_scaled_to_8bit():
    img16 = np.array([[[0, 257, 65535], [128, 32896, 1000]]], dtype=np.uint16)
    img = decode_bytes(_png(img16))
    expected = np.array([[[0, 1, 255], [0, 128, 4]]], dtype=np.uint8)  # round(v / 257)
    np.testing.assert_array_equal(img.bgr, expected)
    assert "16-bit scaled to 8-bit" in img.notes


def test_decode_rgba_composited_over_white():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque: kept
    rgba[0, 1] = (10, 20, 30, 0)  # transparent: white
    rgba[1, 0] = (0, 0, 0, 128)  # half: mid-gray
    rgba[1, 1] = (200, 100, 50, 255)
    img = decode_bytes(_png(rgba))
    assert img.bgr.shape == (2, 2, 3)
    np.testing.assert_array_equal(img.bgr[0, 0], [10, 20, 30])
    np.testing.assert_array_equal(img.bgr[0, 1], [255, 255, 255])
    np.testing.assert_array_equal(img.bgr[1, 0], [127, 127, 127])  # 255 * (1 - 128/255)
    assert "alpha composited over white" in img.notes


def test_decode_honours_exif_orientation_jpeg(tmp_path):
    jpg = _jpeg(_block_image())
    app1 = b"Exif\x00\x00" + _exif_orientation(6)  # 6: rotate 90 degrees clockwise to view
    with_exif = jpg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpg[2:]
    p = tmp_path / "rotated.jpg"
    p.write_bytes(with_exif)
    img = decode_image(p)
    assert img.bgr.shape == (60, 40, 3)
    bright = np.argwhere(img.bgr.mean(axis=2) > 200)
    # the white block, top-left before rotation, is top-right after a clockwise quarter turn
    assert bright[:, 0].max() < 25 and bright[:, 1].min() > 25


def test_decode_exif_rotated_png_with_alpha_is_turned_and_composited():
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[:10, :20, :3] = 255
    rgba[30:, 50:, 3] = 0  # transparent bottom-right corner
    ok, buf = cv2.imencodeWithMetadata(".png", rgba, [cv2.IMAGE_METADATA_EXIF], [np.frombuffer(_exif_orientation(6), np.uint8)])
    assert ok
    img = decode_bytes(buf.tobytes())
    assert img.bgr.shape == (60, 40, 3)
    expected = np.where(rgba[..., 3:] == 0, 255, rgba[..., :3])
    np.testing.assert_array_equal(img.bgr, np.rot90(expected, k=-1))
    assert "alpha composited over white" in img.notes


@pytest.mark.parametrize("orientation", range(1, 9))
def test_alpha_of_a_solid_icon_follows_the_exif_orientation(orientation):
    """A one-colour icon whose shape lives only in alpha: its colours match every turn, so
    only the orientation the decoder read can place the alpha (a regression: it was guessed
    by matching colours, and the first match, no turn, was taken)."""
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., :3] = (40, 90, 200)
    rgba[:6, :11, 3] = 255  # opaque only in the top-left corner
    rgba[6:9, :4, 3] = 128
    ok, buf = cv2.imencodeWithMetadata(".png", rgba, [cv2.IMAGE_METADATA_EXIF], [np.frombuffer(_exif_orientation(orientation), np.uint8)])
    assert ok
    img = decode_bytes(buf.tobytes())
    a = rgba[..., 3:].astype(np.float64) / 255.0
    stored = np.rint(rgba[..., :3] * a + 255.0 * (1.0 - a)).astype(np.uint8)
    turns = {1: stored, 2: stored[:, ::-1], 3: stored[::-1, ::-1], 4: stored[::-1], 5: stored.transpose(1, 0, 2),
             6: np.rot90(stored, k=-1), 7: np.rot90(stored, k=-1)[::-1], 8: np.rot90(stored, k=1)}  # fmt: skip
    np.testing.assert_array_equal(img.bgr, turns[orientation])
    assert "alpha composited over white" in img.notes


def test_exif_orientation_is_read_from_either_byte_order_and_prefix():
    big = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, 8, 0) + struct.pack(">I", 0)
    assert exif_orientation(big) == 8
    assert exif_orientation(b"Exif\x00\x00" + _exif_orientation(5)) == 5
    assert exif_orientation(_exif_orientation(3)) == 3
    assert exif_orientation(b"II*\x00" + struct.pack("<I", 400)) == 1  # IFD beyond the block
    assert exif_orientation(b"") == 1


def test_decode_animated_gif_takes_first_frame():
    anim = cv2.Animation()
    anim.frames = [np.full((20, 30, 3), 40, np.uint8), np.full((20, 30, 3), 220, np.uint8)]
    anim.durations = [100, 100]
    ok, buf = cv2.imencodeanimation(".gif", anim)
    assert ok
    img = decode_bytes(buf.tobytes())
    assert img.bgr.shape == (20, 30, 3)
    assert abs(float(img.bgr.mean()) - 40) < 3
    assert "first frame" in img.notes


def test_decode_one_pixel():
    img = decode_bytes(_png(np.array([[[1, 2, 3]]], np.uint8)))
    np.testing.assert_array_equal(img.bgr, [[[1, 2, 3]]])


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file"),
        (b"hello, I am a text file\n" * 20, "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "PNG"),
    ],
)
def test_decode_bad_bytes(data, reason):
    with pytest.raises(BadImageError, match=reason):
        decode_bytes(data)


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
@pytest.mark.parametrize("keep", [0.5, 0.98])
def test_decode_truncated(fmt, keep):
    rng = np.random.default_rng(0)
    data = (_jpeg if fmt == "jpeg" else _png)(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    with pytest.raises(BadImageError, match="(?i)corrupt|truncated"):
        decode_bytes(data[: int(len(data) * keep)])


def test_bad_image_error_is_one_line_pfv_error():
    with pytest.raises(PfvError) as info:
        decode_bytes(b"\xff\xd8\xff\xe0garbage")
    assert isinstance(info.value, InputError)
    assert "\n" not in str(info.value)


def _png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


def test_decompression_bomb_refused_from_header():
    # the header claims 100000 x 100000; no pixel data follows, so only the header can refuse it
    with pytest.raises(BadImageError, match=r"too large: 100000x100000 .* in the header"):
        decode_bytes(_png_header_only(100_000, 100_000))


def test_pixel_limit_from_jpeg_header_and_configurable():
    data = _jpeg(np.zeros((30, 40, 3), np.uint8))
    assert decode_bytes(data, max_pixels=1200).bgr.shape == (30, 40, 3)
    with pytest.raises(BadImageError, match="1,199"):
        decode_bytes(data, max_pixels=1199)


def test_pixel_limit_after_decoding_for_formats_without_header_parsing():
    ok, buf = cv2.imencode(".hdr", np.full((30, 40, 3), 0.5, np.float32))
    assert ok
    img = decode_bytes(buf.tobytes())
    assert img.bgr.shape == (30, 40, 3)
    with pytest.raises(BadImageError, match="after decoding"):
        decode_bytes(buf.tobytes(), max_pixels=100)


def test_decode_missing_file(tmp_path):
    with pytest.raises(BadImageError, match="no such file"):
        decode_image(tmp_path / "nope.png")


# --------------------------------------------------------------------------- preprocessing

# One pixel, B=0, G=128, R=255 (OpenCV order).
PIXEL = np.array([[[0, 128, 255]]], np.uint8)


@pytest.mark.parametrize(
    "preset, expected",
    [
        # fed in R, G, B order: (v/255 - mean) / std
        ("imagenet", [(1.0 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224, (0.0 - 0.406) / 0.225]),
        ("inception", [1.0, (128 / 255 - 0.5) / 0.5, -1.0]),
        ("raw", [1.0, 128 / 255, 0.0]),
        # fed in B, G, R order on 0..255 minus the Caffe means (B 103.939, G 116.779, R 123.68)
        ("caffe", [0.0 - 103.939, 128.0 - 116.779, 255.0 - 123.68]),
    ],
)
def test_presets_hand_computed(preset, expected):
    prep = make_preprocessing(preset, size=1)
    x = preprocess(PIXEL, prep)
    assert x.shape == (1, 1, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, 0], expected, rtol=1e-6, atol=1e-5)


def test_imagenet_bgr_reorders_mean_and_std():
    prep = make_preprocessing("imagenet", color_order="BGR", size=1)
    assert prep.mean == (0.406, 0.456, 0.485) and prep.std == (0.225, 0.224, 0.229)
    x = preprocess(PIXEL, prep)
    np.testing.assert_allclose(x[0, 0], [(0 - 0.406) / 0.225, (128 / 255 - 0.456) / 0.224, (1 - 0.485) / 0.229], rtol=1e-6)


def test_custom_mean_std_in_fed_order_and_range():
    prep = make_preprocessing("raw", mean=[127.5], std=[127.5, 127.5, 127.5], pixel_range=255.0, size=1)
    x = preprocess(PIXEL, prep)
    np.testing.assert_allclose(x[0, 0], [(255 - 127.5) / 127.5, (128 - 127.5) / 127.5, -1.0], rtol=1e-6)
    prep = make_preprocessing("caffe", color_order="RGB", mean=[1, 2, 3], size=1)
    np.testing.assert_allclose(preprocess(PIXEL, prep)[0, 0], [254.0, 126.0, -3.0])


def test_grayscale_model_gets_one_channel():
    prep = make_preprocessing("imagenet", channels=1, size=1)
    assert prep.color_order == "GRAY" and len(prep.mean) == 1
    gray = round(0.299 * 255 + 0.587 * 128 + 0.114 * 0)  # OpenCV's BGR2GRAY weights
    x = preprocess(PIXEL, prep)
    assert x.shape == (1, 1, 1)
    mean = (0.485 + 0.456 + 0.406) / 3
    std = (0.229 + 0.224 + 0.225) / 3
    np.testing.assert_allclose(x[0, 0, 0], (gray / 255 - mean) / std, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"preset": "torch"}, "unknown preprocessing preset 'torch'; choose one of imagenet, inception, caffe, raw"),
        ({"mean": [0.1, 0.2]}, "--mean needs 1 or 3 values, got 2"),
        ({"std": [0.0]}, "--std values must be positive"),
        ({"resize": "pad"}, "unknown resize mode"),
        ({"color_order": "GBR"}, "unknown colour order"),
        ({"layout": "CHW"}, "unknown layout"),
        ({"size": (0, 5)}, "positive"),
    ],
)
def test_preprocessing_errors(kwargs, match):
    with pytest.raises(InputError, match=match):
        make_preprocessing(**kwargs)


def test_stretch_and_layouts():
    img = np.zeros((30, 50, 3), np.uint8)
    img[:, 25:] = 255  # right half white
    prep = make_preprocessing("raw", size=(6, 10))
    x = preprocess(img, prep)
    assert x.shape == (6, 10, 3)
    assert np.allclose(x[:, :5], 0) and np.allclose(x[:, 5:], 1)
    nchw = stack_batch([x, x * 0.5], "NCHW")
    nhwc = stack_batch([x, x * 0.5], "NHWC")
    assert nchw.shape == (2, 3, 6, 10) and nhwc.shape == (2, 6, 10, 3)
    assert nchw.flags["C_CONTIGUOUS"] and nchw.dtype == np.float32
    np.testing.assert_array_equal(nchw.transpose(0, 2, 3, 1), nhwc)


def test_crop_takes_the_centre():
    img = np.zeros((20, 60, 3), np.uint8)
    img[:, 20:40] = 255  # only the centre third is white
    prep = make_preprocessing("raw", size=(10, 10), resize="crop")
    assert crop_box(60, 20, prep) == (20, 0, 40, 20)
    x = preprocess(img, prep)
    assert x.shape == (10, 10, 3) and np.allclose(x, 1.0)
    assert crop_box(60, 20, make_preprocessing("raw", size=10)) == (0, 0, 60, 20)

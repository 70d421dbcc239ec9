"""Damaged and unusual image files: each one is read correctly or refused with a one-line
reason, and a run over a folder of them finishes every other image (exit code 1)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

import bad_inputs
import graphs
from pfv_onnx.cli import main
from pfv_onnx.inputs import BadImageError, decode_bytes, decode_image


def _rgb_of(decoded) -> np.ndarray:
    return decoded.bgr[:, :, ::-1].astype(np.int32)


# --------------------------------------------------------------------------- refused files


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, tuple[Path, str | None]]:
    return bad_inputs.bad_image_files(tmp_path_factory.mktemp("bad_images"))


@pytest.mark.parametrize(
    "name",
    ["zero_bytes.jpg", "truncated.jpg", "truncated.png", "header_only.png", "garbage_after_signature.png",
     "text.png", "html.jpg", "bomb.png", "bomb.jpg", "bomb.gif"],
)  # fmt: skip
def test_bad_file_is_refused_with_a_one_line_reason(bad_files, name):
    path, pattern = bad_files[name]
    with pytest.raises(BadImageError, match=f"(?i){pattern}") as info:
        decode_image(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["bomb.png", "bomb.jpg", "bomb.gif"])
def test_decompression_bomb_is_refused_before_decoding(bad_files, name, monkeypatch):
    """The header's size is checked first: the decoder is never handed the file."""
    calls = []
    monkeypatch.setattr(cv2, "imdecode", lambda *a, **k: calls.append(a) or None)
    with pytest.raises(BadImageError, match="too large"):
        decode_image(bad_files[name][0])
    assert calls == []


def test_pixel_limit_is_configurable_and_exact():
    data = bad_inputs.png_bytes(bad_inputs.pattern_rgb(30, 40))
    assert decode_bytes(data, max_pixels=30 * 40).bgr.shape == (30, 40, 3)
    with pytest.raises(BadImageError, match="1,200 pixels.*limit 1,199"):
        decode_bytes(data, max_pixels=30 * 40 - 1)


def test_pixel_limit_also_holds_when_the_header_says_nothing(monkeypatch):
    """A format whose size is only known after decoding is checked then (here: a PNG whose
    header parser is made to report no size)."""
    from pfv_onnx.inputs import decode, headers

    data = bad_inputs.png_bytes(bad_inputs.pattern_rgb(30, 40))
    monkeypatch.setattr(decode, "_read_header", lambda d: headers._Header("png"))
    with pytest.raises(BadImageError, match="after decoding"):
        decode_bytes(data, max_pixels=1000)


# --------------------------------------------------------------------------- files that must be read


def test_grayscale_becomes_three_equal_channels():
    gray = bad_inputs.pattern_rgb(20, 24)[:, :, 0]
    d = decode_bytes(bad_inputs.png_bytes(gray))
    assert d.bgr.shape == (20, 24, 3) and d.bgr.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(d.bgr[:, :, c], gray)
    assert "grayscale" in d.notes


def test_rgba_is_composited_over_white():
    rgb = bad_inputs.pattern_rgb(20, 24).astype(np.float64)
    alpha = np.tile(np.linspace(0, 255, 24).round(), (20, 1)).astype(np.uint8)
    bgra = np.dstack([rgb[:, :, ::-1].astype(np.uint8), alpha])
    d = decode_bytes(bad_inputs.png_bytes(bgra))
    a = alpha[:, :, None] / 255.0
    expected = rgb * a + 255.0 * (1.0 - a)
    assert np.abs(_rgb_of(d) - expected).max() <= 1.0
    assert (_rgb_of(d)[:, 0] == 255).all()  # fully transparent column: white


def test_16_bit_png_is_scaled_to_8_bit():
    rng = np.random.default_rng(3)
    v16 = rng.integers(0, 65536, size=(10, 12, 3)).astype(np.uint16)
    d = decode_bytes(bad_inputs.png_bytes(v16))
    expected = np.floor(v16.astype(np.float64) / 257.0 + 0.5)  # 65535 -> 255, nearest
    assert np.abs(d.bgr.astype(np.float64) - expected).max() <= 1.0
    assert d.bgr.dtype == np.uint8


def test_cmyk_jpeg_gives_the_right_colours():
    pytest.importorskip("PIL")
    rgb = bad_inputs.pattern_rgb(32, 32)
    d = decode_bytes(bad_inputs.cmyk_jpeg(rgb))
    assert d.bgr.shape == (32, 32, 3)
    err = np.abs(_rgb_of(d) - rgb.astype(np.int32)).mean()
    inverted = np.abs(_rgb_of(d) - (255 - rgb.astype(np.int32))).mean()
    assert err < 10 and inverted > 60, (err, inverted)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_honoured(orientation):
    rgb = bad_inputs.pattern_rgb(30, 40)
    d = decode_bytes(bad_inputs.exif_jpeg(rgb, orientation))
    want = bad_inputs.upright(rgb, orientation).astype(np.int32)
    assert d.bgr.shape == want.shape
    err = np.abs(_rgb_of(d) - want).mean()
    for other in range(1, 9):  # every other orientation of the same shape is far off
        alt = bad_inputs.upright(rgb, other).astype(np.int32)
        if other != orientation and alt.shape == want.shape and not np.array_equal(alt, want):
            assert np.abs(_rgb_of(d) - alt).mean() > 4 * err + 10


def test_one_pixel_image():
    px = np.array([[[10, 200, 30]]], dtype=np.uint8)  # BGR
    d = decode_bytes(bad_inputs.png_bytes(px))
    np.testing.assert_array_equal(d.bgr, px)


def test_animated_gif_gives_its_first_frame():
    pytest.importorskip("PIL")
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((16, 16, 3), np.uint8)
    blue[..., 2] = 255
    d = decode_bytes(bad_inputs.animated_gif([red, blue, blue]))
    assert d.bgr.shape == (16, 16, 3)
    np.testing.assert_array_equal(_rgb_of(d)[4, 4], [255, 0, 0])
    assert "first frame" in d.notes


# --------------------------------------------------------------------------- a run over all of them


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, bad_files) -> tuple[Path, set[str], dict[str, str]]:
    """Every bad file plus one good file of each unusual kind, in one folder."""
    d = next(iter(bad_files.values()))[0].parent
    rgb = bad_inputs.pattern_rgb(30, 40)
    good = {
        "gray.png": bad_inputs.png_bytes(rgb[:, :, 1]),
        "rgba.png": bad_inputs.png_bytes(np.dstack([rgb[:, :, ::-1], np.full((30, 40), 128, np.uint8)])),
        "deep.png": bad_inputs.png_bytes(rgb[:, :, ::-1].astype(np.uint16) * 257),
        "rotated.jpg": bad_inputs.exif_jpeg(rgb, 6),
        "single_pixel.png": bad_inputs.png_bytes(rgb[:1, :1]),
        "plain.jpg": bad_inputs.jpeg_bytes(rgb[:, :, ::-1]),
    }
    try:
        import PIL  # noqa: F401

        good["cmyk.jpg"] = bad_inputs.cmyk_jpeg(rgb)
        good["animated.gif"] = bad_inputs.animated_gif([rgb, 255 - rgb])
    except ImportError:
        pass
    for name, data in good.items():
        (d / name).write_bytes(data)
    reasons = {name: pattern for name, (_, pattern) in bad_files.items()}
    return d, set(good), reasons


@pytest.fixture(scope="module")
def vgg_path(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("model") / "vgg.onnx"
    onnx.save(graphs.vgg().model, str(p))
    return p


def test_run_reports_every_bad_file_and_finishes_the_rest(mixed_folder, vgg_path, tmp_path, capsys):
    folder, good, reasons = mixed_folder
    out = tmp_path / "out"
    code = main(["run", str(vgg_path), str(folder), "-o", str(out), "-q", "--group-size", "3", "--max-pixels", "20000000"])
    assert code == 1
    assert "Traceback" not in capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "complete"
    failed = {Path(f["file"]).name: f["reason"] for f in report["failures"]}
    assert set(failed) == set(reasons)
    for name, reason in failed.items():
        assert "\n" not in reason
        assert re.search(reasons[name], reason, re.I), (name, reason)
    done = {Path(im["file"]).name: im for im in report["images"]}
    assert set(done) == good
    for name, im in done.items():
        for kind in ("map", "overlay"):
            pic = cv2.imread(str(out / im["outputs"][kind]), cv2.IMREAD_UNCHANGED)
            assert pic is not None and pic.shape[:2] == tuple(im["size"]), (name, kind)
    assert done["rotated.jpg"]["size"] == [40, 30]  # upright: EXIF orientation 6 turns 30x40 to 40x30
    assert done["single_pixel.png"]["size"] == [1, 1]
    with np.load(out / "pfv.npz") as z:
        assert z["rgb"].shape[0] == len(good) and np.isfinite(z["rgb"]).all()


def test_pixel_limit_from_the_command_line(mixed_folder, vgg_path, tmp_path):
    folder, _, _ = mixed_folder
    out = tmp_path / "out"
    code = main(["run", str(vgg_path), str(folder / "plain.jpg"), str(folder / "single_pixel.png"), "-o", str(out), "-q", "--max-pixels", "1199"])
    assert code == 1
    report = json.loads((out / "report.json").read_text())
    assert [Path(f["file"]).name for f in report["failures"]] == ["plain.jpg"]
    assert "too large" in report["failures"][0]["reason"]
    assert [Path(im["file"]).name for im in report["images"]] == ["single_pixel.png"]


def test_run_with_only_good_files_exits_0(mixed_folder, vgg_path, tmp_path):
    folder, good, _ = mixed_folder
    out = tmp_path / "out"
    assert main(["run", str(vgg_path), *(str(folder / g) for g in sorted(good)), "-o", str(out), "-q"]) == 0
    assert json.loads((out / "report.json").read_text())["failures"] == []

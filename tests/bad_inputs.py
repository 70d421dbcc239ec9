"""Builders of hostile inputs for the robustness tests: damaged and unusual image files,
broken or dangerous ONNX models, and a kernel-level witness of file opens.

Everything is made here from scratch (OpenCV, hand-written bytes, and Pillow for the two
formats OpenCV cannot write: CMYK JPEG and animated GIF), never read from elsewhere.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import os
import struct
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import graphs

# --------------------------------------------------------------------------- images


def pattern_rgb(h: int = 30, w: int = 40, seed: int = 0) -> np.ndarray:
    """An (h, w, 3) uint8 RGB picture with distinct corners, so flips and turns are visible."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) * 3 % 256], axis=-1)
    img = img + rng.integers(0, 20, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def png_bytes(bgr_or_gray: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", bgr_or_gray)
    assert ok
    return buf.tobytes()


def jpeg_bytes(bgr: np.ndarray, quality: int = 95) -> bytes:
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def _exif_app1(orientation: int) -> bytes:
    """An APP1 Exif segment holding only the Orientation tag (0x0112), little-endian TIFF."""
    tiff = b"II*\x00" + struct.pack("<I", 8)  # header, first IFD at offset 8
    tiff += struct.pack("<H", 1)  # one entry
    tiff += struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)  # SHORT, count 1, value padded
    tiff += struct.pack("<I", 0)  # no next IFD
    body = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body


def exif_jpeg(rgb: np.ndarray, orientation: int) -> bytes:
    """A JPEG of ``rgb`` carrying an EXIF orientation tag (inserted right after SOI)."""
    data = jpeg_bytes(np.ascontiguousarray(rgb[:, :, ::-1]))
    return data[:2] + _exif_app1(orientation) + data[2:]


def upright(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """How a viewer shows a picture stored as ``rgb`` with EXIF ``orientation`` (TIFF 6.0 / Exif 2.3)."""
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1, :],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, k=-1),  # 90 degrees clockwise
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # transverse: mirror along the other diagonal
        8: lambda a: np.rot90(a, k=1),  # 90 degrees counter-clockwise
    }
    return np.ascontiguousarray(ops[orientation](rgb))


def cmyk_jpeg(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").convert("CMYK").save(buf, "JPEG", quality=95)
    return buf.getvalue()


def animated_gif(frames_rgb: list[np.ndarray]) -> bytes:
    from PIL import Image

    imgs = [Image.fromarray(f, "RGB") for f in frames_rgb]
    buf = io.BytesIO()
    imgs[0].save(buf, "GIF", save_all=True, append_images=imgs[1:], duration=100, loop=0)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int, height: int, rows: int = 64) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` gray pixels; the data holds ``rows``
    rows of zeros (a decoder that trusts the header allocates the whole image)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    raw = (b"\x00" + b"\x00" * width) * min(rows, height)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(raw, 9)) + _png_chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) is rewritten to claim ``width`` x ``height``."""
    data = bytearray(jpeg_bytes(np.zeros((16, 16, 3), np.uint8)))
    pos = data.find(b"\xff\xc0")
    assert pos > 0
    data[pos + 5 : pos + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_claiming(width: int, height: int) -> bytes:
    """A GIF header claiming a huge logical screen, with nothing after it that fits."""
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00" + b";"


def bad_image_files(folder: Path) -> dict[str, tuple[Path, str | None]]:
    """Write every damaged image case into ``folder``: name -> (path, reason pattern).

    The pattern (a regex, case-insensitive) is what the one-line failure reason must say;
    None for files that must be read.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rgb = pattern_rgb()
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    jpg, png = jpeg_bytes(bgr), png_bytes(bgr)
    cases: dict[str, tuple[bytes, str | None]] = {
        "zero_bytes.jpg": (b"", r"empty|0 bytes"),
        "truncated.jpg": (jpg[: len(jpg) // 3], r"corrupt|truncated"),
        "truncated.png": (png[: len(png) // 2], r"corrupt|truncated"),
        "header_only.png": (png[:8], r"corrupt|truncated"),
        "garbage_after_signature.png": (png[:8] + os.urandom(200), r"corrupt|truncated"),
        "text.png": (b"this is not a picture\n", r"not an image"),
        "html.jpg": (b"<html><body>404 Not Found</body></html>\n", r"not an image"),
        "bomb.png": (png_bomb(40_000, 40_000), r"too large|pixels"),
        "bomb.jpg": (jpeg_claiming(60_000, 60_000), r"too large|pixels"),
        "bomb.gif": (gif_claiming(65_000, 65_000), r"too large|pixels"),
    }
    out = {}
    for name, (data, reason) in cases.items():
        (folder / name).write_bytes(data)
        out[name] = (folder / name, reason)
    return out


# --------------------------------------------------------------------------- models


def _graph_model(nodes, inputs, outputs, inits=(), opset: int = 17) -> onnx.ModelProto:
    g = helper.make_graph(list(nodes), "g", list(inputs), list(outputs), list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="pfv-onnx-tests")
    m.ir_version = 8
    return m


def token_model() -> onnx.ModelProto:
    """A valid ONNX model whose only input is a batch of int64 token ids: nothing image-like."""
    node = helper.make_node("Cast", ["ids"], ["f"], to=TensorProto.FLOAT)
    return _graph_model([node], [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 16])],
                        [helper.make_tensor_value_info("f", TensorProto.FLOAT, ["N", 16])])  # fmt: skip


def huge_tensor_model() -> onnx.ModelProto:
    """A 4-D image model with a side branch ConstantOfShape [65536, 65536, 64] (1 TiB of floats)."""
    m = onnx.ModelProto()
    m.CopyFrom(graphs.vgg().model)
    m.graph.initializer.append(numpy_helper.from_array(np.array([65536, 65536, 64], np.int64), "bomb_shape"))
    one = numpy_helper.from_array(np.array([1.0], np.float32))
    m.graph.node.extend(
        [
            helper.make_node("ConstantOfShape", ["bomb_shape"], ["bomb"], value=one),
            helper.make_node("ReduceSum", ["bomb"], ["bomb_sum"], keepdims=0),
        ]
    )
    m.graph.output.append(helper.make_tensor_value_info("bomb_sum", TensorProto.FLOAT, []))
    return m


def with_custom_domain(register: bool) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(graphs.vgg().model)
    m.graph.node[0].domain = "com.example.secret_ops"
    if register:
        m.opset_import.append(helper.make_opsetid("com.example.secret_ops", 1))
    return m


def with_opset(version: int) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(graphs.vgg().model)
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = version
    return m


def save_with_external_data(model: onnx.ModelProto, folder: Path, name: str = "model.onnx", location: str = "weights.bin") -> Path:
    """Save ``model`` in ``folder`` with every initializer in one external file ``location``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location, size_threshold=0)
    return path


def relocate_external_data(path: Path, location: str) -> None:
    """Rewrite every external-data location of the model file at ``path`` (data not moved)."""
    m = onnx.load(str(path), load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    path.write_bytes(m.SerializeToString())


def bad_model_files(folder: Path) -> dict[str, tuple[Path, str, list[str]]]:
    """Every bad-model case: name -> (model path, message pattern, extra CLI arguments)."""
    folder.mkdir(parents=True, exist_ok=True)
    vgg_bytes = graphs.vgg().model.SerializeToString()
    out: dict[str, tuple[Path, str, list[str]]] = {}

    def put(name: str, data: bytes | onnx.ModelProto, pattern: str, extra: list[str] | None = None) -> None:
        p = folder / f"{name}.onnx"
        p.write_bytes(data if isinstance(data, bytes) else data.SerializeToString())
        out[name] = (p, pattern, extra or [])

    out["missing_file"] = (folder / "no_such_model.onnx", r"not found|does not exist", [])
    (folder / "a_folder.onnx").mkdir(exist_ok=True)
    out["a_folder"] = (folder / "a_folder.onnx", r"folder", [])
    put("random_bytes", np.random.default_rng(5).bytes(4096), r"not a readable ONNX model|holds no ONNX graph")
    put("truncated_protobuf", vgg_bytes[: len(vgg_bytes) // 2], r"not a readable ONNX model")
    put("truncated_tail", vgg_bytes[:-5], r"not a readable ONNX model")
    put("empty_file", b"", r"holds no ONNX graph|not a readable")
    put("no_image_input", token_model(), r"not an image batch")
    put("several_inputs", graphs.two_inputs().model, r"several inputs .*--input-name")
    put("mlp", graphs.mlp().model, r"not an image batch")
    put("flatten_mlp", graphs.flatten_mlp().model, r"no spatial feature maps")
    put("custom_domain", with_custom_domain(register=True), r"custom operators of domain 'com\.example\.secret_ops'")
    put("custom_domain_unregistered", with_custom_domain(register=False), r"custom operators of domain 'com\.example\.secret_ops'")
    put("opset_too_new", with_opset(99), r"opset 99 of .*upgrade (onnx and )?onnxruntime")
    put("huge_tensor", huge_tensor_model(), r"'bomb' would need 1024\.0 GiB")
    damaged = bytearray(vgg_bytes)
    name = graphs.vgg().model.graph.node[3].output[0].encode()
    damaged[damaged.find(name) + 2] = 0xC4  # not valid UTF-8 any more
    put("damaged_text", bytes(damaged), r"not valid UTF-8 text")
    ext = save_with_external_data(graphs.vgg().model, folder / "ext_missing")
    (ext.parent / "weights.bin").unlink()
    out["external_data_missing"] = (ext, r"external data file 'weights\.bin' .* missing", [])
    return out


# --------------------------------------------------------------------------- a witness of file opens


class OpenWatch:
    """Records every open of the watched files by any process, at the kernel (Linux inotify).

    inotify reports IN_OPEN and IN_ACCESS on the watched inode whoever opens it: Python,
    onnx's C++ loader or onnxruntime, and through any path or symbolic link, while a
    ``stat``/``realpath`` (which only look at the file) reports nothing. So "no event"
    means the file was never opened or read.
    """

    IN_ACCESS = 0x001
    IN_OPEN = 0x020
    IN_NONBLOCK = 0o4000

    def __init__(self, paths: list[Path]) -> None:
        if not sys.platform.startswith("linux"):
            raise OSError("inotify needs Linux")
        self._libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self.fd = self._libc.inotify_init1(self.IN_NONBLOCK)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.names: dict[int, str] = {}
        for p in paths:
            wd = self._libc.inotify_add_watch(self.fd, os.fsencode(str(p)), self.IN_OPEN | self.IN_ACCESS)
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch failed for {p}")
            self.names[wd] = str(p)
        self.events()  # start clean

    def events(self) -> list[tuple[str, str]]:
        """(watched path, "open" or "access") for everything since the last call."""
        found = []
        while True:
            try:
                buf = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return found
            i = 0
            while i + 16 <= len(buf):
                wd, mask, _cookie, size = struct.unpack_from("iIII", buf, i)
                kind = "open" if mask & self.IN_OPEN else "access"
                found.append((self.names.get(wd, "?"), kind))
                i += 16 + size

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> OpenWatch:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

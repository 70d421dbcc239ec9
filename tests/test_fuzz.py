"""Bounded fuzzing: damaged image bytes and mutated ONNX graphs must end in a clean
:class:`~pfv_onnx.errors.PfvError` or a result, never another exception, a crash or a hang.

Every example runs in a long-lived worker process (restarted after a crash), with a time
limit and a memory limit, so a segfault or runaway allocation in OpenCV, onnx or
onnxruntime shows up as a test failure instead of taking the test run down. Examples are
derived from a fixed seed (``derandomize``) so CI sees the same ones on every run.
"""

from __future__ import annotations

import os
import pickle
import select
import struct
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bad_inputs
import graphs

IMAGE_EXAMPLES = 250
MODEL_EXAMPLES = 80
TIMEOUT_S = 60.0  # per example; far above what one takes

_WORKER = r"""
import os, pickle, struct, sys, tempfile, traceback, warnings
proto = os.fdopen(os.dup(1), "wb")  # replies go here; anything the libraries print goes to stderr
os.dup2(2, 1)
try:
    import resource
    limit = 6 << 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
except (ImportError, ValueError, OSError):
    pass
warnings.simplefilter("ignore")
import numpy as np
from pfv_onnx import PFV
from pfv_onnx.errors import PfvError
from pfv_onnx.inputs import decode_bytes
from pfv_onnx.feature_maps import Layout

folder = tempfile.mkdtemp(prefix="pfv-fuzz-")
stdin = sys.stdin.buffer

def reply(obj):
    data = pickle.dumps(obj)
    proto.write(struct.pack("<I", len(data)) + data)
    proto.flush()

def image(data):
    d = decode_bytes(data, max_pixels=1 << 20)
    assert d.bgr.dtype == np.uint8 and d.bgr.ndim == 3 and d.bgr.shape[2] == 3, d.bgr.shape
    return list(d.bgr.shape)

def model(data):
    path = os.path.join(folder, "m.onnx")
    with open(path, "wb") as f:
        f.write(data)
    pfv = PFV(path, provider="cpu", max_tensor_bytes=64 << 20)
    h, w = pfv.default_size
    c = pfv.input_channels or 3
    n = pfv.fixed_batch or 2
    shape = (n, c, h, w) if pfv.input_layout is Layout.NCHW else (n, h, w, c)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    res = pfv.explain(x)
    assert np.isfinite(res.rgb).all() and res.rgb.min() >= 0 and res.rgb.max() <= 1
    return list(res.rgb.shape)

while True:
    head = stdin.read(4)
    if len(head) < 4:
        break
    (size,) = struct.unpack("<I", head)
    kind, payload = pickle.loads(stdin.read(size))
    if kind == "abort":  # the harness's own control: a crash
        os.abort()
    if kind == "sleep":  # ... and a hang
        import time
        time.sleep(payload)
    try:
        reply(("ok", image(payload) if kind == "image" else model(payload)))
    except PfvError as exc:
        reply(("clean", f"{type(exc).__name__}: {exc}"))
    except BaseException:
        reply(("bug", traceback.format_exc()))
"""


class Worker:
    """One worker process; ``ask`` returns (outcome, detail): ok, clean, bug, crash or hang."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.asked = 0
        self.crashes: list[str] = []

    def _stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            for pipe in (self.proc.stdin, self.proc.stdout):
                try:
                    pipe.close()
                except OSError:
                    pass
            self.proc = None

    def _start(self) -> subprocess.Popen:
        if self.proc is not None and self.proc.poll() is not None:
            self._stop()
        if self.proc is None:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
        return self.proc

    def _read(self, proc: subprocess.Popen, n: int, deadline: float) -> bytes | None:
        buf = b""
        fd = proc.stdout.fileno()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                return b"" if not buf else buf
            buf += chunk
        return buf

    def ask(self, kind: str, payload, timeout: float = TIMEOUT_S) -> tuple[str, str]:
        proc = self._start()
        self.asked += 1
        data = pickle.dumps((kind, payload))
        try:
            proc.stdin.write(struct.pack("<I", len(data)) + data)
            proc.stdin.flush()
        except BrokenPipeError:
            pass
        deadline = time.monotonic() + timeout
        head = self._read(proc, 4, deadline)
        if head is None:
            self._stop()
            return "hang", f"no answer within {timeout} s"
        if len(head) < 4:
            code = proc.wait()
            self._stop()
            self.crashes.append(f"exit status {code}")
            return "crash", f"worker died with exit status {code}"
        (size,) = struct.unpack("<I", head)
        body = self._read(proc, size, deadline)
        if body is None or len(body) < size:
            self._stop()
            return "crash", "worker stopped mid-answer"
        return pickle.loads(body)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        self._stop()


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


# --------------------------------------------------------------------------- images


def _seed_images() -> list[bytes]:
    import cv2

    rgb = bad_inputs.pattern_rgb(12, 16)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    seeds = [
        bad_inputs.png_bytes(bgr),
        bad_inputs.png_bytes(rgb[:, :, 0]),
        bad_inputs.png_bytes(np.dstack([bgr, rgb[:, :, 1]])),
        bad_inputs.png_bytes(bgr.astype(np.uint16) * 257),
        bad_inputs.jpeg_bytes(bgr),
        bad_inputs.exif_jpeg(rgb, 6),
        cv2.imencode(".bmp", bgr)[1].tobytes(),
        cv2.imencode(".tiff", bgr)[1].tobytes(),
        cv2.imencode(".webp", bgr)[1].tobytes(),
        cv2.imencode(".ppm", bgr)[1].tobytes(),
        bad_inputs.png_bomb(5000, 5000, rows=2),
    ]
    try:
        seeds += [bad_inputs.animated_gif([rgb, 255 - rgb]), bad_inputs.cmyk_jpeg(rgb)]
    except ImportError:
        pass
    return seeds


SEED_IMAGES = _seed_images()

_edit = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 16), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 1 << 16)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("repeat"), st.integers(0, 1 << 16), st.integers(1, 512)),
    st.tuples(st.just("set_u32"), st.integers(0, 1 << 16), st.sampled_from([0, 1, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF])),
)


def _apply(data: bytes, edits) -> bytes:
    b = bytearray(data)
    for e in edits:
        if not b:
            break
        pos = e[1] % len(b)
        if e[0] == "flip":
            b[pos] ^= e[2]
        elif e[0] == "cut":
            del b[pos:]
        elif e[0] == "insert":
            b[pos:pos] = e[2]
        elif e[0] == "repeat":
            b[pos:pos] = b[pos : pos + e[2]]
        else:
            b[pos : pos + 4] = struct.pack(">I", e[2])
    return bytes(b)


@settings(max_examples=IMAGE_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
@given(seed=st.sampled_from(range(len(SEED_IMAGES))), edits=st.lists(_edit, min_size=1, max_size=4))
def test_damaged_images_end_cleanly(worker, seed, edits):
    outcome, detail = worker.ask("image", _apply(SEED_IMAGES[seed], edits))
    assert outcome in ("ok", "clean"), f"{outcome}: {detail}"


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
@given(head=st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"II*\x00", b"RIFF\x00\x00\x00\x00WEBP", b"P6\n", b""]),
       body=st.binary(max_size=300))  # fmt: skip
def test_random_bytes_behind_an_image_signature(worker, head, body):
    outcome, detail = worker.ask("image", head + body)
    assert outcome in ("ok", "clean"), f"{outcome}: {detail}"


# --------------------------------------------------------------------------- graphs

BASES = {name: graphs.case(name).model for name in sorted(graphs.CASE_FACTORIES)}  # every test graph the engine handles
OP_TYPES = ["Relu", "Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "Flatten", "Add", "Mul", "Transpose",
            "Reshape", "Identity", "Sigmoid", "Softmax", "Concat", "Gemm", "BatchNormalization", "NotAnOperator"]  # fmt: skip
INT_VALUES = [-(1 << 31), -7, -1, 0, 1, 2, 3, 5, 1 << 16, 1 << 40]

_mutation = st.one_of(
    st.tuples(st.just("op_type"), st.integers(0, 999), st.sampled_from(OP_TYPES)),
    st.tuples(st.just("attr"), st.integers(0, 999), st.integers(0, 9), st.sampled_from(INT_VALUES)),
    st.tuples(st.just("drop_node"), st.integers(0, 999)),
    st.tuples(st.just("rewire"), st.integers(0, 999), st.integers(0, 9), st.integers(0, 999)),
    st.tuples(st.just("init_dims"), st.integers(0, 999), st.lists(st.sampled_from([0, 1, 2, 3, 8, 1 << 20]), max_size=5)),
    st.tuples(st.just("input_dim"), st.integers(0, 5), st.sampled_from([None, 0, 1, 2, 3, 4, 7, 65535, "N", ""])),
    st.tuples(st.just("input_type"), st.sampled_from([1, 2, 6, 7, 9, 10, 11, 16])),
    st.tuples(st.just("opset"), st.integers(1, 30)),
    st.tuples(st.just("expose"), st.integers(0, 999)),
    st.tuples(st.just("output_type"), st.sampled_from([0, 1, 7, 8])),
)


def _mutate(model: onnx.ModelProto, mutations) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    tensors = [o for n in g.node for o in n.output] + [i.name for i in g.input] + [t.name for t in g.initializer]
    for mu in mutations:
        kind = mu[0]
        if kind in ("op_type", "attr", "drop_node", "rewire", "expose") and not len(g.node):
            continue
        if kind == "op_type":
            g.node[mu[1] % len(g.node)].op_type = mu[2]
        elif kind == "attr":
            node = g.node[mu[1] % len(g.node)]
            if node.attribute:
                a = node.attribute[mu[2] % len(node.attribute)]
                if a.type == onnx.AttributeProto.INT:
                    a.i = max(min(mu[3], (1 << 62)), -(1 << 62))
                elif a.type == onnx.AttributeProto.INTS and len(a.ints):
                    a.ints[mu[2] % len(a.ints)] = max(min(mu[3], (1 << 62)), -(1 << 62))
        elif kind == "drop_node":
            del g.node[mu[1] % len(g.node)]
        elif kind == "rewire":
            node = g.node[mu[1] % len(g.node)]
            if node.input:
                node.input[mu[2] % len(node.input)] = tensors[mu[3] % len(tensors)]
        elif kind == "init_dims" and len(g.initializer):
            t = g.initializer[mu[1] % len(g.initializer)]
            del t.dims[:]
            t.dims.extend(mu[2])
        elif kind == "input_dim":
            dims = g.input[0].type.tensor_type.shape.dim
            if len(dims):
                d = dims[mu[1] % len(dims)]
                d.Clear()
                if isinstance(mu[2], str):
                    d.dim_param = mu[2]
                elif mu[2] is not None:
                    d.dim_value = mu[2]
        elif kind == "input_type":
            g.input[0].type.tensor_type.elem_type = mu[1]
        elif kind == "opset":
            m.opset_import[0].version = mu[1]
        elif kind == "expose":
            g.output.append(onnx.ValueInfoProto(name=tensors[mu[1] % len(tensors)]))
        elif kind == "output_type" and len(g.output):
            g.output[0].type.tensor_type.elem_type = mu[1]
    return m


@settings(max_examples=MODEL_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
@given(base=st.sampled_from(sorted(BASES)), mutations=st.lists(_mutation, min_size=1, max_size=3))
def test_mutated_graphs_end_cleanly(worker, base, mutations):
    data = _mutate(BASES[base], mutations).SerializeToString()
    outcome, detail = worker.ask("model", data)
    assert outcome in ("ok", "clean"), f"{outcome} for {base} {mutations}: {detail}"


@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
@given(base=st.sampled_from(sorted(BASES)), edits=st.lists(_edit, min_size=1, max_size=3))
def test_damaged_model_bytes_end_cleanly(worker, base, edits):
    outcome, detail = worker.ask("model", _apply(BASES[base].SerializeToString(), edits))
    assert outcome in ("ok", "clean"), f"{outcome} for {base} {edits}: {detail}"


def test_the_worker_reports_crashes_and_hangs():
    """Control: the harness itself tells a crash and a hang from a clean answer, and goes on."""
    w = Worker()
    try:
        assert w.ask("image", b"")[0] == "clean"
        assert w.ask("abort", b"")[0] == "crash"
        assert w.ask("sleep", 30, timeout=2.0)[0] == "hang"
        assert w.ask("image", bad_inputs.png_bytes(np.zeros((2, 2, 3), np.uint8)))[0] == "ok"  # restarted
        assert len(w.crashes) == 1
    finally:
        w.close()

"""onnxruntime sessions: provider choice, session options in one place, and running a batch."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .errors import DependencyError, ModelError

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def _ort():
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - a broken install
        raise DependencyError("onnxruntime is not installed; run `pip install onnxruntime` (or onnxruntime-gpu)") from exc
    return ort


def resolve_provider(provider: str) -> list[str]:
    """Execution providers to request for ``auto|cpu|cuda``."""
    if provider not in ("auto", "cpu", "cuda"):
        raise ModelError(f"unknown provider {provider!r}; choose auto, cpu or cuda")
    ort = _ort()
    available = ort.get_available_providers()
    if provider == "cpu":
        return [CPU]
    if CUDA not in available:
        if provider == "cuda":
            from .runtime_check import check_onnxruntime_install

            check_onnxruntime_install()  # two builds sharing one module: say how to repair that first
            raise DependencyError(
                "the CUDA execution provider is not available in this onnxruntime build; "
                "install onnxruntime-gpu (and CUDA 12 libraries) or use --provider cpu"
            )
        return [CPU]
    return [CUDA, CPU]


def session_options(external_data_dir: Path | None = None, threads: int | None = None, *, arena: bool = True, spinning: bool = True):
    ort = _ort()
    so = ort.SessionOptions()
    # ENABLE_ALL: NCHWc layouts on x86, much faster than EXTENDED (docs/PERFORMANCE.md, "Session options").
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Without the memory pattern (one block pre-planned per input shape) a forward pass peaks
    # lower at the same speed (docs/PERFORMANCE.md, "Session options").
    so.enable_mem_pattern = False
    so.log_severity_level = 4  # errors come back as exceptions (one line each); ORT would print them again
    if threads:
        so.intra_op_num_threads = threads
    if not arena:
        so.enable_cpu_mem_arena = False
    # Spinning worker threads (onnxruntime's default) make back-to-back forward passes faster;
    # where other threads share the cores (the command line decodes and draws beside the
    # passes) they steal them, and sleeping threads are faster (docs/PERFORMANCE.md, "Session options").
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    else:
        # ...but only within a pass: once it returns they stop, so the PFV math that follows
        # gets the cores (after a pass they would spin on for a while; docs/PERFORMANCE.md).
        so.add_session_config_entry("session.force_spinning_stop", "1")
    if external_data_dir is not None:
        # A model passed as bytes would otherwise resolve external data against the working directory.
        so.add_session_config_entry("session.model_external_initializers_file_folder_path", str(external_data_dir))
    return so


@dataclass
class Session:
    """An onnxruntime session and the provider it really runs on."""

    session: Any
    provider: str  # "cpu" or "cuda"
    output_names: list[str]
    input_name: str
    keepalive: list[Any] = field(default_factory=list)

    def run(self, batch: np.ndarray, device_outputs: set[str] | None = None) -> dict[str, Any]:
        """Run one batch. Outputs in ``device_outputs`` stay on the GPU as CuPy arrays when on CUDA."""
        try:
            if self.provider == "cuda" and device_outputs:
                return self._run_bound(batch, device_outputs)
            values = self.session.run(self.output_names, {self.input_name: batch})
        except Exception as exc:
            raise ModelError(f"onnxruntime failed to run the model: {_first_line(exc)}") from exc
        return dict(zip(self.output_names, values))

    def _run_bound(self, batch: np.ndarray, device_outputs: set[str]) -> dict[str, Any]:
        from .xp import from_dlpack

        io = self.session.io_binding()
        io.bind_cpu_input(self.input_name, np.ascontiguousarray(batch))
        for name in self.output_names:
            io.bind_output(name, "cuda" if name in device_outputs else "cpu")
        self.session.run_with_iobinding(io)
        values = io.get_outputs()
        result: dict[str, Any] = {}
        for name, value in zip(self.output_names, values):
            if name in device_outputs:
                result[name] = from_dlpack(value)
            else:
                result[name] = value.numpy()
        return result


def _first_line(exc: BaseException) -> str:
    import re

    raw = str(exc)
    newer = re.search(r"Opset (\d+) is under development.*?support for domain (\S+) is till opset (\d+)", raw, re.S)
    if newer:  # a model stamped with an opset this onnxruntime does not know
        return (
            f"the model uses opset {newer[1]} of domain {newer[2]}, newer than this onnxruntime supports "
            f"(up to opset {newer[3]}); upgrade onnxruntime or export the model with opset {newer[3]} or lower"
        )
    # onnxruntime puts its C++ source location and function signature before the reason
    raw = re.sub(r"/onnxruntime_src/\S+:\d+ [^()]*\([^()]*\)( const)?\s*", "", raw)
    text = raw.strip().splitlines()
    return text[0][:400] if text else type(exc).__name__


def create_session(
    model: onnx.ModelProto | bytes | str | os.PathLike,
    provider: str = "auto",
    *,
    external_data_dir: Path | None = None,
    output_names: list[str] | None = None,
    input_name: str | None = None,
    threads: int | None = None,
    arena: bool = True,
    spinning: bool = True,
) -> Session:
    """A session on ``provider``. ``arena=False``: no CPU memory arena, so the memory of a run
    is given back as its tensors die (slower runs; for a session that runs once).
    ``spinning=False``: idle worker threads sleep instead of spinning (see session_options)."""
    ort = _ort()
    providers = resolve_provider(provider)
    in_memory = isinstance(model, (onnx.ModelProto, bytes))
    if isinstance(model, onnx.ModelProto):
        source: Any = model.SerializeToString()
    elif isinstance(model, bytes):
        source = model
    else:
        source = str(model)
    so = session_options(external_data_dir if in_memory else None, threads, arena=arena, spinning=spinning)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sess = ort.InferenceSession(source, so, providers=providers)
    except Exception as exc:
        msg = _first_line(exc)
        if ("opset" in msg.lower() or "Opset" in msg) and "upgrade onnxruntime" not in msg:
            raise ModelError(f"onnxruntime cannot load the model: {msg}; upgrade onnxruntime or export with a lower opset") from exc
        raise ModelError(f"onnxruntime cannot load the model: {msg}") from exc
    active = "cuda" if CUDA in sess.get_providers() else "cpu"
    if provider == "cuda" and active != "cuda":
        raise DependencyError("the CUDA execution provider was requested but onnxruntime fell back to the CPU; check the CUDA installation")
    names = output_names or [o.name for o in sess.get_outputs()]
    return Session(sess, active, names, input_name or sess.get_inputs()[0].name)


def release_freed_memory() -> None:
    """Give memory that was freed back to the operating system (glibc only; elsewhere nothing).

    Building a session leaves the transient copies of a model (the rewritten protobuf, its
    serialised bytes, onnxruntime's parse) freed but kept by the C allocator, where every later
    forward pass would add to them (docs/PERFORMANCE.md, "Session options"). ``malloc_trim``
    returns them.
    """
    from ._libc import function

    trim = function("malloc_trim")
    if trim is not None:
        trim(0)

"""Load ONNX models safely, find the image input, and infer shapes at a pinned input size."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto

from .errors import ModelError

DEFAULT_MAX_TENSOR_BYTES = 2 * 1024**3  # any single activation above this at batch 1 is refused

FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
QUANT_TYPES = {TensorProto.UINT8, TensorProto.INT8}


@dataclass(frozen=True)
class InputSpec:
    """The image input of a model: its name, element type and dims as written in the graph.

    Each dim is an int (static), a str (symbolic) or None (unknown).
    """

    name: str
    elem_type: int
    dims: tuple[int | str | None, ...]


def _dims_of(value_info: onnx.ValueInfoProto) -> tuple[int | str | None, ...] | None:
    t = value_info.type
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    dims: list[int | str | None] = []
    for d in t.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return tuple(dims)


def _graph_tensors(graph: onnx.GraphProto):
    """Every TensorProto a graph holds: initializers, sparse initializers, attribute tensors, subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto):
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        if attr.HasField("sparse_tensor"):
            yield attr.sparse_tensor.values
            yield attr.sparse_tensor.indices
        for sparse in attr.sparse_tensors:
            yield sparse.values
            yield sparse.indices
        if attr.HasField("g"):
            yield from _graph_tensors(attr.g)
        for sub in attr.graphs:
            yield from _graph_tensors(sub)


def _external_tensors(model: onnx.ModelProto):
    """Tensors whose data lives in another file, wherever they sit in the model (functions too).

    Walks more places than onnx's own helper (which skips sparse tensors), since onnxruntime
    reads external data there as well.
    """
    tensors = list(_graph_tensors(model.graph))
    for function in model.functions:
        for node in function.node:
            tensors.extend(_node_tensors(node))
    for tensor in tensors:
        if tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data) > 0:
            yield tensor


def _external_entry(tensor: TensorProto, key: str) -> str | None:
    return next((e.value for e in tensor.external_data if e.key == key), None)


def check_external_data(model: onnx.ModelProto, base_dir: Path) -> list[Path]:
    """Check that every external-data file resolves inside ``base_dir``; return the files.

    No data file is opened here: locations are checked as strings, then with realpath and
    stat, so a location that escapes the folder (``..``, an absolute path, a symbolic link
    leading out, a hard link to a file elsewhere) is refused before anything reads it.
    """
    base = Path(os.path.realpath(base_dir))
    files: list[Path] = []
    for tensor in _external_tensors(model):
        location = _external_entry(tensor, "location")
        if not location:
            raise ModelError(f"tensor {tensor.name!r} uses external data without a location; the model file is damaged")
        if "\x00" in location:
            raise ModelError(f"external data location of tensor {tensor.name!r} holds a NUL character; the model file is damaged")
        if os.path.isabs(location) or location.startswith(("/", "\\")) or ":" in location.replace("\\", "/").split("/")[0]:
            raise ModelError(
                f"external data of tensor {tensor.name!r} has an absolute path {location!r}; "
                "only files inside the model's folder are read"
            )
        parts = location.replace("\\", "/").split("/")
        if ".." in parts:
            raise ModelError(
                f"external data of tensor {tensor.name!r} points outside the model's folder ({location!r}); refusing to read it"
            )
        target = Path(os.path.realpath(base / location))
        if target != base and base not in target.parents:
            raise ModelError(
                f"external data of tensor {tensor.name!r} ({location!r}) resolves outside the model's folder "
                "through a symbolic link; refusing to read it (copy the data file next to the model)"
            )
        try:
            st = os.stat(target)
        except OSError:
            raise ModelError(
                f"external data file {location!r} of tensor {tensor.name!r} is missing; "
                f"put it next to the model in {base_dir}"
            ) from None
        if not stat.S_ISREG(st.st_mode):
            raise ModelError(f"external data {location!r} of tensor {tensor.name!r} is not a regular file; refusing to read it")
        if st.st_nlink > 1:
            raise ModelError(
                f"external data file {location!r} of tensor {tensor.name!r} has {st.st_nlink} hard links, so it may be a file "
                "from outside the model's folder; refusing to read it (replace it with a plain copy)"
            )
        _check_extent(tensor, location, st.st_size)
        files.append(target)
    return files


def _check_extent(tensor: TensorProto, location: str, file_size: int) -> None:
    """offset and length must be whole numbers that stay inside the data file."""
    values = {}
    for key in ("offset", "length"):
        text = _external_entry(tensor, key)
        if text is None:
            continue
        try:
            values[key] = int(text)
        except ValueError:
            raise ModelError(f"external data {key} {text!r} of tensor {tensor.name!r} is not a number; the model file is damaged") from None
        if values[key] < 0:
            raise ModelError(f"external data {key} {values[key]} of tensor {tensor.name!r} is negative; the model file is damaged")
    offset = values.get("offset", 0)
    if "length" in values:
        length = values["length"]
    else:  # the tensor's own size
        length = _ELEM_BYTES.get(tensor.data_type, 0)
        for d in tensor.dims:
            length *= max(int(d), 0)
    end = offset + length
    if end > file_size:
        raise ModelError(
            f"external data of tensor {tensor.name!r} asks for bytes {offset}..{end} of {location!r}, "
            f"which holds {file_size}; the data file is truncated or does not belong to this model"
        )


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an ONNX file without its external data, after checking where that data lives.

    The returned proto keeps external-data references; the runtime reads them from the model's
    folder. Raises ModelError for anything a user can fix (missing file, not ONNX, escapes).
    """
    p = Path(path)
    if not p.exists():
        raise ModelError(f"model file {str(p)!r} does not exist; give the path to an .onnx file")
    if p.is_dir():
        raise ModelError(f"{str(p)!r} is a folder; give the path to an .onnx file inside it")
    if not p.is_file():  # a FIFO or a device would block or never end
        raise ModelError(f"{str(p)!r} is not a regular file; give the path to an .onnx file")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeWarning-like errors, ValueError...
        raise ModelError(f"{str(p)!r} is not a readable ONNX model ({type(exc).__name__}); check the file is complete") from exc
    if not model.HasField("graph") or len(model.graph.node) == 0:
        raise ModelError(f"{str(p)!r} holds no ONNX graph; check the file is an exported model")
    bad_text = _undecodable_text(model)
    if bad_text is not None:
        raise ModelError(f"{str(p)!r} holds a {bad_text} that is not valid UTF-8 text; the file is damaged")
    check_external_data(model, p.parent)
    _check_opsets(model)
    return model


def _undecodable_text(message) -> str | None:
    """The name of the first text field that protobuf could not decode as UTF-8 (it then
    hands out bytes, which every later step would trip over), or None."""
    for field, value in message.ListFields():
        repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED
        values = value if repeated else (value,)
        if field.type == field.TYPE_STRING:
            if any(not isinstance(v, str) for v in values):
                return f"{message.DESCRIPTOR.name}.{field.name}"
        elif field.type == field.TYPE_MESSAGE:
            for v in values:
                found = _undecodable_text(v)
                if found is not None:
                    return found
    return None


_RUNTIME_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.training", "ai.onnx.preview.training", "com.microsoft.nchwc"}


def _check_opsets(model: onnx.ModelProto) -> None:
    """Refuse operators onnxruntime cannot run. Only the domains of nodes count: an opset
    import that no node uses (onnxruntime's quantiser writes several) is harmless."""
    newest = onnx.defs.onnx_opset_version()
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version > newest:
            raise ModelError(
                f"the model uses opset {opset.version} of ai.onnx, newer than the installed onnx knows (up to {newest}); "
                f"upgrade onnx and onnxruntime, or export the model with opset {newest} or lower"
            )
    local = {(f.domain, f.name) for f in model.functions}  # model-local functions run without a library
    for node in _all_nodes(model):
        if node.domain not in _RUNTIME_DOMAINS and (node.domain, node.op_type) not in local:
            raise ModelError(
                f"the model uses custom operators of domain {node.domain!r} ({node.op_type}), which onnxruntime cannot run "
                "without their library; export the model with standard ONNX operators"
            )


def _all_nodes(model: onnx.ModelProto):
    """Every node of the graph, its subgraphs (If, Loop, Scan bodies) and the model's functions."""
    stack = [model.graph.node, *(f.node for f in model.functions)]
    while stack:
        for node in stack.pop():
            yield node
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    stack.append(attr.g.node)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    stack.extend(g.node for g in attr.graphs)


def image_input(model: onnx.ModelProto, input_name: str | None = None) -> InputSpec:
    """The graph input that takes images: a rank-4 float tensor, or the one named."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if not inputs:
        raise ModelError("the model has no inputs to feed; it cannot take images")
    if input_name is not None:
        chosen = [i for i in inputs if i.name == input_name]
        if not chosen:
            names = ", ".join(i.name for i in inputs)
            raise ModelError(f"the model has no input named {input_name!r}; its inputs are: {names}")
        inp = chosen[0]
    elif len(inputs) > 1:
        names = ", ".join(i.name for i in inputs)
        raise ModelError(f"the model has several inputs ({names}); name the image input with --input-name / input_name=")
    else:
        inp = inputs[0]
    others = [i.name for i in inputs if i.name != inp.name]
    if others:
        raise ModelError(
            f"the model needs other inputs besides {inp.name!r} ({', '.join(others)}), which pfv-onnx cannot fill; "
            "export a model whose only input is the image"
        )
    dims = _dims_of(inp)
    elem = inp.type.tensor_type.elem_type if inp.type.HasField("tensor_type") else 0
    if dims is None or len(dims) != 4 or elem not in FLOAT_TYPES:
        shape = "unknown shape" if dims is None else f"shape {list(dims)}"
        raise ModelError(
            f"input {inp.name!r} ({shape}, type {TensorProto.DataType.Name(elem) if elem else 'unknown'}) is not an image batch; "
            "pfv-onnx needs a rank-4 float input (NCHW or NHWC)"
        )
    return InputSpec(inp.name, elem, dims)


# Initializers above this size (serialised bytes) are weights: shape inference needs only their
# dims. Smaller ones (shapes, axes, scales) keep their values, which inference may read.
_STUB_BYTES = 1 << 12


def _copy_fields(src: Any, dst: Any, skip: str) -> None:
    for fd, value in src.ListFields():
        if fd.name == skip:
            continue
        if hasattr(value, "extend"):  # a repeated field
            getattr(dst, fd.name).extend(value)
        elif hasattr(value, "CopyFrom"):  # a message
            getattr(dst, fd.name).CopyFrom(value)
        else:
            setattr(dst, fd.name, value)


def without_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the model whose large initializers keep their name, type and dims but no data.

    Enough for shape inference and graph analysis, at a fraction of the memory of a full copy.
    """
    graph = onnx.GraphProto()
    _copy_fields(model.graph, graph, skip="initializer")
    for t in model.graph.initializer:
        if t.ByteSize() > _STUB_BYTES:
            graph.initializer.add(name=t.name, data_type=t.data_type, dims=t.dims)
        else:
            graph.initializer.add().CopyFrom(t)
    light = onnx.ModelProto()
    _copy_fields(model, light, skip="graph")
    light.graph.CopyFrom(graph)
    return light


def with_pinned_input(
    model: onnx.ModelProto, spec: InputSpec, dims: tuple[int, int, int, int], *, weights: bool = False
) -> onnx.ModelProto:
    """A copy of the model whose image input has exactly ``dims`` (value_info dropped).

    Pinning before shape inference makes equal resolutions recognisable: with symbolic H/W every op
    gets a fresh symbol. Without ``weights`` the copy is :func:`without_weights`'s (to analyse, not to run).
    """
    if weights:
        pinned = onnx.ModelProto()
        pinned.CopyFrom(model)
    else:
        pinned = without_weights(model)
    del pinned.graph.value_info[:]
    for inp in pinned.graph.input:
        if inp.name == spec.name:
            shape = inp.type.tensor_type.shape
            for d, v in zip(shape.dim, dims):
                d.Clear()
                d.dim_value = int(v)
    return pinned


@dataclass(frozen=True)
class TensorInfo:
    elem_type: int
    shape: tuple[int, ...] | None  # None when unknown; every dim concrete otherwise


def infer_tensor_info(model: onnx.ModelProto) -> dict[str, TensorInfo]:
    """Shape inference; returns what is known of every value (concrete dims only)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception:
        inferred = model  # fall back to whatever the file declares; the caller probes the rest
    info: dict[str, TensorInfo] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        if not vi.type.HasField("tensor_type"):
            continue
        dims = _dims_of(vi)
        shape = None
        if dims is not None and all(isinstance(d, int) for d in dims):
            shape = tuple(int(d) for d in dims)  # type: ignore[arg-type]
        info[vi.name] = TensorInfo(vi.type.tensor_type.elem_type, shape)
    for init in model.graph.initializer:
        info[init.name] = TensorInfo(init.data_type, tuple(int(d) for d in init.dims))
    return info


_ELEM_BYTES = {
    TensorProto.FLOAT: 4, TensorProto.FLOAT16: 2, TensorProto.BFLOAT16: 2, TensorProto.DOUBLE: 8,
    TensorProto.INT64: 8, TensorProto.INT32: 4, TensorProto.INT16: 2, TensorProto.UINT16: 2,
    TensorProto.INT8: 1, TensorProto.UINT8: 1, TensorProto.BOOL: 1, TensorProto.UINT32: 4,
    TensorProto.UINT64: 8, TensorProto.COMPLEX64: 8, TensorProto.COMPLEX128: 16,
}


def check_tensor_sizes(info: dict[str, TensorInfo], max_bytes: int = DEFAULT_MAX_TENSOR_BYTES) -> None:
    """Refuse a model whose inferred tensors (at batch 1) exceed ``max_bytes`` before running it."""
    for name, ti in info.items():
        if ti.shape is None:
            continue
        n = 1
        for d in ti.shape:
            n *= d
        size = n * _ELEM_BYTES.get(ti.elem_type, 8)
        if size > max_bytes:
            raise ModelError(
                f"tensor {name!r} would need {size / 1024**3:.1f} GiB at batch 1 (shape {list(ti.shape)}), "
                f"over the limit of {max_bytes / 1024**3:.1f} GiB; refusing to run this model "
                "(raise max_tensor_bytes if it is genuine)"
            )

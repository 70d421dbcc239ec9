"""PFV for library users: model file -> surgery -> runtime -> PFV math -> result."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, ModelError, PfvError
from .feature_maps import FeatureMap, Layout

SELF_CHECK_IMAGES = 2  # images of the first chunk on which the original outputs are compared once per model


@dataclass
class ForwardPass:
    """Feature maps and original outputs of one chunk of images.

    ``decomposed``: E_L as (n, C, h, w) float32 array of the backend (NumPy or CuPy).
    ``weights``: channel sums S_l as (n, 1, H_l, W_l) float32 arrays, earliest first.
    ``outputs``: the model's original outputs, NumPy arrays, by output name.
    """

    decomposed: Any
    weights: list[Any]
    outputs: dict[str, np.ndarray]
    input_hw: tuple[int, int]

    @property
    def n(self) -> int:
        return int(self.decomposed.shape[0])


@dataclass
class PFVResult:
    """Everything PFV computed for one group of images (one decomposition)."""

    rgb: np.ndarray  # (N, H, W, k) float32 in [0, 1]; k = 3 gives RGB
    components: np.ndarray  # (N, k, h, w) float32: sign-fixed projections P, before weighting
    eigenvalues: np.ndarray  # (k,) float64: leading eigenvalues of the sample covariance of E_L
    explained_variance_ratio: np.ndarray  # (k,) float64: eigenvalues / total variance
    feature_maps: list[str]  # tensor names, earliest first; the last one is E_L
    outputs: dict[str, np.ndarray]  # the model's original outputs, unchanged
    basis: Any = None  # the principal basis used (see pca.PrincipalBasis)
    maps: list[FeatureMap] = field(default_factory=list)  # records of the tensors used


@dataclass
class InspectReport:
    """The spatial maps of a model and the automatic (or requested) choice, with reasons."""

    input_name: str
    input_layout: Layout
    input_shape: tuple[int | str | None, ...]
    size: tuple[int, int]
    candidates: list[FeatureMap]
    decomposed: FeatureMap
    weighting: list[FeatureMap]
    notes: list[str]


def _parse_layout(layout: str | Layout | None) -> Layout | None:
    if layout is None or isinstance(layout, Layout):
        return layout
    try:
        return Layout(str(layout).upper())
    except ValueError:
        raise InputError(f"unknown layout {layout!r}; use NCHW or NHWC") from None


def _probe(input_name: str, external_dir: Path):
    """Shapes of untyped tensors from one CPU run at batch 1 (when shape inference gives up)."""

    def run(pinned: Any, names: list[str], dims: tuple[int, ...]) -> dict:
        import onnx

        from .model_io import TensorInfo
        from .runtime import create_session

        probe_model = onnx.ModelProto()
        probe_model.CopyFrom(pinned)
        existing = {o.name for o in probe_model.graph.output}
        for name in names:
            if name not in existing:
                probe_model.graph.output.append(onnx.ValueInfoProto(name=name))
        elem = next(i for i in probe_model.graph.input if i.name == input_name).type.tensor_type.elem_type
        np_dtype = onnx.helper.tensor_dtype_to_np_dtype(elem)
        sess = create_session(probe_model, "cpu", external_data_dir=external_dir, input_name=input_name)
        values = sess.run(np.zeros(dims, dtype=np_dtype))
        out = {}
        for name in names:
            v = values.get(name)
            if v is not None and hasattr(v, "shape"):
                out[name] = TensorInfo(onnx.helper.np_dtype_to_tensor_dtype(np.asarray(v).dtype), tuple(int(d) for d in v.shape))
        return out

    return run


class PFV:
    """Principal Feature Visualisation of one ONNX model.

    Holds the model (without its external data in memory), the analysis per input size and the
    onnxruntime session per set of tapped tensors. See docs/API.md for the contract.
    """

    def __init__(
        self,
        model: str | Path,
        *,
        provider: str = "auto",
        k: int = 3,
        hierarchical: bool = False,
        n_sigma: float = 1.0,
        layer: str | None = None,
        weight_layers: Sequence[str] | None = None,
        input_name: str | None = None,
        layout: str | Layout | None = None,
        self_check: bool = True,
        max_tensor_bytes: int | None = None,
        spinning: bool = True,
    ) -> None:
        from . import model_io, runtime, surgery

        self.model_path = Path(model)
        self._model_file = self.model_path.resolve()  # read again later, whatever the working directory then
        self._model = model_io.load_model(self.model_path)
        self.model_sha256 = model_io.file_sha256(self.model_path)
        self.metadata = {p.key: p.value for p in self._model.metadata_props}
        self._spec = model_io.image_input(self._model, input_name)
        self.input_name = self._spec.name
        self.input_layout, self.layout_reason = surgery.input_layout(self._model, self._spec, _parse_layout(layout))
        a, b = self.input_layout.spatial_axes
        dims = self._spec.dims
        self.input_size: tuple[int | None, int | None] = (
            dims[a] if isinstance(dims[a], int) else None,
            dims[b] if isinstance(dims[b], int) else None,
        )
        c = dims[self.input_layout.channel_axis]
        self.input_channels: int | None = c if isinstance(c, int) else None
        self.fixed_batch: int | None = dims[0] if isinstance(dims[0], int) else None
        self.output_names = [o.name for o in self._model.graph.output]
        self.output_shapes = {o.name: tuple(d.dim_value or d.dim_param or None for d in o.type.tensor_type.shape.dim) for o in self._model.graph.output}
        self.k, self.hierarchical, self.n_sigma = k, hierarchical, n_sigma
        self.layer, self.weight_layers = layer, (list(weight_layers) if weight_layers is not None else None)
        self._provider_request = provider
        runtime.resolve_provider(provider)  # fails early for a missing CUDA provider
        self._max_tensor_bytes = max_tensor_bytes or model_io.DEFAULT_MAX_TENSOR_BYTES
        self._self_check = self_check
        self._spinning = spinning
        self.self_check_result: str | None = None
        self._analyses: dict[tuple[int, int], Any] = {}
        self._sessions: dict[tuple[str, ...], Any] = {}
        # Analyse and build the session for the default size now, so model errors surface here.
        self._session_for(self.default_size)

    def __repr__(self) -> str:
        el = self.analysis(self.default_size).decomposed
        shape = "x".join(str(s) for s in (el.channels, *el.hw))
        return f"PFV({self.model_path.name!r}, provider={self.provider!r}, E_L={el.name!r} ({shape} at input {self.default_size[0]}x{self.default_size[1]}), k={self.k})"

    def explain_images(self, images: Any, **options: Any):
        """PFV of image files or arrays, decoded and preprocessed as ``pfv-onnx run`` does (the
        model's metadata first, then the defaults); see :func:`pfv_onnx.notebook.explain_images`."""
        from .notebook import explain_images

        return explain_images(self, images, **options)

    # ------------------------------------------------------------ analysis and sessions

    @property
    def default_size(self) -> tuple[int, int]:
        """The static input size; for dynamic dims the metadata's ``input_size`` ("HxW"), else 224."""
        h, w = self.input_size
        hint = _size_hint(self.metadata.get("input_size", ""))
        return (h or (hint[0] if hint else 224), w or (hint[1] if hint else 224))

    @property
    def provider(self) -> str:
        return next(iter(self._sessions.values()))[0].provider if self._sessions else self._provider_request

    def _conv_sums(self) -> bool:
        """Channel sums as 1x1 convolutions on the CPU provider only: there they fit onnxruntime's
        NCHWc layouts; CUDA convolutions may run in TF32, which would round the summed maps."""
        from . import runtime

        return runtime.CUDA not in runtime.resolve_provider(self._provider_request)

    def _loaded_model(self):
        """The model's protobuf: held while PFV is built, loaded again for a new input size or a save."""
        from . import model_io

        if self._model is None:
            model = model_io.load_model(self._model_file)
            if model_io.file_sha256(self._model_file) != self.model_sha256:
                raise ModelError(f"{self.model_path} changed since it was loaded; create a new PFV for the new model")
            self._model = model
        return self._model

    def analysis(self, size: tuple[int, int] | None = None):
        from . import surgery

        size = tuple(size or self.default_size)  # type: ignore[assignment]
        if size not in self._analyses:
            self._analyses[size] = surgery.analyse(
                self._loaded_model(),
                self._spec,
                size,  # type: ignore[arg-type]
                input_layout=self.input_layout,
                layer=self.layer,
                weight_layers=self.weight_layers,
                probe=_probe(self.input_name, self.model_path.parent),
                max_tensor_bytes=self._max_tensor_bytes,
            )
            key = tuple(fm.name for fm in self._analyses[size].chosen)
            if key in self._sessions:  # a session for these maps exists: the protobuf is not needed
                self._model = None
        return self._analyses[size]

    def feature_maps(self, size: tuple[int, int] | None = None) -> list[FeatureMap]:
        """The tensors used at input size (H, W), earliest first; the last one is E_L."""
        return self.analysis(size).chosen

    def _session_for(self, size: tuple[int, int]):
        from . import runtime, surgery

        analysis = self.analysis(size)
        key = tuple(fm.name for fm in analysis.chosen)
        if key not in self._sessions:
            rewritten, taps = surgery.rewrite(self._loaded_model(), analysis, conv_sums=self._conv_sums())
            # Only one copy of the weights at a time on the way into onnxruntime: the original
            # protobuf goes (it is loaded again if a new input size or a save needs it), then
            # the rewritten one once serialised.
            self._model = None
            data = rewritten.SerializeToString()
            del rewritten
            names = self.output_names + [t.output for t in taps]
            sess = runtime.create_session(
                data, self._provider_request, external_data_dir=self.model_path.parent, output_names=names, input_name=self.input_name,
                spinning=self._spinning,
            )
            del data
            self._sessions[key] = (sess, taps)
            runtime.release_freed_memory()
        return analysis, self._sessions[key]

    def save_surgery(self, path: str | Path, size: tuple[int, int] | None = None) -> Path:
        """Write the rewritten model (the original outputs plus the tapped maps)."""
        import onnx

        from . import surgery

        rewritten, _ = surgery.rewrite(self._loaded_model(), self.analysis(size), conv_sums=self._conv_sums())
        self._model = None  # PFV keeps its sessions, not the protobuf: read again when next needed
        out = Path(path)
        tmp = out.with_name(out.name + ".tmp")
        uses_external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in rewritten.graph.initializer)
        if uses_external:
            from onnx.external_data_helper import load_external_data_for_model

            load_external_data_for_model(rewritten, str(self.model_path.parent))
        onnx.checker.check_model(rewritten)
        onnx.save(rewritten, str(tmp))
        tmp.replace(out)
        return out

    # ------------------------------------------------------------ running

    def _prepare(self, batch: Any) -> tuple[np.ndarray, tuple[int, int]]:
        import onnx

        if not hasattr(batch, "shape") or not hasattr(batch, "dtype"):
            raise InputError("the batch must be a NumPy array of preprocessed images")
        batch = np.asarray(batch)
        if batch.ndim != 4:
            raise InputError(f"the batch must be 4-D ({self.input_layout.value}), got shape {list(batch.shape)}")
        if batch.shape[0] == 0:
            raise InputError("the batch is empty; give at least one image")
        if not np.issubdtype(batch.dtype, np.floating):
            raise InputError(f"the batch must hold floats (preprocessed images), got {batch.dtype}")
        a, b = self.input_layout.spatial_axes
        c_axis = self.input_layout.channel_axis
        if self.input_channels is not None and batch.shape[c_axis] != self.input_channels:
            raise InputError(
                f"the model takes {self.input_channels} channels in {self.input_layout.value} layout, "
                f"the batch has shape {list(batch.shape)}"
            )
        hw = (int(batch.shape[a]), int(batch.shape[b]))
        for got, want, what in ((hw[0], self.input_size[0], "height"), (hw[1], self.input_size[1], "width")):
            if want is not None and got != want:
                raise InputError(f"the model takes images of {what} {want}, the batch has {got} (shape {list(batch.shape)})")
        dtype = onnx.helper.tensor_dtype_to_np_dtype(self._spec.elem_type)
        return np.ascontiguousarray(batch, dtype=dtype), hw

    def forward(self, batch: Any) -> ForwardPass:
        """One forward pass over a chunk of images; keeps E_L and the weighting channel sums."""
        from .xp import to_host

        batch, hw = self._prepare(batch)
        analysis, (sess, taps) = self._session_for(hw)
        # On CUDA the maps stay on the GPU (CuPy) when CuPy can take them; else they come to the host.
        tap_names = {t.output for t in taps} if sess.provider == "cuda" and self._cupy_ready() else set()
        fixed = self.fixed_batch
        step = fixed if fixed else batch.shape[0]
        runs = []
        reference = None
        for start in range(0, batch.shape[0], step):
            chunk = batch[start : start + step]
            n_real = chunk.shape[0]
            if fixed and n_real < fixed:  # pad a fixed-batch model's last chunk, then drop the padding
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], fixed - n_real, axis=0)])
            check = not runs and self._self_check and self.self_check_result is None
            if check:
                # The original model runs first, on a few images, and its session is gone before
                # the rewritten one runs: the two forward passes' memory never adds up.
                probe = chunk if fixed else chunk[:SELF_CHECK_IMAGES]
                reference = self._original_outputs(probe, quiet=len(probe) < len(chunk))
            values = sess.run(chunk, device_outputs=tap_names)
            if check:
                self._self_check_on(reference, values, len(probe), chunk)
            runs.append({k: _per_image(v, chunk.shape[0], n_real) for k, v in values.items()})
        values = runs[0] if len(runs) == 1 else {k: _concat([r[k] for r in runs]) for k in runs[0]}
        by_source = {t.source: values[t.output] for t in taps}
        chosen = {fm.name: fm for fm in analysis.chosen}
        for t in taps:  # a graph whose shapes inference gets wrong must not reach the PCA
            fm = chosen[t.source]
            want = [batch.shape[0], *fm.shape[1:]]
            if t.channel_sum:
                want[fm.layout.channel_axis] = 1
            got = list(getattr(by_source[t.source], "shape", ()))
            if got != want:
                raise ModelError(
                    f"feature map {fm.name!r} comes out of onnxruntime with shape {got}, not {want} as shape inference "
                    "says; the model's shapes are inconsistent (choose another tensor with --layer)"
                )
        decomposed = self._to_nchw(by_source[analysis.decomposed.name], analysis.decomposed.layout)
        weights = [self._to_nchw(by_source[fm.name], fm.layout) for fm in analysis.weighting]
        outputs = {name: to_host(values[name]) for name in self.output_names}
        return ForwardPass(decomposed=decomposed, weights=weights, outputs=outputs, input_hw=hw)

    def _cupy_ready(self) -> bool:
        if not hasattr(self, "_cupy_ok"):
            from .xp import cuda_available

            self._cupy_ok = cuda_available()
        return self._cupy_ok

    @staticmethod
    def _to_nchw(a: Any, layout: Layout) -> Any:
        from .xp import array_module

        xp = array_module(a)
        if a.dtype != xp.float32:
            a = a.astype(xp.float32)
        return a if layout is Layout.NCHW else a.transpose(0, 3, 1, 2)

    def _original_outputs(self, chunk: np.ndarray, quiet: bool = False) -> dict[str, Any] | None:
        """The unmodified model's outputs for one chunk, from a session made for it alone
        (None, when ``quiet``, if the model does not run on this chunk)."""
        from . import runtime

        try:  # the session is dropped as this returns, before the rewritten model runs
            plain = runtime.create_session(self.model_path, "cpu", input_name=self.input_name, output_names=self.output_names, arena=False)
            return plain.run(chunk)
        except PfvError:
            if quiet:
                return None
            raise

    def _self_check_on(self, reference: dict[str, Any] | None, values: dict[str, Any], n_ref: int, chunk: np.ndarray) -> None:
        """The self-check of the first chunk. The first images settle it when every output
        pairs up and agrees; otherwise (an output without a batch axis, one that mixes the
        images, a model that did not run on two images) the whole chunk decides."""
        names = self.output_names
        if reference is not None:
            ref, got = _same_images(reference, values, n_ref, len(chunk), names)
            if len(ref) == len(names) and self._check_outputs(ref, got, warn=n_ref == len(chunk)):
                return
        if n_ref < len(chunk):
            self._check_outputs(*_same_images(self._original_outputs(chunk), values, len(chunk), len(chunk), names))  # type: ignore[arg-type]

    def _check_outputs(self, ref: dict[str, Any], tapped: dict[str, Any], warn: bool = True) -> bool:
        """Once per model: the original outputs must not change when the maps are tapped.
        True when they agree; a disagreement is recorded and warned of only with ``warn``."""
        import warnings

        worst = 0.0
        for name in ref:  # host arrays, paired by _same_images
            a, b = np.asarray(ref[name]), np.asarray(tapped[name])
            if a.shape != b.shape:
                worst = np.inf
                break
            if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):  # strings: equal or not
                worst = worst if np.array_equal(a, b) else np.inf
                continue
            a, b = a.astype(np.float64), b.astype(np.float64)
            same = (a == b) | (np.isnan(a) & np.isnan(b))  # equal infinities and NaNs are no change
            finite = np.abs(a[np.isfinite(a)])
            scale = max(float(finite.max()) if finite.size else 0.0, 1e-6)
            with np.errstate(invalid="ignore", over="ignore"):
                diff = np.where(same, 0.0, np.abs(a - b))
            worst = max(worst, float(np.nan_to_num(diff, nan=np.inf).max() / scale) if a.size else 0.0)
        tolerance = 1e-3 if self.provider == "cuda" else 1e-4
        if worst > tolerance:
            if warn:
                self.self_check_result = (
                    f"the model's outputs change by up to {worst:.2e} (relative) when the feature maps are tapped; "
                    "onnxruntime may be mis-optimising the rewritten graph, so treat the maps with care"
                )
                warnings.warn(self.self_check_result, RuntimeWarning, stacklevel=4)
            return False
        self.self_check_result = f"ok (max relative difference {worst:.1e})"
        return True

    def decompose(
        self,
        passes: Sequence[ForwardPass],
        *,
        k: int | None = None,
        hierarchical: bool | None = None,
        n_sigma: float | None = None,
        basis: Any = None,
    ) -> PFVResult:
        """One PCA over the gathered chunks, then weighting and batch colour scaling."""
        from . import degenerate, float_range, pca, weighting
        from .xp import array_module, to_host

        if not passes:
            raise InputError("nothing to decompose: no forward passes were given")
        k = self.k if k is None else k
        hierarchical = self.hierarchical if hierarchical is None else hierarchical
        n_sigma = self.n_sigma if n_sigma is None else n_sigma
        hw = passes[0].input_hw
        if any(p.input_hw != hw for p in passes):
            raise InputError("all images of one decomposition must have the same input size")
        analysis = self.analysis(hw)
        xp = array_module(passes[0].decomposed)
        E = _concat([p.decomposed for p in passes])
        weights = [_concat([p.weights[i] for p in passes]) for i in range(len(passes[0].weights))]
        peaks = []
        for name, arr in [(analysis.decomposed.name, E), *((fm.name, S) for fm, S in zip(analysis.weighting, weights))]:
            peaks.append(float_range.peak(arr))  # NaN when any value is NaN; any finite size is fine (scale-free)
            if not np.isfinite(peaks[-1]):
                raise InputError(f"feature map {name!r} contains NaN or Inf values; check the preprocessing and the model")
        n, _, h, w = E.shape
        X = pca.observations(E)
        # A fitted basis (basis.FittedBasis) is checked against the model, and fixes the hierarchical peaks and colour scaling.
        fixed = basis.scaling_for(self, analysis, hierarchical) if hasattr(basis, "scaling_for") else None
        if basis is None:
            basis, P = pca.fit(X, k, peak=peaks[0])
        else:
            P = pca.project(X, basis)
        comps = pca.components(P, n, h, w)
        degenerate.check(analysis, peaks, basis, comps, fitted=fixed is not None, hierarchical=hierarchical)
        if hierarchical:
            mapped = weighting.hierarchical(comps, weights, hw, peaks=fixed.peaks if fixed else None)
        else:
            mapped = weighting.flat(comps, weights, hw)
        scale = {"mean": fixed.mean, "std": fixed.std} if fixed else {}
        own = isinstance(mapped, np.ndarray) and not np.may_share_memory(mapped, comps)  # a weighting may return comps itself
        rgb = weighting.scale_colours(mapped, n_sigma, overwrite=own, **scale).transpose(0, 2, 3, 1)
        del mapped
        outputs = {name: np.concatenate([p.outputs[name] for p in passes]) for name in passes[0].outputs}
        return PFVResult(
            rgb=np.ascontiguousarray(to_host(rgb), dtype=np.float32),
            components=np.ascontiguousarray(to_host(comps), dtype=np.float32),
            eigenvalues=np.asarray(basis.eigenvalues, dtype=np.float64),
            explained_variance_ratio=np.asarray(basis.explained_variance_ratio, dtype=np.float64),
            feature_maps=[fm.name for fm in analysis.chosen],
            outputs=outputs,
            basis=basis,
            maps=list(analysis.chosen),
        )

    def explain(
        self,
        batch: Any,
        *,
        k: int | None = None,
        hierarchical: bool | None = None,
        n_sigma: float | None = None,
        batch_size: int | None = None,
        basis: Any = None,
    ) -> PFVResult:
        """PFV of a batch: one decomposition over all its images (forward passes in chunks)."""
        if batch_size is not None and batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        n = len(batch) if hasattr(batch, "__len__") else 0
        step = batch_size or max(n, 1)
        passes = [self.forward(batch[i : i + step]) for i in range(0, max(n, 1), step)]
        return self.decompose(passes, k=k, hierarchical=hierarchical, n_sigma=n_sigma, basis=basis)


def _size_hint(text: str) -> tuple[int, int] | None:
    parts = text.lower().replace(" ", "").split("x")
    if len(parts) == 2 and all(p.isdigit() and int(p) > 0 for p in parts):
        return int(parts[0]), int(parts[1])
    return None


def _per_image(value: Any, n_run: int, n_real: int) -> Any:
    """One row per image: the first ``n_real`` rows of a batched output; an output without a
    batch axis (a scalar, a per-batch statistic) repeated for each image under a new axis 0."""
    from .xp import array_module

    if getattr(value, "ndim", 0) >= 1 and value.shape[0] == n_run:
        return value[:n_real]
    xp = array_module(value)
    value = xp.asarray(value)
    return xp.ascontiguousarray(xp.broadcast_to(value[None], (n_real, *value.shape)))


def _same_images(reference: dict[str, Any], tapped: dict[str, Any], n_ref: int, n_run: int, names: Sequence[str]) -> tuple[dict, dict]:
    """The self-check's pairs: each output of the original model on the first ``n_ref`` images
    against the rewritten model's on the same images (of ``n_run``). An output without a
    batch axis is compared only when both runs saw the same images."""
    from .xp import to_host

    ref, got = {}, {}
    for name in names:
        a, b = reference[name], to_host(tapped[name])
        batched = getattr(a, "ndim", 0) >= 1 and getattr(b, "ndim", 0) >= 1 and a.shape[0] == n_ref and b.shape[0] == n_run
        if batched:
            ref[name], got[name] = a, b[:n_ref]
        elif n_ref == n_run:
            ref[name], got[name] = a, b
    return ref, got


def _concat(arrays: list[Any]) -> Any:
    from .xp import array_module

    if len(arrays) == 1:
        return arrays[0]
    return array_module(arrays[0]).concatenate(arrays, axis=0)


def inspect(
    model: str | Path,
    *,
    size: tuple[int, int] | None = None,
    layer: str | None = None,
    weight_layers: Sequence[str] | None = None,
    input_name: str | None = None,
    layout: str | Layout | None = None,
) -> InspectReport:
    """Every spatial map of ``model`` and the choice PFV makes, with reasons. Runs nothing unless shapes need a probe."""
    from . import model_io, surgery

    path = Path(model)
    proto = model_io.load_model(path)
    spec = model_io.image_input(proto, input_name)
    lay, how = surgery.input_layout(proto, spec, _parse_layout(layout))
    a, b = lay.spatial_axes
    static = (spec.dims[a] if isinstance(spec.dims[a], int) else None, spec.dims[b] if isinstance(spec.dims[b], int) else None)
    hint = _size_hint({m.key: m.value for m in proto.metadata_props}.get("input_size", "")) or (224, 224)
    hw = tuple(size) if size else (static[0] or hint[0], static[1] or hint[1])
    analysis = surgery.analyse(
        proto, spec, hw, input_layout=lay, layer=layer, weight_layers=weight_layers, probe=_probe(spec.name, path.parent)  # type: ignore[arg-type]
    )
    notes = [f"input {spec.name!r} is {lay.value} ({how})", *analysis.notes]
    return InspectReport(spec.name, lay, spec.dims, hw, analysis.candidates, analysis.decomposed, analysis.weighting, notes)  # type: ignore[arg-type]

"""PFV for library users: model file -> surgery -> runtime -> PFV math -> result.

:func:`inspect` and :class:`InspectReport` live in ``inspection`` and are importable from here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .decompose import FittedScaling, ForwardPass, PFVResult, concat
from .errors import InputError, ModelError
from .feature_maps import FeatureMap, Layout
from .inspection import InspectReport, cpu_probe, inspect, parse_layout
from .pca import PrincipalBasis

__all__ = ["PFV", "PFVResult", "ForwardPass", "InspectReport", "inspect"]


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
        from .model_file import ModelFile
        from .self_check import SelfCheck

        # The path is made absolute once: what is read again later (a new input size, the
        # self-check, a save) is this file, whatever the working directory is then.
        self.model_file, self._model = ModelFile.open(model)
        self.model_path = self.model_file.path
        self.model_sha256 = self.model_file.sha256
        self.metadata = {p.key: p.value for p in self._model.metadata_props}
        self._spec = model_io.image_input(self._model, input_name)
        self.input_name = self._spec.name
        self.input_layout, self.layout_reason = surgery.input_layout(self._model, self._spec, parse_layout(layout))
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
        self._self_check = SelfCheck(self.model_file, self.input_name, self.output_names) if self_check else None
        self.output_shapes = {o.name: tuple(d.dim_value or d.dim_param or None for d in o.type.tensor_type.shape.dim) for o in self._model.graph.output}
        self.k, self.hierarchical, self.n_sigma = k, hierarchical, n_sigma
        self.layer, self.weight_layers = layer, (list(weight_layers) if weight_layers is not None else None)
        self._provider_request = provider
        runtime.resolve_provider(provider)  # fails early for a missing CUDA provider
        self._max_tensor_bytes = max_tensor_bytes or model_io.DEFAULT_MAX_TENSOR_BYTES
        self._spinning = spinning
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
        from .config import default_size

        return default_size(self.input_size, self.metadata)[0]

    def prepare_self_check(self) -> None:
        """Build the self-check's session of the unmodified model now, in the background, for
        the first forward pass (a run calls this before it decodes its first images)."""
        if self._self_check is not None:
            self._self_check.prepare()

    @property
    def self_check_result(self) -> str | None:
        """None until the self-check ran (or when it is off); then "ok (...)" or its warning."""
        return self._self_check.result if self._self_check is not None else None

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
        if self._model is None:
            self._model = self.model_file.load()
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
                probe=cpu_probe(self.input_name, self.model_file.folder),
                max_tensor_bytes=self._max_tensor_bytes,
            )
            key = tuple(fm.name for fm in self._analyses[size].chosen)
            if key in self._sessions:  # a session for these maps exists: the protobuf is not needed
                self._model = None
        return self._analyses[size]

    def maps(self, size: tuple[int, int] | None = None) -> list[FeatureMap]:
        """Records of the tensors used at input size (H, W), earliest first; the last one is E_L."""
        return list(self.analysis(size).chosen)

    def feature_maps(self, size: tuple[int, int] | None = None) -> list[str]:
        """Names of the tensors used at input size (H, W), earliest first (as ``PFVResult.feature_maps``)."""
        return [fm.name for fm in self.analysis(size).chosen]

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
                data, self._provider_request, external_data_dir=self.model_file.folder, output_names=names, input_name=self.input_name,
                spinning=self._spinning,
            )
            del data
            self._sessions[key] = (sess, taps)
            runtime.release_freed_memory()
        return analysis, self._sessions[key]

    def save_surgery(self, path: str | Path, size: tuple[int, int] | None = None) -> Path:
        """Write the rewritten model (the original outputs plus the tapped maps), checked by onnx's
        checker; a model too large for one protobuf keeps its weights in ``NAME.data`` beside it."""
        from . import surgery
        from .model_file import save_model

        rewritten, _ = surgery.rewrite(self._loaded_model(), self.analysis(size), conv_sums=self._conv_sums())
        self._model = None  # PFV keeps its sessions, not the protobuf: read again when next needed
        return save_model(rewritten, path, self.model_file.folder)

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
        from . import self_check
        from .xp import to_host

        batch, hw = self._prepare(batch)
        analysis, (sess, taps) = self._session_for(hw)
        # On CUDA the maps stay on the GPU (CuPy) when CuPy can take them; else they come to the host.
        tap_names = {t.output for t in taps} if sess.provider == "cuda" and self._cupy_ready() else set()
        batch_dim = self.fixed_batch
        step = batch_dim if batch_dim else batch.shape[0]
        runs = []
        reference = None
        for start in range(0, batch.shape[0], step):
            chunk = batch[start : start + step]
            n_real = chunk.shape[0]
            if batch_dim and n_real < batch_dim:  # pad a fixed-batch model's last chunk, then drop the padding
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_dim - n_real, axis=0)])
            check = self._self_check if not runs and self._self_check is not None and self._self_check.result is None else None
            if check is not None:
                # The original model runs first, on a few images, and its session is gone before
                # the rewritten one runs: the two forward passes' memory never adds up.
                probe = chunk if batch_dim else chunk[: self_check.IMAGES]
                reference = check.reference(probe, quiet=len(probe) < len(chunk))
            values = sess.run(chunk, device_outputs=tap_names)
            if check is not None:
                check.settle(reference, values, len(probe), chunk, sess.provider, [fm.dtype for fm in analysis.chosen])
            runs.append({k: _image_rows(v, chunk.shape[0], n_real) for k, v in values.items()})
        values = runs[0] if len(runs) == 1 else {k: concat([r[k] for r in runs]) for k in runs[0]}
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
        return ForwardPass(decomposed, weights, outputs, hw)

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

    def decompose(
        self,
        passes: Sequence[ForwardPass],
        *,
        k: int | None = None,
        hierarchical: bool | None = None,
        n_sigma: float | None = None,
        basis: PrincipalBasis | None = None,
    ) -> PFVResult:
        """One PCA over the gathered chunks, then weighting and batch colour scaling
        (:func:`pfv_onnx.decompose.decompose` with this model's maps and defaults).

        ``basis``: a ``pca.PrincipalBasis`` to project onto, or a ``basis.FittedBasis``, which
        is first checked against this model and also fixes the peaks and colour scaling.
        """
        from .basis import FittedBasis
        from .decompose import decompose

        if basis is not None and not isinstance(basis, PrincipalBasis):
            raise InputError(f"basis must be a fitted basis (pfv_onnx.basis.fit or load), not a {type(basis).__name__}")
        hierarchical = self.hierarchical if hierarchical is None else hierarchical
        if not passes:
            raise InputError("nothing to decompose: no forward passes were given")
        maps = self.maps(getattr(passes, "input_hw", None) or passes[0].input_hw)  # a list of passes or a group_spool.GroupSpool
        scaling: FittedScaling | None = None
        if isinstance(basis, FittedBasis):
            basis.check_model(self, [fm.name for fm in maps])
            scaling = basis.scaling(hierarchical)
        return decompose(
            passes, maps, k=self.k if k is None else k, hierarchical=hierarchical,
            n_sigma=self.n_sigma if n_sigma is None else n_sigma, basis=basis, scaling=scaling,
        )  # fmt: skip

    def explain(
        self,
        batch: Any,
        *,
        k: int | None = None,
        hierarchical: bool | None = None,
        n_sigma: float | None = None,
        batch_size: int | None = None,
        basis: PrincipalBasis | None = None,
    ) -> PFVResult:
        """PFV of a batch: one decomposition over all its images (forward passes in chunks)."""
        if batch_size is not None and batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        n = len(batch) if hasattr(batch, "__len__") else 0
        step = batch_size or max(n, 1)
        passes = [self.forward(batch[i : i + step]) for i in range(0, max(n, 1), step)]
        return self.decompose(passes, k=k, hierarchical=hierarchical, n_sigma=n_sigma, basis=basis)


def _image_rows(value: Any, n_run: int, n_real: int) -> Any:
    """One row per image: the first ``n_real`` rows of a batched output; an output without a
    batch axis (a scalar, a per-batch statistic) repeated for each image under a new axis 0."""
    from .xp import array_module

    if getattr(value, "ndim", 0) >= 1 and value.shape[0] == n_run:
        return value[:n_real]
    xp = array_module(value)
    value = xp.asarray(value)
    return xp.ascontiguousarray(xp.broadcast_to(value[None], (n_real, *value.shape)))

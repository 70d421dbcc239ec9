"""The self-check: tapping feature maps must not change a model's own outputs.

Once per model, at the first forward pass, the unmodified model runs on the first images of
the chunk (from a session made for it alone and dropped before the rewritten model runs, so
the two forward passes' memory never adds up) and its outputs are compared with those of the
rewritten model on the same images. A caller that knows a forward pass is coming (``pfv-onnx
run``) can have that session built beforehand, in the background (:meth:`SelfCheck.prepare`).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

from .errors import PfvError
from .model_file import ModelFile

#: Images of the first chunk on which the original outputs are compared.
IMAGES = 2
#: Largest relative change of an output that still counts as unchanged, by provider.
TOLERANCE = {"cpu": 1e-4, "cuda": 1e-3}
#: Unit roundoff of the narrow float types a model may store its feature maps in. A tapped map
#: of such a type is rounded to it where onnxruntime (computing in float32 on the CPU) would
#: otherwise skip the rounding the model specifies, so the outputs may move by that much.
ROUNDOFF = {"float16": 2.0**-11, "bfloat16": 2.0**-8}


def tolerance(provider: str, map_dtypes: Sequence[str] = ()) -> tuple[float, str | None]:
    """The self-check's tolerance, and the narrow float type that widened it (or None)."""
    base = TOLERANCE.get(provider, TOLERANCE["cpu"])
    narrow = max((d for d in map_dtypes if d in ROUNDOFF), key=ROUNDOFF.__getitem__, default=None)
    if narrow is None or ROUNDOFF[narrow] <= base:
        return base, None
    return ROUNDOFF[narrow], narrow


class SelfCheck:
    """The self-check of one model. ``result`` is None until it ran, then ``"ok (...)"`` or
    the warning it gave."""

    def __init__(self, model: ModelFile, input_name: str, output_names: Sequence[str]) -> None:
        self.model = model
        self.input_name = input_name
        self.output_names = list(output_names)
        self.result: str | None = None
        self._pending: Future | None = None  # the session being built by prepare()

    def prepare(self) -> None:
        """Start building the unmodified model's session on a thread of its own, for the next
        :meth:`reference`: onnxruntime releases the GIL while it loads and optimises a model,
        so this overlaps whatever the caller does until its first forward pass (decoding the
        first images). The session still runs, and is dropped, before the rewritten model's
        first pass."""
        if self.result is not None or self._pending is not None:
            return
        pending: Future = Future()

        def build() -> None:
            try:
                pending.set_result(self._session())
            except BaseException as exc:  # raised by reference()
                pending.set_exception(exc)

        # Not a daemon: the interpreter waits for it at exit. A daemon thread still inside
        # onnxruntime when the interpreter shuts down aborts the process.
        threading.Thread(target=build, name="pfv-self-check").start()
        self._pending = pending

    def _session(self) -> Any:
        from . import runtime

        return runtime.create_session(self.model.path, "cpu", input_name=self.input_name, output_names=self.output_names, arena=False)

    def reference(self, chunk: np.ndarray, quiet: bool = False) -> dict[str, Any] | None:
        """The unmodified model's outputs for ``chunk`` (None, when ``quiet``, if it does not run on it)."""
        pending, self._pending = self._pending, None
        try:  # the session is dropped as this returns, before the rewritten model runs
            plain = pending.result() if pending is not None else self._session()
            return plain.run(chunk)
        except PfvError:
            if quiet:
                return None
            raise

    def settle(
        self, reference: dict[str, Any] | None, values: dict[str, Any], n_ref: int, chunk: np.ndarray, provider: str, map_dtypes: Sequence[str] = ()
    ) -> None:
        """Decide on the first chunk. The first ``n_ref`` images settle it when every output
        pairs up and agrees; otherwise (an output without a batch axis, one that mixes the
        images, a model that did not run on ``n_ref`` images) the whole chunk decides.
        ``map_dtypes``: the element types of the tapped maps (see :func:`tolerance`)."""
        names = self.output_names
        limit = (*tolerance(provider, map_dtypes), TOLERANCE.get(provider, TOLERANCE["cpu"]))
        if reference is not None:
            ref, got = same_images(reference, values, n_ref, len(chunk), names)
            if len(ref) == len(names) and self._compare(ref, got, limit, warn=n_ref == len(chunk)):
                return
        if n_ref < len(chunk):
            whole = self.reference(chunk)
            self._compare(*same_images(whole, values, len(chunk), len(chunk), names), limit)  # type: ignore[arg-type]

    def _compare(self, ref: dict[str, Any], tapped: dict[str, Any], limit: tuple[float, str | None, float], warn: bool = True) -> bool:
        """True when the outputs agree; a disagreement is recorded and warned of only with ``warn``.
        ``limit``: the tolerance, the narrow float type that widened it, the provider's own."""
        worst = worst_relative_change(ref, tapped)
        bound, narrow, base = limit
        if worst > bound:
            if warn:
                self.result = (
                    f"the model's outputs change by up to {worst:.2e} (relative) when the feature maps are tapped; "
                    "onnxruntime may be mis-optimising the rewritten graph, so treat the maps with care"
                )
                warnings.warn(self.result, RuntimeWarning, stacklevel=4)
            return False
        within = f", within one {narrow} rounding ({bound:.1e}) of the tapped maps" if narrow and worst > base else ""
        self.result = f"ok (max relative difference {worst:.1e}{within})"
        return True


def worst_relative_change(ref: dict[str, Any], tapped: dict[str, Any]) -> float:
    """The largest difference between paired host arrays, relative to each output's largest
    finite magnitude; equal infinities and NaNs are no change, another shape is infinite."""
    worst = 0.0
    for name in ref:
        a, b = np.asarray(ref[name]), np.asarray(tapped[name])
        if a.shape != b.shape:
            return float("inf")
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):  # strings: equal or not
            worst = worst if np.array_equal(a, b) else float("inf")
            continue
        a, b = a.astype(np.float64), b.astype(np.float64)
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        finite = np.abs(a[np.isfinite(a)])
        scale = max(float(finite.max()) if finite.size else 0.0, 1e-6)
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.where(same, 0.0, np.abs(a - b))
        worst = max(worst, float(np.nan_to_num(diff, nan=np.inf).max() / scale) if a.size else 0.0)
    return worst


def same_images(reference: dict[str, Any], tapped: dict[str, Any], n_ref: int, n_run: int, names: Sequence[str]) -> tuple[dict, dict]:
    """The pairs to compare: each output of the original model on the first ``n_ref`` images
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

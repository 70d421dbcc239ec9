"""Joining a Ray cluster for one job (optional extra ``ray``): the connection, the actor
pool's size and what each actor asks for, shared by fitting (``distributed``) and
``run --ray`` (``distributed_run``)."""

from __future__ import annotations

import os
from typing import Any

from .errors import DependencyError, InputError

EXTRA = "ray"
_INSTALL = f"pip install 'pfv-onnx[{EXTRA}]'"


def import_ray() -> Any:
    """``ray`` with Ray Data, or a DependencyError that names the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise DependencyError(f"Ray is not installed ({exc}); install the extra with: {_INSTALL}") from None
    return ray


class Cluster:
    """A Ray cluster joined for one job, with Ray Data's progress output off.

    ``address``: a running cluster (``"auto"``, ``"ray://host:10001"``); without it, a
    cluster Ray is already connected to, ``RAY_ADDRESS``, or a new local one, which
    :meth:`close` shuts down again. ``actors``: how many actors a map runs on (default: one
    per GPU where the cluster has GPUs and the provider allows them, else one per CPU).
    """

    def __init__(self, address: str | None, provider: str, actors: int | None) -> None:
        self.ray = import_ray()
        self._started_here = _connect(self.ray, address)
        try:
            _quiet(self.ray)
            self.actors, self._per_actor = _resources(self.ray, provider, actors)
        except BaseException:
            self.close()
            raise

    def map_batches(self, ds: Any, actor_class: type, kwargs: dict[str, Any], batch_size: int) -> Any:
        """``ds.map_batches`` over a pool of ``actor_class``, each built with ``kwargs``; batches as NumPy."""
        return ds.map_batches(
            actor_class,
            fn_constructor_kwargs=kwargs,
            batch_size=batch_size,
            batch_format="numpy",
            compute=self.ray.data.ActorPoolStrategy(size=self.actors),
            **self._per_actor,
        )

    def close(self) -> None:
        """Shut down the local cluster if it was started here; a joined one stays up."""
        if self._started_here:
            self._started_here = False
            self.ray.shutdown()


def _resources(ray: Any, provider: str, actors: int | None) -> tuple[int, dict[str, Any]]:
    """How many actors, and what each asks for: one GPU each where the cluster has GPUs."""
    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0)) if provider != "cpu" else 0
    if provider == "cuda" and gpus == 0:
        raise DependencyError("provider 'cuda' was asked for, but the Ray cluster has no GPU; use --provider cpu or auto")
    if gpus > 0:
        return actors or gpus, {"num_gpus": 1}
    return actors or max(1, int(res.get("CPU", 1))), {"num_cpus": 1}


def _connect(ray: Any, address: str | None) -> bool:
    """Connect to the cluster at ``address`` (else one already joined, ``RAY_ADDRESS`` or a new
    local one); True when a local cluster was started here and is to be shut down after."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    except ConnectionError as exc:
        where = address or os.environ.get("RAY_ADDRESS") or "local"
        raise InputError(f"cannot connect to the Ray cluster {where!r} ({' '.join(str(exc).split())}); check --ray ADDRESS") from None
    return address is None and not os.environ.get("RAY_ADDRESS")


def _quiet(ray: Any) -> None:
    ctx = ray.data.DataContext.get_current()
    for name in ("enable_progress_bars", "print_on_execution_start"):
        if hasattr(ctx, name):
            setattr(ctx, name, False)

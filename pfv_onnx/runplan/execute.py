"""A run as plain steps: plan the groups, run each planned group not yet saved, write.

:func:`execute` takes a :class:`RunJob` (everything decided before any work: the model,
the files, the options, the report header) and returns a :class:`RunSummary`. With
``stop_after=j`` it stops once group ``j`` is saved, as a run killed at that moment would
(``-1``: before the first group); running the same job again then resumes and gives the
files of an uninterrupted run.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from . import outdir as out_files
from .loading import Loaded, forward, prefetch, quiet_opencv, ray_loader
from .plan import ClassPlan, batches, class_groups
from ..predictions import predictions
from .progress import Progress
from .writer import RunWriter

if TYPE_CHECKING:
    from ..inputs import Preprocessing
    from ..pipeline import PFV

CACHE_BYTES = 512 << 20  # decoded originals kept per group for rendering; the rest are decoded again


@dataclass
class RunJob:
    """Everything a run decides before any work."""

    pfv: PFV
    files: list[Path]
    prep: Preprocessing
    outdir: Path
    report: dict[str, Any]  # the report before any group: model, options, failures of missing arguments, notes
    fingerprint: str
    batch_size: int = 16
    group_size: int | None = None  # None: one group of every file (size plans)
    by_class: bool = False
    basis: Any = None
    labels: list[str] | None = None
    alpha: float = 0.5
    overlay_format: str = "auto"
    html: bool = True
    max_pixels: int = 100_000_000
    npz_precision: str = "uint8"
    overwrite: bool = False
    ray: dict[str, Any] | None = None  # options of the Ray loader (see loading.ray_loader), None: decode here
    show_progress: bool = False
    names: list[str] = field(default_factory=list)
    on_start: Callable[[], None] | None = None  # called once the run is known not to be done already, before any work
    on_class_plan: Callable[[list[int]], None] | None = None  # called with the class groups' sizes once the plan is known


@dataclass
class RunSummary:
    report: dict[str, Any]
    already_done: bool = False  # the same run was complete in the output folder: nothing was written
    stopped: bool = False  # stop_after was reached


def execute(job: RunJob, *, stop_after: int | None = None) -> RunSummary:
    """Run PFV over ``job.files`` into ``job.outdir``; see the module docstring."""
    from ..outputs import clean_stale_temp_files, unique_names

    check_basis_size(job.basis, job.prep.size)
    if hasattr(job.basis, "check_model"):  # a fitted basis: of this model and its feature maps
        job.basis.check_model(job.pfv, job.pfv.feature_maps(tuple(job.prep.size)))
    quiet_opencv()
    t_start = time.perf_counter()
    report = job.report
    timings = report.setdefault("timings", {})
    for key in ("decode_s", "forward_s", "decompose_s", "render_s"):
        timings.setdefault(key, 0.0)
    job.names = job.names or unique_names(job.files)
    outdir = job.outdir
    out_files.check_writable(outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder {outdir}: {exc.strerror or exc}") from None
    progress = Progress(outdir, job.fingerprint, overwrite=job.overwrite)
    report["resume"] = {"fingerprint": job.fingerprint, "groups_reused": 0}
    earlier = progress.completed(out_files.REPORT)
    if earlier is not None:  # the same run is already complete in outdir: nothing to redo
        progress.finish()  # saved groups of a run killed after its last write
        return RunSummary(earlier, already_done=True)
    if job.on_start is not None:
        job.on_start()
    if job.ray is None and hasattr(job.pfv, "prepare_self_check"):  # while the first images decode
        job.pfv.prepare_self_check()
    clean_stale_temp_files(outdir, depth=2)  # and in the page's folders (report_files/thumbs, ...)
    restored = progress.restore()
    plan = progress.class_plan() if job.by_class else None
    if job.by_class and plan is None:
        restored = []  # groups without their plan cannot be placed
    if not restored and plan is None:
        out_files.clean_earlier(outdir)  # another run's pictures
    out_files.record(outdir, job.names)

    from tqdm import tqdm

    bar = tqdm(total=len(job.files), unit="img", file=sys.stderr, disable=not job.show_progress, desc="pfv", dynamic_ncols=True)
    workers = max(1, min(4, os.cpu_count() or 1))
    with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pfv-io") as pool:
        writer = RunWriter(
            outdir, report, prep=job.prep, names=job.names, labels=job.labels, output_order=list(getattr(job.pfv, "output_names", None) or []) or None,
            alpha=job.alpha, max_pixels=job.max_pixels, html=job.html, overlay_format=job.overlay_format,
            npz_precision=job.npz_precision, pool=pool,
        )  # fmt: skip
        run = _Run(job, writer, progress, pool, bar, timings, t_start, stop_after)
        try:
            if plan is not None:
                for f in plan.failures:
                    writer.fail(f["file"], f["reason"])
            for saved in restored:  # complete groups of an interrupted run with the same arguments
                writer.add(saved)
                bar.update(len(saved.images) + len(saved.failures))
            report["resume"]["groups_reused"] = len(restored)
            finished = run.class_plan(plan, len(restored)) if job.by_class else run.size_plan(restored[-1].end if restored else 0, len(restored))
        except BaseException:
            writer.close()
            raise
        finally:
            bar.close()
        if not finished:
            writer.close()
            return RunSummary(report, stopped=True)
        timings["total_s"] = time.perf_counter() - t_start
        writer.finish()
    progress.finish()
    return RunSummary(report)


def check_basis_size(basis: Any, size: Sequence[int]) -> None:
    """A fitted basis holds one input size's statistics (its colour scaling above all): refuse another size."""
    fitted = tuple(getattr(basis, "input_size", None) or ())
    if basis is not None and fitted and fitted != tuple(size):
        raise InputError(
            f"the basis was fitted at input size {fitted[0]}x{fitted[1]}, this run analyses {size[0]}x{size[1]}; "
            f"run with --size {fitted[0]}x{fitted[1]} or fit a basis at this size"
        )


class _Run:
    """The steps of one execute call, sharing its writer, progress and pool."""

    def __init__(self, job: RunJob, writer: RunWriter, progress: Progress, pool: Any, bar: Any, timings: dict[str, float], t_start: float, stop_after: int | None) -> None:
        self.job, self.writer, self.progress, self.pool, self.bar = job, writer, progress, pool, bar
        self.timings, self.t_start, self.stop_after = timings, t_start, stop_after
        self.cached = 0  # bytes of decoded originals kept for the group being filled

    def _loader(self, indices: Sequence[int]) -> Iterator[Loaded]:
        job = self.job
        if job.ray is not None:
            if indices:
                job.report["notes"].append("decoding and forward passes on Ray; decode_s and forward_s are summed over the actors")
            return ray_loader(job.pfv, job.files, list(indices), job.prep, job.ray, self.timings)
        workers = max(1, min(4, os.cpu_count() or 1))
        return prefetch(self.pool, job.files, indices, job.prep, job.max_pixels, window=max(2 * job.batch_size, 2 * workers))

    def read(self, indices: Sequence[int]) -> Iterator[Loaded]:
        """The decoded files of ``indices``, in order; the ones that fail go to the writer."""
        loader = self._loader(indices)
        try:
            for item in loader:
                self.timings["decode_s"] += item.seconds
                if item.error is not None:
                    self.writer.fail(item.path, item.error)
                    self.bar.update(1)
                    continue
                self.cached += item.image.bgr.nbytes if item.image is not None else 0
                if self.cached > CACHE_BYTES:
                    item.image = None  # decoded again when rendering
                yield item
        finally:
            loader.close()  # type: ignore[attr-defined]

    def forward(self, items: list[Loaded]) -> Any:
        t0 = time.perf_counter()
        fp = forward(self.job.pfv, self.job.prep.layout, items)
        self.timings["forward_s"] += time.perf_counter() - t0
        self.bar.update(len(items))
        return fp

    def spool(self) -> Any:
        """An empty spool for the next group's forward passes (with a basis, projected as they come)."""
        from ..group_spool import GroupSpool

        return GroupSpool(self.job.outdir, basis=self.job.basis)

    def group(self, index: int, items: list[Loaded], spool: Any, klass: dict[str, Any] | None, mark: int, span: tuple[int, int], last: bool) -> bool:
        """Decompose and write one group and save it (unless it is the last: the final files
        follow); ``spool``: its forward passes, closed here. ``mark``: the failures before the
        group; ``span``: the input files it took (size plans). False when told to stop after
        this group."""
        try:
            t0 = time.perf_counter()
            res = self.job.pfv.decompose(spool, basis=self.job.basis)
            self.timings["decompose_s"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            self.bar.set_postfix_str(f"writing group {index + 1}")
            saved = self.writer.write_group(index, items, res, klass, mark, span[1])
            self.timings["render_s"] += time.perf_counter() - t0
        finally:
            spool.close()
        self.bar.set_postfix_str("")
        self.cached = 0
        if not last:
            self.progress.save(saved, start=span[0])
            self.timings["total_s"] = time.perf_counter() - self.t_start
            self.writer.write_partial_report()
        return self.stop_after is None or index < self.stop_after

    # ------------------------------------------------------------------ the two kinds of plan

    def size_plan(self, start: int, index: int) -> bool:
        """Size groups: the next ``group_size`` files that decode, from ``files[start]``."""
        job = self.job
        if self.stop_after is not None and self.stop_after < index:  # stopped after a group already done
            return False
        n = len(job.files)
        size = job.group_size or n
        items: list[Loaded] = []
        pending: list[Loaded] = []
        spool = None  # the forward passes of the group being filled, on disk
        mark = len(self.writer.failures)
        reader = self.read(range(start, n))
        try:
            for item in reader:
                items.append(item)
                pending.append(item)
                if len(pending) == job.batch_size or len(items) == size:
                    spool = self.spool() if spool is None else spool
                    spool.add(self.forward(pending))
                    pending = []
                if len(items) == size:
                    end = item.index + 1
                    filled, spool = spool, None
                    if not self.group(index, items, filled, None, mark, (start, end), last=end >= n):
                        return False
                    index, start, items, mark = index + 1, end, [], len(self.writer.failures)
            if pending:
                spool = self.spool() if spool is None else spool
                spool.add(self.forward(pending))
            if not items:
                return True
            filled, spool = spool, None
            return self.group(index, items, filled, None, mark, (start, n), last=True)
        finally:
            reader.close()
            if spool is not None:
                spool.close()

    def class_plan(self, plan: ClassPlan | None, done: int) -> bool:
        """Class groups: every file run forward in batches, then one group per predicted
        class. Resumed, only the batches that hold files of the groups left are run again.
        The passes wait on disk until each group takes its files' rows."""
        from .pass_spool import PassSpool

        with PassSpool(self.job.outdir) as passes:
            return self._class_plan(plan, done, passes)

    def _class_plan(self, plan: ClassPlan | None, done: int, rows: Any) -> bool:
        job = self.job
        items: dict[int, Loaded] = {}
        if plan is None:
            mark = len(self.writer.failures)
            chunk: list[Loaded] = []
            for item in self.read(range(len(job.files))):
                items[item.index] = item
                chunk.append(item)
                if len(chunk) == job.batch_size:
                    self._forward_rows(chunk, rows)
            if chunk:
                self._forward_rows(chunk, rows)
            plan = ClassPlan(self._plan_classes(sorted(items), rows), list(self.writer.failures[mark:]))
            self.progress.save_class_plan(plan)
            self._planned(plan)
            if self.stop_after is not None and self.stop_after < 0:
                return False
        else:
            self._planned(plan)
            if self.stop_after is not None and self.stop_after < done:
                return False
            todo = {i for g in plan.groups[done:] for i in g.files}
            chunks = [c for c in batches(plan.decoded, job.batch_size) if todo & set(c)]
            size_of = {i: len(c) for c in chunks for i in c}
            before = len(self.writer.failures)
            chunk = []
            for item in self.read([i for c in chunks for i in c]):
                items[item.index] = item
                chunk.append(item)
                if len(chunk) == size_of[chunk[0].index]:
                    self._forward_rows(chunk, rows)
            if len(self.writer.failures) != before or chunk:
                raise InputError("an input file changed since the interrupted run read it; run again with --overwrite")
        for g in plan.groups[done:]:
            spool = self.spool()
            try:
                for fp in rows.passes(g.files, job.batch_size):
                    spool.add(fp)
            except BaseException:
                spool.close()
                raise
            last = g.index == len(plan.groups) - 1
            if not self.group(g.index, [items.pop(i) for i in g.files], spool, g.klass, len(self.writer.failures), (0, 0), last):
                return False
        return True

    def _planned(self, plan: ClassPlan) -> None:
        if self.job.on_class_plan is not None:
            self.job.on_class_plan([len(g.files) for g in plan.groups])

    def _forward_rows(self, chunk: list[Loaded], rows: Any) -> None:
        """Run one batch forward into ``rows`` (a ``PassSpool``)."""
        rows.add(self.forward(chunk), [it.index for it in chunk])
        chunk.clear()

    def _plan_classes(self, decoded: list[int], rows: Any) -> list[Any]:
        if not decoded:
            return []
        assert rows.files == decoded  # the passes ran in input order
        preds, _ = predictions(rows.outputs(), len(decoded), self.job.labels, list(getattr(self.job.pfv, "output_names", None) or []) or None)
        if any(p is None for p in preds):
            raise InputError("--group-by class needs a model output of finite class scores shaped (N, classes); this model has none")
        return class_groups(decoded, [int(p["class"]) for p in preds], [p.get("label") for p in preds])  # type: ignore[index,union-attr]

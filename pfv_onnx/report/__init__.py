"""The run's page, ``OUTDIR/report.html``: one self-contained file a reviewer opens in a browser.

The page is built from what ``pfv-onnx run`` and ``pfv-onnx sanity`` left in OUTDIR
(report.json, the map and overlay PNGs, pfv.npz, sanity.json). Pictures are referenced by
paths relative to OUTDIR, so the folder can be zipped and moved; the page loads nothing from
anywhere else and opens from ``file://``. Its stylesheet and small script are inlined; without
script it still shows everything. Pictures made for the page go to ``OUTDIR/report_files/``.

Modules: ``legend`` (where each component is strongest), ``colours`` (the colour keys), ``assets`` (reading OUTDIR, writing
the page's pictures), ``sections`` and ``page`` (the HTML, from ``templates/``), ``fmt``
(escaping and numbers). The audit flags come from :mod:`pfv_onnx.audit`.
"""

from __future__ import annotations

import os
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .assets import clean, read_json, write_thumbnails
from .fmt import spectrum_svg
from .legend import PATCH_CELLS, PATCHES, Patch, patch_box, select_patches

REPORT_HTML = "report.html"

__all__ = ["REPORT_HTML", "page_html", "write_report", "write_thumbnails", "spectrum_svg", "select_patches", "patch_box", "Patch", "PATCHES", "PATCH_CELLS"]


def write_report(outdir: str | os.PathLike[str], *, pool: Executor | None = None, colours: tuple[np.ndarray, np.ndarray] | None = None) -> Path:
    """Write ``OUTDIR/report.html`` from report.json and/or sanity.json in ``outdir``; returns its path.
    ``pool`` and ``colours``: as :func:`page_html` takes them."""
    from ..outputs import atomic_write_text

    folder = Path(outdir)
    return atomic_write_text(folder / REPORT_HTML, page_html(folder, pool=pool, colours=colours))


def page_html(
    outdir: str | os.PathLike[str], *, report: dict[str, Any] | None = None, pool: Executor | None = None,
    colours: tuple[np.ndarray, np.ndarray] | None = None,
) -> str:  # fmt: skip
    """The page's HTML, its pictures drawn into ``OUTDIR/report_files/``.

    Built from report.json and/or sanity.json in ``outdir``; ``report``: report.json's content
    (as JSON gives it back), for a caller that writes that file after the page is drawn. The
    pictures (per-component views, legend patches) are drawn on ``pool``'s threads (OpenCV and
    NumPy release the GIL), or on a pool made for the call. ``colours``: the mean and the median
    colour of each row of pfv.npz's ``rgb`` (``audit.mean_colours`` and ``audit.median_colours``),
    when the caller has them: else they are read from pfv.npz.
    """
    from .page import Page

    folder = Path(outdir)
    promised = {"report.json"} if report is not None else set()
    report = read_json(folder / "report.json") if report is None else report
    sanity = read_json(folder / "sanity.json")
    if report is None and sanity is None:
        raise InputError(f"{folder} holds neither report.json nor sanity.json; run `pfv-onnx run` or `pfv-onnx sanity` first")
    clean(folder)

    def build(executor: Executor) -> str:
        page = Page(folder, report, sanity, pool=executor, colours=colours)
        page.files.promised |= promised
        return page.build()

    if pool is None:
        with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="pfv-page") as own:
            return build(own)
    return build(pool)

"""``pfv-onnx run`` as plain steps: a plan of groups (lists of file indices), the progress
that lets an interrupted run resume, and one writer of the results.

- :mod:`.plan`: size groups and class groups;
- :mod:`.loading`: reading and running the files forward, locally or on Ray;
- :mod:`.progress`: the saved groups and class plan of an interrupted run;
- :mod:`.writer`: pictures, ``pfv.npz``, ``report.json``, mosaic and page;
- :mod:`.outdir`: the output folder's checks and the record of pfv-onnx's own files;
- :mod:`.execute`: :func:`execute` of a :class:`RunJob`.
"""

from .execute import RunJob, RunSummary, check_basis_size, execute
from .outdir import MOSAIC, NPZ, REPORT, REPORT_HTML
from .writer import NPZ_PRECISIONS

__all__ = ["MOSAIC", "NPZ", "NPZ_PRECISIONS", "REPORT", "REPORT_HTML", "RunJob", "RunSummary", "check_basis_size", "execute"]

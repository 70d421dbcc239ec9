"""The run's page: see :mod:`pfv_onnx.report` (this name stays for the commands that import it)."""

from .report import REPORT_HTML, write_report, write_thumbnails

__all__ = ["REPORT_HTML", "write_report", "write_thumbnails"]

"""tools/gpu_check.py in its CPU dry run: the script that a lent GPU machine runs in one call
works, writes its JSON schema, and derives its ratios from the times it records."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "gpu_check.py"


def _run(tmp_path: Path, *args: str) -> tuple[dict, str]:
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out), *args], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text()), proc.stdout


@pytest.fixture(scope="module")
def dry(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("gpu-check"), "--dry-run")


def _finite_positive(values) -> bool:
    return all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in values)


def _check_spread(summary: dict, values: list[float]) -> None:
    s = sorted(values)
    assert summary["median"] == pytest.approx(statistics.median(values), rel=1e-12)
    assert summary["min"] == s[0] and summary["max"] == s[-1]
    assert s[0] <= summary["q1"] <= summary["median"] <= summary["q3"] <= s[-1]


def test_dry_run_writes_the_schema(dry):
    result, _ = dry
    assert result["schema"] == "pfv-onnx-gpu-check/1"
    assert result["dry_run"] is True
    assert result["stopped_by_budget"] is False
    assert result["errors"] == {}
    assert 0 < result["wall_s"] < result["budget_s"]
    env = result["environment"]
    assert env["provider"] == "cpu" and env["array_backend"] == "numpy"
    assert env["onnxruntime"]["importable"] is True and "CPUExecutionProvider" in env["onnxruntime"]["providers"]
    assert isinstance(env["cupy"]["importable"], bool) and isinstance(env["cuda_inference_usable"], bool)
    tests = result["gpu_tests"]
    assert tests["status"] == "ok" and tests["failed"] == 0 and tests["errors"] == 0
    # the dry run runs tests/test_math.py's gpu test: it passes with CuPy and a device, else it is skipped with a reason
    assert tests["passed"] + tests["skipped"] >= 1
    assert len(tests["skip_reasons"]) == (1 if tests["skipped"] else 0)


def test_dry_run_ratios_come_from_the_recorded_times(dry):
    result, _ = dry
    inf = result["inference"]
    assert inf["status"] == "ok" and inf["provider"] == "cpu"
    assert inf["pairs"] == inf["pairs_wanted"] == len(inf["a_s"]) == len(inf["b_s"]) == 3
    assert _finite_positive(inf["a_s"]) and _finite_positive(inf["b_s"])
    ratios = [b / a for a, b in zip(inf["a_s"], inf["b_s"])]
    assert inf["ratios"] == pytest.approx(ratios, rel=1e-12)
    _check_spread(inf["ratio"], ratios)
    assert inf["a_median_s"] == pytest.approx(statistics.median(inf["a_s"]), rel=1e-12)
    assert inf["b_median_s"] == pytest.approx(statistics.median(inf["b_s"]), rel=1e-12)
    assert inf["met"] is (statistics.median(ratios) <= inf["target_max"]) and inf["target_max"] == 1.10

    m = result["math"]
    assert m["status"] == "ok" and m["backend"] == "numpy"
    assert m["pairs"] == m["pairs_wanted"] == len(m["numpy_s"]) == len(m["device_s"]) == 3
    assert _finite_positive(m["numpy_s"]) and _finite_positive(m["device_s"])
    speedups = [n / d for n, d in zip(m["numpy_s"], m["device_s"])]
    assert m["speedups"] == pytest.approx(speedups, rel=1e-12)
    _check_spread(m["speedup"], speedups)
    assert m["met"] is (statistics.median(speedups) >= m["target_min"]) and m["target_min"] == 5.0
    # NumPy stands in for CuPy: the same computation on the same maps
    assert m["max_abs_rgb_diff"] == pytest.approx(0.0, abs=1e-6)


def test_dry_run_summary_shows_the_recorded_figures(dry):
    result, stdout = dry
    assert "DRY RUN" in stdout
    assert f"**{result['inference']['ratio']['median']:.3f}**" in stdout
    assert f"**{result['math']['speedup']['median']:.2f}**" in stdout


def test_a_spent_budget_still_writes_the_schema(tmp_path):
    result, stdout = _run(tmp_path, "--dry-run", "--budget-s", "1")
    assert result["schema"] == "pfv-onnx-gpu-check/1" and result["stopped_by_budget"] is True
    assert result["gpu_tests"] is None and result["inference"] is None and result["math"] is None
    assert result["environment"]["provider"] == "cpu"
    assert "stopped by the budget" in stdout

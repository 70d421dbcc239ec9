#!/usr/bin/env python3
"""The GPU checks in one call: the ``gpu`` tests and the CUDA/CuPy benchmark columns, as JSON.

Sections, each recorded in the JSON as it finishes:

- ``environment``: which of onnxruntime (and whether it is the onnxruntime-gpu build with a
  CUDA provider), CuPy (and a CUDA device) and pfv_onnx are importable, and versions;
- ``gpu_tests``: ``pytest -m gpu`` in a subprocess, with counts, failures and skip reasons;
- ``inference``: (b)/(a) for EfficientNet-Lite0 at batch 32, where (a) is bare onnxruntime
  inference on the CUDA provider and (b) ``PFV.explain`` on the CUDA provider (maps stay on
  the GPU, the math runs on CuPy): the median of at least 10 interleaved pairs, with the
  spread (target: <= 1.10);
- ``math``: ``PFV.decompose`` on the same maps as CuPy arrays against NumPy arrays, the
  NumPy/CuPy time ratio per interleaved pair, median and spread (target: >= 5). Both sides
  return host arrays, so the CuPy time includes copying the result back.

Set-up (the lent machine has no network; its image has Python, CuPy, pytest, onnx,
onnxruntime (CPU), OpenCV, tqdm, threadpoolctl, but not onnx-graphsurgeon). Here, in the
repository root, fetch what is missing as wheels into the ignored folder ``.whl``::

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \\
        -d .whl onnx-graphsurgeon==0.6.1

(onnxruntime-gpu's wheel, 256 MB, is too large to travel with the working tree; without it
the ``inference`` section reports why it did not run.) Then on the machine, carrying ``.whl``::

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD
    python3 tools/gpu_check.py $OUT/gpu.json --budget-s 300

Any environment where ``import pfv_onnx`` works will do (``pip install --no-deps -e .`` then
``pip install -r requirements-gpu.txt`` where there is a network). The script checks what is
importable and reports it; it installs nothing.

``--dry-run`` runs the same code with the CPU provider and NumPy standing in for CuPy, a small
batch, few pairs and only ``tests/test_math.py``'s gpu tests, in seconds: CI runs it
(tests/test_gpu_script.py) so that the script is known to work before a GPU is lent.
The JSON's schema is the same either way; ``dry_run`` says which it was.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(ROOT), str(HERE)):
    if _p not in sys.path:  # run from a checkout without installing
        sys.path.insert(0, _p)

import benchmark as bench  # noqa: E402  (tools/benchmark.py: photos, the bare session, interleaved timing)

SCHEMA = "pfv-onnx-gpu-check/1"
INFERENCE_TARGET = 1.10  # (b)/(a) at most
MATH_TARGET = 5.0  # NumPy time / CuPy time at least
RESERVE_S = 5.0  # kept back from the budget for writing the results


class OutOfTime(Exception):
    """The budget (or a termination signal) ends the run; what was measured is written."""


class Budget:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic() - RESERVE_S


# --------------------------------------------------------------------------- environment


def environment(dry_run: bool) -> dict:
    from importlib import metadata

    env: dict[str, Any] = {"python": platform.python_version(), "numpy": np.__version__, "machine": platform.machine()}
    ort: dict[str, Any] = {"importable": False, "version": None, "distributions": [], "providers": [], "cuda_provider": False, "error": None}
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            ort["distributions"].append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    try:
        import onnxruntime

        ort.update(importable=True, version=onnxruntime.__version__, providers=list(onnxruntime.get_available_providers()))
        ort["cuda_provider"] = "CUDAExecutionProvider" in ort["providers"]
    except Exception as exc:  # noqa: BLE001 - any failure to load is the thing to report
        ort["error"] = f"{type(exc).__name__}: {exc}"
    env["onnxruntime"] = ort

    cp: dict[str, Any] = {"importable": False, "version": None, "devices": 0, "device_name": None, "error": None}
    try:
        import cupy

        cp.update(importable=True, version=cupy.__version__)
        cp["devices"] = int(cupy.cuda.runtime.getDeviceCount())
        if cp["devices"]:
            name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
            cp["device_name"] = name.decode() if isinstance(name, bytes) else str(name)
            cupy.zeros(1).sum().item()  # a real kernel launch
    except Exception as exc:  # noqa: BLE001
        cp["error"] = f"{type(exc).__name__}: {exc}"
    env["cupy"] = cp

    try:
        import pfv_onnx

        env["pfv_onnx"] = pfv_onnx.__version__
    except Exception as exc:  # noqa: BLE001
        env["pfv_onnx"] = None
        env["pfv_onnx_error"] = f"{type(exc).__name__}: {exc}"
    env["cupy_usable"] = cp["importable"] and cp["devices"] > 0 and cp["error"] is None
    env["cuda_inference_usable"] = bool(ort["cuda_provider"])
    env["provider"] = "cpu" if dry_run else "cuda"
    env["array_backend"] = "numpy" if dry_run else "cupy"
    return env


# --------------------------------------------------------------------------- pytest -m gpu


def gpu_tests(paths: list[str], timeout_s: float) -> dict:
    """``pytest -m gpu`` in a subprocess; counts and reasons from its JUnit XML."""
    with tempfile.TemporaryDirectory(prefix="pfv-gpu-check-") as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", f"--junitxml={xml}", *paths]
        out: dict[str, Any] = {"status": None, "command": " ".join(["python -m pytest -q -m gpu", *paths]), "seconds": None,
                               "exit_code": None, "passed": 0, "failed": 0, "errors": 0, "skipped": 0, "failures": [], "skip_reasons": [], "output_tail": ""}
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            text, _ = proc.communicate(timeout=max(timeout_s, 1.0))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            text, _ = proc.communicate()
            out["status"] = "timeout"
        out["seconds"] = time.perf_counter() - t0
        out["exit_code"] = proc.returncode
        out["output_tail"] = "\n".join(text.strip().splitlines()[-15:])
        if xml.is_file():
            _read_junit(xml, out)
        if out["status"] is None:
            # pytest: 0 all passed, 5 nothing collected (all deselected); anything else failed
            out["status"] = "ok" if proc.returncode in (0, 5) and not (out["failed"] or out["errors"]) else "failed"
    return out


def _read_junit(xml: Path, out: dict) -> None:
    reasons: dict[str, int] = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("failure") is not None:
            out["failed"] += 1
            out["failures"].append(name)
        elif case.find("error") is not None:
            out["errors"] += 1
            out["failures"].append(name)
        elif (skip := case.find("skipped")) is not None:
            out["skipped"] += 1
            reason = (skip.get("message") or "").strip()
            reasons[reason] = reasons.get(reason, 0) + 1
        else:
            out["passed"] += 1
    out["skip_reasons"] = [f"{n} x {r}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])]


# --------------------------------------------------------------------------- timing


def spread(values: list[float]) -> dict | None:
    """Median, quartiles and extremes of a list (None for an empty one)."""
    if not values:
        return None
    q1, med, q3 = (float(v) for v in np.percentile(values, [25, 50, 75]))
    return {"median": med, "q1": q1, "q3": q3, "min": float(min(values)), "max": float(max(values))}


def timed_pairs(first, second, pairs: int, budget: Budget, warmup: int) -> tuple[list[float], list[float], bool]:
    """Seconds of ``first`` and ``second`` in interleaved pairs, the order alternating, after
    ``warmup`` calls of each; stops before a pair that the budget could not hold (True then)."""
    for _ in range(warmup):
        first()
        second()
    times: tuple[list[float], list[float]] = ([], [])
    fns = (first, second)
    while len(times[0]) < pairs:
        if times[0] and budget.left() < 2.0 * (times[0][-1] + times[1][-1]):
            return times[0], times[1], True
        for i in ((0, 1) if len(times[0]) % 2 == 0 else (1, 0)):
            t0 = time.perf_counter()
            fns[i]()
            times[i].append(time.perf_counter() - t0)
    return times[0], times[1], False


# --------------------------------------------------------------------------- benchmark columns


def _model_path() -> Path:
    model = bench.efficientnet(with_torch=False)
    if model is None:
        raise FileNotFoundError("models/efficientnet_lite0.onnx is missing")
    return model.onnx_path


def _batch(state: dict, n: int) -> np.ndarray:
    """The batch both columns use: crops and flips of the bundled photographs, 224 px."""
    if state.get("batch") is None:
        state["batch"] = bench.photos(n, 224)
    return state["batch"]


def inference_column(state: dict, env: dict, batch: int, pairs: int, warmup: int, budget: Budget, dry_run: bool) -> dict:
    """(a) bare onnxruntime on the provider against (b) ``PFV.explain`` on it, interleaved pairs."""
    provider = env["provider"]
    out: dict[str, Any] = {"status": None, "reason": None, "model": bench.EFFICIENTNET, "batch": batch, "provider": provider,
                           "pairs_wanted": pairs, "pairs": 0, "a_s": [], "b_s": [], "ratios": [], "ratio": None,
                           "a_median_s": None, "b_median_s": None, "target_max": INFERENCE_TARGET, "met": None,
                           "stopped_by_budget": False}
    if not dry_run and not env["cuda_inference_usable"]:
        out["status"] = "skipped"
        out["reason"] = "onnxruntime has no CUDA provider here (" + (", ".join(env["onnxruntime"]["distributions"]) or "no onnxruntime") + "): install onnxruntime-gpu"
        return out
    from pfv_onnx import PFV

    path, x = _model_path(), _batch(state, batch)
    plain = bench.PlainSession(path, provider)
    got = plain.session.get_providers()[0]
    if (got == "CUDAExecutionProvider") != (provider == "cuda"):
        out["status"] = "skipped"
        out["reason"] = f"the bare session runs on {got}, not the {provider} provider (the CUDA libraries onnxruntime needs may be missing)"
        return out
    pfv = PFV(path, provider=provider)
    state["pfv"] = pfv
    if pfv.provider != provider:
        out["status"] = "skipped"
        out["reason"] = f"PFV runs on the {pfv.provider} provider, not {provider}"
        return out
    a, b, stopped = timed_pairs(lambda: plain.run(x), lambda: pfv.explain(x), pairs, budget, warmup)
    out.update(pairs=len(a), a_s=a, b_s=b, stopped_by_budget=stopped)
    out["ratios"] = [bj / aj for aj, bj in zip(a, b)]
    out["ratio"] = spread(out["ratios"])
    out["a_median_s"], out["b_median_s"] = float(np.median(a)), float(np.median(b))
    out["met"] = bool(out["ratio"]["median"] <= INFERENCE_TARGET)
    out["status"] = "budget" if stopped else "ok"
    return out


def math_column(state: dict, env: dict, batch: int, pairs: int, warmup: int, budget: Budget, dry_run: bool) -> dict:
    """``PFV.decompose`` of the same maps as NumPy and as CuPy arrays (NumPy again in a dry run)."""
    out: dict[str, Any] = {"status": None, "reason": None, "model": bench.EFFICIENTNET, "batch": batch, "backend": env["array_backend"],
                           "pairs_wanted": pairs, "pairs": 0, "numpy_s": [], "device_s": [], "speedups": [], "speedup": None,
                           "numpy_median_s": None, "device_median_s": None, "max_abs_rgb_diff": None,
                           "target_min": MATH_TARGET, "met": None, "stopped_by_budget": False}
    if dry_run:
        to_device, sync = np.array, (lambda: None)  # a copy on the host stands in for the device
    elif env["cupy_usable"]:
        import cupy

        to_device, sync = cupy.asarray, cupy.cuda.Device().synchronize
    else:
        out["status"] = "skipped"
        out["reason"] = "CuPy is not usable here: " + (env["cupy"]["error"] or "no CUDA device")
        return out
    from pfv_onnx import PFV
    from pfv_onnx.xp import to_host

    x = _batch(state, batch)
    pfv = state.get("pfv") or PFV(_model_path(), provider="cpu")
    fp = pfv.forward(x)
    host = dataclasses.replace(fp, decomposed=np.ascontiguousarray(to_host(fp.decomposed)), weights=[np.ascontiguousarray(to_host(w)) for w in fp.weights])
    dev = dataclasses.replace(host, decomposed=to_device(host.decomposed), weights=[to_device(w) for w in host.weights])
    sync()

    def on_device():
        res = pfv.decompose([dev])
        sync()
        return res

    ref, got = pfv.decompose([host]), on_device()
    out["max_abs_rgb_diff"] = float(np.abs(np.asarray(ref.rgb) - to_host(got.rgb)).max())
    t_np, t_dev, stopped = timed_pairs(lambda: pfv.decompose([host]), on_device, pairs, budget, warmup)
    out.update(pairs=len(t_np), numpy_s=t_np, device_s=t_dev, stopped_by_budget=stopped)
    out["speedups"] = [n / d for n, d in zip(t_np, t_dev)]
    out["speedup"] = spread(out["speedups"])
    out["numpy_median_s"], out["device_median_s"] = float(np.median(t_np)), float(np.median(t_dev))
    out["met"] = bool(out["speedup"]["median"] >= MATH_TARGET)
    out["status"] = "budget" if stopped else "ok"
    return out


# --------------------------------------------------------------------------- report


def markdown(result: dict) -> str:
    env = result["environment"]
    ort, cp = env["onnxruntime"], env["cupy"]
    lines = [f"## pfv-onnx GPU check{' (DRY RUN: CPU provider, NumPy for CuPy)' if result['dry_run'] else ''}", ""]
    lines.append(f"- Python {env['python']}, NumPy {env['numpy']}, pfv_onnx {env.get('pfv_onnx')}")
    lines.append(f"- onnxruntime: {ort['version'] or 'not importable'} ({', '.join(ort['distributions']) or 'no distribution'}); "
                 f"CUDA provider: {'yes' if ort['cuda_provider'] else 'no'}" + (f"; {ort['error']}" if ort["error"] else ""))
    lines.append(f"- CuPy: {cp['version'] or 'not importable'}; devices: {cp['devices']}" + (f" ({cp['device_name']})" if cp["device_name"] else "")
                 + (f"; {cp['error']}" if cp["error"] else ""))
    lines.append(f"- total {result['wall_s']:.0f} s of a {result['budget_s']:.0f} s budget" + ("; stopped by the budget" if result["stopped_by_budget"] else ""))
    t = result.get("gpu_tests")
    if t:
        lines.append(f"- `{t['command']}`: **{t['status']}**, {t['passed']} passed, {t['failed']} failed, {t['errors']} errors, "
                     f"{t['skipped']} skipped ({t['seconds']:.0f} s)")
        lines += [f"  - failed: {n}" for n in t["failures"]] + [f"  - skipped: {r}" for r in t["skip_reasons"]]
    lines.append("")
    inf = result.get("inference")
    if inf:
        lines.append(f"### (b)/(a): `PFV.explain` against bare inference, {inf['model']}, batch {inf['batch']}, provider {inf['provider']}")
        lines.append("")
        if inf["pairs"]:
            r = inf["ratio"]
            lines += ["| pairs | (a) ms | (b) ms | (b)/(a) median | quartiles | min - max | target <= 1.10 |", "|---:|---:|---:|---:|---:|---:|---|",
                      f"| {inf['pairs']} | {inf['a_median_s'] * 1e3:.1f} | {inf['b_median_s'] * 1e3:.1f} | **{r['median']:.3f}** | "
                      f"{r['q1']:.3f} - {r['q3']:.3f} | {r['min']:.3f} - {r['max']:.3f} | {'met' if inf['met'] else 'missed'} |"]
        if inf["reason"]:
            lines.append(f"- {inf['status']}: {inf['reason']}")
        lines.append("")
    m = result.get("math")
    if m:
        lines.append(f"### PFV math: `PFV.decompose` on NumPy against {m['backend']}, {m['model']}, batch {m['batch']}")
        lines.append("")
        if m["pairs"]:
            s = m["speedup"]
            lines += ["| pairs | NumPy ms | device ms | NumPy / device median | quartiles | min - max | max abs rgb diff | target >= 5 |",
                      "|---:|---:|---:|---:|---:|---:|---:|---|",
                      f"| {m['pairs']} | {m['numpy_median_s'] * 1e3:.1f} | {m['device_median_s'] * 1e3:.1f} | **{s['median']:.2f}** | "
                      f"{s['q1']:.2f} - {s['q3']:.2f} | {s['min']:.2f} - {s['max']:.2f} | {m['max_abs_rgb_diff']:.1e} | {'met' if m['met'] else 'missed'} |"]
        if m["reason"]:
            lines.append(f"- {m['status']}: {m['reason']}")
        lines.append("")
    for name, err in result["errors"].items():
        lines.append(f"- error in {name}: {err}")
    return "\n".join(lines).rstrip() + "\n"


def write(result: dict, path: Path, started: float) -> None:
    result["wall_s"] = time.monotonic() - started
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", type=Path, help="where to write the results (e.g. $OUT/gpu.json)")
    ap.add_argument("--budget-s", type=float, default=300.0, help="stop cleanly and write what was measured after this many seconds (default 300)")
    ap.add_argument("--dry-run", action="store_true", help="CPU provider, NumPy standing in for CuPy, a small batch and few pairs: seconds")
    ap.add_argument("--batch", type=int, help="images per batch (default 32; 2 in a dry run)")
    ap.add_argument("--pairs", type=int, help="interleaved pairs per column (default 15; 3 in a dry run)")
    ap.add_argument("--tests", nargs="*", help="test paths for pytest -m gpu (default tests; tests/test_math.py in a dry run); none: skip")
    args = ap.parse_args(argv)
    dry = args.dry_run
    batch = args.batch or (2 if dry else 32)
    pairs = args.pairs or (3 if dry else 15)
    warmup = 1 if dry else 2
    tests = args.tests if args.tests is not None else (["tests/test_math.py"] if dry else ["tests"])

    started = time.monotonic()
    budget = Budget(args.budget_s)
    args.json.parent.mkdir(parents=True, exist_ok=True)

    def on_signal(signum, _frame):
        raise OutOfTime(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    result: dict[str, Any] = {
        "schema": SCHEMA, "dry_run": dry, "command": " ".join(["python", "tools/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]),
        "started_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "budget_s": args.budget_s, "wall_s": 0.0,
        "stopped_by_budget": False, "environment": environment(dry), "gpu_tests": None, "inference": None, "math": None, "errors": {},
    }  # fmt: skip
    write(result, args.json, started)
    state: dict[str, Any] = {}
    steps = [
        ("gpu_tests", lambda: gpu_tests(tests, timeout_s=min(budget.left(), 0.4 * args.budget_s)) if tests else None),
        ("inference", lambda: inference_column(state, result["environment"], batch, pairs, warmup, budget, dry)),
        ("math", lambda: math_column(state, result["environment"], batch, pairs, warmup, budget, dry)),
    ]
    try:
        for name, step in steps:
            if budget.left() <= 0:
                result["stopped_by_budget"] = True
                break
            print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
            try:
                result[name] = step()
            except OutOfTime:
                raise
            except Exception as exc:  # noqa: BLE001 - one section failing must not lose the others
                result["errors"][name] = f"{type(exc).__name__}: {exc}"
            result["stopped_by_budget"] |= bool((result[name] or {}).get("stopped_by_budget")) or (result[name] or {}).get("status") == "timeout"
            write(result, args.json, started)
    except (OutOfTime, KeyboardInterrupt) as exc:
        result["stopped_by_budget"] = True
        result["errors"]["interrupted"] = str(exc) or type(exc).__name__
    write(result, args.json, started)
    sys.stdout.write(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

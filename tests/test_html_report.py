"""The run's page, OUTDIR/report.html: its structure, the numbers it shows, and a real browser.

The structure tests parse the page with :mod:`html.parser` and check it against report.json,
sanity.json and pfv.npz, with the expected values computed here in plain NumPy. The browser
test loads the page from file:// in headless Chromium (Debian's ``chromium`` package),
talking the DevTools protocol over a pipe (standard library only), and checks that every
picture decoded and painted; it is skipped only when Chromium is not installed.
"""

from __future__ import annotations

import base64
import fcntl
import html.parser
import json
import math
import os
import select
import shutil
import signal
import tempfile
import time
import urllib.parse
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

import graphs
from pfv_onnx.cli import main
from pfv_onnx.report import PATCH_CELLS, PATCHES, patch_box, select_patches, spectrum_svg, write_report

ODD_NAME = "odd #1 & <b> é.png"  # characters that need escaping in HTML and quoting in URLs


# --------------------------------------------------------------------------- a parsed page


class Page(html.parser.HTMLParser):
    """The elements of a page as (tag, attributes, ancestors' tags with their classes)."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str], list[tuple[str, str]]]] = []
        self.stack: list[tuple[str, str]] = []
        self.text_parts: list[str] = []
        self.feed(text)
        self.close()

    VOID = {"img", "br", "meta", "link", "input", "hr", "rect", "line"}

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        self.elements.append((tag, a, list(self.stack)))
        if tag not in self.VOID:
            self.stack.append((tag, a.get("class", "")))

    def handle_startendtag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        self.elements.append((tag, a, list(self.stack)))

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break

    def handle_data(self, data):
        self.text_parts.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.text_parts).split())

    def find(self, tag: str, cls: str | None = None, **attrs: str) -> list[dict[str, str]]:
        out = []
        for t, a, _ in self.elements:
            if t != tag or (cls is not None and cls not in a.get("class", "").split()):
                continue
            if all(a.get(k.replace("_", "-")) == v for k, v in attrs.items()):
                out.append(a)
        return out

    def inside(self, tag: str, ancestor_cls: str) -> list[dict[str, str]]:
        return [a for t, a, anc in self.elements if t == tag and any(ancestor_cls in c.split() for _, c in anc)]


def _page(out: Path) -> Page:
    return Page((out / "report.html").read_text(encoding="utf-8"))


def _local(out: Path, url: str) -> Path:
    assert not urllib.parse.urlsplit(url).scheme, f"not a relative reference: {url}"
    assert not url.startswith("/"), url
    return out / urllib.parse.unquote(urllib.parse.urlsplit(url).path)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """Five pictures of different sizes and aspects (one with an awkward name), one text file
    with an image's name and a truncated JPEG."""
    d = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:48, 0:64]
    base = np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=-1).astype(np.uint8)
    shapes = {"disc.png": (48, 64), "wide.png": (40, 90), "tall.jpg": (80, 36), "noise.png": (50, 50), ODD_NAME: (44, 60)}
    for i, (name, (h, w)) in enumerate(shapes.items()):
        pic = cv2.resize(base, (w, h))
        pic = cv2.add(pic, rng.integers(0, 60, pic.shape, dtype=np.uint8))
        cv2.circle(pic, (w // (2 + i % 3), h // 2), min(h, w) // 5, (255, 255, 255), -1)
        ok, data = cv2.imencode(Path(name).suffix, pic)
        (d / name).write_bytes(data.tobytes())
    (d / "broken.png").write_text("this is not a picture\n")
    ok, jpg = cv2.imencode(".jpg", base)
    (d / "cut.jpg").write_bytes(jpg.tobytes()[: len(jpg) // 2])
    return d


@pytest.fixture(scope="module")
def run_dir(image_folder, vgg_model, labels_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "out"
    assert main(["run", str(vgg_model), str(image_folder), "-o", str(out), "-q", "--labels", str(labels_file)]) == 1
    return out


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory) -> Path:
    """A model whose class is the image's strongest colour channel (0: R, 1: G, 2: B): the
    linear_two graph with its Gemm made the identity, so the logits are the channel means."""
    model = graphs.linear_two(channels=3).model
    gemm = next(node for node in model.graph.node if node.op_type == "Gemm")
    for init in model.graph.initializer:
        if init.name == gemm.input[1]:
            init.CopyFrom(onnx.numpy_helper.from_array(np.eye(3, dtype=np.float32), init.name))
        elif init.name == gemm.input[2]:
            init.CopyFrom(onnx.numpy_helper.from_array(np.zeros(3, np.float32), init.name))
    path = tmp_path_factory.mktemp("colour") / "colour.onnx"
    onnx.save(model, str(path))
    return path


COLOUR_PICTURES = {"red1.png": 2, "green1.png": 1, "green2.png": 1, "blue1.png": 0, "blue2.png": 0}  # BGR index


@pytest.fixture(scope="module")
def class_dir(colour_model, tmp_path_factory) -> Path:
    """--group-by class over one reddish, two greenish and two bluish pictures."""
    d = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(5)
    for i, (name, ch) in enumerate(COLOUR_PICTURES.items()):
        pic = rng.integers(0, 90, (30 + 6 * i, 40, 3)).astype(np.uint8)
        pic[:, :, ch] = np.clip(pic[:, :, ch].astype(int) + 150, 0, 255).astype(np.uint8)
        cv2.imwrite(str(d / name), pic)
    out = tmp_path_factory.mktemp("classes") / "out"
    assert main(["run", str(colour_model), str(d), "-o", str(out), "-q", "--group-by", "class"]) == 0
    return out


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- structure


def test_every_referenced_picture_exists_and_decodes(run_dir):
    page = _page(run_dir)
    refs = [a["src"] for a in page.find("img")]
    refs += [a["href"] for a in page.find("a") if a.get("href") and not a["href"].startswith("#")]
    assert len(refs) > 20
    for ref in refs:
        path = _local(run_dir, ref)
        assert path.is_file(), ref
        assert path.resolve().is_relative_to(run_dir.resolve()), ref  # the folder can be zipped and moved
        if path.suffix in (".png", ".jpg"):
            assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED) is not None, ref


def test_page_is_offline_and_self_contained(run_dir):
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    page = Page(text)
    scripts = page.find("script")
    assert len(scripts) == 1 and "src" not in scripts[0]  # one inline script, nothing loaded
    assert not page.find("link") and not page.find("iframe")
    assert "http://" not in text and "https://" not in text
    assert "@import" not in text and "url(" not in text  # no stylesheet or font fetched from anywhere
    ids = {a["id"] for _, a, _ in page.elements if "id" in a}
    for a in page.find("a"):
        if a.get("href", "").startswith("#"):
            assert a["href"][1:] in ids, a["href"]


def test_every_input_has_a_gallery_entry(run_dir, image_folder):
    report = _report(run_dir)
    page = _page(run_dir)
    cards = page.find("article", "card")
    assert sorted(c["data-file"] for c in cards) == sorted(str(image_folder / n) for n in ["disc.png", "wide.png", "tall.jpg", "noise.png", ODD_NAME])
    assert sorted(c["data-file"] for c in cards) == sorted(im["file"] for im in report["images"])
    assert len(page.inside("img", "card")) == 3 * len(cards)  # image, map and overlay
    assert ODD_NAME in page.text  # shown as text, escaped in the source
    assert "&lt;b&gt;" in (run_dir / "report.html").read_text(encoding="utf-8")
    for im in report["images"]:  # the top class and its score, as report.json has them
        pred = im["prediction"]
        assert f"{pred['label']} {100 * pred['score']:.1f} %" in page.text


def test_gallery_thumbnails_show_the_run_pictures(run_dir):
    """The thumbnails are the map and overlay PNGs, shrunk: compared at the thumbnail's size."""
    for im in _report(run_dir)["images"]:
        for kind in ("map", "overlay"):
            full = cv2.imread(str(run_dir / im["outputs"][kind]))
            thumb = cv2.imread(str(run_dir / im["outputs"][f"thumb_{kind}"]))
            assert thumb.shape == full.shape  # small images stay at their size
            assert np.abs(thumb.astype(float) - full.astype(float)).mean() < 8.0  # JPEG loss on noisy test pictures


def test_failures_are_listed_with_reasons(run_dir, image_folder):
    page = _page(run_dir)
    rows = [r for r in page.inside("tr", "failures") if "data-file" in r]
    assert sorted(r["data-file"] for r in rows) == sorted(str(image_folder / n) for n in ["broken.png", "cut.jpg"])
    for f in _report(run_dir)["failures"]:
        assert f["reason"] in page.text


def test_header_names_model_maps_preprocessing_and_version(run_dir, vgg_model):
    report = _report(run_dir)
    page = _page(run_dir)
    assert page.find("h1")[0]["title"] == str(vgg_model.resolve())
    assert report["model"]["sha256"][:16] in page.text
    for fm in report["feature_maps"]:
        assert fm["name"] in page.text and fm["reason"] in page.text
    assert f"pfv-onnx {report['pfv_onnx_version']}" in page.text
    assert report["preprocessing"]["preset"] in page.text


def test_legend_has_k_entries(run_dir):
    page = _page(run_dir)
    legends = page.find("div", "legend")
    assert len(legends) == len(_report(run_dir)["groups"]) == 1
    assert legends[0]["data-components"] == "3"
    assert [a["data-component"] for a in page.find("div", "comp") if "data-component" in a] == ["1", "2", "3"]


def test_legend_k4_names_the_fourth_component(image_folder, vgg_model, tmp_path):
    out = tmp_path / "k4"
    main(["run", str(vgg_model), str(image_folder), "-o", str(out), "-q", "--k", "4"])
    page = _page(out)
    assert page.find("div", "legend")[0]["data-components"] == "4"
    assert "Not drawn" in page.text
    assert len(page.find("rect", "bar")) == 4


def test_legend_patches_are_the_extremes_of_the_components(run_dir):
    """Rows and cells of the patches against an argmax/argmin over pfv.npz written here."""
    with np.load(run_dir / "pfv.npz") as z:
        comps = z["components"]
    page = _page(run_dir)
    n, k, h, w = comps.shape
    for c in range(k):
        for side, sign in (("pos", 1.0), ("neg", -1.0)):
            v = sign * comps[:, c].astype(np.float64)
            got = page.find("a", "patch", data_component=str(c + 1), data_side=side)
            assert len(got) == PATCHES
            per_image = v.reshape(n, -1).max(axis=1)
            top_images = list(np.argsort(-per_image, kind="stable")[: min(n, PATCHES)])
            assert [int(a["data-row"]) for a in got[: len(top_images)]] == top_images
            for a in got[: len(top_images)]:
                row = int(a["data-row"])
                y, x = divmod(int(v[row].argmax()), w)
                assert a["data-cell"] == f"{y},{x}"
                assert math.isclose(float(a["data-value"]), float(comps[row, c, y, x]), rel_tol=1e-5, abs_tol=1e-6)


def test_legend_patch_is_the_image_under_its_cell(run_dir):
    """The saved patch against a crop made here: the cell's centre +- one cell, stretched resize."""
    report = _report(run_dir)
    page = _page(run_dir)
    with np.load(run_dir / "pfv.npz") as z:
        gh, gw = z["components"].shape[2:]
    by_row = {im["row"]: im for im in report["images"]}
    first = page.find("a", "patch")[0]
    img_src = [a["src"] for a in page.find("img") if a["src"].startswith("report_files/legend/")][0]
    im = by_row[int(first["data-row"])]
    y, x = (int(v) for v in first["data-cell"].split(","))
    original = cv2.imread(im["file"], cv2.IMREAD_COLOR)
    H, W = original.shape[:2]
    cw, ch = W / gw, H / gh
    x0 = min(max((x + 0.5) * cw - cw, 0.0), W - 2 * cw)
    y0 = min(max((y + 0.5) * ch - ch, 0.0), H - 2 * ch)
    crop = original[int(np.floor(y0 + 1e-9)) : int(np.ceil(y0 + 2 * ch - 1e-9)), int(np.floor(x0 + 1e-9)) : int(np.ceil(x0 + 2 * cw - 1e-9))]
    saved = cv2.imread(str(_local(run_dir, img_src)))
    expected = cv2.resize(crop, saved.shape[1::-1], interpolation=cv2.INTER_LINEAR)
    assert np.abs(saved.astype(float) - expected.astype(float)).mean() < 2.0


def test_patch_box_by_hand():
    # a 4x4 map over a 400 x 200 image: cells of 100 x 50 px
    assert patch_box(1, 2, (4, 4), (0, 0, 400, 200), (200, 400)) == (150, 25, 350, 125)
    assert patch_box(0, 0, (4, 4), (0, 0, 400, 200), (200, 400)) == (0, 0, 200, 100)  # moved inside
    assert patch_box(3, 3, (4, 4), (0, 0, 400, 200), (200, 400)) == (200, 100, 400, 200)
    # centre crop: the model saw x 100..300 of the 400 x 200 image, a 2x2 map: cells of 100 x 100
    assert patch_box(0, 0, (2, 2), (100, 0, 300, 200), (200, 400)) == (50, 0, 250, 200)
    assert patch_box(1, 1, (2, 2), (100, 0, 300, 200), (200, 400)) == (150, 0, 350, 200)
    assert PATCH_CELLS == 2.0


def test_select_patches_properties():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(9, 5, 6))
    top = select_patches(v, 6, +1)
    per_image = v.reshape(9, -1).max(axis=1)
    assert [p.index for p in top] == list(np.argsort(-per_image)[:6])  # one per image, strongest first
    assert all(math.isclose(p.value, v[p.index, p.y, p.x]) for p in top)
    low = select_patches(v, 6, -1)
    assert [p.index for p in low] == list(np.argsort(v.reshape(9, -1).min(axis=1))[:6])
    assert all(p.value < 0 for p in low)
    # two images: four more places, each two cells or more from the others in its image, by value
    few = select_patches(v[:2], 6, +1)
    assert len(few) == 6 and {p.index for p in few} == {0, 1}
    for i, p in enumerate(few):
        for q in few[:i]:
            assert p.index != q.index or max(abs(p.y - q.y), abs(p.x - q.x)) >= 2
    assert [p.value for p in few[2:]] == sorted((p.value for p in few[2:]), reverse=True)
    # only the places on the asked side count
    assert select_patches(np.abs(v) + 0.1, 6, -1) == []


def test_spectrum_bars_follow_the_ratios():
    ratios = [0.3, 0.15, 0.05]
    svg = Page(spectrum_svg(ratios, channels=16))
    bars = svg.find("rect", "bar")
    heights = np.array([float(b["height"]) for b in bars])
    assert np.allclose(heights, heights[0] * np.array(ratios) / ratios[0], atol=0.1)  # drawn to 0.1 px
    assert [b["fill"] for b in bars] == ["rgb(232,35,35)", "rgb(22,178,60)", "rgb(35,95,240)"]
    assert "Together 50.0 %" in svg.text and "other 13 components hold 50.0 %" in svg.text


def test_group_by_class_one_decomposition_per_class(class_dir, colour_model, tmp_path):
    report = _report(class_dir)
    groups = report["groups"]
    assert report["pfv"]["group_by"] == "class"
    assert [(g["class"]["class"], g["images"]) for g in groups] == [(1, 2), (2, 2), (0, 1)]  # largest first, then by class
    for im in report["images"]:  # the class is the strongest colour (R, G, B for 0, 1, 2)
        assert 2 - COLOUR_PICTURES[Path(im["file"]).name] == im["prediction"]["class"]
    with np.load(class_dir / "pfv.npz") as z:
        rgb, rows_group = z["rgb"], z["group"]
    counts = [g["images"] for g in groups]
    assert counts == sorted(counts, reverse=True)
    page = _page(class_dir)
    sections = page.find("section", "group")
    assert len(sections) == len(groups) and len(page.find("div", "legend")) == len(groups)
    for grp in groups:
        members = [im for im in report["images"] if im["group"] == grp["index"]]
        assert {im["prediction"]["class"] for im in members} == {grp["class"]["class"]}
        assert f"class {grp['class']['class']}" in page.text
        # the same images run on their own give the same maps
        alone = tmp_path / f"alone{grp['index']}"
        main(["run", str(colour_model), *[im["file"] for im in members], "-o", str(alone), "-q", "--no-html"])
        with np.load(alone / "pfv.npz") as z:
            expected = z["rgb"]
        got = rgb[[im["row"] for im in members]]
        assert np.allclose(got, expected, atol=1e-5)
        assert all(rows_group[im["row"]] == grp["index"] for im in members)


def test_group_by_class_refuses_group_size(image_folder, vgg_model, tmp_path, capsys):
    code = main(["run", str(vgg_model), str(image_folder), "-o", str(tmp_path / "o"), "--group-by", "class", "--group-size", "2"])
    assert code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "--group-size" in err[0]


def test_no_html_writes_no_page(image_folder, vgg_model, tmp_path):
    out = tmp_path / "plain"
    main(["run", str(vgg_model), str(image_folder / "disc.png"), "-o", str(out), "-q", "--no-html"])
    assert (out / "report.json").is_file()
    assert not (out / "report.html").exists() and not (out / "report_files").exists()
    assert "html" not in _report(out)["outputs"]
    # the page can still be made afterwards from what the run left
    write_report(out)
    page = _page(out)
    for a in page.find("img"):
        assert cv2.imread(str(_local(out, a["src"]))) is not None


def test_page_moves_with_its_folder(run_dir, tmp_path):
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(run_dir, moved)
    page = _page(moved)
    refs = [a["src"] for a in page.find("img")] + [a["href"] for a in page.find("a") if not a["href"].startswith("#")]
    for ref in refs:  # relative references only, found in the copy
        assert _local(moved, ref).is_file(), ref


def test_page_rebuilt_from_the_folder_alone_is_the_runs_page(run_dir, tmp_path):
    """The run draws the page's pictures in its pool and hands over the colours it computed;
    the page rebuilt from the files alone (pfv.npz read back, pictures drawn one at a time)
    is the same page with the same picture bytes."""
    import re

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    files = sorted(p.relative_to(copy) for p in (copy / "report_files").rglob("*") if p.is_file())
    before = {rel: (copy / rel).read_bytes() for rel in files}
    (copy / "report.html").unlink()
    write_report(copy, pool=None)
    stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC")
    strip = lambda t: stamp.sub("", t)  # noqa: E731
    assert strip((copy / "report.html").read_text(encoding="utf-8")) == strip((run_dir / "report.html").read_text(encoding="utf-8"))
    assert sorted(p.relative_to(copy) for p in (copy / "report_files").rglob("*") if p.is_file()) == files
    assert all((copy / rel).read_bytes() == data for rel, data in before.items())


def test_a_page_that_fails_leaves_the_complete_report(image_folder, vgg_model, tmp_path, monkeypatch):
    """The page is drawn before report.json is written: when drawing it fails, report.json
    still calls the run complete (its results stand), and the error is raised after it."""
    import pfv_onnx.report

    def broken(*args, **kwargs):
        raise RuntimeError("page broken")

    monkeypatch.setattr(pfv_onnx.report, "page_html", broken)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="page broken"):
        main(["run", str(vgg_model), str(image_folder / "disc.png"), "-o", str(out), "-q"])
    assert _report(out)["status"] == "complete" and (out / "pfv.npz").is_file()
    assert not (out / "report.html").exists()


def test_sanity_section(image_folder, vgg_model, labels_file, tmp_path):
    out = tmp_path / "both"
    main(["run", str(vgg_model), str(image_folder), "-o", str(out), "-q", "--labels", str(labels_file)])
    main(["sanity", str(vgg_model), str(image_folder), "-o", str(out), "-q"])
    sanity = json.loads((out / "sanity.json").read_text())
    page = _page(out)
    assert page.find("section", id="sanity") and page.find("section", "group")  # the run's gallery stays
    tvr = sanity["trained_vs_randomised"]
    assert f"{tvr['spearman']:.2f}" in page.text and f"{tvr['ssim']:.2f}" in page.text
    assert ("passed" if sanity["passed"] else "failed") in page.text
    pics = [a["src"] for a in page.find("img") if "sanity" in a["src"]]
    assert pics == ["sanity.png"] and cv2.imread(str(out / "sanity.png")) is not None


def test_sanity_alone_makes_a_page(image_folder, vgg_model, tmp_path):
    out = tmp_path / "sanity-only"
    main(["sanity", str(vgg_model), str(image_folder), "-o", str(out), "-q"])
    page = _page(out)
    assert page.find("section", id="sanity") and not page.find("section", "group")
    assert len([r for r in page.inside("tr", "failures") if "data-file" in r]) == 2
    main(["sanity", str(vgg_model), str(image_folder / "disc.png"), "-o", str(tmp_path / "quiet"), "-q", "--no-html"])
    assert not (tmp_path / "quiet" / "report.html").exists()


def test_basis_section(image_folder, vgg_model, tmp_path):
    basis = tmp_path / "basis.npz"
    assert main(["fit", str(vgg_model), str(image_folder), "-o", str(basis), "-q"]) in (0, 1)
    out = tmp_path / "with-basis"
    main(["run", str(vgg_model), str(image_folder), "-o", str(out), "-q", "--basis", str(basis)])
    page = _page(out)
    assert page.find("section", id="basis")
    assert "fitted on 5 images" in page.text
    assert str(basis) in page.text


def test_no_report_is_a_clear_error(tmp_path):
    from pfv_onnx.errors import InputError

    with pytest.raises(InputError, match="neither report.json nor sanity.json"):
        write_report(tmp_path)


# --------------------------------------------------------------------------- in a real browser


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


class Chromium:
    """Headless Chromium driven through the DevTools protocol over a pipe (fds 3 and 4)."""

    def __init__(self, binary: str):
        # Chromium reads commands from fd 3 and writes answers to fd 4. The pipe ends are
        # numbered 10 and up first, so that putting them on 3 and 4 cannot overwrite one another.
        to_r, to_w, from_r, from_w = _high_pipes()
        self.profile = tempfile.mkdtemp(prefix="pfv-chromium-")
        cmd = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-pipe", "about:blank"]
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_DUP2, to_r, 3),
            (os.POSIX_SPAWN_DUP2, from_w, 4),
        ]
        self.pid = os.posix_spawn(binary, cmd, os.environ, file_actions=actions)
        os.close(to_r)
        os.close(from_w)
        self.w, self.r = to_w, from_r
        self.buf = b""
        self.n = 0
        self.events: list[dict] = []

    def _recv(self, deadline: float) -> dict:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer")
            if select.select([self.r], [], [], left)[0]:
                chunk = os.read(self.r, 1 << 20)
                if not chunk:
                    raise EOFError("Chromium closed the pipe")
                self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60) -> dict:
        self.n += 1
        msg = {"id": self.n, "method": method, "params": params or {}, **({"sessionId": session} if session else {})}
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._recv(deadline)
            if m.get("id") == self.n:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_for(self, method: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for i, m in enumerate(self.events):
                if m.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._recv(deadline))

    def evaluate(self, session: str, expression: str):
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}, session)
        if "exceptionDetails" in r:
            raise RuntimeError(r["exceptionDetails"])
        return r["result"].get("value")

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except Exception:
            pass
        deadline = time.monotonic() + 10
        while os.waitpid(self.pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                break
            time.sleep(0.05)
        os.close(self.w)
        os.close(self.r)
        shutil.rmtree(self.profile, ignore_errors=True)


def _high_pipes() -> list[int]:
    """Two pipes as [read, write, read, write], every descriptor numbered 10 or more."""
    low = [*os.pipe(), *os.pipe()]
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in low]
    for fd in low:
        os.close(fd)
    return high


@pytest.fixture(scope="module")
def chromium():
    """One Chromium for the module's browser tests (each test has tabs of its own)."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    b = Chromium(CHROMIUM)
    try:
        yield b
    finally:
        b.close()


def _tabs(b: Chromium) -> set[str]:
    return {t["targetId"] for t in b.call("Target.getTargets")["targetInfos"] if t["type"] == "page"}


@pytest.fixture
def browser(chromium):
    """The module's Chromium with no events from earlier tests; the tabs a test opens are closed after it."""
    before = _tabs(chromium)
    chromium.events.clear()
    try:
        yield chromium
    finally:
        for target in _tabs(chromium) - before:
            chromium.call("Target.closeTarget", {"targetId": target})
        chromium.events.clear()


_IMAGES_JS = """
(async () => {
  const out = [];
  for (const img of Array.from(document.images)) {
    let probe = img;
    if (!img.complete || img.loading === 'lazy') {  // lazy ones (closed lightboxes): load a copy
      probe = new Image();
      probe.src = img.src;
      try { await probe.decode(); } catch (e) {}
    }
    out.push({src: img.getAttribute('src'), ok: probe.complete && probe.naturalWidth > 0, lazy: img.loading === 'lazy'});
  }
  return out;
})()
"""

_RECT_JS = """
(() => { const img = document.querySelector('article.card img.map'); img.scrollIntoView();
  const r = img.getBoundingClientRect();
  return {x: r.x + window.scrollX, y: r.y + window.scrollY, w: r.width, h: r.height,
          nw: img.naturalWidth, nh: img.naturalHeight, src: img.getAttribute('src')}; })()
"""


@pytest.mark.browser
def test_page_renders_in_chromium(browser, run_dir, tmp_path):
    b = browser
    target = b.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    s = b.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    b.call("Page.enable", session=s)
    b.call("Network.enable", session=s)
    width = 1280
    b.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, s)
    b.call("Page.navigate", {"url": (run_dir / "report.html").resolve().as_uri()}, s)
    b.wait_for("Page.loadEventFired")

    images = b.evaluate(s, _IMAGES_JS)
    broken = [i["src"] for i in images if not i["ok"]]
    assert not broken, f"pictures that did not load: {broken}"
    assert sum(1 for i in images if not i["lazy"]) >= 3 * 5 + 2 * 3 * 2  # gallery and legend pictures
    failed = [m["params"] for m in b.events if m.get("method") == "Network.loadingFailed"]
    assert not failed, failed
    assert b.evaluate(s, "document.querySelectorAll('svg.spectrum rect.bar').length") == 3
    assert b.evaluate(s, "Math.min(...Array.from(document.querySelectorAll('article.card')).map(c => c.getBoundingClientRect().height))") > 80

    # the whole page as a picture: not blank, and the map thumbnail painted where the page says
    height = int(b.evaluate(s, "document.documentElement.scrollHeight"))
    b.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": min(height, 12000), "deviceScaleFactor": 1, "mobile": False}, s)
    rect = b.evaluate(s, _RECT_JS.replace("img.scrollIntoView();", ""))
    shot = b.call("Page.captureScreenshot", {"format": "png"}, s)
    png = base64.b64decode(shot["data"])
    (tmp_path / "page.png").write_bytes(png)
    pic = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert pic.shape[1] == width and pic.shape[0] > 900
    assert pic.std() > 20 and len(np.unique(pic.reshape(-1, 3), axis=0)) > 2000
    # where object-fit: contain drew the map thumbnail, the screenshot shows that thumbnail
    scale = min(rect["w"] / rect["nw"], rect["h"] / rect["nh"])
    dw, dh = rect["nw"] * scale, rect["nh"] * scale
    x0, y0 = rect["x"] + (rect["w"] - dw) / 2, rect["y"] + (rect["h"] - dh) / 2
    drawn = pic[int(round(y0)) + 1 : int(round(y0 + dh)) - 1, int(round(x0)) + 1 : int(round(x0 + dw)) - 1]
    thumb = cv2.imread(str(_local(run_dir, rect["src"])))
    expected = cv2.resize(thumb, (drawn.shape[1], drawn.shape[0]), interpolation=cv2.INTER_AREA)
    assert np.abs(drawn.astype(float) - expected.astype(float)).mean() < 12.0

    # a click on a thumbnail opens its lightbox (CSS :target), with the full-size pictures
    key = b.evaluate(s, "document.querySelector('article.card a').getAttribute('href')")
    b.evaluate(s, f"location.hash = {json.dumps(key)}")
    shown = b.evaluate(s, f"getComputedStyle(document.getElementById({json.dumps(key[1:])})).display")
    assert shown == "block"
    loaded = b.evaluate(
        s,
        f"""(async () => {{ const imgs = Array.from(document.getElementById({json.dumps(key[1:])}).querySelectorAll('img'));
        await Promise.all(imgs.map(i => i.decode().catch(() => null)));
        return imgs.map(i => i.naturalWidth); }})()""",
    )
    assert len(loaded) == 3 + 3 and min(loaded) > 0  # overlay, map, image and one view per component


def _open(b: Chromium, page: Path, width: int, height: int = 900) -> str:
    target = b.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    s = b.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    b.call("Page.enable", session=s)
    b.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600}, s)
    b.call("Page.navigate", {"url": page.resolve().as_uri()}, s)
    b.wait_for("Page.loadEventFired")
    return s


def _key(b: Chromium, s: str, key: str, code: int) -> None:
    for kind in ("keyDown", "keyUp"):
        b.call("Input.dispatchKeyEvent", {"type": kind, "key": key, "code": key, "windowsVirtualKeyCode": code, **({"text": "\r"} if key == "Enter" and kind == "keyDown" else {})}, s)


def _set(b: Chromium, s: str, element: str, value: str, event: str) -> None:
    """Set a form field as a user would and let the page's script see the event."""
    b.evaluate(s, f"{{ const f = document.getElementById({json.dumps(element)}); f.value = {json.dumps(str(value))}; f.dispatchEvent(new Event({json.dumps(event)}, {{bubbles: true}})); }}")


_OPEN_ALL_JS = "document.querySelectorAll('details').forEach(d => d.open = true); document.documentElement.scrollWidth"


@pytest.mark.browser
@pytest.mark.parametrize("width", [390, 1400])
def test_page_fits_the_screen(browser, run_dir, width):
    """No horizontal scrolling at a phone's and a desktop's width, every section open; on the
    desktop the gallery starts on the first screen."""
    s = _open(browser, run_dir / "report.html", width)
    assert browser.evaluate(s, "document.documentElement.scrollWidth") <= width
    if width >= 1000:
        assert browser.evaluate(s, "document.querySelector('.gallery').getBoundingClientRect().top") < 900
    assert browser.evaluate(s, _OPEN_ALL_JS) <= width
    key = browser.evaluate(s, "document.querySelector('article.card').id.slice(5)")
    browser.evaluate(s, f"location.hash = '#view-{key}'")
    assert browser.evaluate(s, "document.documentElement.scrollWidth") <= width
    # the enlarged view's panel fits too
    assert browser.evaluate(s, f"document.getElementById('view-{key}').scrollWidth") <= width


@pytest.mark.browser
def test_keyboard_opens_steps_and_closes_the_lightbox(browser, run_dir):
    b = browser
    s = _open(b, run_dir / "report.html", 1400)
    order = b.evaluate(s, "Array.from(document.querySelectorAll('article.card')).map(c => c.id.slice(5))")
    assert len(order) == 5
    shown = "(() => { const v = Array.from(document.querySelectorAll('.lightbox')).filter(l => getComputedStyle(l).display !== 'none'); return v.map(l => l.id); })()"
    assert b.evaluate(s, shown) == []
    b.evaluate(s, "document.querySelector('article.card a').focus()")
    _key(b, s, "Enter", 13)
    assert b.evaluate(s, shown) == [f"view-{order[0]}"]
    _key(b, s, "ArrowRight", 39)
    _key(b, s, "ArrowRight", 39)
    assert b.evaluate(s, shown) == [f"view-{order[2]}"]
    _key(b, s, "ArrowLeft", 37)
    assert b.evaluate(s, shown) == [f"view-{order[1]}"]
    _key(b, s, "Escape", 27)
    assert b.evaluate(s, shown) == []
    assert b.evaluate(s, "location.hash") == f"#card-{order[1]}"


@pytest.mark.browser
def test_filters_hide_cards_and_sorting_orders_them(browser, run_dir):
    b = browser
    report = _report(run_dir)
    s = _open(b, run_dir / "report.html", 1400)
    visible = "Array.from(document.querySelectorAll('article.card')).filter(c => c.offsetParent !== null).map(c => c.dataset.file)"
    assert sorted(b.evaluate(s, visible)) == sorted(im["file"] for im in report["images"])
    cls = report["images"][0]["prediction"]["class"]
    _set(b, s, "f-class", f"{cls}", "change")
    assert sorted(b.evaluate(s, visible)) == sorted(im["file"] for im in report["images"] if im["prediction"]["class"] == cls)
    _set(b, s, "f-class", "", "change")
    limit = sorted(im["prediction"]["score"] for im in report["images"])[2]  # the three least confident
    _set(b, s, "f-score", f"{100 * limit}", "input")
    assert sorted(b.evaluate(s, visible)) == sorted(im["file"] for im in report["images"] if im["prediction"]["score"] <= limit)
    _set(b, s, "f-score", "100", "input")
    _set(b, s, "sort", "score-asc", "change")
    expected = [im["file"] for im in sorted(report["images"], key=lambda im: im["prediction"]["score"])]
    assert b.evaluate(s, visible) == expected


def test_component_views_are_red_where_positive_and_blue_where_negative(run_dir):
    """Each enlarged view shows every component alone: at the centre of the cell where pfv.npz's
    component is largest the picture is red, where it is most negative blue."""
    report = _report(run_dir)
    page = _page(run_dir)
    with np.load(run_dir / "pfv.npz") as z:
        comps = z["components"].astype(np.float64)
    n, k, gh, gw = comps.shape
    checked = 0
    for im in report["images"]:
        row = im["row"]
        views = [a for a in page.inside("figure", "views") if "data-component" in a]
        srcs = [a["src"] for a in page.find("img") if f"/g{im['group']}-{row}-c" in a["src"]]
        assert len(srcs) == k and views
        for c, src in enumerate(srcs):
            pic = cv2.imread(str(_local(run_dir, src)))  # BGR
            h, w = pic.shape[:2]
            x0, y0, x1, y1 = im["crop_box"]
            sy, sx = h / im["size"][0], w / im["size"][1]
            for pick, want in ((np.argmax, "red"), (np.argmin, "blue")):
                y, x = divmod(int(pick(comps[row, c])), gw)
                if abs(comps[row, c, y, x]) < 0.5 * np.abs(comps[:, c]).max():
                    continue  # too faint to tell apart from white
                py = int((y0 + (y + 0.5) * (y1 - y0) / gh) * sy)
                px = int((x0 + (x + 0.5) * (x1 - x0) / gw) * sx)
                b, g, r = (int(v) for v in pic[min(py, h - 1), min(px, w - 1)])
                assert (r > b + 40) if want == "red" else (b > r + 40), (src, want, (r, g, b))
                checked += 1
    assert checked >= n


def test_page_needs_only_the_components_of_pfv_npz(run_dir, tmp_path):
    """A pfv.npz without ``rgb`` (or with it as uint8) still gives the legend, the component views
    and the flags; the mean map colours then come from the map thumbnails."""
    for variant in ("no-rgb", "uint8"):
        out = tmp_path / variant
        shutil.copytree(run_dir, out)
        with np.load(out / "pfv.npz") as z:
            arrays = {k: z[k] for k in z.files}
        if variant == "no-rgb":
            del arrays["rgb"]
        else:
            arrays["rgb"] = np.rint(arrays["rgb"] * 255).astype(np.uint8)
        np.savez(out / "pfv.npz", **arrays)
        write_report(out)
        page = _page(out)
        assert len(page.find("a", "patch")) == len(_page(run_dir).find("a", "patch"))
        assert len([a for a in page.find("img") if "/components/" in a["src"]]) == 3 * len(_report(out)["images"])
        assert not page.find("section", id="page-notes"), page.text
        cards = page.find("article", "card")
        assert all(c["data-flags"] in ("", "low", "atypical", "low atypical") for c in cards)
        scores = {im["file"]: im["prediction"]["score"] for im in _report(out)["images"]}
        assert all(("low" in c["data-flags"]) == (scores[c["data-file"]] < 0.5) for c in cards)


@pytest.mark.browser
def test_without_script_every_card_shows(browser, class_dir):
    b = browser
    target = b.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    s = b.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    b.call("Page.enable", session=s)
    b.call("Emulation.setScriptExecutionDisabled", {"value": True}, s)
    b.call("Page.navigate", {"url": (class_dir / "report.html").resolve().as_uri()}, s)
    b.wait_for("Page.loadEventFired")
    b.call("Emulation.setScriptExecutionDisabled", {"value": False}, s)  # to ask the page; its own script did not run
    assert b.evaluate(s, "document.getElementById('toolbar').offsetParent === null")
    shown = b.evaluate(s, "Array.from(document.querySelectorAll('article.card')).filter(c => c.offsetParent !== null).length")
    assert shown == len(_report(class_dir)["images"])


@pytest.mark.browser
def test_group_filter_hides_the_other_groups(browser, class_dir):
    b = browser
    report = _report(class_dir)
    s = _open(b, class_dir / "report.html", 1400)
    g = report["groups"][1]["index"]
    _set(b, s, "f-group", str(g), "change")
    visible = "Array.from(document.querySelectorAll('article.card')).filter(c => c.offsetParent !== null).map(c => c.dataset.file)"
    assert sorted(b.evaluate(s, visible)) == sorted(im["file"] for im in report["images"] if im["group"] == g)
    sections = b.evaluate(s, "Array.from(document.querySelectorAll('section.group')).filter(x => x.offsetParent !== null).map(x => x.dataset.group)")
    assert sections == [str(g)]
    assert b.evaluate(s, "document.getElementById('shown').textContent").startswith(f"{sum(im['group'] == g for im in report['images'])} of {len(report['images'])}")

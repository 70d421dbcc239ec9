"""The page's sections around the gallery: the run's facts, feature maps, failures, sanity check, basis, notes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .assets import Pictures
from .fmt import e, kv, list_text, num, seconds, url


def facts(report: dict[str, Any] | None, sanity: dict[str, Any] | None, files: Pictures) -> str:
    """The run's facts: model, preprocessing, PFV options, run; then the feature maps used."""
    main = report or sanity or {}
    model = main.get("model") or {}
    prep = main.get("preprocessing") or {}
    pfv = main.get("pfv") or {}
    sha = str(model.get("sha256") or "")
    model_rows = [
        ("file", f'<span class="mono" title="{e(model.get("path"))}">{e(Path(str(model.get("path") or "")).name)}</span>'),
        ("sha256", f'<span class="mono" title="{e(sha)}">{e(sha[:16])}{"…" if len(sha) > 16 else ""}</span>' if sha else ""),
    ]
    if report is not None:
        size = model.get("input_size") or []
        inp = f'<span class="mono">{e(model.get("input_name"))}</span>, {e(model.get("input_layout"))}'
        if size:
            inp += f", {e('x'.join(str(s) if s else '?' for s in size))}"
        labels = model.get("labels") or {}
        model_rows += [
            ("input", inp),
            ("outputs", e(", ".join(model.get("output_names") or []))),
            ("labels", e(f"{labels.get('count')} from {labels.get('source')}") if labels.get("source") else "none"),
            ("provider", e(model.get("provider"))),
        ]
    mean, std = prep.get("mean"), prep.get("std")
    size = prep.get("size") or []
    prep_rows = [
        ("preset", e(prep.get("preset"))),
        ("colour order", e(prep.get("color_order"))),
        ("pixels", e(f"0-{int(prep['pixel_range']) if prep.get('pixel_range') else '?'} before mean/std") if prep.get("pixel_range") else ""),
        ("mean / std", e(f"{list_text(mean)} / {list_text(std)}") if mean is not None else ""),
        ("size", e(f"{'x'.join(str(s) for s in size)}, {prep.get('resize')}") if size else ""),
        ("from", e("; ".join(prep.get("notes") or []))),
    ]
    weighting = pfv.get("weight_layers")
    pfv_rows = [
        ("k", e(pfv.get("k"))),
        ("weighting", e("hierarchical" if pfv.get("hierarchical") else "flat")),
        ("weight maps", e("none" if weighting == [] else ", ".join(weighting) if weighting else "automatic")),
        ("E_L", e(pfv.get("layer") or "automatic")),
        ("colour clip", e(f"±{num(pfv.get('n_sigma'), 2)} σ") if pfv.get("n_sigma") is not None else ""),
    ]
    if report is not None:
        grouping = "by predicted class" if pfv.get("group_by") == "class" else (f"{pfv.get('group_size')} images per group" if pfv.get("group_size") else "all images in one group")
        pfv_rows += [
            ("batch size", e(pfv.get("batch_size"))),
            ("groups", e(grouping)),
            ("basis", f'<a href="#basis">{e(Path(str(pfv["basis"])).name)}</a>' if pfv.get("basis") else "fitted per group"),
        ]
    timings = (report or {}).get("timings") or {}
    run_rows = [("command", e(main.get("command")))]
    if report is not None:
        run_rows += [
            ("status", e(report.get("status"))),
            ("run time", e(seconds(timings.get("total_s"))) if timings.get("total_s") is not None else ""),
            (
                "of which",
                e(", ".join(f"{k[:-2]} {seconds(v)}" for k, v in timings.items() if k.endswith("_s") and k != "total_s" and v is not None)),
            ),
        ]
    run_rows.append(("pfv-onnx", e(main.get("pfv_onnx_version"))))
    outs = (report or {}).get("outputs") or {}
    listed = [outs.get("report"), outs.get("npz"), outs.get("mosaic")]
    if sanity is not None:
        listed.append("sanity.json")
    links = ", ".join(f'<a href="{url(f)}">{e(f)}</a>' for f in listed if f and files.exists(f))
    run_rows.append(("files", links))
    boxes = [("Model", model_rows), ("Preprocessing", prep_rows), ("PFV", pfv_rows), ("Run", run_rows)]
    cards = "".join(f'<div class="box"><h3>{e(t)}</h3>{kv(rows)}</div>' for t, rows in boxes)
    return f'<section id="summary" class="facts">{cards}</section>' + feature_maps(report, sanity)

def feature_maps(report: dict[str, Any] | None, sanity: dict[str, Any] | None) -> str:
    maps = (report or {}).get("feature_maps") or []
    if not maps and sanity:
        maps = [{"name": n} for n in sanity.get("feature_maps") or []]
    if not maps:
        return ""
    rows = []
    for m in maps:
        role = m.get("role") or ""
        shape = m.get("shape") or []
        rows.append(
            f'<tr class="{e(role)}"><td data-label="role"><span class="role {e(role)}">{e(role.replace("decomposed", "decomposed (E_L)") or "-")}</span></td>'
            f'<td class="mono" data-label="tensor">{e(m.get("name"))}</td><td class="mono nowrap" data-label="op">{e(m.get("op") or "")}</td>'
            f'<td class="mono nowrap" data-label="shape">{e("x".join(str(s) for s in shape[1:]) if shape else "")}</td><td data-label="why">{e(m.get("reason") or "")}</td></tr>'
        )
    return (
        '<details class="box fmaps" open><summary>Feature maps used, earliest first, and why</summary>'
        '<table class="t"><thead><tr><th>role</th><th>tensor</th><th>op</th><th>shape</th><th>why</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></details>"
    )

def decomposed_channels(report: dict[str, Any] | None) -> int | None:
    for m in (report or {}).get("feature_maps") or []:
        if m.get("role") == "decomposed" and len(m.get("shape") or []) == 4:
            shape = m["shape"]
            c = shape[3] if str(m.get("layout")) == "NHWC" else shape[1]
            return int(c) if isinstance(c, int) else None
    return None

def decomposed_name(report: dict[str, Any] | None) -> str:
    for m in (report or {}).get("feature_maps") or []:
        if m.get("role") == "decomposed":
            return str(m.get("name"))
    maps = (report or {}).get("feature_maps") or []
    return str(maps[-1].get("name")) if maps else "the last feature map"

def failures(source: dict[str, Any]) -> str:
    failures = source.get("failures") or []
    skipped = source.get("skipped") or []
    if not failures:
        body = '<p class="ok">Every input was read and explained.</p>'
    else:
        rows = "".join(f'<tr data-file="{e(f.get("file"))}"><td class="mono" data-label="file">{e(f.get("file"))}</td><td data-label="reason">{e(f.get("reason"))}</td></tr>' for f in failures)
        body = f'<table class="t failures"><thead><tr><th>file</th><th>reason</th></tr></thead><tbody>{rows}</tbody></table>'
    if skipped:
        items = "".join(f'<li><span class="mono">{e(s.get("file"))}</span>: {e(s.get("reason"))}</li>' for s in skipped)
        body += f'<details class="small"><summary>{len(skipped)} file{"s" if len(skipped) != 1 else ""} in the folders were not images and were skipped</summary><ul>{items}</ul></details>'
    return f'<section id="failures"><h2>Failed inputs <span class="sub">{len(failures)}</span></h2>{body}</section>'

def sanity_section(s: dict[str, Any], report: dict[str, Any] | None, files: Pictures) -> str:
    tvr = s.get("trained_vs_randomised") or {}
    between = s.get("between_images") or {}
    bt, br = between.get("trained") or {}, between.get("randomised") or {}
    threshold = s.get("similar_threshold", 0.5)
    passed = bool(s.get("passed"))
    r = s.get("randomisation") or {}
    same_model = report is None or ((report.get("model") or {}).get("sha256") == (s.get("model") or {}).get("sha256"))
    rows = (
        f"<tr><th>trained vs randomised, same image</th><td class=num data-label=spearman>{num(tvr.get('spearman'))}</td><td class=num data-label=ssim>{num(tvr.get('ssim'))}</td>"
        f"<td>low: the maps depend on what the network learned (Spearman below {num(threshold)})</td></tr>"
        f"<tr><th>between images, trained</th><td class=num data-label=spearman>{num(bt.get('spearman'))}</td><td class=num data-label=ssim>{num(bt.get('ssim'))}</td>"
        "<td>lower than randomised: the trained maps follow the image content</td></tr>"
        f"<tr><th>between images, randomised</th><td class=num data-label=spearman>{num(br.get('spearman'))}</td><td class=num data-label=ssim>{num(br.get('ssim'))}</td>"
        "<td>maps of a network that learned nothing: what the architecture alone draws</td></tr>"
    )
    outs = s.get("outputs") or {}
    pic = ""
    side = outs.get("side_by_side")
    if side and files.exists(side):
        links = " · ".join(f'<a href="{url(outs[k])}">{e(outs[k])}</a>' for k in ("trained", "randomised") if outs.get(k) and files.exists(outs[k]))
        pic = (
            f'<figure class="sanity-pic"><a href="{url(side)}"><img src="{url(side)}" alt="PFV maps of the trained model (left) and of the randomised model (right)"></a>'
            f"<figcaption>Trained model left, randomised (seed {e(r.get('seed'))}) right, the same images. Full size: {links}</figcaption></figure>"
        )
    summary = "".join(f"<li>{e(line.strip()[2:].strip())}</li>" for line in s.get("summary") or [] if line.strip().startswith("->"))
    other = "" if same_model else '<p class="bad">This check was run on another model file than the gallery above (sha256 differs).</p>'
    return (
        f'<section id="sanity"><h2>Sanity check: model randomisation <span class="pill {"good" if passed else "bad"}">{"passed" if passed else "failed"}</span></h2>'
        f"{other}<p>Every Conv, Gemm and MatMul weight of a copy of the model was re-drawn ({e(r.get('init', 'He-normal'))}; "
        f"{e(r.get('weights'))} tensors, {e(r.get('parameters'))} parameters, seed {e(r.get('seed'))}) and both models explained the same "
        f"{e(s.get('images'))} images with the same feature maps. The scores compare the magnitude of the maps "
        "(1 = the same maps, 0 = unrelated). A trained network should give maps unlike its randomised twin's, and maps "
        "that change from image to image (Adebayo et al., NeurIPS 2018).</p>"
        f'<table class="t scores"><thead><tr><th></th><th>Spearman</th><th>SSIM</th><th>what it means</th></tr></thead><tbody>{rows}</tbody></table>'
        f'<ul class="summary">{summary}</ul>{pic}</section>'
    )

def basis_section(report: dict[str, Any] | None) -> str:
    pfv = (report or {}).get("pfv") or {}
    path = pfv.get("basis")
    if not path:
        return ""
    rows: list[tuple[str, str]] = [("file", f'<span class="mono">{e(path)}</span>')]
    try:
        from ..basis import load

        b = load(path)
        rows += [
            ("fitted on", e(f"{b.n_images} images ({b.n_observations} positions of the feature map)")),
            ("model", e(f"{b.model_name} (sha256 {b.model_sha256[:16]}…)")),
            ("E_L", f'<span class="mono">{e(b.decomposed)}</span>'),
            ("weight maps", e(", ".join(b.weighting) or "none")),
            ("input size", e("x".join(str(v) for v in b.input_size))),
            ("k", e(b.k)),
        ]
    except Exception:  # the basis file moved since the run: the run's own notes say what it was
        rows.append(("", e("the basis file is no longer readable; the run's notes below say what it was")))
    notes = "".join(f"<li>{e(n)}</li>" for n in (report or {}).get("notes") or [] if "basis" in str(n))
    return (
        '<section id="basis"><h2>Fitted basis</h2><div class="box">'
        "<p>The colours come from principal directions and a colour scaling fitted over a data set with "
        "<span class=mono>pfv-onnx fit</span>, not from each group: a colour means the same in every group and every run "
        "that uses this basis.</p>"
        f"{kv(rows)}<ul class=small>{notes}</ul></div></section>"
    )

def run_notes(report: dict[str, Any] | None) -> str:
    notes = list((report or {}).get("notes") or [])
    if not notes:
        return ""
    items = "".join(f"<li>{e(n)}</li>" for n in notes)
    return f'<section id="details"><h2>Run notes</h2><ul class="small">{items}</ul></section>'

"""Token sequences and maps made by Reshape/Transpose: the automatic choice, its reasons and
warnings, ``--layer``, refusals, and PFV numbers on the patch tokens.

Expected tensors are written by hand in token_graphs.py; expected numbers come from activations
read with plain onnxruntime, the patch tokens cut out and put on their grid here, and a PCA
written here in NumPy (or the reference in reference.py for the full rgb).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import graphs
import reference as ref
import token_graphs as tg
from pfv_onnx import PFV, PfvError, inspect
from pfv_onnx.cli import main

TOKEN_CASES = list(tg.TOKEN_CASES)
ALL_CASES = [*tg.TOKEN_CASES, *tg.GRID_CASES]


def build(name: str):
    return getattr(tg, name)()


@pytest.fixture
def model_file(save_model):
    def _file(name: str) -> tuple[str, graphs.GraphCase, tg.TokenFacts | None]:
        case, facts = build(name)
        return save_model(case.model, case.name), case, facts

    return _file


def numpy_pca(x: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(components (N, k, h, w), explained-variance ratios) of an (N, C, h, w) map, in float64."""
    n, c, h, w = x.shape
    rows = x.transpose(0, 2, 3, 1).reshape(-1, c).astype(np.float64)
    rows = rows - rows.mean(axis=0)
    _, s, vt = np.linalg.svd(rows, full_matrices=False)
    proj = rows @ vt[:k].T
    ratio = s[:k] ** 2 / np.sum(s**2)
    return proj.reshape(n, h, w, k).transpose(0, 3, 1, 2), ratio


def patch_grid(tokens: np.ndarray, facts: tg.TokenFacts) -> np.ndarray:
    """The patch tokens of (N, T, C) put on their (h, w) grid by hand, as (N, C, h, w)."""
    h, w = facts.grid
    patches = tokens[:, facts.before : facts.before + h * w, :]
    assert patches.shape[1] == h * w == tokens.shape[1] - facts.before - facts.after
    return patches.reshape(tokens.shape[0], h, w, -1).transpose(0, 3, 1, 2)


def _as_map(a: np.ndarray, name: str, facts: tg.TokenFacts) -> np.ndarray:
    """A weighting map as NCHW: conv maps are; tokens of a finer stage (no special tokens) on their
    square grid; a block's attention probabilities (N, heads, T, T) as the attention each patch token
    receives (mean over heads and queries) on the patch grid."""
    if name.endswith("_attention"):
        return patch_grid(a.mean(axis=(1, 2))[:, :, None], facts)
    if a.ndim == 4:
        return a
    k = int(round(np.sqrt(a.shape[1])))
    return patch_grid(a, tg.TokenFacts((k, k), 0, 0, ""))


# ---------------------------------------------------------------- the choice


@pytest.mark.parametrize("name", ALL_CASES)
def test_automatic_choice(name, model_file):
    path, case, facts = model_file(name)
    rep = inspect(path)
    assert rep.decomposed.name == case.expected_decomposed
    assert [m.name for m in rep.weighting] == case.expected_weighting
    assert rep.decomposed.reason and all(m.reason for m in rep.weighting)
    if facts is not None:
        assert rep.decomposed.hw == facts.grid
        assert rep.decomposed.tokens is not None
        assert (rep.decomposed.tokens.before, rep.decomposed.tokens.after) == (facts.before, facts.after)
        names = [m.name for m in rep.candidates]
        assert facts.patch_conv in names  # a candidate, never E_L


@pytest.mark.parametrize("name", TOKEN_CASES)
def test_token_candidates_show_their_grid(name, model_file):
    path, case, facts = model_file(name)
    d = json.loads(_inspect_output(path, "--json"))
    tokens = [c for c in d["candidates"] if c["tokens"]]
    assert tokens, "no token tensor listed"
    el = next(c for c in d["candidates"] if c["name"] == case.expected_decomposed)
    assert el["grid"] == list(facts.grid)
    assert el["tokens"]["before"] == facts.before and el["tokens"]["after"] == facts.after
    assert "patch_embed" in el["grid_from"] and "Reshape" in el["grid_from"]
    table = _inspect_output(path)
    assert f"{facts.grid[0]}x{facts.grid[1]}" in table and "grids:" in table


def _inspect_output(path: str, *extra: str) -> str:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["inspect", path, *extra]) == 0
    return buf.getvalue()


def test_swin_every_stage_resolution_is_a_candidate(model_file):
    path, case, _ = model_file("swin")
    rep = inspect(path)
    by_hw: dict[tuple[int, int], list[str]] = {}
    for m in rep.candidates:
        by_hw.setdefault(m.hw, []).append(m.name)
    assert {(8, 8), (4, 4)} <= set(by_hw)
    assert "stage1" in by_hw[(8, 8)] and "stage2" in by_hw[(4, 4)]
    layouts = {m.name: m.layout.value for m in rep.candidates}
    assert layouts["stage1"] == layouts["stage2"] == layouts["final_norm"] == "NHWC"
    assert "merge_concat" not in [m.name for m in rep.weighting]


def test_maxvit_reason_names_what_was_found(model_file):
    path, case, _ = model_file("maxvit")
    rep = inspect(path)
    assert rep.decomposed.name == "departition" and rep.decomposed.op == "Reshape"
    assert "GlobalAveragePool" in rep.decomposed.reason
    assert "mbconv_add" not in rep.decomposed.reason
    assert "departition" in [m.name for m in rep.candidates] and "mbconv_add" in [m.name for m in rep.candidates]


@pytest.mark.parametrize("name,layer", [("swin", "stage1"), ("maxvit", "departition"), ("vit", "block0"), ("swin", "stage2")])
def test_layer_reaches_reshaped_and_nhwc_maps(name, layer, model_file):
    path, case, facts = model_file(name)
    pfv = PFV(path, provider="cpu", layer=layer, weight_layers=[])
    batch = case.batch()
    res = pfv.explain(batch)
    assert res.feature_maps == [layer]
    _, raw = graphs.fetch(case.model, [layer], batch)
    e = raw[layer]
    if facts is not None:
        e = patch_grid(e, facts)
    elif res.maps[-1].layout.value == "NHWC":
        e = e.transpose(0, 3, 1, 2)
    want = ref.pfv(e, [], case.image_hw, align_to=res.components)
    assert np.abs(res.rgb - want.rgb).max() < 1e-4


# ---------------------------------------------------------------- numbers


@pytest.mark.parametrize("name", TOKEN_CASES)
def test_token_pfv_matches_numpy_pca_on_the_patch_grid(name, model_file):
    path, case, facts = model_file(name)
    batch = case.batch(n=5, seed=3)
    res = PFV(path, provider="cpu").explain(batch)
    _, raw = graphs.fetch(case.model, case.all_expected, batch)
    grid = patch_grid(raw[case.expected_decomposed].astype(np.float64), facts)
    comps, ratio = numpy_pca(grid)
    np.testing.assert_allclose(res.explained_variance_ratio, ratio, atol=1e-5)
    got = res.components.astype(np.float64)
    for i in range(3):  # signs are the engine's rule; the test aligns them
        sign = np.sign(np.sum(got[:, i] * comps[:, i]))
        np.testing.assert_allclose(got[:, i], sign * comps[:, i], atol=1e-4 * np.abs(comps).max())
    weights = [_as_map(raw[n].astype(np.float64), n, facts) for n in case.expected_weighting]
    want = ref.pfv(grid, weights, case.image_hw, align_to=res.components)
    assert np.abs(res.rgb - want.rgb).max() < 1e-4


def test_saved_surgery_of_a_token_model_is_valid(model_file, tmp_path):
    path, case, facts = model_file("dinov2")
    out = PFV(path, provider="cpu").save_surgery(tmp_path / "cut.onnx")
    m = onnx.load(str(out))
    onnx.checker.check_model(m, full_check=True)
    added = [o for o in m.graph.output if o.name.startswith("pfv_onnx/")]
    dims = [d.dim_value for d in added[-1].type.tensor_type.shape.dim[1:]]
    assert dims == [*facts.grid, tg.DIM]


# ---------------------------------------------------------------- warnings and refusals


@pytest.mark.parametrize("name,warned", [("vit", True), ("dinov2", True), ("headless", True), ("mean_pooled", False), ("swin", False)])
def test_class_token_models_get_a_warning(name, warned, model_file):
    path, case, _ = model_file(name)
    rep = inspect(path)
    assert bool([w for w in rep.warnings if "class" in w]) == warned
    d = json.loads(_inspect_output(path, "--json"))
    assert d["warnings"] == rep.warnings
    if warned:
        assert "warnings:" in _inspect_output(path)


def test_ungriddable_tokens_are_refused_in_one_line(model_file, capsys):
    path, case, _ = model_file("ungriddable")
    with pytest.raises(PfvError, match="grid"):
        inspect(path)
    capsys.readouterr()
    assert main(["inspect", path]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "grid" in err and "Traceback" not in err


def test_image_mlp_is_refused_in_one_line(save_model, capsys):
    case = graphs.flatten_mlp()  # an image flattened into an MLP: no map of the network's own
    path = save_model(case.model, "token_flatten_mlp")
    capsys.readouterr()
    assert main(["inspect", path]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no spatial feature maps" in err, err


def test_run_report_carries_the_class_token_warning(model_file, tmp_path, capsys):
    import cv2

    path, case, _ = model_file("vit")
    images = tmp_path / "images"
    images.mkdir()
    yy, xx = np.mgrid[0:24, 0:30]
    for i in range(3):
        pic = np.stack([xx * (4 + i), yy * 6, (xx + yy) * 2], axis=-1).astype(np.uint8)
        cv2.imwrite(str(images / f"p{i}.png"), pic)
    out = tmp_path / "out"
    assert main(["run", path, str(images), "-o", str(out), "-q"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert any("class" in w for w in report["warnings"])


def _at_opset_12(model: onnx.ModelProto, axis: int | None) -> onnx.ModelProto:
    """The model at opset 12: LayerNormalization (opset 17) spelled as Mul and Add, and the
    attention Softmaxes with ``axis`` (None: no attribute, so opset 12's default of 1)."""
    from onnx import helper

    nodes = []
    for node in model.graph.node:
        if node.op_type == "LayerNormalization":  # scale and shift: enough for the map analysis
            x, scale, bias = node.input
            nodes += [helper.make_node("Mul", [x, scale], [node.output[0] + "_scaled"]),
                      helper.make_node("Add", [node.output[0] + "_scaled", bias], [node.output[0]])]
            continue
        if node.op_type == "Softmax":
            node = helper.make_node("Softmax", list(node.input), list(node.output), name=node.name,
                                    **({} if axis is None else {"axis": axis}))
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("", 12))
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("axis, weighted", [(None, False), (1, False), (2, False), (-1, True), (3, True)])
def test_an_opset_12_softmax_is_attention_only_over_its_last_axis(axis, weighted, save_model):
    """Before opset 13, Softmax's axis defaults to 1 and flattens the input from that axis: only
    an axis of the last dimension gives each query's own probabilities (attention to weight by)."""
    case, _ = tg.vit()
    path = save_model(_at_opset_12(case.model, axis), f"vit_opset12_{axis}")
    rep = inspect(path)
    assert rep.decomposed.name == case.expected_decomposed
    assert [m.name for m in rep.weighting] == (["block1_attention"] if weighted else [])

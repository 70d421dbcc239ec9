"""Models that cannot be used: exit code 2 and one line saying why, no traceback (``--debug``
shows it); a model asking for absurd memory is refused before anything runs; a feature map
with NaN or Inf is an error naming it; constant features give a defined, finite map."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import bad_inputs
import graphs
from pfv_onnx import PFV
from pfv_onnx.cli import main
from pfv_onnx.errors import InputError, ModelError, PfvError
from pfv_onnx.model_io import image_input, infer_tensor_info, with_pinned_input

CASES = [
    "missing_file", "a_folder", "random_bytes", "truncated_protobuf", "truncated_tail", "empty_file",
    "no_image_input", "several_inputs", "mlp", "flatten_mlp", "custom_domain", "custom_domain_unregistered",
    "opset_too_new", "huge_tensor", "external_data_missing", "damaged_text",
]  # fmt: skip


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory):
    return bad_inputs.bad_model_files(tmp_path_factory.mktemp("bad_models"))


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("img") / "picture.png"
    cv2.imwrite(str(p), bad_inputs.pattern_rgb(24, 32))
    return p


def test_every_case_is_covered(bad_models):
    assert sorted(bad_models) == sorted(CASES)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", ["run", "inspect"])
def test_bad_model_exits_2_with_one_line(case, command, bad_models, image, tmp_path, capsys):
    path, pattern, extra = bad_models[case]
    args = [command, str(path), *extra]
    if command == "run":
        args += [str(image), "-o", str(tmp_path / "out"), "-q"]
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"pfv-onnx {command}: error: ")
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in err
    if command == "run":  # nothing was written for a model that cannot be used
        assert not list((tmp_path / "out").glob("*.png"))


@pytest.mark.parametrize("case", ["random_bytes", "opset_too_new", "huge_tensor", "several_inputs"])
def test_debug_shows_the_traceback(case, bad_models, image, tmp_path, capsys):
    path, pattern, _ = bad_models[case]
    assert main(["--debug", "run", str(path), str(image), "-o", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert re.search(pattern, err.strip().splitlines()[-1])


@pytest.mark.parametrize("case", ["truncated_protobuf", "huge_tensor"])
def test_console_script_exit_code_and_message(case, bad_models, image, tmp_path):
    """The installed command, as a user runs it: a real exit status of 2, one line on stderr."""
    path, pattern, _ = bad_models[case]
    exe = Path(sys.executable).parent / "pfv-onnx"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "import sys; from pfv_onnx.cli import main; sys.exit(main())"]
    p = subprocess.run([*cmd, "run", str(path), str(image), "-o", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and re.search(pattern, lines[0]), p.stderr


def test_huge_tensor_is_refused_before_any_session(bad_models, monkeypatch):
    """Shape inference shows the 1 TiB tensor: no onnxruntime session is ever created."""
    import onnxruntime

    def no_session(*a, **k):
        raise AssertionError("an onnxruntime session was created for a model that should be refused")

    monkeypatch.setattr(onnxruntime, "InferenceSession", no_session)
    with pytest.raises(ModelError, match="1024.0 GiB"):
        PFV(str(bad_models["huge_tensor"][0]), provider="cpu")


def test_tensor_cap_is_configurable(tmp_path):
    """The same graph is accepted under a cap above its largest tensor and refused under one
    below it (sizes computed here by hand from the graph's shapes)."""
    path = tmp_path / "vgg.onnx"
    onnx.save(graphs.vgg().model, str(path))
    largest = 8 * 24 * 32 * 4  # the first convs: 8 channels at 24x32, float32, batch 1
    PFV(str(path), provider="cpu", max_tensor_bytes=largest)
    with pytest.raises(ModelError, match="refusing to run"):
        PFV(str(path), provider="cpu", max_tensor_bytes=largest - 1)


def test_naming_the_image_input_is_not_enough_when_another_input_needs_data(bad_models, image, tmp_path, capsys):
    """Naming the image input is not enough when the other input cannot be filled: still one line, exit 2."""
    path, _, _ = bad_models["several_inputs"]
    assert main(["run", str(path), str(image), "-o", str(tmp_path / "o"), "-q", "--input-name", "image"]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "gain" in lines[0]


# --------------------------------------------------------------------------- numerics


def _nonfinite_model(kind: str) -> onnx.ModelProto:
    """conv-relu (16x16) -> maxpool -> conv-relu (8x8) -> [optional op] -> GAP -> Gemm.

    ``kind``: "inf_decomposed": E_L is Reciprocal(relu) (1/0 = inf where the relu is 0);
    "nan_decomposed": E_L is Sqrt(conv) (NaN where the conv is negative);
    "inf_weighting": E_L is finite, a side branch Reciprocal(relu1) named ``bad_weight``
    (meant to be chosen with weight_layers)."""
    n = graphs._Net(seed=40)
    r1 = n.conv_relu("x", 3, 6, out="relu1")
    t = n.maxpool(r1)
    if kind == "nan_decomposed":
        e = n.op("Sqrt", [n.conv(t, 6, 6)], "sqrt_map")
    else:
        r2 = n.conv_relu(t, 6, 6, out="relu2")
        e = n.op("Reciprocal", [r2], "recip_map") if kind == "inf_decomposed" else r2
    pooled = n.op("Flatten", [n.op("GlobalAveragePool", [e])])
    logits = n.gemm(pooled, 6, 3)
    outputs = [graphs._vi("logits", TensorProto.FLOAT, ["N", 3])]
    n.nodes[-1].output[0] = "logits"
    if kind == "inf_weighting":
        side = n.op("Reciprocal", [r1], "bad_weight")
        n.op("ReduceSum", [side], "side_sum", keepdims=0)
        outputs.append(graphs._vi("side_sum", TensorProto.FLOAT, []))
    del logits
    return n.model(kind, [graphs._vi("x", TensorProto.FLOAT, ["N", 3, 16, 16])], outputs)


@pytest.mark.parametrize(
    "kind, tensor, options",
    [("inf_decomposed", "recip_map", {}), ("nan_decomposed", "sqrt_map", {}),
     ("inf_weighting", "bad_weight", {"weight_layers": ["bad_weight"]})],
)  # fmt: skip
def test_nonfinite_feature_map_is_an_error_naming_it(kind, tensor, options, tmp_path):
    path = tmp_path / f"{kind}.onnx"
    onnx.save(_nonfinite_model(kind), str(path))
    batch = graphs.make_batch((3, 3, 16, 16), seed=1)
    # independently: the named tensor really holds non-finite values for this batch
    _, maps = graphs.fetch(onnx.load(str(path)), [tensor], batch, "x")
    assert not np.isfinite(maps[tensor]).all()
    with pytest.raises(InputError, match=re.escape(repr(tensor)) + ".*NaN or Inf"):
        PFV(str(path), provider="cpu", **options).explain(batch)


def test_nonfinite_map_on_the_command_line(tmp_path, image, capsys):
    path = tmp_path / "inf.onnx"
    onnx.save(_nonfinite_model("inf_decomposed"), str(path))
    assert main(["run", str(path), str(image), "-o", str(tmp_path / "o"), "-q", "--size", "16"]) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]  # warnings (a small group) may precede it
    assert len(errors) == 1 and "'recip_map'" in errors[0] and "NaN or Inf" in errors[0]


def test_nan_in_the_batch_is_an_error_not_a_map(tmp_path):
    path = tmp_path / "vgg.onnx"
    onnx.save(graphs.vgg().model, str(path))
    batch = graphs.make_batch((2, 3, 24, 32))
    batch[1, 0, 3, 3] = np.nan
    with pytest.raises(PfvError, match="NaN or Inf"):
        PFV(str(path), provider="cpu").explain(batch)


@pytest.mark.parametrize("value", [0.0, 0.7])
def test_zero_variance_is_an_error_with_a_reason(value, tmp_path):
    """E_L is the input itself (identity 1x1 conv): a constant batch has no variance at all,
    so the map would be blank; that is refused with the reason, not drawn black."""
    case = graphs.linear_probe(channels=3, size=(6, 5))
    path = tmp_path / "probe.onnx"
    onnx.save(case.model, str(path))
    with pytest.raises(InputError, match="same at every position of every image"):
        PFV(str(path), provider="cpu").explain(np.full((3, 3, 6, 5), value, np.float32))


def test_zero_variance_on_the_command_line(tmp_path, capsys):
    """Uniform grey images through the identity-probe model: exit 2 and one line saying why."""
    case = graphs.linear_probe(channels=3, size=(6, 5))
    path = tmp_path / "probe.onnx"
    onnx.save(case.model, str(path))
    imgs = []
    for i in range(2):
        p = tmp_path / f"grey{i}.png"
        cv2.imwrite(str(p), np.full((12, 10, 3), 128, np.uint8))
        imgs.append(str(p))
    out = tmp_path / "out"
    assert main(["run", str(path), *imgs, "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert "same at every position of every image" in err and "Traceback" not in err


def test_opset_unknown_to_onnxruntime_is_one_clean_line(bad_models, image, tmp_path, capsys, monkeypatch):
    """When onnx knows the opset but onnxruntime does not, onnxruntime's refusal is turned
    into one readable line (no C++ signature)."""
    monkeypatch.setattr(onnx.defs, "onnx_opset_version", lambda: 1000)  # let the model past pfv-onnx's own check
    path, _, _ = bad_models["opset_too_new"]
    assert main(["run", str(path), str(image), "-o", str(tmp_path / "o"), "-q"]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert re.search(r"opset 99 of domain ai\.onnx, newer than this onnxruntime supports \(up to opset \d+\); upgrade onnxruntime", lines[0])
    assert "onnxruntime_src" not in lines[0] and "std::" not in lines[0]


def test_model_with_an_output_without_batch_axis(tmp_path, image):
    """A scalar output (a statistic over the whole batch) next to the logits: every image gets
    the value of its forward pass; nothing crashes across several passes."""
    m = onnx.ModelProto()
    m.CopyFrom(graphs.vgg().model)
    m.graph.node.append(helper.make_node("ReduceSum", ["logits"], ["logit_total"], keepdims=0))
    m.graph.output.append(helper.make_tensor_value_info("logit_total", TensorProto.FLOAT, []))
    path = tmp_path / "scalar_out.onnx"
    onnx.save(m, str(path))
    out = tmp_path / "out"
    imgs = []
    for i in range(3):
        p = tmp_path / f"im{i}.png"
        cv2.imwrite(str(p), bad_inputs.pattern_rgb(24, 32, seed=i))
        imgs.append(str(p))
    assert main(["run", str(path), *imgs, "-o", str(out), "-q", "--batch-size", "1"]) == 0
    with np.load(out / "pfv.npz") as z:
        totals, logits = z["output/logit_total"], z["output/logits"]
    assert totals.shape == (3,)
    np.testing.assert_allclose(totals, logits.sum(axis=1), rtol=1e-5)  # batch of one per pass


def test_huge_tensor_is_refused_even_when_a_probe_run_is_needed(monkeypatch, tmp_path):
    """Some tensors' shapes depend on data (shape inference cannot type them, so the engine
    would probe-run the model); the statically known 1 TiB tensor is refused before that run."""
    import onnxruntime

    m = bad_inputs.huge_tensor_model()
    # logits_again = Reshape(logits, Shape(logits) * (ReduceMax(x) * 0 + 1)): shape known only at run time
    m.graph.initializer.append(onnx.numpy_helper.from_array(np.array(0.0, np.float32), "zero_f"))
    m.graph.initializer.append(onnx.numpy_helper.from_array(np.array(1, np.int64), "one_i"))
    m.graph.node.extend(
        [
            helper.make_node("ReduceMax", ["input"], ["x_max"], keepdims=0),
            helper.make_node("Mul", ["x_max", "zero_f"], ["x_zero"]),
            helper.make_node("Cast", ["x_zero"], ["x_zero_i"], to=TensorProto.INT64),
            helper.make_node("Add", ["x_zero_i", "one_i"], ["one_from_data"]),
            helper.make_node("Shape", ["logits"], ["logits_shape"]),
            helper.make_node("Mul", ["logits_shape", "one_from_data"], ["data_shape"]),
            helper.make_node("Reshape", ["logits", "data_shape"], ["logits_again"]),
        ]
    )
    m.graph.output.append(helper.make_tensor_value_info("logits_again", TensorProto.FLOAT, None))

    info = infer_tensor_info(with_pinned_input(m, image_input(m), (1, 3, 24, 32)))
    assert info.get("logits_again") is None or info["logits_again"].shape is None  # a probe would be needed

    def no_session(*a, **k):
        raise AssertionError("the model was run before its 1 TiB tensor was refused")

    monkeypatch.setattr(onnxruntime, "InferenceSession", no_session)
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    with pytest.raises(ModelError, match="1024.0 GiB"):
        PFV(str(path), provider="cpu")


def test_model_with_an_untyped_output_works(tmp_path):
    """An output without type information is valid for onnxruntime (the exporter of the
    rewritten graph must not refuse it): the maps come out as for the plain model."""
    case = graphs.vgg()
    m = onnx.ModelProto()
    m.CopyFrom(case.model)
    m.graph.output.append(onnx.ValueInfoProto(name=case.expected_weighting[0]))  # no type, no shape
    path = tmp_path / "untyped.onnx"
    onnx.save(m, str(path))
    plain = tmp_path / "plain.onnx"
    onnx.save(case.model, str(plain))
    batch = case.batch(3)
    pfv = PFV(str(path), provider="cpu")
    a = pfv.explain(batch)
    b = PFV(str(plain), provider="cpu").explain(batch)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    assert a.outputs[case.expected_weighting[0]].shape[0] == 3
    onnx.checker.check_model(onnx.load(str(pfv.save_surgery(tmp_path / "cut.onnx"))))  # typed on the way


def test_map_whose_run_time_shape_differs_from_inference_is_an_error(tmp_path):
    """Shape inference can be wrong about a malformed graph (fuzzing found one: a Relu turned
    Transpose at opset 8). Simulated here by an analysis that claims another size for E_L:
    the run must refuse the map instead of decomposing rows that are not images."""
    import dataclasses

    path = tmp_path / "vgg.onnx"
    onnx.save(graphs.vgg().model, str(path))
    pfv = PFV(str(path), provider="cpu")
    analysis = pfv.analysis()
    claimed = dataclasses.replace(analysis.decomposed, shape=(1, 16, 3, 4))  # truly (1, 16, 6, 8)
    pfv._analyses[pfv.default_size] = dataclasses.replace(analysis, decomposed=claimed)
    with pytest.raises(ModelError, match=r"comes out of onnxruntime with shape \[2, 16, 6, 8\], not \[2, 16, 3, 4\].*inconsistent"):
        pfv.explain(graphs.make_batch((2, 3, 24, 32)))

"""The model file's identity: hash over the file and its external data, a path that survives a
change of working directory, and one atomic writer for models of any size."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import bad_inputs
import graphs
from pfv_onnx import PFV, PfvError, sanity
from pfv_onnx.errors import ModelError


def _with_other_weights(model: onnx.ModelProto, seed: int) -> onnx.ModelProto:
    """The same graph, every float initializer re-drawn: only the weights differ."""
    other = onnx.ModelProto()
    other.CopyFrom(model)
    rng = np.random.default_rng(seed)
    for t in other.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype == np.float32:
            t.CopyFrom(numpy_helper.from_array(rng.standard_normal(a.shape).astype(np.float32), t.name))
    return other


@pytest.fixture
def split_pair(tmp_path):
    """Two models in two folders whose .onnx files are byte-identical and whose external weights differ."""
    case = graphs.vgg()
    a = bad_inputs.save_with_external_data(case.model, tmp_path / "a", location="w.bin")
    b = bad_inputs.save_with_external_data(_with_other_weights(graphs.vgg().model, 1), tmp_path / "b", location="w.bin")
    assert a.read_bytes() == b.read_bytes() and (tmp_path / "a/w.bin").read_bytes() != (tmp_path / "b/w.bin").read_bytes()
    return case, a, b


# --------------------------------------------------------------------------- bug 2: the hash


def test_models_that_differ_only_in_external_weights_hash_differently(split_pair):
    _, a, b = split_pair
    assert PFV(str(a), provider="cpu").model_sha256 != PFV(str(b), provider="cpu").model_sha256


def test_hash_is_the_file_hash_without_external_data_and_independent_of_the_folder(tmp_path, split_pair):
    _, a, _ = split_pair
    one = tmp_path / "one.onnx"
    onnx.save(graphs.vgg().model, str(one))
    assert PFV(str(one), provider="cpu").model_sha256 == hashlib.sha256(one.read_bytes()).hexdigest()
    copy = bad_inputs.save_with_external_data(graphs.vgg().model, tmp_path / "elsewhere" / "deeper", location="w.bin")
    assert PFV(str(copy), provider="cpu").model_sha256 == PFV(str(a), provider="cpu").model_sha256


def test_changed_external_weights_are_noticed_when_the_model_is_read_again(split_pair, tmp_path):
    _, a, b = split_pair
    pfv = PFV(str(a), provider="cpu")
    (a.parent / "w.bin").write_bytes((b.parent / "w.bin").read_bytes())  # same size, other weights
    with pytest.raises(ModelError, match="changed since it was loaded"):
        pfv.save_surgery(tmp_path / "cut.onnx")


def test_a_basis_fitted_on_other_external_weights_is_refused(split_pair):
    from pfv_onnx import basis

    case, a, b = split_pair
    batch = graphs.make_batch((4, 3, 24, 32), seed=3)
    fitted = basis.fit(PFV(str(a), provider="cpu"), batch, batch_size=2)
    with pytest.raises(PfvError, match="fitted on another model"):
        PFV(str(b), provider="cpu").explain(batch, basis=fitted)


# --------------------------------------------------------------------------- bug 3: change of directory


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A model given by a relative path; ``go()`` then changes the working directory away from it."""
    folder = tmp_path / "models"
    bad_inputs.save_with_external_data(graphs.dynhw().model, folder, name="m.onnx", location="m.bin")
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(folder)
    return lambda: os.chdir(other)


def test_self_check_runs_after_a_change_of_working_directory(elsewhere):
    pfv = PFV("m.onnx", provider="cpu")
    elsewhere()
    res = pfv.explain(graphs.make_batch((3, 3, 24, 32), seed=0))
    assert res.rgb.shape[0] == 3 and pfv.self_check_result.startswith("ok")


def test_new_size_and_save_after_a_change_of_working_directory(elsewhere, tmp_path):
    pfv = PFV("m.onnx", provider="cpu")
    elsewhere()
    assert pfv.explain(graphs.make_batch((2, 3, 16, 20), seed=0)).rgb.shape[1:3] == (16, 20)
    out = pfv.save_surgery(tmp_path / "cut.onnx", size=(16, 20))
    onnx.checker.check_model(str(out))


def test_sanity_check_after_a_change_of_working_directory(elsewhere):
    pfv = PFV("m.onnx", provider="cpu")
    elsewhere()
    res = sanity.sanity_check(pfv, graphs.make_batch((3, 3, 24, 32), seed=0))
    assert res.randomised.rgb.shape == res.trained.rgb.shape


# --------------------------------------------------------------------------- bug 6: one writer, any size


@pytest.fixture
def small_protobuf(monkeypatch):
    """``lower()``: protobuf's 2 GiB ceiling lowered to 20,000 bytes from then on. onnx's checker
    given a larger proto raises the ValueError protobuf raises for a model over 2 GiB, and the
    writer's limit follows."""
    from pfv_onnx import model_file

    limit = 20_000
    check = onnx.checker.check_model

    def checker(model, *args, **kwargs):
        if isinstance(model, onnx.ModelProto) and model.ByteSize() > limit:
            raise ValueError("Message onnx.ModelProto exceeds maximum protobuf size of 2GB")
        return check(model, *args, **kwargs)

    def lower() -> int:
        monkeypatch.setattr(onnx.checker, "check_model", checker)
        monkeypatch.setattr(model_file, "PROTOBUF_LIMIT", limit, raising=False)
        monkeypatch.setattr(model_file.save_model, "__kwdefaults__", {"check": True, "limit": limit}, raising=False)
        return limit

    return lower


def test_save_surgery_of_a_model_over_the_protobuf_limit(small_protobuf, tmp_path):
    case = graphs.vgg()
    src = bad_inputs.save_with_external_data(graphs.vgg().model, tmp_path / "src", location="w.bin")
    pfv = PFV(str(src), provider="cpu")
    limit = small_protobuf()
    assert case.model.ByteSize() > limit  # the model is "over 2 GiB"
    out = pfv.save_surgery(tmp_path / "out" / "cut.onnx")
    data = out.parent / "cut.onnx.data"
    assert data.is_file() and out.stat().st_size < limit  # the weights went to the data file
    assert sorted(p.name for p in out.parent.iterdir()) == ["cut.onnx", "cut.onnx.data"]  # nothing temporary left
    batch = graphs.make_batch((2, 3, 24, 32), seed=1)
    want = graphs.original_outputs(case, batch)
    saved = graphs.session(onnx.load(str(out)))
    got = saved.run(list(want), {saved.get_inputs()[0].name: batch})
    for (name, w), g in zip(want.items(), got):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=name)


def test_a_small_model_is_written_self_contained_and_rewriting_does_not_grow_it(tmp_path):
    case = graphs.vgg()
    src = bad_inputs.save_with_external_data(case.model, tmp_path / "src", location="w.bin")
    pfv = PFV(str(src), provider="cpu")
    out = tmp_path / "out" / "cut.onnx"
    pfv.save_surgery(out)
    size = out.stat().st_size
    pfv.save_surgery(out)
    assert out.stat().st_size == size
    assert sorted(p.name for p in out.parent.iterdir()) == ["cut.onnx"]
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in onnx.load(str(out), load_external_data=False).graph.initializer)


def test_randomised_model_over_the_limit_is_written_with_its_data_file(small_protobuf, tmp_path):
    src = bad_inputs.save_with_external_data(graphs.vgg().model, tmp_path / "src", location="w.bin")
    small_protobuf()
    out = tmp_path / "out" / "random.onnx"
    sanity.randomise_model_file(src, out, seed=0)
    assert (out.parent / "random.onnx.data").is_file()
    onnx.checker.check_model(str(out))


# --------------------------------------------------------------------------- the default size


@pytest.mark.parametrize(
    ("static", "meta", "want"),
    [
        ((32, 48), {"input_size": "64x64"}, (32, 48)),  # static sides win
        ((None, None), {"input_size": "96x128"}, (96, 128)),
        ((None, None), {"input_size": "100"}, (100, 100)),
        ((None, None), {"input_size": "80,90"}, (80, 90)),
        ((None, 40), {"input_size": "96x128"}, (96, 40)),
        ((None, None), {"input_size": "big"}, (224, 224)),
        ((None, None), {}, (224, 224)),
    ],
)
def test_default_size(static, meta, want):
    from pfv_onnx.config import default_size

    assert default_size(static, meta)[0] == want


def test_inspect_and_pfv_use_the_same_default_size(tmp_path):
    """A dynamic batch with a static HxW: the metadata does not override the static size."""
    from pfv_onnx import inspect

    case = graphs.dynbatch()
    m = onnx.ModelProto()
    m.CopyFrom(case.model)
    m.metadata_props.add(key="input_size", value="64x64")
    p = tmp_path / "m.onnx"
    onnx.save(m, str(p))
    assert inspect(str(p)).size == PFV(str(p), provider="cpu").default_size == graphs.hw_of(case.input_shape, "NCHW")


def test_writer_refuses_external_data_without_its_folder(tmp_path):
    from pfv_onnx.model_file import save_model

    src = bad_inputs.save_with_external_data(graphs.vgg().model, tmp_path / "src", location="w.bin")
    with pytest.raises(ModelError, match="external data"):
        save_model(onnx.load(str(src), load_external_data=False), tmp_path / "x.onnx")
    assert not Path(tmp_path / "x.onnx").exists()

"""Copies of the bundled EfficientNet-Lite0 made in the tests: int8 QDQ, fp16, a layer
re-drawn, and the bundled photographs preprocessed for it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pfv_onnx.inputs import load_image, make_preprocessing, stack_batch

ROOT = Path(__file__).resolve().parent.parent
EFFICIENTNET = ROOT / "models" / "efficientnet_lite0.onnx"
PHOTOS = sorted((ROOT / "models" / "images").glob("*.jpg"))


def photo_batch(paths=PHOTOS, size: tuple[int, int] = (224, 224)) -> np.ndarray:
    """The photos as EfficientNet-Lite0 takes them (its metadata says: inception preprocessing, RGB)."""
    prep = make_preprocessing("inception", size=size)
    return stack_batch([load_image(p, prep)[1] for p in paths])


def quantise_int8(folder: Path, calibration_images: int = 3) -> Path:
    """onnxruntime's static quantiser as a deployment would run it: ``quant_pre_process``, then
    ``quantize_static`` to QDQ, per channel, calibrated on a few of the photos."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batch = photo_batch(PHOTOS[:calibration_images])

    class Photos(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter({"input": batch[i : i + 1]} for i in range(len(batch)))

        def get_next(self):
            return next(self._feeds, None)

    folder.mkdir(parents=True, exist_ok=True)
    pre, out = folder / "efficientnet_lite0_pre.onnx", folder / "efficientnet_lite0_int8.onnx"
    quant_pre_process(str(EFFICIENTNET), str(pre), skip_symbolic_shape=True)  # (symbolic inference needs sympy; the shapes are static)
    quantize_static(
        str(pre), str(out), Photos(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
    )
    return out

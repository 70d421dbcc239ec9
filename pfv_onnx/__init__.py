"""pfv-onnx: Principal Feature Visualisation for any exported ONNX image classifier."""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import PfvError as PfvError
from .feature_maps import FeatureMap as FeatureMap
from .feature_maps import Layout as Layout
from .pipeline import PFV as PFV
from .pipeline import PFVResult as PFVResult
from .pipeline import inspect as inspect

__all__ = ["PFV", "PFVResult", "inspect", "FeatureMap", "Layout", "PfvError", "__version__"]

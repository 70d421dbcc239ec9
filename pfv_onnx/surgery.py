"""Graph surgery: find the feature maps of an ONNX graph and make the chosen ones extra outputs.

The stages live in their own modules: ``graph_index`` (the analysed graph), ``layouts`` (NCHW or
NHWC of every rank-4 tensor), ``grids`` (grids carried through Reshape/Transpose: token sequences,
re-partitioned maps), ``map_choice`` (the candidates and the automatic choice of E_L and the
weighting maps) and ``rewrite`` (the extra outputs, with onnx-graphsurgeon). This module is their
public face for the pipeline.
"""

from __future__ import annotations

from .layouts import input_layout
from .map_choice import Analysis, analyse
from .rewrite import TappedOutput, output_name, rewrite

__all__ = ["Analysis", "TappedOutput", "analyse", "input_layout", "output_name", "rewrite"]

"""Checks that PFV maps depend on what a network learned: the model-randomisation test.

Adebayo et al., "Sanity Checks for Saliency Maps" (NeurIPS 2018): re-draw a trained
network's weights (:mod:`pfv_onnx.randomise`) and compare the explanations
(:mod:`pfv_onnx.similarity`). Maps of a trained network should differ from those of its
randomised twin and should change from image to image; maps that survive randomisation
show the architecture or the input, not what was learned. Everything here returns results
and never prints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .randomise import QUANTISED_OPS, WEIGHT_OPS, Randomisation, RedrawnWeight, randomise_model_file, randomise_weights
from .similarity import COMPARE_SIZE, Similarity, between_images, compare_maps, finite_or_none, magnitude, require, spearman, ssim

__all__ = [
    "QUANTISED_OPS", "WEIGHT_OPS", "Randomisation", "RedrawnWeight", "randomise_model_file", "randomise_weights",
    "COMPARE_SIZE", "Similarity", "between_images", "compare_maps", "magnitude", "spearman", "ssim",
    "SIMILAR", "SanityResult", "sanity_check",
]  # fmt: skip


# --------------------------------------------------------------------------- the whole check

#: Mean Spearman correlation at or above which two sets of magnitude maps count as alike.
SIMILAR = 0.5


@dataclass
class SanityResult:
    """Trained and randomised PFV maps of the same images and how they compare.

    ``trained_vs_randomised``: image i of the trained model against image i of the randomised
    one; low means PFV shows what the network learned. ``between_trained`` and
    ``between_randomised``: mean similarity over all pairs of different images within one set;
    the randomised model's maps should be nearly the same for every image, the trained
    model's not.
    """

    trained: Any  # PFVResult
    randomised: Any  # PFVResult
    randomisation: Randomisation
    trained_vs_randomised: Similarity
    between_trained: Similarity
    between_randomised: Similarity
    compare_size: int | None = COMPARE_SIZE

    @property
    def maps_differ(self) -> bool:
        """The randomisation changed the maps: their Spearman correlation stays below ``SIMILAR``."""
        return bool(self.trained_vs_randomised.spearman < SIMILAR)

    @property
    def trained_more_image_dependent(self) -> bool | None:
        """The trained maps vary more between images than the randomised ones (None: one image)."""
        a, b = self.between_trained.spearman, self.between_randomised.spearman
        if not (np.isfinite(a) and np.isfinite(b)):
            return None
        return bool(a < b)

    @property
    def passed(self) -> bool:
        """The maps changed under randomisation and, with several images, depend more on the image."""
        return self.maps_differ and self.trained_more_image_dependent is not False

    def to_dict(self) -> dict[str, Any]:
        """Scores and what was randomised, as JSON-ready values (NaN as None)."""
        r = self.randomisation
        return {
            "images": int(self.trained.rgb.shape[0]),
            "compare_size": self.compare_size,
            "similar_threshold": SIMILAR,
            "trained_vs_randomised": self.trained_vs_randomised.to_dict(),
            "between_images": {
                "trained": self.between_trained.to_dict(),
                "randomised": self.between_randomised.to_dict(),
            },
            "per_image": {
                "ssim": [finite_or_none(v) for v in self.trained_vs_randomised.ssim_values],
                "spearman": [finite_or_none(v) for v in self.trained_vs_randomised.spearman_values],
            },
            "maps_differ": self.maps_differ,
            "trained_more_image_dependent": self.trained_more_image_dependent,
            "passed": self.passed,
            "randomisation": {
                "seed": r.seed,
                "init": "He-normal, std = sqrt(2 / fan_in)",
                "weights": len(r.weights),
                "parameters": r.n_parameters,
                "zeroed_biases": len(r.zeroed_biases),
                "skipped": [{"node": n, "reason": why} for n, why in r.skipped],
            },
            "feature_maps": list(self.trained.feature_maps),
        }

    def summary(self) -> list[str]:
        """Lines that say what the scores mean, for people."""
        t = self.trained_vs_randomised
        lines = [
            f"trained vs randomised, image by image: Spearman {_fmt(t.spearman)}, SSIM {_fmt(t.ssim)} "
            f"(1 = the same maps, 0 = unrelated)",
        ]
        if self.maps_differ:
            lines.append(
                "  -> the maps change when the weights are re-drawn: they depend on what the network learned"
            )
        else:
            lines.append(
                f"  -> the maps survive re-drawing the weights (Spearman >= {SIMILAR}): they show the architecture "
                "or the input more than what the network learned"
            )
        bt, br = self.between_trained, self.between_randomised
        if self.trained_more_image_dependent is None:
            lines.append("between images: needs at least two images")
        else:
            lines.append(
                f"between images (mean over {len(bt.pairs)} pairs): trained Spearman {_fmt(bt.spearman)}, SSIM {_fmt(bt.ssim)}; "
                f"randomised Spearman {_fmt(br.spearman)}, SSIM {_fmt(br.ssim)}"
            )
            if self.trained_more_image_dependent:
                lines.append("  -> the trained maps follow the image content more than the randomised ones do")
            else:
                lines.append("  -> the trained maps vary between images no more than the randomised ones: suspicious")
        lines.append(f"sanity check {'passed' if self.passed else 'FAILED'}")
        return lines


def _fmt(x: float) -> str:
    return f"{x:.2f}" if np.isfinite(x) else "n/a"


def sanity_check(
    model: Any,
    batch: Any,
    *,
    seed: int | None = 0,
    biases: str = "zero",
    compare_size: int | None = COMPARE_SIZE,
    batch_size: int | None = None,
    save_randomised: str | os.PathLike[str] | None = None,
    **pfv_options: Any,
) -> SanityResult:
    """Model-randomisation check of PFV on ``batch``: trained vs re-drawn weights, same images.

    Args:
        model: the trained ONNX model file, or a :class:`pfv_onnx.PFV` built on it (its provider,
            k, weighting variant, n_sigma, input and layout are then used for both models).
        batch: preprocessed images in the model's layout, as for ``PFV.explain``.
        seed, biases: see :func:`randomise_weights`.
        compare_size: grid the magnitude maps are compared on (see :func:`compare_maps`).
        batch_size: images per forward pass (default: all at once).
        save_randomised: also keep the randomised model at this path (default: a temporary file).
        pfv_options: with a model file, passed to :class:`pfv_onnx.PFV` (``provider``, ``k``,
            ``layer``, ``weight_layers``, ...).

    The randomised model decomposes exactly the tensors the trained run used.
    """
    import tempfile

    from .pipeline import PFV

    require()  # before any forward pass
    if isinstance(model, PFV):
        if pfv_options:
            raise InputError(f"give PFV options ({', '.join(sorted(pfv_options))}) either to the PFV object or here, not both")
        trained_pfv = model
    else:
        trained_pfv = PFV(model, **pfv_options)
    trained = trained_pfv.explain(batch, batch_size=batch_size)
    with tempfile.TemporaryDirectory(prefix="pfv-sanity-") as tmp:
        target = Path(save_randomised) if save_randomised is not None else Path(tmp) / "randomised.onnx"
        randomisation = randomise_model_file(trained_pfv.model_path, target, seed=seed, biases=biases)
        # The same settings and tensors as the trained run, tensors by exact name (the graph is unchanged).
        random_pfv = PFV(
            target,
            provider=trained_pfv.provider,
            k=trained_pfv.k,
            hierarchical=trained_pfv.hierarchical,
            n_sigma=trained_pfv.n_sigma,
            input_name=trained_pfv.input_name,
            layout=trained_pfv.input_layout,
            layer=trained.feature_maps[-1],
            weight_layers=list(trained.feature_maps[:-1]),
        )
        randomised = random_pfv.explain(batch, batch_size=batch_size)
        del random_pfv
    return SanityResult(
        trained=trained,
        randomised=randomised,
        randomisation=randomisation,
        trained_vs_randomised=compare_maps(trained.rgb, randomised.rgb, size=compare_size),
        between_trained=between_images(trained.rgb, size=compare_size),
        between_randomised=between_images(randomised.rgb, size=compare_size),
        compare_size=compare_size,
    )

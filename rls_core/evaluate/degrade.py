"""HR crop -> LR input, as an acquisition would make it, then optional extra degradation.

LR = D(HR) in full-scale units (the bicubic operator the search inverts; D is linear and its
taps sum to 1, so this equals downscaling in the model's units), then the model's
normalisation and clipping (what `super_resolve` does to any input), then a degradation of
the robustness experiments (`rls_core.operators.parse_degradation`: Gaussian noise and
salt-and-pepper on the [0, 1] LR values, Gaussian blur in LR pixels), seeded so every
method sees the very same corrupted input.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np
import torch

from ..errors import InputError
from ..operators import make_operator, parse_degradation
from .defaults import ROBUSTNESS  # noqa: F401  (re-exported: the Fig. 6 grid)


def hr_unit(model, hr_full: np.ndarray) -> np.ndarray:
    """(N, C, H, W) full-scale HR -> the model's [0, 1] units (clipped): the ground truth of the scores."""
    return np.clip(np.stack([model.to_unit(x) for x in hr_full]), 0.0, 1.0).astype(np.float32)


@torch.no_grad()
def make_lr(model, hr_full: np.ndarray, factor: int, degradation: str = "none", seed: int = 0,
            operator: str = "bicubic") -> np.ndarray:
    """(N, C, H, W) full-scale HR -> (N, C, H/f, W/f) LR in the model's [0, 1] units, degraded."""
    op = make_operator(operator, factor)
    lr_full = op(torch.from_numpy(np.ascontiguousarray(hr_full, np.float32))).numpy()
    lr = np.clip(np.stack([model.to_unit(x) for x in lr_full]), 0.0, 1.0).astype(np.float32)
    if degradation and degradation != "none":
        lr = parse_degradation(degradation, seed)(torch.from_numpy(lr)).numpy().astype(np.float32)
    return lr


def degradation_kind(spec: str) -> Tuple[str, float]:
    """'noise:0.1' -> ('noise', 0.1); 'none' -> ('none', 0.0)."""
    if spec == "none":
        return "none", 0.0
    kind, _, val = spec.partition(":")
    return kind, float(val)


def validate(specs: List[str]) -> List[str]:
    """Fail early (before hours of searching) on a malformed degradation."""
    for s in specs:
        try:
            parse_degradation(s)
        except ValueError as e:
            raise InputError(str(e), "fix --degradations (see rls evaluate --help)") from None
    return list(specs)

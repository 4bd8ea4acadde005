"""BRGM (Marinescu et al. 2021): Bayesian reconstruction through generative models.

W+ from w_avg, fixed noise. Loss: lambda_pix * MSE(D(G(w)), y)
+ lambda_w * mean(((w - w_avg) / sigma)^2) + lambda_c * sum_{i<j} |1 - cos(w_i, w_j)|,
where sigma is the RMS distance of mapped w to their mean. BRGM's perceptual (LPIPS-VGG)
term needs pretrained VGG weights, which cannot be downloaded here, so it is left out;
lambda_pix = 65.025 is BRGM's 0.001 on 0..255 images expressed on 0..1 images.
"""
from __future__ import annotations

from typing import Dict

import torch

from ..priors import cross_cosine
from .base import Params, WPlusSearch, mse_per_tile


class BRGM(WPlusSearch):
    def __init__(self, model, operator, method, realism: float = 1.0, start_spread: float = 0.0,
                 **overrides) -> None:
        if "lambda_c" not in overrides and operator.factor > 16:
            overrides = dict(overrides, lambda_c=1.0)  # BRGM's setting above 16x
        super().__init__(model, operator, method, realism, start_spread, **overrides)
        if model.bundle.latent is not None:
            self._sigma = float(model.stat("w_std").square().sum().sqrt())
        else:
            self._sigma = 1.0

    def loss_terms(self, p: Params, w_plus, x_lr, y) -> Dict[str, torch.Tensor]:
        terms = {"fidelity": self.weights["lambda_pix"] * mse_per_tile(x_lr, y)}
        if self.weights["lambda_w"] > 0:
            d = (w_plus - self.model.w_mean) / self._sigma
            terms["p_w"] = self.weights["lambda_w"] * d.square().flatten(1).mean(1)
        if self.weights["lambda_c"] > 0:
            terms["p_cross"] = self.weights["lambda_c"] * cross_cosine(w_plus)
        return terms

"""RLS, the paper's method, and its unregularised / ablated variants.

Search W+ from the mean w with fixed random noise. Loss per tile:
  lambda_fid * L1(D(G(w)), y)
  + lambda_logp * (-mean log p_flow(w)) + lambda_pnorm * mean (||f(w)|| - sqrt(D))^2   (p_w)
  + lambda_cross * mean pairwise ||w_i - w_j||                                          (p_cross)
With `p_w='gaussian'` the flow is replaced by the LeakyReLU(5) full-covariance Gaussian
(Wulff & Torralba), weighted by lambda_gauss.
"""
from __future__ import annotations

from typing import Dict

import torch

from ..priors import FlowPrior, GaussianPrior, cross_euclidean
from ..methods import P_W_CHOICES, Method
from .base import Params, WPlusSearch, l1_per_tile


class RLS(WPlusSearch):
    """RLS and its table variants (plain = every prior weight 0; the ablations)."""

    def __init__(self, model, operator, method: Method, realism: float = 1.0, start_spread: float = 0.0,
                 p_w: str = "flow", **overrides: float) -> None:
        if p_w not in P_W_CHOICES:
            raise ValueError(f"p_w must be one of {', '.join(P_W_CHOICES)}, got {p_w!r}")
        if p_w == "gaussian" and "lambda_gauss" not in overrides and method.weights["lambda_logp"] > 0:
            # The cheap prior takes the place of both flow terms.
            overrides = dict(overrides, lambda_gauss=0.01, lambda_logp=0.0, lambda_pnorm=0.0)
        super().__init__(model, operator, method, realism, start_spread, **overrides)
        self._flow_prior = None
        self._gauss_prior = None
        if self.weights["lambda_logp"] > 0 or self.weights["lambda_pnorm"] > 0:
            self._flow_prior = FlowPrior(model.flow(), model.stat("w_mean"), model.stat("w_std"))
        if self.weights["lambda_gauss"] > 0:
            self._gauss_prior = GaussianPrior(model.stat("gauss_mean"), model.stat("gauss_cov")).to(model.device)

    def loss_terms(self, p: Params, w_plus, x_lr, y) -> Dict[str, torch.Tensor]:
        lam = self.weights  # the loss weights (lambda_*), not a latent code
        terms = {"fidelity": lam["lambda_fid"] * l1_per_tile(x_lr, y)}
        if self._flow_prior is not None:
            t = self._flow_prior.terms(w_plus)
            terms["p_w_logp"] = lam["lambda_logp"] * t["logp"]
            terms["p_w_norm"] = lam["lambda_pnorm"] * t["pnorm"]
        if self._gauss_prior is not None:
            terms["p_w_gauss"] = lam["lambda_gauss"] * self._gauss_prior(w_plus)
        if lam["lambda_cross"] > 0:
            terms["p_cross"] = lam["lambda_cross"] * cross_euclidean(w_plus)
        return terms

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
from .base import Params, WPlusSearch, l1_per_tile


class RLS(WPlusSearch):
    name = "rls"
    description = "regularized latent search (the paper's method): p_w flow prior + p_cross"
    default_steps = 500
    default_lr = 0.5
    schedule = "onecycle"
    defaults = {"lambda_fid": 10.0, "lambda_logp": 0.002, "lambda_pnorm": 0.004, "lambda_cross": 0.5,
                "lambda_gauss": 0.0}
    prior_weights = ("lambda_logp", "lambda_pnorm", "lambda_cross", "lambda_gauss")
    needs_prior = True

    def __init__(self, model, operator, realism: float = 1.0, start_spread: float = 0.0,
                 p_w: str = "flow", **weights: float) -> None:
        if p_w not in ("flow", "gaussian"):
            raise ValueError(f"p_w must be 'flow' or 'gaussian', got {p_w!r}")
        if p_w == "gaussian" and "lambda_gauss" not in weights:
            # The cheap prior takes the place of both flow terms.
            weights = dict(weights, lambda_gauss=0.01, lambda_logp=0.0, lambda_pnorm=0.0)
        super().__init__(model, operator, realism, start_spread, **weights)
        self._flow_prior = None
        self._gauss_prior = None
        if self.w["lambda_logp"] > 0 or self.w["lambda_pnorm"] > 0:
            self._flow_prior = FlowPrior(model.flow(), model.stat("w_mean"), model.stat("w_std"))
        if self.w["lambda_gauss"] > 0:
            self._gauss_prior = GaussianPrior(model.stat("gauss_mean"), model.stat("gauss_cov")).to(model.device)

    def loss_terms(self, p: Params, w_plus, x_lr, y) -> Dict[str, torch.Tensor]:
        w = self.w
        terms = {"fidelity": w["lambda_fid"] * l1_per_tile(x_lr, y)}
        if self._flow_prior is not None:
            t = self._flow_prior.terms(w_plus)
            terms["p_w_logp"] = w["lambda_logp"] * t["logp"]
            terms["p_w_norm"] = w["lambda_pnorm"] * t["pnorm"]
        if self._gauss_prior is not None:
            terms["p_w_gauss"] = w["lambda_gauss"] * self._gauss_prior(w_plus)
        if w["lambda_cross"] > 0:
            terms["p_cross"] = w["lambda_cross"] * cross_euclidean(w_plus)
        return terms


class Plain(RLS):
    """The 'w/o Regu.' baseline: the RLS search with every prior weight at 0."""

    name = "plain"
    description = "w/o Regu.: the RLS search without any prior (fidelity only)"
    needs_prior = False
    defaults = dict(RLS.defaults, lambda_logp=0.0, lambda_pnorm=0.0, lambda_cross=0.0)

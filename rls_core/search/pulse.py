"""PULSE (Menon et al. 2020): search on spheres in a Gaussianised latent space.

The variable x (B, L, D) keeps each row at its initial radius (~sqrt(D)) and is mapped to
W by LeakyReLU(0.2)(x * std + mean), the inverse of the LeakyReLU(5) Gaussian fit. The
first `trainable_noise` noise maps are optimised on spheres as well. Loss:
lambda_l2 * MSE(D(G(w)), y) + lambda_geocross * GEOCROSS(w) (scaled by D / 8 as PULSE does).
"""
from __future__ import annotations

from typing import Dict, List

import torch

from ..priors import cross_geodesic, pulse_to_w
from .base import LatentSearch, Params, mse_per_tile


def _radius(t: torch.Tensor) -> torch.Tensor:
    return (t.square().sum(dim=tuple(range(2, t.ndim)), keepdim=True) + 1e-9).sqrt()


class Pulse(LatentSearch):
    name = "pulse"
    description = "PULSE: sphere-constrained search in a Gaussianised latent space + GEOCROSS"
    default_steps = 100
    default_lr = 0.4
    schedule = "onecycle"
    defaults = {"lambda_l2": 100.0, "lambda_geocross": 0.05, "trainable_noise": 5.0}
    prior_weights = ("lambda_geocross",)
    needs_prior = True

    def __init__(self, model, operator, realism: float = 1.0, start_spread: float = 0.0, **weights) -> None:
        super().__init__(model, operator, realism, start_spread, **weights)
        model.require_prior(self.name)  # PULSE always needs its Gaussian fit, even at realism 0
        self._mean = model.stat("pulse_mean")
        self._std = model.stat("pulse_std")

    def init_params(self, n: int, gen: torch.Generator) -> Params:
        m = self.model
        x = torch.randn(n, m.num_ws, m.w_dim, generator=gen).to(m.device)
        noise = m.random_noise(n, gen)
        k = int(self.w["trainable_noise"])
        p: Params = {"x": x.requires_grad_(True)}
        for i, t in enumerate(noise[:k]):
            p[f"noise{i}"] = t.requires_grad_(True)
        p["_fixed_noise"] = noise[k:]  # type: ignore[assignment]
        self._radii = {key: _radius(v).detach() for key, v in p.items() if not key.startswith("_")}
        return p

    def w_plus(self, p: Params) -> torch.Tensor:
        return pulse_to_w(p["x"], self._mean, self._std)

    def noise(self, p: Params) -> List[torch.Tensor]:
        k = len(self._radii) - 1
        return [p[f"noise{i}"] for i in range(k)] + list(p["_fixed_noise"])  # type: ignore[arg-type]

    def project(self, p: Params) -> None:
        for key, r in self._radii.items():
            t = p[key]
            t.mul_(r / _radius(t))

    def loss_terms(self, p: Params, w_plus, x_lr, y) -> Dict[str, torch.Tensor]:
        terms = {"fidelity": self.w["lambda_l2"] * mse_per_tile(x_lr, y).clamp_min(1e-9)}
        if self.w["lambda_geocross"] > 0:
            terms["p_cross"] = self.w["lambda_geocross"] * cross_geodesic(w_plus) * (self.model.w_dim / 8.0)
        return terms

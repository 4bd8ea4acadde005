"""PULSE (Menon et al. 2020): search on spheres in a Gaussianised latent space.

The variable x (B, L, D) keeps each row at its initial radius (~sqrt(D)) and is mapped to
W by LeakyReLU(0.2)(x * std + mean), the inverse of the LeakyReLU(5) Gaussian fit. The
first `trainable_noise` noise maps are optimised on spheres as well. Loss:
lambda_l2 * MSE(D(G(w)), y) + lambda_geocross * GEOCROSS(w) (scaled by D / 8 as PULSE does).
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch

from ..priors import cross_geodesic, pulse_to_w
from .base import LatentSearch, Params, mse_per_tile


def _radius(t: torch.Tensor) -> torch.Tensor:
    return (t.square().sum(dim=tuple(range(2, t.ndim)), keepdim=True) + 1e-9).sqrt()


class Pulse(LatentSearch):
    def __init__(self, model, operator, method, realism: float = 1.0, start_spread: float = 0.0,
                 **overrides) -> None:
        super().__init__(model, operator, method, realism, start_spread, **overrides)
        self._mean = model.stat("pulse_mean")
        self._std = model.stat("pulse_std")

    def init_params(self, gens: Sequence[torch.Generator]) -> Params:
        m = self.model
        x = torch.cat([torch.randn(1, m.num_ws, m.w_dim, generator=g) for g in gens]).to(m.device)
        noise = m.random_noise(gens)
        k = int(self.weights["trainable_noise"])
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
        terms = {"fidelity": self.weights["lambda_l2"] * mse_per_tile(x_lr, y).clamp_min(1e-9)}
        if self.weights["lambda_geocross"] > 0:
            terms["p_cross"] = self.weights["lambda_geocross"] * cross_geodesic(w_plus) * (self.model.w_dim / 8.0)
        return terms

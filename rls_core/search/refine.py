"""RLS+ refinement (arXiv 2311.16923): expand the prior around the RLS code.

Starting from the RLS best iterate, jointly optimise the latent (projected back into an
L1 ball around the RLS code after every step), the first noise maps (re-standardised
after every step) and the generator's synthesis weights, on the fidelity loss alone.
Generator weights are per tile, so tiles are refined one at a time on a private copy of
the synthesis network; this recovers detail the generator alone could not produce.
"""
from __future__ import annotations

import copy
from typing import Callable, List, Optional

import torch

from ..model import LoadedModel
from ..operators import Operator
from .base import l1_per_tile


def project_l1_ball(delta: torch.Tensor, radius: float) -> torch.Tensor:
    """Euclidean projection of each row of `delta` (..., D) onto the L1 ball of `radius`
    (Duchi et al. 2008: soft-threshold at the level that makes the L1 norm equal radius)."""
    flat = delta.reshape(-1, delta.shape[-1])
    out = flat.clone()
    outside = flat.abs().sum(1) > radius
    if outside.any():
        v = flat[outside].abs()
        mu, _ = torch.sort(v, dim=1, descending=True)
        cums = mu.cumsum(1)
        k = torch.arange(1, v.shape[1] + 1, device=v.device, dtype=v.dtype)
        cond = mu - (cums - radius) / k > 0
        rho = cond.to(torch.int64).cumsum(1).argmax(1)  # last index where cond holds
        theta = (cums.gather(1, rho[:, None]) - radius) / (rho[:, None] + 1).to(v.dtype)
        out[outside] = torch.sign(flat[outside]) * (v - theta).clamp_min(0)
    return out.reshape(delta.shape)


def refine(model: LoadedModel, operator: Operator, y: torch.Tensor, w_plus: torch.Tensor,
           noise: Optional[List[torch.Tensor]] = None, steps: int = 50, lr_latent: float = 0.05,
           lr_weights: float = 1e-4, radius: Optional[float] = None, n_noise: int = 5,
           lambda_fid: float = 10.0, callback: Optional[Callable[[int, int], None]] = None) -> torch.Tensor:
    """Refine every tile of `y` (B, C, h, w) from its RLS code `w_plus` (B, L, D).

    `radius`: L1 radius around the RLS code per W+ row; default 5% of the summed
    per-dimension std of w (how far typical w spread), so the code stays near the prior.
    Returns refined images (B, C, H, W) in [0, 1].
    """
    if radius is None:
        radius = 0.05 * float(model.stat("w_std").sum()) if model.bundle.latent is not None else 0.05 * model.w_dim
    out = []
    if noise is None:  # the same fixed maps for every tile, whatever the batch
        noise = model.random_noise([torch.Generator().manual_seed(0) for _ in range(y.shape[0])])
    base_noise = noise
    for b in range(y.shape[0]):
        synth = copy.deepcopy(model.G.synthesis).requires_grad_(True).train(False)
        w0 = w_plus[b:b + 1].detach()
        w = w0.clone().requires_grad_(True)
        nz = [t[b:b + 1].detach().clone() for t in base_noise]
        trainable = [t.requires_grad_(True) for t in nz[:n_noise]]
        opt = torch.optim.Adam([{"params": [w] + trainable, "lr": lr_latent},
                                {"params": list(synth.parameters()), "lr": lr_weights}])
        best, best_loss = None, float("inf")
        for step in range(steps):
            opt.zero_grad(set_to_none=True)
            x = (synth(w, noise=nz) + 1.0) * 0.5
            loss = lambda_fid * l1_per_tile(operator(x), y[b:b + 1]).sum()
            value = float(loss.detach())
            if value < best_loss:
                best_loss, best = value, x.detach().clone()
            loss.backward()
            opt.step()
            with torch.no_grad():
                w.copy_(w0 + project_l1_ball(w - w0, radius))
                for t in trainable:
                    t.sub_(t.mean()).div_(t.std() + 1e-8)
            if callback is not None:
                callback(b * steps + step + 1, y.shape[0] * steps)
        out.append(best)
    return torch.cat(out).clamp(0.0, 1.0)

"""Latent priors for the searches: p_w (flow or Gaussianised) and p_cross (layer consistency),
plus the statistics of the mapped latents they are built from.

All penalties take W+ codes (B, L, D) and return one value per batch element (B,), so a
batch of searches runs independently; they are differentiable in the code.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from .bundle import set_prior
from .flow import MAF, fit_flow
from .prior_config import (FLOW_BLOCKS, FLOW_EPOCHS, FLOW_NOISE, PRIOR_SAMPLES, check_prior_settings,
                           default_flow_hidden)

ArrayLike = Union[np.ndarray, Tensor]
PULSE_SLOPE = 5.0      # LeakyReLU(5) undoes the mapping's last LeakyReLU(0.2): Gaussian-ish
MAX_FLOW_SAMPLES = 200_000
MIN_STD = 1e-6         # floor on per-dim std so standardisation never divides by ~0


# ----------------------------------------------------------------------------- statistics

@dataclass
class LatentStats:
    """Statistics of mapped latents w = mapping(z), z ~ N(0, I); float32 arrays."""

    w_mean: np.ndarray      # (D,) mean of w
    w_std: np.ndarray       # (D,) per-dim std of w (floored at MIN_STD)
    pulse_mean: np.ndarray  # (D,) mean of LeakyReLU(5)(w)  (PULSE's Gaussian fit)
    pulse_std: np.ndarray   # (D,) std of LeakyReLU(5)(w)
    gauss_mean: np.ndarray  # (D,) mean of v = LeakyReLU(5)(w)  (Wulff & Torralba; = pulse_mean)
    gauss_cov: np.ndarray   # (D, D) covariance of v
    n_samples: int


def _infer_device(fn: Callable) -> torch.device:
    params = getattr(fn, "parameters", None)
    if params is not None:
        for p in params():
            return p.device
    return torch.device("cpu")


@torch.no_grad()
def fit_latent_stats(mapping: Callable[[Tensor], Tensor], z_dim: int, n_samples: int = 100_000,
                     batch_size: int = 8192, seed: int = 0, device=None,
                     progress: bool = True) -> Tuple[LatentStats, Tensor]:
    """Map `n_samples` Gaussian z and accumulate (in float64) the moments the priors need.

    Returns the stats and the first min(n_samples, 200k) w samples (float32, CPU) for
    fitting the flow. z is drawn on the CPU from `seed`, so results do not depend on device.
    """
    if n_samples < 2:
        raise ValueError(f"need at least 2 samples, got {n_samples}")
    device = torch.device(device) if device is not None else _infer_device(mapping)
    gen = torch.Generator().manual_seed(int(seed))
    s_w = s_ww = s_v = s_vv = s_vvT = None
    kept = []
    n_kept = done = 0
    bar = tqdm(total=n_samples, desc="map latents", disable=not progress, unit="w")
    while done < n_samples:
        k = min(batch_size, n_samples - done)
        z = torch.randn(k, z_dim, generator=gen).to(device)
        w = mapping(z).double()
        v = F.leaky_relu(w, PULSE_SLOPE)
        if s_w is None:
            d = w.shape[1]
            s_w, s_ww, s_v, s_vv = (w.new_zeros(d) for _ in range(4))
            s_vvT = w.new_zeros(d, d)
        s_w += w.sum(0)
        s_ww += w.square().sum(0)
        s_v += v.sum(0)
        s_vv += v.square().sum(0)
        s_vvT += v.T @ v
        if n_kept < MAX_FLOW_SAMPLES:
            take = w[:MAX_FLOW_SAMPLES - n_kept].float().cpu()
            kept.append(take)
            n_kept += take.shape[0]
        done += k
        bar.update(k)
    bar.close()

    n = float(n_samples)
    w_mean, v_mean = s_w / n, s_v / n
    unbias = n / (n - 1)  # sample (ddof=1) moments, as torch.std / PULSE's fit
    w_std = ((s_ww / n - w_mean.square()) * unbias).clamp_min(0).sqrt().clamp_min(MIN_STD)
    v_std = ((s_vv / n - v_mean.square()) * unbias).clamp_min(0).sqrt().clamp_min(MIN_STD)
    cov = (s_vvT / n - torch.outer(v_mean, v_mean)) * unbias
    cov = 0.5 * (cov + cov.T)

    def f32(t: Tensor) -> np.ndarray:
        return t.cpu().numpy().astype(np.float32)

    stats = LatentStats(w_mean=f32(w_mean), w_std=f32(w_std), pulse_mean=f32(v_mean),
                        pulse_std=f32(v_std), gauss_mean=f32(v_mean), gauss_cov=f32(cov),
                        n_samples=int(n_samples))
    return stats, torch.cat(kept)


def fit_prior(mapping: Callable[[Tensor], Tensor], z_dim: int, n_samples: int = PRIOR_SAMPLES,
              flow_blocks: int = FLOW_BLOCKS, flow_hidden: Optional[int] = None, flow_epochs: int = FLOW_EPOCHS,
              seed: int = 0, device=None, progress: bool = True,
              flow_noise: float = FLOW_NOISE) -> Tuple[LatentStats, MAF]:
    """The `rls fit-prior` computation: latent statistics, then a MAF on standardised w."""
    check_prior_settings(n_samples, flow_blocks, flow_hidden, flow_epochs, flow_noise)
    stats, w = fit_latent_stats(mapping, z_dim, n_samples, seed=seed, device=device, progress=progress)
    d = w.shape[1]
    w_std = (w - torch.from_numpy(stats.w_mean)) / torch.from_numpy(stats.w_std)
    flow_device = torch.device(device) if device is not None else _infer_device(mapping)
    flow = fit_flow(w_std, n_blocks=flow_blocks, hidden=flow_hidden or default_flow_hidden(d), epochs=flow_epochs,
                    seed=seed, progress=progress, device=flow_device, noise_std=flow_noise)
    return stats, flow


def fit_bundle_prior(bundle, G, n_samples: int = PRIOR_SAMPLES, flow_blocks: int = FLOW_BLOCKS,
                     flow_hidden: Optional[int] = None, flow_epochs: int = FLOW_EPOCHS, seed: int = 0, device=None,
                     progress: bool = True, flow_noise: float = FLOW_NOISE) -> Dict[str, Any]:
    """The one way a latent prior gets into a bundle (`rls fit-prior`, `rls import --fit-prior`,
    `rls train`): fit it on `G`'s mapping network, store it, and record how in
    `bundle.provenance["prior"]`, which it also returns."""
    t0 = time.perf_counter()
    stats, flow = fit_prior(G.mapping, G.cfg.z_dim, n_samples=n_samples, flow_blocks=flow_blocks,
                            flow_hidden=flow_hidden, flow_epochs=flow_epochs, seed=seed, device=device,
                            progress=progress, flow_noise=flow_noise)
    set_prior(bundle, stats, flow)
    info = {"fitted": True, "n_samples": int(n_samples), "flow": flow.config(), "flow_epochs": int(flow_epochs),
            "flow_noise": float(flow_noise),
            "seed": int(seed), "seconds": round(time.perf_counter() - t0, 1)}
    bundle.provenance["prior"] = info
    return info


# ----------------------------------------------------------------------------- p_w

def _as_tensor(a: ArrayLike) -> Tensor:
    t = torch.as_tensor(np.asarray(a)) if isinstance(a, np.ndarray) else a.detach()
    return t.float() if not t.is_floating_point() else t.clone()


def _as_wplus(w: Tensor) -> Tensor:
    """Accept (B, D) single codes as (B, 1, D)."""
    if w.dim() == 2:
        return w[:, None]
    if w.dim() != 3:
        raise ValueError(f"expected W+ codes (B, L, D), got shape {tuple(w.shape)}")
    return w


class FlowPrior(nn.Module):
    """The paper's p_w: standardise each w row, push it through the (frozen) MAF.

    terms() gives, per batch element, the mean over layers of -log p_flow(w) ("logp") and
    of (||f(w)|| - sqrt(D))^2 ("pnorm"): the norm of a D-dim standard normal concentrates
    at sqrt(D), so this pulls transformed latents onto the typical shell.
    """

    def __init__(self, flow: MAF, w_mean: ArrayLike, w_std: ArrayLike) -> None:
        super().__init__()
        self.flow = flow.eval()
        for p in self.flow.parameters():
            p.requires_grad_(False)
        self.register_buffer("w_mean", _as_tensor(w_mean).float())
        self.register_buffer("w_std", _as_tensor(w_std).float().clamp_min(MIN_STD))
        self.dim = int(self.w_mean.numel())

    def train(self, mode: bool = True) -> "FlowPrior":
        super().train(mode)
        self.flow.eval()  # batch statistics would couple the searches in a batch
        return self

    def terms(self, w_plus: Tensor) -> Dict[str, Tensor]:
        w = _as_wplus(w_plus)
        b, l, d = w.shape
        ref = self.w_mean
        x = (w.reshape(b * l, d).to(ref) - ref) / self.w_std
        u, logdet = self.flow(x)
        logp = -0.5 * (u.square().sum(-1) + d * math.log(2 * math.pi)) + logdet
        pnorm = (u.norm(dim=-1) - math.sqrt(d)).square()
        return {"logp": -logp.view(b, l).mean(1).to(w.dtype),
                "pnorm": pnorm.view(b, l).mean(1).to(w.dtype)}

    def forward(self, w_plus: Tensor) -> Dict[str, Tensor]:
        return self.terms(w_plus)


class GaussianPrior(nn.Module):
    """Gaussianised p_w without a flow (Wulff & Torralba 2020): v = LeakyReLU(5)(w),
    penalty ||Sigma^-1/2 (v - mu)||^2 / D averaged over layers (about 1 for typical codes).
    """

    def __init__(self, mean: ArrayLike, cov: ArrayLike, eps: float = 1e-5) -> None:
        super().__init__()
        mean_t = _as_tensor(mean)
        cov64 = _as_tensor(cov).double()
        cov64 = 0.5 * (cov64 + cov64.T)
        lam, vec = torch.linalg.eigh(cov64)
        # eps is relative to the mean variance so it regularises any latent scale alike.
        floor = eps * float(lam.clamp_min(0).mean()) if float(lam.clamp_min(0).mean()) > 0 else eps
        inv_sqrt = (vec * (lam.clamp_min(0) + floor).rsqrt()) @ vec.T
        self.register_buffer("mean", mean_t.float())
        self.register_buffer("inv_sqrt", inv_sqrt.float())

    def forward(self, w_plus: Tensor) -> Tensor:
        w = _as_wplus(w_plus)
        v = F.leaky_relu(w, PULSE_SLOPE)
        z = (v - self.mean.to(v)) @ self.inv_sqrt.to(v)  # symmetric, so no transpose needed
        return z.square().mean(-1).mean(-1)


# ----------------------------------------------------------------------------- p_cross

def _pair_index(l: int, device) -> Tuple[Tensor, Tensor]:
    return torch.triu_indices(l, l, offset=1, device=device).unbind(0)


def _pair_rows(x: Tensor) -> Tuple[Tensor, Tensor]:
    """(x[:, i], x[:, j]) over the row pairs i < j, each (B, P, D), gathered by matrix products
    with one-hot selection matrices instead of indexing.

    Why: the backward of `x[:, i]` accumulates with index_put(accumulate=True), which on a
    multi-threaded CPU adds the duplicate rows' gradients in a varying order, so the same search
    gave different results from run to run (docs/reproducibility.md). A product with a 0/1
    matrix selects the same values exactly, and its backward is a matmul, deterministic."""
    i, j = _pair_index(x.shape[1], x.device)
    eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    return torch.matmul(eye[i], x), torch.matmul(eye[j], x)


def _safe_norm(x: Tensor) -> Tensor:
    """Euclidean norm over the last dim with a zero (not NaN) gradient at the origin."""
    sq = x.square().sum(-1)
    pos = sq > 0
    return torch.where(pos, torch.where(pos, sq, torch.ones_like(sq)).sqrt(), torch.zeros_like(sq))


def cross_euclidean(w_plus: Tensor) -> Tensor:
    """RLS p_cross: mean Euclidean distance over the L(L-1)/2 pairs of W+ rows -> (B,)."""
    w = _as_wplus(w_plus)
    if w.shape[1] < 2:
        return w.new_zeros(w.shape[0])
    a, b = _pair_rows(w)
    return _safe_norm(a - b).mean(-1)


def _unit_rows(x: Tensor) -> Tensor:
    return x / _safe_norm(x).clamp_min(1e-12)[..., None]


def cross_geodesic(x: Tensor) -> Tensor:
    """PULSE GEOCROSS: mean over row pairs of the squared angle between them -> (B,).

    angle = 2 asin(|a^ - b^| / 2) for unit a^, b^, evaluated as 2 atan2(|a^ - b^|, |a^ + b^|)
    (the same value, but with finite gradients at 0 and pi). PULSE itself sums over the
    full L x L matrix and scales by D / 8; that constant belongs in the loss weight.
    """
    x = _as_wplus(x)
    if x.shape[1] < 2:
        return x.new_zeros(x.shape[0])
    u = _unit_rows(x)
    a, b = _pair_rows(u)
    angle = 2.0 * torch.atan2(_safe_norm(a - b), _safe_norm(a + b))
    return angle.square().mean(-1)


def cross_cosine(w_plus: Tensor) -> Tensor:
    """BRGM's cross term: sum over pairs i < j of |1 - cos(w_i, w_j)| -> (B,)."""
    w = _as_wplus(w_plus)
    if w.shape[1] < 2:
        return w.new_zeros(w.shape[0])
    u = _unit_rows(w)
    a, b = _pair_rows(u)
    cos = (a * b).sum(-1)
    return (1.0 - cos).abs().sum(-1)


def pulse_to_w(x: Tensor, mean: ArrayLike, std: ArrayLike) -> Tensor:
    """PULSE's map from its Gaussianised search space to W: LeakyReLU(0.2)(x * std + mean)."""
    mean_t = torch.as_tensor(np.asarray(mean)) if isinstance(mean, np.ndarray) else mean
    std_t = torch.as_tensor(np.asarray(std)) if isinstance(std, np.ndarray) else std
    return F.leaky_relu(x * std_t.to(x) + mean_t.to(x), 1.0 / PULSE_SLOPE)

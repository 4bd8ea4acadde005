"""Masked autoregressive flow (MAF, Papamakarios et al. 2017): the density model behind p_w.

x -> u direction only (density evaluation), which is all the latent prior needs:
n_blocks x [MADE -> batch-norm flow layer -> reverse permutation], standard normal base.
"""
from __future__ import annotations

import copy
import math
from typing import Dict, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

LOG_2PI = math.log(2.0 * math.pi)


class MaskedLinear(nn.Linear):
    """Linear layer whose connectivity is restricted by a fixed 0/1 mask (a buffer)."""

    def __init__(self, n_in: int, n_out: int, mask: Tensor) -> None:
        super().__init__(n_in, n_out)
        # Not saved: the mask follows from the config, and at 512-d it would double a bundle.
        self.register_buffer("mask", mask.to(self.weight.dtype), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Autoregressive net: (mu_i, alpha_i) depend only on x_{<i}, so du/dx is triangular.

    Two hidden layers; hidden degrees are deterministic so the masks (and hence the
    architecture) are the same every time the model is rebuilt from its config: they cycle
    through 0..dim-2 when there are enough hidden units, and are spread evenly over that range
    when there are fewer (else the inputs past the first `hidden` would feed nothing).
    """

    def __init__(self, dim: int, hidden: int, max_log_scale: float = 5.0) -> None:
        super().__init__()
        self.dim, self.max_log_scale = dim, float(max_log_scale)
        d_in = torch.arange(dim)
        if hidden >= dim - 1:
            d_hid = torch.arange(hidden) % max(1, dim - 1)
        else:
            d_hid = torch.arange(hidden) * (dim - 1) // hidden
        m_in = (d_hid[:, None] >= d_in[None, :])
        m_hid = (d_hid[:, None] >= d_hid[None, :])
        m_out = (d_in[:, None] > d_hid[None, :]).repeat(2, 1)  # rows: mu then alpha
        self.l1 = MaskedLinear(dim, hidden, m_in)
        self.l2 = MaskedLinear(hidden, hidden, m_hid)
        self.l3 = MaskedLinear(hidden, 2 * dim, m_out)
        # Start at the identity map: an untrained flow should not distort the data.
        nn.init.zeros_(self.l3.weight)
        nn.init.zeros_(self.l3.bias)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        h = F.relu(self.l1(x))
        h = F.relu(self.l2(h))
        mu, raw = self.l3(h).chunk(2, dim=-1)
        # Soft clamp of the log-scale: bounded Jacobian, still smooth and exact.
        alpha = self.max_log_scale * torch.tanh(raw / self.max_log_scale)
        return mu, alpha


class BatchNormFlow(nn.Module):
    """Invertible batch normalisation: batch statistics while training (and running-average
    updates), running statistics in eval mode; learnable log-scale and shift."""

    def __init__(self, dim: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.log_gamma = nn.Parameter(torch.zeros(dim))
        self.beta = nn.Parameter(torch.zeros(dim))
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        if self.training and x.shape[0] > 1:
            mean, var = x.mean(0), x.var(0, unbiased=False)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach().to(self.running_mean), self.momentum)
                self.running_var.lerp_(var.detach().to(self.running_var), self.momentum)
        else:
            mean, var = self.running_mean.to(x), self.running_var.to(x)
        y = (x - mean) * torch.rsqrt(var + self.eps) * self.log_gamma.exp() + self.beta
        logdet = (self.log_gamma - 0.5 * torch.log(var + self.eps)).sum()
        return y, logdet.expand(x.shape[0])


class MAF(nn.Module):
    """x -> u = f(x) with log|det du/dx|; log p(x) = log N(u; 0, I) + log|det|."""

    def __init__(self, dim: int, n_blocks: int = 5, hidden: int = 1024) -> None:
        super().__init__()
        if dim < 1 or n_blocks < 1 or hidden < 1:
            raise ValueError(f"MAF needs dim, n_blocks, hidden >= 1, got {dim}, {n_blocks}, {hidden}")
        self.dim, self.n_blocks, self.hidden = int(dim), int(n_blocks), int(hidden)
        self.mades = nn.ModuleList([MADE(self.dim, self.hidden) for _ in range(self.n_blocks)])
        self.norms = nn.ModuleList([BatchNormFlow(self.dim) for _ in range(self.n_blocks)])

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        logdet = x.new_zeros(x.shape[0])
        for made, norm in zip(self.mades, self.norms):
            mu, alpha = made(x)
            x = (x - mu) * torch.exp(-alpha)
            logdet = logdet - alpha.sum(-1)
            x, ld = norm(x)
            logdet = logdet + ld
            x = x.flip(-1)  # reverse the variable order so every block sees other conditionings
        return x, logdet

    @torch.no_grad()
    def calibrate_(self, x: Tensor, batch_size: int = 8192) -> "MAF":
        """Set every batch-norm layer's running statistics to the exact statistics of `x`
        (N, dim) as it arrives at that layer: removes the lag of the moving averages, so
        eval-mode densities are those of the trained transform.

        Works batch by batch (per-batch float32 moments merged in float64), so the cost is
        one forward pass with no full-size concatenation or float64 copy of `x`."""
        parts = list(torch.split(x, batch_size))
        for made, norm in zip(self.mades, self.norms):
            n_seen, mean, m2 = 0, None, None
            for j, xb in enumerate(parts):
                mu, alpha = made(xb)
                zb = (xb - mu) * torch.exp(-alpha)
                parts[j] = zb
                var_b, mean_b = torch.var_mean(zb, dim=0, unbiased=False)
                nb = zb.shape[0]
                mean_b, m2_b = mean_b.double(), var_b.double() * nb
                if mean is None:
                    n_seen, mean, m2 = nb, mean_b, m2_b
                    continue
                delta = mean_b - mean  # Chan et al.: merge two sets' mean and sum of squares
                total = n_seen + nb
                mean = mean + delta * (nb / total)
                m2 = m2 + m2_b + delta.square() * (n_seen * nb / total)
                n_seen = total
            norm.running_mean.copy_(mean)
            norm.running_var.copy_(m2 / n_seen)
            scale = torch.rsqrt(norm.running_var + norm.eps) * norm.log_gamma.exp()
            parts = [((zb - norm.running_mean) * scale + norm.beta).flip(-1) for zb in parts]
        return self

    def log_prob(self, x: Tensor) -> Tensor:
        u, logdet = self(x)
        return -0.5 * (u.square().sum(-1) + self.dim * LOG_2PI) + logdet

    def config(self) -> Dict[str, int]:
        return {"dim": self.dim, "n_blocks": self.n_blocks, "hidden": self.hidden}


@torch.no_grad()
def _mean_nll(flow: MAF, x: Tensor, batch_size: int) -> float:
    total = 0.0
    for i in range(0, x.shape[0], batch_size):
        total += -flow.log_prob(x[i:i + batch_size]).sum().item()
    return total / max(1, x.shape[0])


def fit_flow(samples: Tensor, n_blocks: int = 5, hidden: int = 1024, epochs: int = 20,
             batch_size: int = 1024, lr: float = 1e-3, seed: int = 0, val_fraction: float = 0.05,
             progress: bool = True, device=None, calibration_samples: int = 16384,
             noise_std: float = 0.0) -> MAF:
    """Maximum-likelihood fit of a MAF to `samples` (N, dim) with Adam.

    Keeps the state with the best validation NLL (the training NLL when there is no
    validation split) and returns it in eval mode on `device` (default: the samples').
    Each epoch's validation uses batch-norm statistics from `calibration_samples` training
    samples (a full pass per epoch cost as much as the epoch's training); the returned flow is
    calibrated on the whole training split.
    The global RNG is left untouched; `seed` fixes initialisation, split and shuffling.
    `noise_std` > 0 fits the density of the samples plus Gaussian noise of that size (fresh noise
    in every batch; the batch-norm calibrations see noisy samples too, the validation score
    clean ones): a smoother density between and around the samples, with fewer narrow peaks
    for a search to climb.
    """
    if samples.dim() != 2 or samples.shape[0] < 2:
        raise ValueError(f"fit_flow needs (N >= 2, dim) samples, got shape {tuple(samples.shape)}")
    device = torch.device(device) if device is not None else samples.device
    x = samples.detach().to(device=device, dtype=torch.float32)
    n, dim = x.shape
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=gen).to(device)
    n_val = int(round(n * val_fraction)) if val_fraction > 0 else 0
    n_val = min(n_val, n - 1)
    x_val, x_train = x[perm[:n_val]], x[perm[n_val:]]

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        flow = MAF(dim, n_blocks, hidden)
    flow.to(device)
    opt = torch.optim.Adam(flow.parameters(), lr=lr)

    def noisy(t: Tensor) -> Tensor:
        return t + noise_std * torch.randn(t.shape, generator=gen).to(t) if noise_std > 0 else t

    x_calib = noisy(x_train[:calibration_samples])  # already in random order
    best, best_state = math.inf, copy.deepcopy(flow.state_dict())
    bar = tqdm(range(epochs), desc="fit flow", disable=not progress)
    for _ in bar:
        flow.train()
        order = torch.randperm(x_train.shape[0], generator=gen).to(device)
        train_total = 0.0
        for i in range(0, x_train.shape[0], batch_size):
            batch = x_train[order[i:i + batch_size]]
            if batch.shape[0] < 2:  # batch statistics need two samples
                continue
            batch = noisy(batch)
            loss = -flow.log_prob(batch).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(flow.parameters(), 100.0)
            opt.step()
            train_total += loss.item() * batch.shape[0]
        flow.eval()
        flow.calibrate_(x_calib, batch_size=max(batch_size, 8192))
        score = _mean_nll(flow, x_val, batch_size) if n_val else train_total / x_train.shape[0]
        if math.isfinite(score) and score < best:
            best, best_state = score, copy.deepcopy(flow.state_dict())
        bar.set_postfix(val_nll_per_dim=f"{score / dim:.4f}", best=f"{best / dim:.4f}")
    bar.close()
    flow.load_state_dict(best_state)
    return flow.eval().calibrate_(noisy(x_train), batch_size=max(batch_size, 8192))

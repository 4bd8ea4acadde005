"""LR coverage: a generator loss asking that every real crop have a single-w sample whose
low-resolution image matches the crop's (implicit maximum likelihood estimation, Li & Malik
2018, applied to the LR images the searches see).

Why: RLS with p_cross at the paper's weight searches (nearly) one w per tile, so an LR tile
can be matched only if some single-w image of G downscales to it. The adversarial loss
rewards realistic samples, not covering every real layout: the campaign's generators reach
35-37 dB when RLS inverts their own samples and 16-20 dB on real crops (docs/models.md).
Per real crop, the one of K fresh samples whose LR image is nearest is pulled toward the
crop's LR image; what the LR image does not hold (the HR detail) stays the GAN loss's.
Uses only the HR training crops and the search's own forward operator: no LR/HR pairs.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Callable, ContextManager

import torch
from torch import Tensor

from ..generator import Generator
from ..operators import Operator, make_operator


@functools.lru_cache(maxsize=None)
def lr_operator(factor: int, operator: str = "bicubic") -> Operator:
    """The searches' default forward operator (rls super-resolve --operator) at `factor`."""
    return make_operator(operator, factor)


def _single_w(G: Generator, z: Tensor) -> Tensor:
    """One w on every layer: what a search under p_cross ends near."""
    return G.mapping(z)[:, None].expand(-1, G.num_ws, -1)


def coverage_loss(G: Generator, real: Tensor, factor: int, candidates: int,
                  amp: Callable[[], ContextManager] = contextlib.nullcontext) -> Tensor:
    """Mean squared LR error between each real crop and its nearest of `candidates` samples.
    `amp` (e.g. bf16 autocast) covers the generator only; the LR images and the loss are float32."""
    if real.shape[-1] % factor or real.shape[-2] % factor:
        raise ValueError(f"crops of {tuple(real.shape[-2:])} px cannot be reduced by {factor}")
    op = lr_operator(factor)
    lr_real = op(real.float())
    z = torch.randn(candidates, G.cfg.z_dim, device=real.device)
    with torch.no_grad():
        with amp():
            fake = G.synthesis(_single_w(G, z), noise_mode="random")
        nearest = torch.cdist(lr_real.flatten(1), op(fake.float()).flatten(1)).argmin(dim=1)
    with amp():
        pulled = G.synthesis(_single_w(G, z[nearest]), noise_mode="random")
    return (op(pulled.float()) - lr_real).square().mean()

"""Differentiable augmentation of the discriminator's inputs (DiffAugment, Zhao et al. 2020).

The same random transforms are applied to real and generated images before D, and
gradients flow through them to G. D then never sees an exact training crop twice, which
keeps it from memorising a small data set (the usual cause of collapse with few fields).
The ops suit fluorescence: per-channel brightness/contrast (stain intensity varies from
plate to plate), translation, cutout. Each op is applied to each image with probability p.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    p: float = 0.5              # probability that each op is applied to each image
    brightness: float = 0.25    # additive shift, uniform in +-brightness ([-1, 1] image units)
    contrast: float = 0.5       # gain around the channel mean, uniform in [1 - c, 1 + c]
    translation: float = 0.125  # shift up to this fraction of the size, zero padding
    cutout: float = 0.5         # side of the erased square as a fraction of the size (1/4 area)


def _apply(x: torch.Tensor, y: torch.Tensor, p: float) -> torch.Tensor:
    """Per-image choice between the original `x` and the transformed `y`."""
    if p >= 1.0:
        return y
    keep = torch.rand(x.shape[0], 1, 1, 1, device=x.device) >= p
    return torch.where(keep, x, y)


def color(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Per-image, per-channel brightness shift and contrast gain."""
    b, c = x.shape[:2]
    shift = (torch.rand(b, c, 1, 1, device=x.device, dtype=x.dtype) * 2 - 1) * cfg.brightness
    gain = 1 + (torch.rand(b, c, 1, 1, device=x.device, dtype=x.dtype) * 2 - 1) * cfg.contrast
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean) * gain + mean + shift


def translate(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Integer shift of each image by up to `translation` of its size, zeros shifted in."""
    b, _, h, w = x.shape
    sy, sx = int(h * cfg.translation + 0.5), int(w * cfg.translation + 0.5)
    if sy == 0 and sx == 0:
        return x
    ty = torch.randint(-sy, sy + 1, (b, 1, 1), device=x.device)
    tx = torch.randint(-sx, sx + 1, (b, 1, 1), device=x.device)
    gy = torch.arange(h, device=x.device)[None, :, None] + ty + sy  # index into the padded image
    gx = torch.arange(w, device=x.device)[None, None, :] + tx + sx
    padded = F.pad(x, [sx, sx, sy, sy])
    idx = (gy * (w + 2 * sx) + gx).reshape(b, 1, h * w).expand(-1, x.shape[1], -1)
    return padded.reshape(b, x.shape[1], -1).gather(2, idx).reshape_as(x)


def cutout(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Zero one square (side `cutout` of the image) at a random position per image."""
    b, _, h, w = x.shape
    ch, cw = int(h * cfg.cutout + 0.5), int(w * cfg.cutout + 0.5)
    if ch == 0 or cw == 0:
        return x
    cy = torch.randint(0, h, (b, 1, 1), device=x.device)  # centre; the square may overhang
    cx = torch.randint(0, w, (b, 1, 1), device=x.device)
    yy = torch.arange(h, device=x.device)[None, :, None]
    xx = torch.arange(w, device=x.device)[None, None, :]
    inside = (yy >= cy - ch // 2) & (yy < cy - ch // 2 + ch)
    inside = inside & (xx >= cx - cw // 2) & (xx < cx - cw // 2 + cw)
    return x * (~inside)[:, None].to(x.dtype)


def augment(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Colour, translation, cutout, each with probability `cfg.p` per image."""
    if cfg.p <= 0:
        return x
    x = _apply(x, color(x, cfg), cfg.p)
    x = _apply(x, translate(x, cfg), cfg.p)
    x = _apply(x, cutout(x, cfg), cfg.p)
    return x

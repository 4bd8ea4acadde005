"""Realism distance between sets of image crops that needs no downloaded network.

FID and friends need an ImageNet Inception network, which cannot be downloaded here and
knows nothing about fluorescence. Instead we use the sliced Wasserstein distance (SWD)
between local-patch distributions of a Laplacian pyramid, as in Karras et al. 2018
("Progressive growing of GANs", appendix D): at each scale (128, 64, 32, 16 px for a
128-px crop) random 7x7xC patches are drawn from every crop, each channel is standardised,
and the 1-D Wasserstein distances along many random directions are averaged. Fine
levels score texture/noise, coarse levels score cell shapes and layout; lower is better.
Values are usually reported x 1e3.

Crops are (N, C, H, W) float arrays in the same units for both sets (here: the model's
[0, 1] range). Everything is seeded: the same seed gives the same number.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
from scipy import ndimage as ndi

#: binomial 5-tap kernel of the Burt-Adelson Laplacian pyramid (as in Karras et al.)
_KERNEL = np.array([1.0, 4.0, 6.0, 4.0, 1.0], np.float32) / 16.0
PATCH = 7


def _blur5(x: np.ndarray) -> np.ndarray:
    x = ndi.convolve1d(x, _KERNEL, axis=-1, mode="mirror")
    return ndi.convolve1d(x, _KERNEL, axis=-2, mode="mirror")


def _down(x: np.ndarray) -> np.ndarray:
    return _blur5(x)[..., ::2, ::2]


def _up(x: np.ndarray) -> np.ndarray:
    out = np.zeros(x.shape[:-2] + (2 * x.shape[-2], 2 * x.shape[-1]), np.float32)
    out[..., ::2, ::2] = x * 4.0
    return _blur5(out)


def laplacian_pyramid(crops: np.ndarray, min_res: int = 16) -> Dict[int, np.ndarray]:
    """(N, C, H, W) -> {resolution: band}, finest first; the coarsest entry (``min_res``)
    is the low-pass residual, the others are band-pass (detail) images."""
    cur = np.asarray(crops, np.float32)
    if cur.ndim != 4:
        raise ValueError(f"crops must be (N, C, H, W), got shape {cur.shape}")
    if min(cur.shape[-2:]) < max(min_res, PATCH):
        raise ValueError(f"crops of {cur.shape[-2]}x{cur.shape[-1]} px are smaller than min_res={min_res}")
    levels: Dict[int, np.ndarray] = {}
    while min(cur.shape[-2:]) > min_res and min(cur.shape[-2:]) % 2 == 0:
        small = _down(cur)
        levels[cur.shape[-1]] = cur - _up(small)
        cur = small
    levels[cur.shape[-1]] = cur
    return levels


def patch_descriptors(band: np.ndarray, n_per_image: int, rng: np.random.Generator,
                      size: int = PATCH) -> np.ndarray:
    """``n_per_image`` random ``size`` x ``size`` x C patches from every image of a
    (N, C, H, W) band -> (N * n_per_image, C, size, size)."""
    n, c, h, w = band.shape
    win = np.lib.stride_tricks.sliding_window_view(band, (size, size), axis=(2, 3))  # N,C,h',w',s,s
    ys = rng.integers(0, h - size + 1, (n, n_per_image))
    xs = rng.integers(0, w - size + 1, (n, n_per_image))
    idx = np.repeat(np.arange(n), n_per_image)
    return np.ascontiguousarray(win[idx, :, ys.ravel(), xs.ravel()])


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, rng: np.random.Generator,
                       n_dirs: int = 128, repeats: int = 4, chunk: int = 128) -> float:
    """Mean over ``repeats`` x ``n_dirs`` random unit directions of the 1-D Wasserstein-1
    distance between the projections of descriptor sets a (Na, D) and b (Nb, D). Unequal
    set sizes are compared through matched quantiles."""
    a = np.asarray(a, np.float32).reshape(len(a), -1)
    b = np.asarray(b, np.float32).reshape(len(b), -1)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"descriptor sizes differ: {a.shape[1]} vs {b.shape[1]}")
    m = min(len(a), len(b))
    qa = None if len(a) == m else ((np.arange(m) + 0.5) / m * len(a)).astype(int)
    qb = None if len(b) == m else ((np.arange(m) + 0.5) / m * len(b)).astype(int)
    total, count = 0.0, 0
    for _ in range(repeats):
        dirs = rng.standard_normal((a.shape[1], n_dirs)).astype(np.float32)
        dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
        for j in range(0, n_dirs, chunk):
            d = dirs[:, j:j + chunk]
            pa, pb = np.sort(a @ d, axis=0), np.sort(b @ d, axis=0)
            if qa is not None:
                pa = pa[qa]
            if qb is not None:
                pb = pb[qb]
            total += float(np.abs(pa - pb).mean(axis=0).sum())
            count += d.shape[1]
    return total / count


def _standardise(desc: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return (desc - mean[None, :, None, None]) / std[None, :, None, None]


def swd(real_crops: np.ndarray, fake_crops: np.ndarray, seed: int = 0, n_per_image: int = 64,
        n_dirs: int = 128, repeats: int = 4, min_res: int = 16, norm: str = "real") -> Dict[int, float]:
    """SWD per pyramid level {resolution: distance} between two (N, C, H, W) crop sets.

    Defaults: 64 patches per crop per level and 4 x 128 = 512 random directions, as in
    Karras et al. (512 directions in all); sorting the projections is the cost, ~linear in
    patches x directions (256 crops: a few seconds per call on one core).

    Patch positions are drawn from one seeded stream for both sets (they depend on the set
    shape, never on the pixels), so identical sets give exactly 0 and a given seed always
    gives the same numbers. ``norm`` picks the per-channel mean/std that standardise each
    level's descriptors: ``"real"`` (default; a brightness or contrast error of the fake set
    still counts), ``"pooled"`` (real + fake), or ``"separate"`` (each set its own, as
    Karras et al.; ignores global intensity differences).
    """
    if norm not in ("real", "pooled", "separate"):
        raise ValueError(f"norm must be 'real', 'pooled' or 'separate', got {norm!r}")
    real_crops, fake_crops = np.asarray(real_crops, np.float32), np.asarray(fake_crops, np.float32)
    if real_crops.shape[1:] != fake_crops.shape[1:]:
        raise ValueError(f"crop shapes differ: {real_crops.shape[1:]} vs {fake_crops.shape[1:]}")
    pr, pf = laplacian_pyramid(real_crops, min_res), laplacian_pyramid(fake_crops, min_res)
    out: Dict[int, float] = {}
    for res in pr:
        level_seed = np.random.SeedSequence([int(seed), int(res)])
        pos_ss, dir_ss = level_seed.spawn(2)
        dr = patch_descriptors(pr[res], n_per_image, np.random.default_rng(pos_ss))
        df = patch_descriptors(pf[res], n_per_image, np.random.default_rng(pos_ss))
        if norm == "separate":
            dr = _standardise(dr, *_channel_stats(dr))
            df = _standardise(df, *_channel_stats(df))
        else:
            mean, std = _channel_stats(dr if norm == "real" else np.concatenate([dr, df]))
            dr, df = _standardise(dr, mean, std), _standardise(df, mean, std)
        out[res] = sliced_wasserstein(dr, df, np.random.default_rng(dir_ss), n_dirs, repeats)
    return out


def _channel_stats(desc: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    mean = desc.mean(axis=(0, 2, 3), dtype=np.float64).astype(np.float32)
    std = desc.std(axis=(0, 2, 3), dtype=np.float64).astype(np.float32)
    return mean, np.maximum(std, 1e-8)


def swd_mean(levels: Dict[int, float]) -> float:
    """Average over levels (the single number usually quoted)."""
    return float(np.mean(list(levels.values())))


def blur(crops: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of every channel of (N, C, H, W) crops: a 'clearly worse' reference."""
    return ndi.gaussian_filter(np.asarray(crops, np.float32), sigma=(0, 0, sigma, sigma), mode="reflect")


__all__: List[str] = ["laplacian_pyramid", "patch_descriptors", "sliced_wasserstein", "swd", "swd_mean",
                      "blur"]

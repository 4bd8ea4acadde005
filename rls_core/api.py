"""`super_resolve`: the one entry point that the CLI and the CellProfiler plugin both call.

Data flows one way: full-scale LR channels -> model intensity range -> tiles ->
search (operator + priors + generator) -> blended HR field (+ uncertainty) -> full-scale.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from .accel import DEFAULT_ACCEL
from .model import LoadedModel, load_model
from .operators import make_operator, upsample_bicubic
from .registry import DEFAULT_MODEL
from .search import METHODS, make_search, psnr, refine
from .tiling import Blender, TileGrid, iter_batches, make_grid, pad_field, tiles_in_mask

ImageLike = Union[np.ndarray, Sequence[np.ndarray]]


class InputError(ValueError):
    """Bad user input: the message names the problem and the fix."""


@dataclass
class SRResult:
    image: np.ndarray                 # (C, H, W) float32, same intensity units as the input
    std: Optional[np.ndarray]         # (C, H, W) per-pixel std over samples (samples > 1), else None
    mask: Optional[np.ndarray]        # (H, W) bool: pixels that were super-resolved (None: all)
    lr_psnr: float                    # PSNR (dB) of the downscaled result against the LR input
    converged_fraction: float         # tiles (x samples) whose best LR L1 is under the threshold
    n_tiles: int
    seconds: float
    method: str
    factor: int
    model: str
    channel_names: List[str]
    settings: Dict[str, Any] = field(default_factory=dict)


def _as_channels(image: ImageLike, n_channels: int, names: Sequence[str]) -> np.ndarray:
    if isinstance(image, np.ndarray) and image.ndim == 2:
        chans = [image]
    elif isinstance(image, np.ndarray) and image.ndim == 3:
        chans = list(image)
    elif isinstance(image, np.ndarray):
        raise InputError(f"expected a 2-D image or a (channels, height, width) stack, got shape {image.shape}")
    else:
        chans = [np.asarray(c) for c in image]
    if len(chans) != n_channels:
        raise InputError(f"the model expects {n_channels} channel(s) ({', '.join(names)}), got {len(chans)}; "
                         "give one image per model channel, in that order")
    shapes = {c.shape for c in chans}
    if any(c.ndim != 2 for c in chans):
        raise InputError(f"each channel must be a 2-D grayscale image, got shapes {[c.shape for c in chans]}")
    if len(shapes) != 1:
        raise InputError(f"all channels must have the same size, got {sorted(shapes)}; "
                         "resize or crop them to a common size first")
    arr = np.stack([c.astype(np.float32, copy=False) for c in chans])
    bad = ~np.isfinite(arr)
    if bad.any():
        ch = sorted({names[i] for i in np.nonzero(bad.any(axis=(1, 2)))[0]})
        raise InputError(f"channel(s) {', '.join(ch)} contain {int(bad.sum())} NaN or infinite pixel(s); "
                         "fix or mask them before super-resolving")
    return arr


def check_factor(model: LoadedModel, factor: int) -> int:
    """LR tile size for `factor`; raises if the factor does not fit the model's tile."""
    R = model.resolution
    if factor < 1 or R % factor != 0 or R // factor < 2:
        ok = [f for f in (2, 4, 8, 16, 32, 64) if R % f == 0 and R // f >= 2]
        raise InputError(f"factor {factor} does not fit model '{model.name}' ({R}-px tiles): "
                         f"choose one of {ok}")
    return R // factor


def default_overlap(tile: int) -> int:
    return tile // 4


def super_resolve(image: ImageLike, model: Union[str, Path, LoadedModel] = DEFAULT_MODEL, factor: int = 16,
                  method: str = "rls", *, steps: Optional[int] = None, lr: Optional[float] = None,
                  samples: int = 1, seed: int = 0, device: str = "auto", realism: float = 1.0,
                  weights: Optional[Dict[str, float]] = None, p_w: str = "flow", overlap: Optional[int] = None,
                  batch_size: int = 32, mask: Optional[np.ndarray] = None, operator: str = "bicubic",
                  refine_steps: int = 0, start_spread: Optional[float] = None, converge_l1: float = 0.03,
                  progress: bool = False, callback: Optional[Callable[[int, int], None]] = None,
                  accel: str = DEFAULT_ACCEL) -> SRResult:
    """Super-resolve one LR field.

    image: (C, h, w) array or a list of C 2-D arrays, one per model channel, in full-scale
        units (raw / dtype max, as CellProfiler gives them).
    model: shipped model name, bundle path, or a LoadedModel.
    factor: upscaling factor; the LR tile is model resolution // factor pixels.
    method: rls | pulse | brgm | plain | bicubic (| rls-no-pw | rls-no-pcross).
    realism: the fidelity-vs-realism knob: multiplies every prior weight (0 = no prior,
        1 = the paper's defaults, >1 = more realistic, less faithful).
    weights: per-weight overrides, e.g. {"lambda_cross": 0.2}.
    samples: K > 1 runs K searches per tile from random starts; the result is their
        mean and `std` their per-pixel standard deviation (an uncertainty map).
    mask: optional LR-sized bool mask; tiles without any masked pixel are skipped.
    refine_steps: > 0 adds the RLS+ refinement stage (generator weights fine-tuned per tile).
    accel: how the generator runs (rls_core.accel: none, bf16, compile, ...); ignored when
        `model` is already a LoadedModel, which carries its own.
    """
    t0 = time.perf_counter()
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if samples < 1:
        raise InputError(f"samples must be >= 1, got {samples}")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    m = load_model(model, device, accel=accel)
    tile = check_factor(m, factor)
    lr_img = _as_channels(image, len(m.channel_names), m.channel_names)
    h, w = lr_img.shape[1:]
    if h < tile or w < tile:
        raise InputError(f"the LR image ({h}x{w} px) is smaller than one LR tile ({tile}x{tile} px at {factor}x "
                         f"for a {m.resolution}-px model); use a larger image or a smaller factor")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (h, w):
            raise InputError(f"the mask is {mask.shape[0]}x{mask.shape[1]} px but the image is {h}x{w}; "
                             "give a mask of the LR image's size")
    unit = np.clip(m.to_unit(lr_img), 0.0, 1.0).astype(np.float32)
    op = make_operator(operator, factor).to(m.device)
    settings = dict(method=method, factor=factor, steps=steps, samples=samples, seed=seed, realism=realism,
                    weights=weights or {}, p_w=p_w, operator=operator, refine_steps=refine_steps,
                    batch_size=batch_size, device=str(m.device))

    if method == "bicubic":
        x = torch.from_numpy(unit)[None].to(m.device)
        hr_unit = upsample_bicubic(x, factor)[0].cpu().numpy()
        hr_mask = np.repeat(np.repeat(mask, factor, 0), factor, 1) if mask is not None else None
        if hr_mask is not None:
            hr_unit = hr_unit * hr_mask
        lr_psnr = field_lr_psnr(op, hr_unit, unit, m.device)
        return SRResult(m.from_unit(hr_unit).astype(np.float32), None, hr_mask, lr_psnr, 1.0, 0,
                        time.perf_counter() - t0, method, factor, m.name, list(m.channel_names), settings)

    overlap = default_overlap(tile) if overlap is None else int(overlap)
    try:
        grid = make_grid((h, w), tile, factor, overlap)
    except ValueError as e:
        raise InputError(str(e)) from None
    padded = pad_field(unit, grid)
    keep = None
    if mask is not None:
        keep = tiles_in_mask(grid, pad_field(mask[None].astype(np.uint8), grid)[0] > 0)
    spread = (0.3 if samples > 1 else 0.0) if start_spread is None else float(start_spread)
    try:
        search = make_search(method, m, op, realism=realism, start_spread=spread, p_w=p_w, **(weights or {}))
    except ValueError as e:
        raise InputError(str(e)) from None
    n_steps = int(search.default_steps if steps is None else steps)

    tiles_per_batch = max(1, batch_size // samples)
    n_run = int(keep.sum()) if keep is not None else len(grid.positions)
    total_work = n_run * samples * (n_steps + max(refine_steps, 0))
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=total_work, desc=f"{method} x{factor} ({n_run} tiles)", unit="step", leave=False)
    done = [0]

    def tick(k: int) -> None:
        done[0] += k
        if bar is not None:
            bar.update(k)
        if callback is not None:
            callback(done[0], total_work)

    blender = Blender(grid, len(m.channel_names), with_std=samples > 1)
    n_conv, n_total = 0, 0
    for b, idx in enumerate(iter_batches(grid, tiles_per_batch, keep)):
        y = torch.from_numpy(np.stack([padded[:, py:py + tile, px:px + tile] for py, px in
                                       (grid.positions[i] for i in idx)]))
        y = y.repeat_interleave(samples, dim=0)  # tile-major: (tile0 s0, tile0 s1, ...)
        n_b = y.shape[0]
        prev = [0]

        def on_step(s: int, total: int, n_b: int = n_b) -> None:
            tick(n_b * (s - prev[0]))
            prev[0] = s

        res = search.run(y, steps=n_steps, lr=lr, seed=seed + 7919 * b, converge_l1=converge_l1, callback=on_step)
        images = res.images
        if refine_steps > 0:
            prev[0] = 0

            def on_refine(s: int, total: int) -> None:  # s counts tile-steps
                tick(s - prev[0])
                prev[0] = s

            images = refine(m, op, y.to(m.device), res.w_plus, res.noise, steps=refine_steps, callback=on_refine)
        n_conv += int(res.converged.sum())
        n_total += n_b
        imgs = images.detach().cpu().numpy().reshape(len(idx), samples, *images.shape[1:])
        for j, i in enumerate(idx):
            blender.add(i, imgs[j].mean(0), imgs[j].std(0) if samples > 1 else None)
    if bar is not None:
        bar.close()

    hr_unit, std_unit, covered = blender.result()
    hr_mask = None
    if mask is not None:
        hr_mask = np.repeat(np.repeat(mask, factor, 0), factor, 1) & covered
        hr_unit = hr_unit * hr_mask
        if std_unit is not None:
            std_unit = std_unit * hr_mask
    lr_psnr = field_lr_psnr(op, hr_unit, unit, m.device, mask)
    scale = (m.high - m.low)[:, None, None]
    return SRResult(
        image=m.from_unit(hr_unit).astype(np.float32),
        std=(std_unit * scale).astype(np.float32) if std_unit is not None else None,
        mask=hr_mask, lr_psnr=lr_psnr, converged_fraction=n_conv / max(n_total, 1),
        n_tiles=n_run, seconds=time.perf_counter() - t0, method=method, factor=factor, model=m.name,
        channel_names=list(m.channel_names), settings=settings)


def field_lr_psnr(op, hr_unit: np.ndarray, lr_unit: np.ndarray, device, mask: Optional[np.ndarray] = None,
                  strip: int = 32) -> float:
    """PSNR of D(SR) against the LR input over the whole field, computed in LR-row strips
    (with a margin covering the operator's support) so memory stays bounded."""
    f = op.factor
    h = lr_unit.shape[1]
    margin = 2  # LR rows of context each side: the antialiased bicubic kernel spans 4 LR px
    se, count = 0.0, 0
    for r0 in range(0, h, strip):
        r1 = min(h, r0 + strip)
        a0, a1 = max(0, r0 - margin), min(h, r1 + margin)
        hr = torch.from_numpy(np.ascontiguousarray(hr_unit[:, a0 * f:a1 * f]))[None].to(device)
        with torch.no_grad():
            down = op(hr)[0].cpu().numpy()[:, r0 - a0:r0 - a0 + (r1 - r0)]
        diff = down - lr_unit[:, r0:r1]
        if mask is not None:
            sel = mask[r0:r1]
            diff = diff[:, sel]
        se += float(np.square(diff, dtype=np.float64).sum())
        count += diff.size
    mse = se / max(count, 1)
    return float(10.0 * np.log10(1.0 / max(mse, 1e-12)))

"""`super_resolve`: the one entry point that the CLI and the CellProfiler plugin both call.

Data flows one way: full-scale LR channels -> model intensity range -> tiles ->
reconstructor (operator + priors + generator; rls_core.reconstruct) -> blended HR field
(+ uncertainty) -> full-scale. Four steps, one function each: validate, prepare the tiles,
run them, assemble the field.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .accel import DEFAULT_ACCEL
from .cpu_alloc import release_free_memory
from .errors import InputError, SearchError
from .intensity import (IntensityRange, check_range, dtype_notes, intensity_warnings, range_warnings,
                        to_full_scale)
from .methods import DEFAULT_METHOD, get_method, valid_factors
from .model import LoadedModel, load_model
from .reconstruct import iter_reconstruct, make_reconstructor
from .registry import DEFAULT_MODEL
from .seeding import TileKey, check_seed
from .tiling import Blender, TileGrid, make_grid, pad_field, tiles_in_mask

ImageLike = Union[np.ndarray, Sequence[np.ndarray]]
#: the field name used for per-tile random streams when the caller gives none
DEFAULT_FIELD_NAME = "field"

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
    warnings: List[str] = field(default_factory=list)  # saturated or constant input channels, ...


def _as_channels(image: ImageLike, n_channels: int, names: Sequence[str],
                 intensity_range: Optional[IntensityRange] = None) -> Tuple[np.ndarray, List[str]]:
    """The channels as one (C, h, w) full-scale float32 stack (rls_core.intensity's rule) and
    notes on how their types were scaled."""
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
    notes = [f"channel {n}: {note}" for c, n in zip(chans, names) for note in dtype_notes(c.dtype, intensity_range)]
    return np.stack([to_full_scale(c, intensity_range, source=f"channel {n}") for c, n in zip(chans, names)]), notes


def check_factor(model: LoadedModel, factor: int) -> int:
    """LR tile size for `factor`; raises if the factor does not fit the model's tile."""
    R = model.resolution
    if factor not in valid_factors(R):
        raise InputError(f"factor {factor} does not fit model '{model.name}' ({R}-px tiles): "
                         f"choose one of {list(valid_factors(R))}")
    return R // factor


def default_overlap(tile: int) -> int:
    return tile // 4


@dataclass
class _Prepared:
    """A validated field cut into LR tiles, ready to run."""

    unit: np.ndarray                  # (C, h, w) LR field in the model's [0, 1] units
    grid: TileGrid
    tiles: np.ndarray                 # (N, C, r, r) the tiles that run (inside the mask)
    index: List[int]                  # their indices in grid.positions
    keys: List[TileKey]               # what each tile is, for its random stream
    mask: Optional[np.ndarray]        # (h, w) bool LR mask, or None


def _validate(m: LoadedModel, image: ImageLike, factor: int, method: str, batch_size: int,
              seed: int, mask: Optional[np.ndarray], intensity_range: Optional[IntensityRange]
              ) -> Tuple[np.ndarray, List[str]]:
    """Check every input before any work; returns the (C, h, w) full-scale float32 LR stack and
    warnings about it."""
    try:
        get_method(method)
        check_seed(seed)
    except ValueError as e:
        raise InputError(str(e)) from None
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    tile = check_factor(m, factor)
    lr_img, notes = _as_channels(image, len(m.channel_names), m.channel_names, intensity_range)
    h, w = lr_img.shape[1:]
    if h < tile or w < tile:
        raise InputError(f"the LR image ({h}x{w} px) is smaller than one LR tile ({tile}x{tile} px at {factor}x "
                         f"for a {m.resolution}-px model); use a larger image or a smaller factor")
    if mask is not None and np.shape(mask) != (h, w):
        raise InputError(f"the mask is {'x'.join(map(str, np.shape(mask)))} px but the image is {h}x{w}; "
                         "give a mask of the LR image's size")
    return lr_img, notes + intensity_warnings(lr_img, m.channel_names) + \
        range_warnings(lr_img, m.channel_names, m.high)


def _prepare(m: LoadedModel, lr_img: np.ndarray, factor: int, overlap: Optional[int], name: str,
             mask: Optional[np.ndarray]) -> _Prepared:
    """LR field -> model units -> padded grid of tiles (those touching the mask)."""
    tile = m.resolution // factor
    h, w = lr_img.shape[1:]
    unit = np.clip(m.to_unit(lr_img), 0.0, 1.0).astype(np.float32)
    overlap = default_overlap(tile) if overlap is None else int(overlap)
    try:
        grid = make_grid((h, w), tile, factor, overlap)
    except ValueError as e:
        raise InputError(str(e)) from None
    padded = pad_field(unit, grid)
    lr_mask = np.asarray(mask, dtype=bool) if mask is not None else None
    keep = np.ones(len(grid.positions), bool)
    if lr_mask is not None:
        keep = tiles_in_mask(grid, pad_field(lr_mask[None].astype(np.uint8), grid)[0] > 0)
    index = [i for i in range(len(grid.positions)) if keep[i]]
    tiles = np.stack([padded[:, py:py + tile, px:px + tile] for py, px in (grid.positions[i] for i in index)]) \
        if index else np.zeros((0, unit.shape[0], tile, tile), np.float32)
    keys = [TileKey(name, py // grid.stride, px // grid.stride) for py, px in (grid.positions[i] for i in index)]
    return _Prepared(unit, grid, tiles, index, keys, lr_mask)


class _Progress:
    """Forwards tile-step counts to a tqdm bar and/or a callback(done, total)."""

    def __init__(self, desc: str, show: bool, callback: Optional[Callable[[int, int], None]]) -> None:
        self.desc, self.show, self.callback, self.bar = desc, show, callback, None

    def __call__(self, done: int, total: int) -> None:
        if self.show and self.bar is None:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, desc=self.desc, unit="step", leave=False)
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
        if self.callback is not None:
            self.callback(done, total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def super_resolve(image: ImageLike, model: Union[str, Path, LoadedModel] = DEFAULT_MODEL, factor: int = 16,
                  method: str = DEFAULT_METHOD, *, steps: Optional[int] = None, learning_rate: Optional[float] = None,
                  samples: int = 1, seed: int = 0, name: str = DEFAULT_FIELD_NAME, device: str = "auto",
                  realism: float = 1.0, weights: Optional[Dict[str, float]] = None, p_w: str = "flow",
                  overlap: Optional[int] = None, batch_size: int = 32, mask: Optional[np.ndarray] = None,
                  operator: str = "bicubic", refine_steps: int = 0, start_spread: Optional[float] = None,
                  converge_l1: float = 0.03, progress: bool = False,
                  callback: Optional[Callable[[int, int], None]] = None,
                  accel: str = DEFAULT_ACCEL, intensity_range: Optional[Sequence[float]] = None) -> SRResult:
    """Super-resolve one LR field.

    image: (C, h, w) array or a list of C 2-D arrays, one per model channel. Integers are
        scaled as CellProfiler scales files (uint: / dtype max); floats must already be 0..1
        (full-scale, as CellProfiler gives them to modules); see rls_core.intensity.
    intensity_range: (LO, HI) of the raw values instead: (x - LO) / (HI - LO), any dtype.
    model: shipped model name, bundle path, or a LoadedModel.
    factor: upscaling factor; the LR tile is model resolution // factor pixels.
    method: a name from the method table (rls_core.methods.METHOD_NAMES).
    seed, name: every random draw of a tile comes from (seed, name, tile row and column,
        sample): give each field its own stable name (e.g. its file name) and the result of a
        field does not depend on batch size, tile order or which machine runs it.
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
    m = load_model(model, device, accel=accel)
    lr_img, warnings = _validate(m, image, factor, method, batch_size, seed, mask,
                                 check_range(intensity_range))
    try:
        recon = make_reconstructor(m, method, factor, operator, samples, realism=realism, weights=weights,
                                   p_w=p_w, steps=steps, learning_rate=learning_rate, start_spread=start_spread,
                                   refine_steps=refine_steps, converge_l1=converge_l1)
    except ValueError as e:
        raise InputError(str(e)) from None
    samples = recon.samples
    prep = _prepare(m, lr_img, factor, overlap, str(name), mask)
    settings = dict(method=method, factor=factor, steps=recon.steps, samples=samples, seed=seed, name=str(name),
                    realism=realism, weights=weights or {}, p_w=p_w, operator=operator, refine_steps=refine_steps,
                    batch_size=batch_size, device=str(m.device),
                    intensity_range=list(intensity_range) if intensity_range is not None else None)

    bar = _Progress(f"{method} x{factor} ({len(prep.index)} tiles)", progress, callback)
    blender = Blender(prep.grid, len(m.channel_names), with_std=samples > 1)
    n_conv = n_failed = 0
    try:
        for i0, res in iter_reconstruct(recon, prep.tiles, prep.keys, seed, batch_size, bar):
            n_conv += int(res.converged.sum())
            n_failed += int(res.failed.sum())
            for j in range(res.images.shape[0]):
                blender.add(prep.index[i0 + j], res.images[j].mean(0),
                            res.images[j].std(0) if samples > 1 else None)
    finally:
        bar.close()
        release_free_memory()  # between fields, a host process (CellProfiler) gets the search's memory back
    if n_failed:
        raise SearchError(f"the search broke down (NaN or infinite loss) on {n_failed} of "
                          f"{len(prep.index) * samples} tile searches, so the result cannot be used",
                          "check the model (`rls info`; a damaged prior is one cause) or lower --lr / the weights")
    result = _assemble(m, prep, blender, recon.operator, n_conv / max(len(prep.index) * samples, 1),
                       time.perf_counter() - t0, method, factor, settings)
    if mask is not None and not prep.index:
        warnings = warnings + ["the mask covers no pixel of the field: nothing was super-resolved and the "
                               "output is blank (LR PSNR NaN)"]
    result.warnings = warnings
    return result


def _assemble(m: LoadedModel, prep: _Prepared, blender: Blender, op, converged_fraction: float, seconds: float,
              method: str, factor: int, settings: Dict[str, Any]) -> SRResult:
    """Blended HR tiles -> the field in full-scale units, masked, with its LR consistency."""
    hr_unit, std_unit, covered = blender.result()
    hr_mask = None
    if prep.mask is not None:
        hr_mask = np.repeat(np.repeat(prep.mask, factor, 0), factor, 1) & covered
        hr_unit = hr_unit * hr_mask
        if std_unit is not None:
            std_unit = std_unit * hr_mask
    lr_psnr = field_lr_psnr(op, hr_unit, prep.unit, m.device, prep.mask)
    scale = (m.high - m.low)[:, None, None]
    return SRResult(
        image=m.from_unit(hr_unit).astype(np.float32),
        std=(std_unit * scale).astype(np.float32) if std_unit is not None else None,
        mask=hr_mask, lr_psnr=lr_psnr, converged_fraction=converged_fraction,
        n_tiles=len(prep.index), seconds=seconds, method=method, factor=factor, model=m.name,
        channel_names=list(m.channel_names), settings=settings)


def field_lr_psnr(op, hr_unit: np.ndarray, lr_unit: np.ndarray, device, mask: Optional[np.ndarray] = None,
                  strip: int = 32) -> float:
    """PSNR of D(SR) against the LR input over the whole field (inside `mask`; NaN where the
    mask is empty), computed in LR-row strips (with a margin covering the operator's support)
    so memory stays bounded."""
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
    if count == 0:  # an empty mask: nothing was fitted, so there is no consistency to report
        return float("nan")
    mse = se / count
    return float(10.0 * np.log10(1.0 / max(mse, 1e-12)))

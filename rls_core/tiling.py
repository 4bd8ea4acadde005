"""Split an LR field into overlapping generator-sized tiles and blend the HR tiles back.

The LR field is padded (reflect, or edge where reflect cannot reach) so a regular grid of
tiles with stride `tile - overlap` covers it. HR tiles are blended with linear
cross-fades over the overlap (weights that sum to one), so seams vanish; with zero
overlap every HR pixel comes from exactly one tile. Only the output field and one batch
of tiles are ever in memory, however large the field.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import numpy as np


@dataclass
class TileGrid:
    lr_shape: Tuple[int, int]      # original LR (h, w)
    tile: int                      # LR tile size (generator resolution // factor)
    overlap: int                   # LR pixels shared by neighbouring tiles
    factor: int
    positions: List[Tuple[int, int]]   # top-left LR corners in the padded field
    padded_shape: Tuple[int, int]

    @property
    def stride(self) -> int:
        return self.tile - self.overlap

    @property
    def hr_tile(self) -> int:
        return self.tile * self.factor

    @property
    def hr_padded_shape(self) -> Tuple[int, int]:
        return self.padded_shape[0] * self.factor, self.padded_shape[1] * self.factor


def check_overlap(overlap: int, tile: int) -> int:
    """`overlap` if neighbouring LR tiles can share that many pixels, else ValueError."""
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap must be between 0 and {tile - 1} LR pixels (tile is {tile} px), got {overlap}")
    return overlap


def make_grid(lr_shape: Tuple[int, int], tile: int, factor: int, overlap: int) -> TileGrid:
    check_overlap(overlap, tile)
    h, w = lr_shape
    stride = tile - overlap
    ny = max(1, math.ceil(max(h - tile, 0) / stride) + 1)
    nx = max(1, math.ceil(max(w - tile, 0) / stride) + 1)
    padded = ((ny - 1) * stride + tile, (nx - 1) * stride + tile)
    positions = [(iy * stride, ix * stride) for iy in range(ny) for ix in range(nx)]
    return TileGrid((h, w), tile, overlap, factor, positions, padded)


def pad_field(lr: np.ndarray, grid: TileGrid) -> np.ndarray:
    """Pad (C, h, w) at the bottom/right to the grid's padded shape."""
    h, w = lr.shape[-2:]
    ph, pw = grid.padded_shape[0] - h, grid.padded_shape[1] - w
    if ph == 0 and pw == 0:
        return lr
    mode = "reflect" if (ph < h and pw < w) else "edge"
    return np.pad(lr, [(0, 0), (0, ph), (0, pw)], mode=mode)


def blend_profile(hr_tile: int, hr_overlap: int) -> np.ndarray:
    """1-D weights: linear ramps over the overlap at both ends, 1 in the middle.

    Ramps of two neighbours sum to exactly 1 across their shared band; at the field
    border only one tile covers a pixel, so its (small) weight cancels on normalisation.
    """
    prof = np.ones(hr_tile, dtype=np.float32)
    if hr_overlap > 0:
        ramp = (np.arange(hr_overlap, dtype=np.float32) + 0.5) / hr_overlap
        prof[:hr_overlap] = ramp
        prof[-hr_overlap:] = ramp[::-1]
    return prof


def iter_batches(grid: TileGrid, batch: int, keep: Optional[np.ndarray] = None) -> Iterator[List[int]]:
    """Tile indices in batches; `keep` (bool per tile) drops tiles outside the mask."""
    idx = [i for i in range(len(grid.positions)) if keep is None or keep[i]]
    for s in range(0, len(idx), batch):
        yield idx[s:s + batch]


def tiles_in_mask(grid: TileGrid, mask_lr_padded: np.ndarray) -> np.ndarray:
    t = grid.tile
    return np.array([bool(mask_lr_padded[y:y + t, x:x + t].any()) for y, x in grid.positions])


class Blender:
    """Accumulates weighted HR tiles (and optional per-tile std) into padded fields."""

    def __init__(self, grid: TileGrid, channels: int, with_std: bool = False) -> None:
        self.grid = grid
        H, W = grid.hr_padded_shape
        self.acc = np.zeros((channels, H, W), dtype=np.float32)
        self.acc_std = np.zeros((channels, H, W), dtype=np.float32) if with_std else None
        self.weight = np.zeros((H, W), dtype=np.float32)
        p = blend_profile(grid.hr_tile, grid.overlap * grid.factor)
        self.window = np.outer(p, p)

    def add(self, index: int, tile: np.ndarray, std: Optional[np.ndarray] = None) -> None:
        y, x = self.grid.positions[index]
        f, T = self.grid.factor, self.grid.hr_tile
        sl = (slice(y * f, y * f + T), slice(x * f, x * f + T))
        self.acc[(slice(None),) + sl] += tile * self.window
        if self.acc_std is not None and std is not None:
            self.acc_std[(slice(None),) + sl] += std * self.window
        self.weight[sl] += self.window

    def result(self) -> Tuple[np.ndarray, Optional[np.ndarray], np.ndarray]:
        """(image, std or None, covered) cropped to the original field's HR size."""
        h, w = self.grid.lr_shape
        f = self.grid.factor
        covered = self.weight > 0
        wgt = np.where(covered, self.weight, 1.0)
        img = (self.acc / wgt)[:, :h * f, :w * f]
        std = (self.acc_std / wgt)[:, :h * f, :w * f] if self.acc_std is not None else None
        return img, std, covered[:h * f, :w * f]

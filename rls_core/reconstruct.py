"""One contract for every method, and the one tile driver.

A `Reconstructor` turns a batch of LR tiles into HR tiles: every method of the table,
bicubic included, through the same call, with the forward operator given. `reconstruct_tiles`
drives any reconstructor over many tiles in batches, with per-tile random streams
(rls_core.seeding), so its output for a tile does not depend on the batch size or on which
tiles share a batch. `super_resolve` (fields) and `rls evaluate` (crops) both call it, so
evaluation measures exactly what users get.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch

from .methods import SAMPLES_START_SPREAD, Method, get_method
from .model import LoadedModel
from .operators import Operator, make_operator, upsample_bicubic
from .search import make_search, psnr, refine
from .seeding import TileKey, tile_seeds

Progress = Callable[[int, int], None]  # (work done, total work), in tile-steps


@dataclass
class TileBatch:
    """HR tiles of one batch in the model's [0, 1] units, with per-tile diagnostics."""

    images: torch.Tensor      # (B, C, R, R)
    lr_psnr: torch.Tensor     # (B,) PSNR of D(HR) against the LR tile, dB
    converged: torch.Tensor   # (B,) bool: the search's best LR L1 is under its threshold
    failed: Optional[torch.Tensor] = None  # (B,) bool: the search broke down (non-finite loss)


@dataclass
class TileResults:
    """Every tile x sample of a run, in the model's [0, 1] units."""

    images: np.ndarray        # (N, K, C, R, R)
    lr_psnr: np.ndarray       # (N, K)
    converged: np.ndarray     # (N, K) bool
    steps: int                # search steps per tile (0: no search)
    failed: Optional[np.ndarray] = None  # (N, K) bool: the search broke down (non-finite loss)


class Reconstructor:
    """The contract: `reconstruct(y, seeds)` maps LR tiles (B, C, r, r) in [0, 1] to HR tiles.
    `seeds[i]` is tile i's random stream; `work_per_tile` is what one tile costs in the
    progress unit (tile-steps)."""

    method: Method
    samples: int = 1
    steps: int = 0

    @property
    def work_per_tile(self) -> int:
        return max(1, self.steps)

    def reconstruct(self, y: torch.Tensor, seeds: Sequence[int],
                    progress: Optional[Callable[[int], None]] = None) -> TileBatch:
        raise NotImplementedError


class BicubicReconstructor(Reconstructor):
    """No search: bicubic interpolation of each tile."""

    def __init__(self, model: LoadedModel, method: Method, operator: Operator, samples: int = 1) -> None:
        self.model, self.method, self.operator = model, method, operator
        self.samples = 1  # deterministic: more samples would all be equal

    def reconstruct(self, y, seeds, progress=None) -> TileBatch:
        y = y.to(self.model.device, torch.float32)
        with torch.no_grad():
            hr = upsample_bicubic(y, self.operator.factor)
            lr_psnr = psnr(self.operator(hr), y)
        if progress is not None:
            progress(y.shape[0])
        return TileBatch(hr, lr_psnr, torch.ones(y.shape[0], dtype=torch.bool, device=hr.device))


def _check_search_options(steps: Optional[int], learning_rate: Optional[float], refine_steps: int) -> None:
    """Refuse settings no tile could run with, naming the fix (the CLI builds a reconstructor
    before reading any field, so such settings stop it with exit 2)."""
    if steps is not None and int(steps) < 1:
        raise ValueError(f"steps must be >= 1 (or left to the method's default), got {steps}")
    if learning_rate is not None and not (math.isfinite(float(learning_rate)) and float(learning_rate) > 0):
        raise ValueError(f"the learning rate must be a finite number > 0 (or left to the method's default), "
                         f"got {learning_rate}")
    if int(refine_steps) < 0:
        raise ValueError(f"refine steps must be >= 0 (0: no RLS+ refinement), got {refine_steps}")


class SearchReconstructor(Reconstructor):
    """A latent search (rls_core.search), optionally followed by the RLS+ refinement."""

    def __init__(self, model: LoadedModel, method: Method, operator: Operator, samples: int = 1,
                 realism: float = 1.0, weights: Optional[Dict[str, float]] = None, p_w: str = "flow",
                 steps: Optional[int] = None, learning_rate: Optional[float] = None,
                 start_spread: Optional[float] = None, refine_steps: int = 0, converge_l1: float = 0.03) -> None:
        _check_search_options(steps, learning_rate, refine_steps)
        self.model, self.method, self.operator = model, method, operator
        self.samples = int(samples)
        spread = (SAMPLES_START_SPREAD if self.samples > 1 else 0.0) if start_spread is None else float(start_spread)
        self.search = make_search(method.name, model, operator, realism=realism, start_spread=spread, p_w=p_w,
                                  **(weights or {}))
        self.steps = int(method.steps if steps is None else steps)
        self.learning_rate, self.refine_steps, self.converge_l1 = learning_rate, int(refine_steps), converge_l1

    @property
    def work_per_tile(self) -> int:
        return self.steps + max(self.refine_steps, 0)

    def reconstruct(self, y, seeds, progress=None) -> TileBatch:
        n, done = y.shape[0], [0]

        def on_step(step: int, total: int) -> None:
            if progress is not None:
                progress(n * (step - done[0]))
            done[0] = step

        res = self.search.run(y, seeds, steps=self.steps, learning_rate=self.learning_rate,
                              converge_l1=self.converge_l1, callback=on_step)
        images = res.images
        if self.refine_steps > 0:
            done[0] = 0

            def on_refine(tile_steps: int, total: int) -> None:
                if progress is not None:
                    progress(tile_steps - done[0])
                done[0] = tile_steps

            images = refine(self.model, self.operator, y.to(self.model.device), res.w_plus, res.noise,
                            steps=self.refine_steps, callback=on_refine)
            with torch.no_grad():
                res.lr_psnr = psnr(self.operator(images), y.to(images.device))
        return TileBatch(images, res.lr_psnr, res.converged, res.failed)


def make_reconstructor(model: LoadedModel, method: str, factor: int, operator: str = "bicubic",
                       samples: int = 1, **options) -> Reconstructor:
    """The reconstructor of a table method. `options` are SearchReconstructor's (realism,
    weights, p_w, steps, learning_rate, start_spread, refine_steps, converge_l1); a method
    without a search (bicubic) has nothing they could change, so it ignores them."""
    spec = get_method(method)
    if int(samples) < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    op = make_operator(operator, factor).to(model.device)
    if spec.search is None:
        return BicubicReconstructor(model, spec, op, samples)
    return SearchReconstructor(model, spec, op, samples, **options)


def iter_reconstruct(recon: Reconstructor, tiles: np.ndarray, keys: Sequence[TileKey], seed: int = 0,
                     batch_size: int = 32, progress: Optional[Progress] = None) -> Iterator[Tuple[int, TileResults]]:
    """Run `recon` on LR tiles (N, C, r, r) in [0, 1], `recon.samples` times each; yields
    (index of the batch's first tile, that batch's results), so a caller can blend each batch
    and drop it (only one batch of HR tiles is in memory).

    Batches hold up to `batch_size` tile-samples, tile-major; each tile-sample's random stream
    comes from (seed, its key, its sample index), so the result for a tile is the same at any
    batch size (docs/reproducibility.md says how exactly)."""
    n, k = tiles.shape[0], recon.samples
    if len(keys) != n:
        raise ValueError(f"need one key per tile: {n} tiles, {len(keys)} keys")
    total = n * k * recon.work_per_tile
    done = [0]

    def tick(work: int) -> None:
        done[0] += work
        if progress is not None:
            progress(done[0], total)

    per_batch = max(1, batch_size // k)
    for i0 in range(0, n, per_batch):
        y = torch.from_numpy(np.ascontiguousarray(tiles[i0:i0 + per_batch], np.float32))
        b = y.shape[0]
        y = y.repeat_interleave(k, dim=0)  # tile-major: (tile0 s0, tile0 s1, ...)
        out = recon.reconstruct(y, tile_seeds(seed, keys[i0:i0 + per_batch], k), progress=tick)
        images = out.images.detach().float().cpu().numpy()
        failed = (out.failed.detach().cpu().numpy() if out.failed is not None else np.zeros(b * k, bool))
        yield i0, TileResults(images.reshape(b, k, *images.shape[1:]),
                              out.lr_psnr.detach().cpu().numpy().reshape(b, k),
                              out.converged.detach().cpu().numpy().reshape(b, k).astype(bool), recon.steps,
                              failed.reshape(b, k).astype(bool))


def reconstruct_tiles(recon: Reconstructor, tiles: np.ndarray, keys: Sequence[TileKey], seed: int = 0,
                      batch_size: int = 32, progress: Optional[Progress] = None) -> TileResults:
    """All of `iter_reconstruct`'s batches in one result (for crops, e.g. `rls evaluate`)."""
    parts = [r for _, r in iter_reconstruct(recon, tiles, keys, seed, batch_size, progress)]
    return TileResults(np.concatenate([r.images for r in parts]), np.concatenate([r.lr_psnr for r in parts]),
                       np.concatenate([r.converged for r in parts]), recon.steps,
                       np.concatenate([r.failed for r in parts]))

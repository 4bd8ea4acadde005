"""The shared, batched latent-search loop.

A method only says how it parameterises the latent (`init_params`, `w_plus`, `noise`,
`project`) and which loss terms it adds (`loss_terms`); this loop does the rest:
Adam, the learning-rate schedule, per-tile best-iterate tracking, LR-consistency and
convergence flags. Every tile's loss is summed before `backward`, and Adam is
element-wise, so a batch of tiles is exactly a set of independent searches run at once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..methods import Method
from ..model import LoadedModel
from ..operators import Operator

Params = Dict[str, torch.Tensor]


def lr_schedule(kind: str, steps: int) -> Callable[[int], float]:
    """Multipliers of the base learning rate per step.

    'onecycle': 0.1 -> 1 -> 0.1 linearly over the first 90% of the steps, then down to
    0.001 (the PULSE/RLS schedule). 'rampdown': 5% warm-up, cosine decay over the last 25%
    (StyleGAN2's projector, used by BRGM). 'constant'.
    """
    if kind == "constant":
        return lambda s: 1.0
    if kind == "onecycle":
        peak = 0.9 * steps

        def f(s: int) -> float:
            if s < peak:
                return (9.0 * (1.0 - abs(s / peak - 0.5) * 2.0) + 1.0) / 10.0
            return 0.1 + (s - peak) / max(steps - peak, 1e-9) * (0.001 - 0.1)
        return f
    if kind == "rampdown":
        def g(s: int) -> float:
            t = s / max(steps, 1)
            down = 0.5 - 0.5 * math.cos(min(1.0, (1.0 - t) / 0.25) * math.pi)
            return down * min(1.0, t / 0.05 + 1e-3)
        return g
    raise ValueError(f"unknown schedule {kind!r}; choose onecycle, rampdown or constant")


@dataclass
class SearchResult:
    """Best iterate per tile. Images are in the generator's [0, 1] range, clipped."""

    images: torch.Tensor          # (B, C, H, W)
    w_plus: torch.Tensor          # (B, L, D)
    lr_l1: torch.Tensor           # (B,) mean |D(x) - y| at the best iterate
    lr_psnr: torch.Tensor         # (B,) PSNR of D(x) against y (data range 1)
    converged: torch.Tensor       # (B,) bool: lr_l1 <= threshold
    failed: Optional[torch.Tensor] = None  # (B,) bool: the loss was NaN or infinite at some step
    loss_history: np.ndarray = field(default_factory=lambda: np.zeros(0))  # mean total loss per step
    noise: Optional[List[torch.Tensor]] = None


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample PSNR in dB for data in [0, 1]."""
    mse = (a - b).square().flatten(1).mean(1).clamp_min(1e-12)
    return -10.0 * torch.log10(mse)


class LatentSearch:
    """Base class of the searches. A subclass implements the hooks below; its weights, steps,
    learning rate and schedule come from its row of the method table (rls_core.methods)."""

    def __init__(self, model: LoadedModel, operator: Operator, method: Method, realism: float = 1.0,
                 start_spread: float = 0.0, **overrides: float) -> None:
        self.method, self.model, self.operator = method, model, operator
        #: the loss weights after overrides and the realism knob (named so: `w` is a latent here)
        self.weights = method.weights_at(realism, overrides)
        self.start_spread = float(start_spread)
        if method.needs_prior(self.weights):
            model.require_prior(method.name)

    @property
    def name(self) -> str:
        return self.method.name

    # ----- hooks -----
    def starts(self, gens: Sequence[torch.Generator]) -> torch.Tensor:
        """Initial w per tile: the mean w, or `w_mean + spread * (map(z) - w_mean)` with z from
        each tile's own stream."""
        w_mean = self.model.w_mean.detach()
        start = w_mean.expand(len(gens), -1).clone()
        if self.start_spread > 0:
            start = start + self.start_spread * (self.model.sample_w(gens) - w_mean)
        return start

    def init_params(self, gens: Sequence[torch.Generator]) -> Params:
        """The search variables of one batch; tile i draws only from `gens[i]`."""
        raise NotImplementedError

    def w_plus(self, p: Params) -> torch.Tensor:
        raise NotImplementedError

    def noise(self, p: Params) -> Optional[List[torch.Tensor]]:
        return p.get("_noise")  # type: ignore[return-value]

    def loss_terms(self, p: Params, w_plus: torch.Tensor, x_lr: torch.Tensor, y: torch.Tensor) -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    def param_groups(self, p: Params, lr: float) -> List[dict]:
        return [{"params": [v for k, v in p.items() if not k.startswith("_")], "lr": lr}]

    def project(self, p: Params) -> None:
        """Constraint after each optimiser step (e.g. PULSE's spheres)."""

    # ----- the loop -----
    def run(self, y: torch.Tensor, seeds: Sequence[int], steps: Optional[int] = None,
            learning_rate: Optional[float] = None, converge_l1: float = 0.03,
            callback: Optional[Callable[[int, int], None]] = None) -> SearchResult:
        """Search for every LR tile in `y` (B, C, h, w), values in the generator's [0, 1] range.

        `seeds` holds one seed per tile (rls_core.seeding.tile_seeds): every random draw of
        tile i comes from `seeds[i]` alone, so a tile's search does not depend on the batch."""
        model = self.model
        steps = int(self.method.steps if steps is None else steps)
        learning_rate = float(self.method.lr if learning_rate is None else learning_rate)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if len(seeds) != y.shape[0]:
            raise ValueError(f"need one seed per tile: {y.shape[0]} tiles, {len(seeds)} seeds")
        y = y.to(model.device, torch.float32)
        n = y.shape[0]
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        p = self.init_params(gens)
        opt = torch.optim.Adam(self.param_groups(p, learning_rate))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(self.method.schedule, steps))

        best_loss = torch.full((n,), float("inf"), device=model.device)
        failed = torch.zeros(n, dtype=torch.bool, device=model.device)
        best_w = best_img = best_l1 = best_noise = None
        history = np.zeros(steps, dtype=np.float64)
        for step in range(steps):
            opt.zero_grad(set_to_none=True)
            w_plus = self.w_plus(p)
            noise = self.noise(p)
            x = model.render(w_plus, noise)
            x_lr = self.operator(x)
            terms = self.loss_terms(p, w_plus, x_lr, y)
            loss = torch.stack(list(terms.values())).sum(0)  # (B,)
            with torch.no_grad():
                failed |= ~torch.isfinite(loss.detach())  # e.g. a damaged prior: never "converged"
                l1 = (x_lr - y).abs().flatten(1).mean(1)
                if best_w is None:
                    best_w, best_img, best_l1 = w_plus.detach().clone(), x.detach().clone(), l1.clone()
                    # the noise that goes with the best code (PULSE searches some noise maps too)
                    best_noise = [t.detach().clone() if t is not None else None for t in noise] \
                        if noise is not None else None
                better = loss.detach() < best_loss
                best_loss = torch.where(better, loss.detach(), best_loss)
                best_w[better] = w_plus.detach()[better]
                best_img[better] = x.detach()[better]
                best_l1[better] = l1[better]
                for b_t, t in zip(best_noise or [], noise or []):
                    if b_t is not None and t.requires_grad and b_t.shape[0] == n:
                        b_t[better] = t.detach()[better]
            history[step] = float(loss.detach().mean())
            loss.sum().backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                self.project(p)
            if callback is not None:
                callback(step + 1, steps)
        images = best_img.clamp(0.0, 1.0)
        with torch.no_grad():
            lr_psnr = psnr(self.operator(images), y)
        return SearchResult(images=images, w_plus=best_w, lr_l1=best_l1, lr_psnr=lr_psnr,
                            converged=(best_l1 <= converge_l1) & ~failed, loss_history=history, failed=failed,
                            noise=best_noise)


class WPlusSearch(LatentSearch):
    """Searches over W+ directly (RLS, plain, BRGM): every layer's w starts at the tile's
    start code; noise maps are fixed random per tile."""

    def init_params(self, gens: Sequence[torch.Generator]) -> Params:
        start = self.starts(gens)
        w_plus = start[:, None, :].repeat(1, self.model.num_ws, 1).requires_grad_(True)
        return {"w_plus": w_plus, "_noise": self.model.random_noise(gens)}  # type: ignore[dict-item]

    def w_plus(self, p: Params) -> torch.Tensor:
        return p["w_plus"]


def l1_per_tile(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().flatten(1).mean(1)


def mse_per_tile(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).square().flatten(1).mean(1)

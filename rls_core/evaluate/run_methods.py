"""Run each method on every LR crop: one crop is one search tile, so crops go in batches.

`super_resolve` on a tile-sized image runs exactly one search tile, so batching the crops
through `make_search(...).run(y)` gives the same search (same operator, priors, schedule,
best-iterate rule) at a fraction of the cost: one generator pass for `batch_size` crops
instead of one each. Results are cached per variant (`<report>/cache/<key>.npz`) keyed by
everything that changes them, so an interrupted multi-hour evaluation resumes where it
stopped and a re-run that only changes the report is instant.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch

from ..operators import make_operator, upsample_bicubic
from ..search import METHODS, make_search, psnr

LABELS = {"bicubic": "Bicubic", "plain": "w/o Regu.", "pulse": "PULSE", "brgm": "BRGM", "rls": "RLS",
          "rls-no-pw": "RLS w/o p_w", "rls-no-pcross": "RLS w/o p_cross"}


@dataclass(frozen=True)
class Variant:
    """One SR configuration: a method at a factor, on an optionally degraded input."""

    method: str
    factor: int
    degradation: str = "none"
    realism: float = 1.0
    samples: int = 1

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")

    @property
    def key(self) -> str:
        k = f"{self.method}_x{self.factor}"
        if self.degradation != "none":
            k += "_" + self.degradation.replace(":", "")
        if self.realism != 1.0 and self.method != "bicubic":
            k += f"_realism{self.realism:g}"
        if self.samples > 1:
            k += f"_k{self.samples}"
        return k

    @property
    def label(self) -> str:
        s = LABELS.get(self.method, self.method)
        if self.realism != 1.0 and self.method != "bicubic":
            s += f" (realism {self.realism:g})"
        if self.degradation != "none":
            s += f" [{self.degradation}]"
        return s


@dataclass
class VariantResult:
    """SR crops in the model's [0, 1] units and per-crop diagnostics."""

    variant: Variant
    sr: np.ndarray                  # (N, C, R, R) mean over samples
    std: Optional[np.ndarray]       # (N, C, R, R) per-pixel std over samples (samples > 1)
    samples: Optional[np.ndarray]   # (N, K, C, R, R) every sample (samples > 1)
    lr_psnr: np.ndarray             # (N,) PSNR of D(SR) vs the LR input, dB
    converged: np.ndarray           # (N,) best LR L1 under the threshold (searches; True for bicubic)
    seconds: float                  # wall time of the whole variant
    steps: int
    cached: bool = False

    @property
    def seconds_per_tile(self) -> float:
        return self.seconds / max(1, self.sr.shape[0] * (self.variant.samples or 1))


def _meta(variant: Variant, lr: np.ndarray, steps: Optional[int], seed: int, batch_size: int, operator: str,
          model_id: str, device: str) -> Dict[str, Any]:
    return {"variant": asdict(variant), "lr_sha1": hashlib.sha1(np.ascontiguousarray(lr).tobytes()).hexdigest(),
            "steps": steps, "seed": seed, "batch_size": batch_size, "operator": operator, "model": model_id,
            "device": device}


def model_id(model) -> str:
    """Identity of a loaded model for the cache: file path, size and mtime (or its name)."""
    p = getattr(model.bundle, "path", None)
    if p and Path(p).exists():
        st = Path(p).stat()
        return f"{Path(p).resolve()}:{st.st_size}:{int(st.st_mtime)}"
    return str(model.name)


def run_variant(model, lr: np.ndarray, variant: Variant, steps: Optional[int] = None, seed: int = 0,
                batch_size: int = 32, operator: str = "bicubic", cache_dir: Optional[Path] = None,
                progress: bool = True) -> VariantResult:
    """Super-resolve every LR crop (N, C, r, r) (model units) with one variant."""
    from tqdm.auto import tqdm

    meta = _meta(variant, lr, steps, seed, batch_size, operator, model_id(model), str(model.device))
    cache = Path(cache_dir) / f"{variant.key}.npz" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        try:
            z = np.load(cache, allow_pickle=False)
            if json.loads(str(z["meta"])) == json.loads(json.dumps(meta)):
                return VariantResult(variant, z["sr"], z["std"] if z["std"].size else None,
                                     z["samples"] if z["samples"].size else None, z["lr_psnr"], z["converged"],
                                     float(z["seconds"]), int(z["steps"]), cached=True)
        except (OSError, KeyError, ValueError):
            pass  # unreadable or stale: recompute
    op = make_operator(operator, variant.factor).to(model.device)
    y_all = torch.from_numpy(np.ascontiguousarray(lr, np.float32))
    n, K = y_all.shape[0], max(1, variant.samples)
    t0 = time.perf_counter()
    if variant.method == "bicubic":
        with torch.no_grad():
            sr = upsample_bicubic(y_all.to(model.device), variant.factor)
            lr_psnr = psnr(op(sr), y_all.to(model.device)).cpu().numpy()
        res = VariantResult(variant, sr.cpu().numpy().astype(np.float32), None, None, lr_psnr,
                            np.ones(n, bool), time.perf_counter() - t0, 0)
    else:
        spread = 0.3 if K > 1 else 0.0
        search = make_search(variant.method, model, op, realism=variant.realism, start_spread=spread)
        n_steps = int(search.default_steps if steps is None else steps)
        per_batch = max(1, batch_size // K)
        outs, psnrs, conv = [], [], []
        bar = tqdm(total=n * K * n_steps, desc=f"{variant.key} ({n} crops)", unit="tile-step",
                   disable=not progress, leave=False)
        for b, i0 in enumerate(range(0, n, per_batch)):
            y = y_all[i0:i0 + per_batch].repeat_interleave(K, dim=0)
            prev = [0]

            def tick(s: int, total: int, nb: int = y.shape[0]) -> None:
                bar.update(nb * (s - prev[0]))
                prev[0] = s

            r = search.run(y, steps=n_steps, seed=seed + 7919 * b, callback=tick)
            outs.append(r.images.detach().cpu().numpy())
            psnrs.append(r.lr_psnr.detach().cpu().numpy())
            conv.append(r.converged.detach().cpu().numpy())
        bar.close()
        allx = np.concatenate(outs).reshape(n, K, *outs[0].shape[1:]).astype(np.float32)
        lp = np.concatenate(psnrs).reshape(n, K).mean(1)
        cv = np.concatenate(conv).reshape(n, K).all(1)
        res = VariantResult(variant, allx.mean(1), allx.std(1) if K > 1 else None, allx if K > 1 else None,
                            lp, cv, time.perf_counter() - t0, n_steps)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        empty = np.zeros(0, np.float32)
        np.savez_compressed(cache, meta=json.dumps(meta), sr=res.sr,
                            std=res.std if res.std is not None else empty,
                            samples=res.samples if res.samples is not None else empty,
                            lr_psnr=res.lr_psnr, converged=res.converged, seconds=res.seconds, steps=res.steps)
    return res

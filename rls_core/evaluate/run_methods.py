"""Run each method on every LR crop: one crop is one tile, so crops go in batches.

Crops run through the users' tile driver (rls_core.reconstruct, the one `super_resolve`
uses), keyed by each crop's origin: a crop's result is exactly what `super_resolve(crop,
name=origin)` gives (tests/test_reconstruct.py), at a fraction of the cost, since
`batch_size` crops share each generator pass. Results are cached per variant
(`<report>/cache/<key>.npz`) keyed by everything that changes them, so an interrupted
multi-hour evaluation resumes where it stopped and a re-run that only changes the report is
instant.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np

from ..errors import SearchError
from ..methods import METHODS, get_method
from ..reconstruct import make_reconstructor, reconstruct_tiles
from ..seeding import TileKey


#: bump when the driver changes what a cached result holds (2: per-tile random streams)
DRIVER_VERSION = 2


@dataclass(frozen=True)
class Variant:
    """One SR configuration: a method at a factor, on an optionally degraded input."""

    method: str
    factor: int
    degradation: str = "none"
    realism: float = 1.0
    samples: int = 1

    def __post_init__(self) -> None:
        get_method(self.method)  # an unknown name raises, listing the choices

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
        s = METHODS[self.method].label
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


def _meta(variant: Variant, lr: np.ndarray, names: Sequence[str], steps: Optional[int], seed: int, operator: str,
          model_id: str, device: str) -> Dict[str, Any]:
    # The batch size is not part of the key: per-tile random streams make results independent of it.
    return {"variant": asdict(variant), "lr_sha1": hashlib.sha1(np.ascontiguousarray(lr).tobytes()).hexdigest(),
            "names_sha1": hashlib.sha1("\n".join(names).encode()).hexdigest(),
            "steps": steps, "seed": seed, "operator": operator, "model": model_id, "device": device,
            "driver": DRIVER_VERSION}


def model_id(model) -> str:
    """Identity of a loaded model for the cache: file path, size and mtime (or its name)."""
    p = getattr(model.bundle, "path", None)
    if p and Path(p).exists():
        st = Path(p).stat()
        return f"{Path(p).resolve()}:{st.st_size}:{int(st.st_mtime)}"
    return str(model.name)


def run_variant(model, lr: np.ndarray, variant: Variant, steps: Optional[int] = None, seed: int = 0,
                batch_size: int = 32, operator: str = "bicubic", cache_dir: Optional[Path] = None,
                progress: bool = True, names: Optional[Sequence[str]] = None) -> VariantResult:
    """Super-resolve every LR crop (N, C, r, r) (model units) with one variant. `names` (one per
    crop, e.g. EvalCrops.origins) key each crop's random stream; default crop0, crop1, ..."""
    from tqdm.auto import tqdm

    n, k = lr.shape[0], max(1, variant.samples)
    names = [f"crop{i}" for i in range(n)] if names is None else [str(x) for x in names]
    if len(names) != n:
        raise ValueError(f"need one name per crop: {n} crops, {len(names)} names")
    meta = _meta(variant, lr, names, steps, seed, operator, model_id(model), str(model.device))
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
    recon = make_reconstructor(model, variant.method, variant.factor, operator, k, realism=variant.realism,
                               steps=steps)
    k = recon.samples
    bar = tqdm(total=n * k * recon.work_per_tile, desc=f"{variant.key} ({n} crops)", unit="tile-step",
               disable=not progress, leave=False)
    t0 = time.perf_counter()
    try:
        out = reconstruct_tiles(recon, np.ascontiguousarray(lr, np.float32), [TileKey(x) for x in names], seed,
                                batch_size, progress=lambda done, total: bar.update(done - bar.n))
    finally:
        bar.close()
    if out.failed is not None and out.failed.any():
        raise SearchError(f"{variant.key}: the search broke down (NaN or infinite loss) on "
                          f"{int(out.failed.sum())} crop searches", "check the model with `rls info`")
    res = VariantResult(variant, out.images.mean(1).astype(np.float32),
                        out.images.std(1).astype(np.float32) if k > 1 else None,
                        out.images.astype(np.float32) if k > 1 else None,
                        out.lr_psnr.mean(1), out.converged.all(1), time.perf_counter() - t0, out.steps)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        empty = np.zeros(0, np.float32)
        np.savez_compressed(cache, meta=json.dumps(meta), sr=res.sr,
                            std=res.std if res.std is not None else empty,
                            samples=res.samples if res.samples is not None else empty,
                            lr_psnr=res.lr_psnr, converged=res.converged, seconds=res.seconds, steps=res.steps)
    return res

"""A model bundle made ready for search: generator on a device, latent priors, intensity maps.

Loading is cached (path, file mtime, device) so CellProfiler runs one load per worker,
not one per image set.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .accel import DEFAULT_ACCEL, autocast, compiled, resolve_accel
from .bundle import BundleError, ModelBundle, load_bundle
from .cpu_alloc import reuse_freed_memory
from .errors import DeviceError
from .registry import resolve_model


def resolve_device(device: Union[str, torch.device, None] = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without a GPU is a clear error."""
    if isinstance(device, torch.device):
        return device
    device = (device or "auto").lower()
    if device in ("gpu",):
        device = "cuda"
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError("device 'cuda' was requested but PyTorch sees no GPU",
                          "use device 'auto' or 'cpu' (or install a CUDA build of torch)")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise DeviceError(f"unknown device {device!r}", "choose auto, cpu or cuda")
    return torch.device(device)


class LoadedModel:
    """Generator + latent statistics + (lazily) the flow prior, on one device."""

    def __init__(self, bundle: ModelBundle, device: Union[str, torch.device] = "auto",
                 accel: str = DEFAULT_ACCEL) -> None:
        self.bundle = bundle
        self.device = resolve_device(device)
        self.accel = resolve_accel(accel, self.device)
        self.G = bundle.build_generator(self.device)
        self._synthesis = compiled(self.G.synthesis, self.accel)
        self.cfg = self.G.cfg
        self.channel_names: List[str] = list(bundle.channel_names)
        self.low = np.array([n["low"] for n in bundle.normalization], dtype=np.float32)
        self.high = np.array([n["high"] for n in bundle.normalization], dtype=np.float32)
        self._stats = None
        self._flow = None
        self._tensors: Dict[str, torch.Tensor] = {}

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def resolution(self) -> int:
        return self.cfg.resolution

    @property
    def num_ws(self) -> int:
        return self.cfg.num_ws

    @property
    def w_dim(self) -> int:
        return self.cfg.w_dim

    # ----- latent statistics (as tensors on the device) -----
    def stat(self, name: str) -> torch.Tensor:
        """A LatentStats field as a float32 tensor on the model's device."""
        if name not in self._tensors:
            if self._stats is None:
                self._stats = self.bundle.latent_stats()
            self._tensors[name] = torch.as_tensor(getattr(self._stats, name), dtype=torch.float32,
                                                  device=self.device)
        return self._tensors[name]

    @property
    def w_mean(self) -> torch.Tensor:
        """Mean w from fitted statistics, else the generator's w_avg buffer."""
        if self.bundle.latent is not None:
            return self.stat("w_mean")
        return self.G.mapping.w_avg

    def flow(self):
        if self._flow is None:
            self._flow = self.bundle.build_flow(self.device)
        return self._flow

    def require_prior(self, what: str) -> None:
        if not self.bundle.has_prior:
            raise BundleError(self.bundle.path or self.name, f"method {what} needs the latent prior, which this "
                              "model lacks", f"run `rls fit-prior {self.bundle.path}` (or use method 'plain')")

    # ----- image <-> generator ranges -----
    def to_unit(self, img: np.ndarray) -> np.ndarray:
        """Full-scale intensities (C, H, W) -> the generator's [0, 1] range."""
        return (img - self.low[:, None, None]) / (self.high - self.low)[:, None, None]

    def from_unit(self, x: np.ndarray) -> np.ndarray:
        return x * (self.high - self.low)[:, None, None] + self.low[:, None, None]

    def render(self, w_plus: torch.Tensor, noise: Optional[List[torch.Tensor]] = None) -> torch.Tensor:
        """W+ -> image in [0, 1] (not clipped, so gradients survive at the range ends); the
        synthesis network runs as `accel` says, the result is always float32."""
        with autocast(self.accel, self.device):
            img = self._synthesis(w_plus, noise=noise)
        return (img.float() + 1.0) * 0.5

    def sample_w(self, gens: Sequence[torch.Generator]) -> torch.Tensor:
        """One mapped w per generator: z drawn on CPU from each tile's own stream, and mapped
        one at a time, so a start code is the same bytes whatever batch its tile is in (a
        batched matrix product rounds differently at other batch sizes); it runs once per search."""
        with torch.no_grad():
            return torch.cat([self.G.mapping(torch.randn(1, self.cfg.z_dim, generator=g).to(self.device))
                              for g in gens])

    def random_noise(self, gens: Sequence[torch.Generator]) -> List[torch.Tensor]:
        """Fixed random noise maps, one set per generator (drawn on CPU, so the draws are the same
        on every device); layer by layer, so each stream gives its layers in order."""
        return [torch.cat([torch.randn(1, 1, h, w, generator=g) for g in gens]).to(self.device)
                for h, w in self.G.synthesis.noise_shapes()]

    def single_w_samples(self, gens: Sequence[torch.Generator]
                         ) -> Tuple[torch.Tensor, List[torch.Tensor], torch.Tensor]:
        """The model's own samples, one w (no style mixing) and one noise set per generator:
        (w (B, D), noise maps, images (B, C, H, W) in [0, 1], clipped). Such an image lies on the
        generator's range with W+ = w repeated, the code p_cross favours, so a search should
        reach it exactly; the diagnostics use them to tell search failures from model failures."""
        w = self.sample_w(gens)
        noise = self.random_noise(gens)
        with torch.no_grad():
            img = self.render(w[:, None].repeat(1, self.num_ws, 1), noise).clamp(0, 1)
        return w, noise, img


_CACHE: Dict[Tuple[str, float, str, str], LoadedModel] = {}
_LOCK = threading.Lock()


def load_model(model: Union[str, Path, LoadedModel], device: Union[str, torch.device] = "auto",
               accel: str = DEFAULT_ACCEL) -> LoadedModel:
    """Shipped name or bundle path -> LoadedModel, cached while the file is unchanged."""
    if isinstance(model, LoadedModel):
        return model
    path = resolve_model(model)
    dev = resolve_device(device)
    mode = resolve_accel(accel, dev)
    if dev.type == "cpu":
        reuse_freed_memory()  # searches re-allocate the same large tensors every step (cpu_alloc)
    mtime = path.stat().st_mtime if path.exists() else -1.0
    key = (str(path.resolve()), mtime, str(dev), mode)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = LoadedModel(load_bundle(path), dev, mode)
        return _CACHE[key]


def clear_cache() -> None:
    """Drop cached models (and their GPU memory)."""
    with _LOCK:
        _CACHE.clear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

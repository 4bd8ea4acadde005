"""Microscope + camera model: clean fluorescence in [0, 1] -> uint16 camera image.

Steps (per channel): PSF blur (Gaussian core + a weak wide Gaussian "haze" for widefield
out-of-focus light) -> scale to ADU (``peak_adu`` for clean == 1) -> add diffuse background
fluorescence -> multiply by the field's uneven illumination (smooth vignetting, shared by
all channels of a field) -> Poisson shot noise in electrons -> Gaussian read noise ->
camera offset -> round and clip to uint16.

Defaults give a sCMOS-like widefield HCS image (all values include the offset):
background ~160-220 ADU (camera offset 100 + background fluorescence), interphase nuclei
~1500-3000 ADU, mitotic chromatin up to ~8000 ADU, NF-kB cytoplasm ~500-1200 ADU, Golgi
ribbon peaks ~1500-5000 ADU; shot-noise SNR ~30-40 in nuclei, ~15-25 in NF-kB cytoplasm.
Raise ``electrons_per_adu`` for cleaner images, lower it for noisier ones.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np
from scipy import ndimage as ndi


@dataclass
class ChannelOptics:
    """Per-channel brightness: ADU above offset for clean == 1, and background ADU."""

    peak_adu: float
    background_adu: float
    psf_scale: float = 1.0          # PSF width relative to OpticsParams.psf_sigma (colour)


def _default_channels() -> Dict[str, ChannelOptics]:
    return {"DNA": ChannelOptics(8000.0, 70.0, 0.9),
            "NFkB": ChannelOptics(3200.0, 120.0, 1.0),
            "Golgi": ChannelOptics(4200.0, 100.0, 1.0)}


@dataclass
class OpticsParams:
    """Knobs of the camera model (defaults: sensible widefield 20x/40x sCMOS settings)."""

    psf_sigma: float = 1.0          # px, Gaussian PSF core (at 512-px default scale)
    haze_sigma: float = 8.0         # px, out-of-focus halo
    haze_fraction: float = 0.06     # fraction of the light that goes into the halo
    vignetting: float = 0.25        # relative illumination drop at the field corners
    camera_offset: float = 100.0    # ADU
    electrons_per_adu: float = 0.5  # conversion gain; larger -> more photons -> higher SNR
    read_noise_e: float = 1.6       # electrons rms
    brightness_jitter: float = 0.1  # per-field staining/exposure variation (relative sd)
    channels: Dict[str, ChannelOptics] = field(default_factory=_default_channels)


def illumination_field(rng: np.random.Generator, size: int, vignetting: float) -> np.ndarray:
    """Smooth uneven illumination, max 1: off-centre radial fall-off plus a faint tilt."""
    cy, cx = rng.uniform(0.35, 0.65, 2) * size
    yy = (np.arange(size, dtype=np.float32)[:, None] - cy) / (0.75 * size)
    xx = (np.arange(size, dtype=np.float32)[None, :] - cx) / (0.75 * size)
    r2 = yy * yy + xx * xx
    tilt = rng.normal(0, 0.03, 2)
    f = (1.0 - vignetting * r2) * (1.0 + tilt[0] * yy + tilt[1] * xx)
    f = np.clip(f, 0.3, None)
    return (f / f.max()).astype(np.float32)


def acquire(clean: np.ndarray, channel: str, rng: np.random.Generator, illumination: np.ndarray,
            params: Optional[OpticsParams] = None, scale: float = 1.0) -> np.ndarray:
    """Image one clean channel with the camera model; returns uint16 (H, W)."""
    p = params or OpticsParams()
    ch = p.channels.get(channel, ChannelOptics(4000.0, 100.0))
    sig = p.psf_sigma * ch.psf_scale * scale
    blurred = ndi.gaussian_filter(clean.astype(np.float32), sig, mode="reflect")
    if p.haze_fraction > 0:
        haze = ndi.gaussian_filter(clean.astype(np.float32), p.haze_sigma * scale, mode="reflect")
        blurred = (1.0 - p.haze_fraction) * blurred + p.haze_fraction * haze
    gain = ch.peak_adu * float(np.exp(rng.normal(0.0, p.brightness_jitter)))
    signal_adu = (blurred * gain + ch.background_adu) * illumination
    electrons = rng.poisson(np.clip(signal_adu, 0, None) * p.electrons_per_adu).astype(np.float32)
    electrons += rng.normal(0.0, p.read_noise_e, electrons.shape).astype(np.float32)
    adu = electrons / p.electrons_per_adu + p.camera_offset
    return np.clip(np.round(adu), 0, 65535).astype(np.uint16)

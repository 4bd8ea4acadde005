"""Forward operators D (HR -> LR) and the LR degradations of the robustness experiments.

Images are float tensors (B, C, H, W) in [0, 1]. Everything is differentiable and follows
the input's device and dtype (filter taps and the bicubic operator's matrices are cast to it;
the matrices are kept per size, dtype and device).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

OPERATORS = ("bicubic", "area")
MATRIX_MAX_N = 2048  # BicubicDown uses axis matrices up to this many pixels per axis
KEYS_A = -0.5  # Keys' cubic convolution parameter used by PIL, PULSE and the paper


def keys_cubic(x: Tensor, a: float = KEYS_A) -> Tensor:
    """Keys' cubic convolution kernel (support [-2, 2])."""
    x = x.abs()
    x2, x3 = x * x, x * x * x
    near = (a + 2) * x3 - (a + 3) * x2 + 1
    far = a * x3 - 5 * a * x2 + 8 * a * x - 4 * a
    return torch.where(x <= 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def reflect_index(n: int, lo: int, hi: int, device=None) -> Tensor:
    """Indices of a length-`n` axis padded by `lo`/`hi` samples with whole-sample symmetry
    (torch 'reflect' = scipy 'mirror'), valid for pads larger than the axis itself."""
    idx = torch.arange(-lo, n + hi, device=device)
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    idx = idx.remainder(period)
    return torch.where(idx >= n, period - idx, idx)


def _pad_reflect(x: Tensor, dim: int, lo: int, hi: int) -> Tensor:
    if lo == 0 and hi == 0:
        return x
    return x.index_select(dim, reflect_index(x.shape[dim], lo, hi, x.device))


def _conv_axis(x: Tensor, taps: Tensor, dim: int, stride: int, lo: int, hi: int) -> Tensor:
    """Depthwise 1-D convolution of every (B, C) plane along `dim` (2 = H, 3 = W), reflect-padded."""
    b, c, h, w = x.shape
    x = _pad_reflect(x, dim, lo, hi).reshape(b * c, 1, *(_pad_shape(h, w, dim, lo + hi)))
    k = taps.to(x).view(1, 1, -1, 1) if dim == 2 else taps.to(x).view(1, 1, 1, -1)
    st = (stride, 1) if dim == 2 else (1, stride)
    y = F.conv2d(x, k, stride=st)
    return y.reshape(b, c, y.shape[-2], y.shape[-1])


def _pad_shape(h: int, w: int, dim: int, extra: int) -> Tuple[int, int]:
    return (h + extra, w) if dim == 2 else (h, w + extra)


class Operator(nn.Module):
    """Downsampling operator: (B, C, H, W) -> (B, C, H // factor, W // factor)."""

    name = "operator"

    def __init__(self, factor: int) -> None:
        super().__init__()
        if int(factor) != factor or factor < 1:
            raise ValueError(f"factor must be an integer >= 1, got {factor!r}")
        self.factor = int(factor)

    def check_shape(self, x: Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"{self.name}: expected a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % self.factor or w % self.factor:
            raise ValueError(f"{self.name} x{self.factor}: image shape {tuple(x.shape)} has H, W "
                             f"not divisible by the factor {self.factor}")

    def describe(self) -> str:
        return f"{self.name} x{self.factor}"

    def extra_repr(self) -> str:
        return self.describe()


class BicubicDown(Operator):
    """Antialiased bicubic downsampling as PIL/PULSE do it: the Keys kernel stretched by
    `factor` (so it low-passes before decimating), separable, stride `factor`.

    Output pixel i is centred at input coordinate (i + 0.5) * factor (half-pixel centres),
    so input pixel i*factor + m gets weight k((m + 0.5 - factor/2) / factor), normalised.
    Borders are reflect-padded (PIL instead renormalises truncated taps; interiors agree).
    """

    name = "bicubic"

    def __init__(self, factor: int, a: float = KEYS_A) -> None:
        super().__init__(factor)
        self.a = float(a)
        f = self.factor
        # All m with |(m + 0.5 - f/2) / f| < 2 (the kernel's open support).
        m_lo = math.floor(f / 2 - 0.5 - 2 * f) + 1
        m_hi = math.ceil(f / 2 - 0.5 + 2 * f) - 1
        m = torch.arange(m_lo, m_hi + 1, dtype=torch.float64)
        taps = keys_cubic((m + 0.5 - f / 2) / f, self.a)
        # float64 so double-precision inputs get exact taps; cast to the input on use.
        self.register_buffer("taps", taps / taps.sum())
        self.pad = (-m_lo, m_hi - (f - 1))  # so output i reads inputs i*f + m_lo .. i*f + m_hi
        self._mats: Dict[Tuple[int, torch.dtype, torch.device], Tensor] = {}

    def describe(self) -> str:
        return f"bicubic x{self.factor} (Keys a={self.a:g}, antialiased)"

    def axis_matrix(self, n: int) -> Tensor:
        """(n // factor, n) float64 matrix of one axis: taps and reflect padding in one.

        Applying it is a plain matrix product, which on CPU runs forward and backward ~60x
        faster than the equivalent strided 1-channel convolution (whose backward oneDNN runs
        slowly) and gives the same values up to float rounding. Built with numpy's sequential
        `add.at`, so taps folded onto the same pixel by the padding always sum in one order."""
        lo, hi = self.pad
        f = self.factor
        taps = self.taps.detach().to("cpu", torch.float64).numpy()
        k = taps.size
        src = reflect_index(n, lo, hi).numpy()  # padded position -> input index
        n_out = n // f
        pos = (np.arange(n_out)[:, None] * f + np.arange(k)[None, :]).ravel()
        mat = np.zeros((n_out, n), np.float64)
        np.add.at(mat, (np.repeat(np.arange(n_out), k), src[pos]), np.tile(taps, n_out))
        return torch.from_numpy(mat)

    def _matrix(self, n: int, like: Tensor) -> Tensor:
        key = (n, like.dtype, like.device)
        mat = self._mats.get(key)
        if mat is None:  # built once per size, dtype and device (a search calls this every step)
            # A normal tensor even when first built under torch.inference_mode, so that later
            # calls that need gradients can save it for backward.
            with torch.inference_mode(False):
                mat = self.axis_matrix(n).to(dtype=like.dtype, device=like.device)
            self._mats[key] = mat
        return mat

    def forward(self, x: Tensor) -> Tensor:
        self.check_shape(x)
        if self.factor == 1:
            return x
        lo, hi = self.pad
        h, w = x.shape[-2:]
        # W axis first, then H. A matrix grows with the square of its axis: past MATRIX_MAX_N
        # pixels (whole-field strips, not search tiles) the strided convolution is cheaper.
        if w <= MATRIX_MAX_N:
            x = torch.matmul(x, self._matrix(w, x).t())
        else:
            x = _conv_axis(x, self.taps, 3, self.factor, lo, hi)
        if h <= MATRIX_MAX_N:
            return torch.matmul(self._matrix(h, x), x)
        return _conv_axis(x, self.taps, 2, self.factor, lo, hi)


class AreaDown(Operator):
    """Block averaging: each LR pixel is the mean of a factor x factor HR block."""

    name = "area"

    def describe(self) -> str:
        return f"area x{self.factor} (block mean)"

    def forward(self, x: Tensor) -> Tensor:
        self.check_shape(x)
        if self.factor == 1:
            return x
        return F.avg_pool2d(x, self.factor, stride=self.factor)


def make_operator(name: str, factor: int) -> Operator:
    """Build a forward operator by name (see OPERATORS)."""
    key = str(name).strip().lower()
    if key == "bicubic":
        return BicubicDown(factor)
    if key == "area":
        return AreaDown(factor)
    raise ValueError(f"unknown operator {name!r}; choose one of {', '.join(OPERATORS)}")


# ----------------------------------------------------------------------------- baseline

def _bicubic_up_matrix(n: int, factor: int, a: float = KEYS_A) -> Tensor:
    """(n * factor, n) interpolation matrix: half-pixel centres, edge-clamped 4-tap Keys."""
    out = torch.arange(n * factor, dtype=torch.float64)
    src = (out + 0.5) / factor - 0.5
    base = torch.floor(src)
    mat = torch.zeros(n * factor, n, dtype=torch.float64)
    for off in (-1, 0, 1, 2):
        j = base + off
        wgt = keys_cubic(src - j, a)
        mat.index_put_((out.long(), j.clamp(0, n - 1).long()), wgt, accumulate=True)
    return mat


def upsample_bicubic(y: Tensor, factor: int) -> Tensor:
    """The 'bicubic' baseline: plain Keys (a=-0.5) bicubic interpolation up by `factor`.

    No antialiasing is needed upward, so this is the textbook 4-tap interpolator
    (torch's own bicubic uses a=-0.75, hence this separate implementation).
    """
    if y.dim() != 4:
        raise ValueError(f"expected a (B, C, H, W) tensor, got shape {tuple(y.shape)}")
    if int(factor) != factor or factor < 1:
        raise ValueError(f"factor must be an integer >= 1, got {factor!r}")
    factor = int(factor)
    mh = _bicubic_up_matrix(y.shape[-2], factor).to(y)
    mw = _bicubic_up_matrix(y.shape[-1], factor).to(y)
    x = torch.einsum("oh,bchw,pw->bcop", mh, y, mw)
    return x.clamp(0.0, 1.0)


# ----------------------------------------------------------------------------- degradations

def _cpu_generator(seed: int) -> torch.Generator:
    # Drawn on the CPU so the same seed gives the same degradation on any device.
    return torch.Generator().manual_seed(int(seed))


def gaussian_noise(y: Tensor, sigma: float, seed: int = 0) -> Tensor:
    """Additive white Gaussian noise of standard deviation `sigma`, clipped to [0, 1]."""
    n = torch.randn(y.shape, generator=_cpu_generator(seed), dtype=torch.float32)
    return (y + float(sigma) * n.to(y)).clamp(0.0, 1.0)


def salt_and_pepper(y: Tensor, amount: float, seed: int = 0) -> Tensor:
    """Replace a fraction `amount` of the values: half by 0 (pepper), half by 1 (salt)."""
    if not 0.0 <= amount <= 1.0:
        raise ValueError(f"salt-and-pepper amount must be in [0, 1], got {amount}")
    u = torch.rand(y.shape, generator=_cpu_generator(seed), dtype=torch.float64).to(y.device)
    out = torch.where(u < amount / 2, torch.zeros_like(y), y)
    out = torch.where((u >= amount / 2) & (u < amount), torch.ones_like(y), out)
    return out.clamp(0.0, 1.0)


def gaussian_taps(sigma: float, truncate: float = 4.0) -> Tensor:
    """Normalised 1-D Gaussian taps with radius int(truncate * sigma + 0.5), as scipy does."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(y: Tensor, sigma: float, truncate: float = 4.0) -> Tensor:
    """Separable Gaussian blur with whole-sample reflect padding (scipy mode='mirror')."""
    if sigma < 0:
        raise ValueError(f"blur sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return y.clamp(0.0, 1.0)
    taps = gaussian_taps(float(sigma), truncate)
    r = (taps.numel() - 1) // 2
    x = _conv_axis(y, taps, 3, 1, r, r)
    x = _conv_axis(x, taps, 2, 1, r, r)
    return x.clamp(0.0, 1.0)


DEGRADATION_FORMS = "'none', 'noise:SIGMA', 'saltpepper:AMOUNT', 'blur:SIGMA' (chain with '+')"


def _one_degradation(spec: str, seed: int) -> Callable[[Tensor], Tensor]:
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "none" and not arg:
        return lambda y: y
    try:
        value = float(arg)
    except ValueError:
        value = float("nan")
    if kind in ("noise", "saltpepper", "blur") and math.isfinite(value) and value >= 0:
        if kind == "noise":
            return lambda y: gaussian_noise(y, value, seed)
        if kind == "saltpepper" and value <= 1:
            return lambda y: salt_and_pepper(y, value, seed)
        if kind == "blur":
            return lambda y: gaussian_blur(y, value)
    raise ValueError(f"bad degradation {spec!r}; accepted forms: {DEGRADATION_FORMS}")


def parse_degradation(spec: str, seed: int = 0) -> Callable[[Tensor], Tensor]:
    """Turn e.g. "noise:0.1", "saltpepper:0.05", "blur:1.0", "none" or "blur:1+noise:0.05"
    into a function of the LR tensor (random ones deterministic given `seed`)."""
    parts: List[str] = [p.strip() for p in str(spec).split("+")]
    if not spec or any(not p for p in parts):
        raise ValueError(f"bad degradation {spec!r}; accepted forms: {DEGRADATION_FORMS}")
    fns = [_one_degradation(p, seed) for p in parts]

    def apply(y: Tensor) -> Tensor:
        for fn in fns:
            y = fn(y)
        return y

    return apply

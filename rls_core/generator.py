"""StyleGAN2 generator in plain PyTorch (no custom CUDA/C++ ops: runs on CPU and GPU alike).

Numerically this is StyleGAN2 as written in NVlabs/stylegan2-ada-pytorch and
rosinality/stylegan2-pytorch (the two agree): equalised learning rate (weights stored
unscaled, gains applied at run time), a mapping network with a 0.01 learning-rate
multiplier, modulated/demodulated 3x3 convolutions, upsampling by a stride-2 transposed
convolution followed by a [1,3,3,1] FIR filter, per-layer noise scaled by a learned
strength and added before bias + leaky ReLU (x sqrt 2), optional activation clamping
(``conv_clamp``), and a "skip" architecture that sums FIR-upsampled ToRGB outputs.

Modulation is applied to activations instead of weights ("non-fused" modconv): the
result is identical to grouped convolution up to float rounding and runs one ordinary
convolution for the whole batch, which is what makes batched latent search fast on CPU.
In a latent search the weights are frozen, and each layer's backward is written out
(`FrozenModConv`): the same gradients with fewer full-size passes (docs/performance.md).

Layout (our own names; importers map other layouts onto it):
  mapping.fc{i}.weight/bias, mapping.w_avg
  synthesis.const, synthesis.b{res}.{conv0,conv1}.{weight,bias,affine.weight,
  affine.bias,noise_strength,noise_const}, synthesis.b{res}.torgb.{weight,bias,affine.*}
"""
from __future__ import annotations

import contextlib
import contextvars
import math
from dataclasses import asdict, dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .presets import PRESET_NAMES, PRESETS

SQRT2 = math.sqrt(2.0)
NOISE_MODES = ("const", "random", "none")


@dataclass
class GeneratorConfig:
    """Everything needed to rebuild a generator; stored as JSON in model bundles."""

    resolution: int = 128
    img_channels: int = 2
    z_dim: int = 128
    w_dim: int = 128
    mapping_layers: int = 4
    # Feature channels per resolution, from 4x4 up to `resolution` (log2(res) - 1 entries).
    channels: Tuple[int, ...] = (96, 96, 64, 32, 16, 8)
    mapping_lr_mul: float = 0.01
    conv_clamp: Optional[float] = None
    blur_kernel: Tuple[float, ...] = (1.0, 3.0, 3.0, 1.0)
    # Layers below this resolution take no noise input (4: every layer, as in StyleGAN2).
    # A latent search keeps the noise fixed, so whatever the noise draws cannot be fitted:
    # if coarse layers carry noise, the generator may put the cells' layout there and then
    # no code can match an LR input (docs/models.md). `fine_noise_min_res` is the training default.
    noise_min_res: int = 4

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        self.blur_kernel = tuple(float(k) for k in self.blur_kernel)
        log2 = math.log2(self.resolution) if self.resolution > 0 else -1
        if not (log2 == int(log2) and 32 <= self.resolution <= 1024):
            raise ValueError(
                f"resolution must be a power of two between 32 and 1024, got {self.resolution}")
        if len(self.channels) != int(log2) - 1:
            raise ValueError(
                f"channels needs one entry per resolution 4..{self.resolution} "
                f"({int(log2) - 1} entries), got {len(self.channels)}")
        if not 1 <= self.img_channels <= 4:
            raise ValueError(f"img_channels must be 1..4, got {self.img_channels}")
        self.noise_min_res = int(self.noise_min_res)
        if self.noise_min_res < 4:
            raise ValueError(f"noise_min_res must be >= 4 (4: noise at every layer), got {self.noise_min_res}")

    @property
    def num_ws(self) -> int:
        """Number of W+ rows: two per resolution, minus two (4x4 has one conv)."""
        return 2 * int(math.log2(self.resolution)) - 2

    @property
    def resolutions(self) -> List[int]:
        return [2 ** i for i in range(2, int(math.log2(self.resolution)) + 1)]

    def to_dict(self) -> Dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict) -> "GeneratorConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown generator config fields: {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def preset(cls, name: str, resolution: int = 128, img_channels: int = 2,
               noise_min_res: int = 4) -> "GeneratorConfig":
        """A named size from `rls_core.presets` (standard, cpu, tiny, paper)."""
        if name not in PRESETS:
            raise ValueError(f"unknown generator preset {name!r}; choose {', '.join(PRESET_NAMES)}")
        p = PRESETS[name]
        ch = tuple(p.widths[2 ** (i + 2)] for i in range(int(math.log2(resolution)) - 1))
        return cls(resolution, img_channels, p.z_dim, p.w_dim, p.mapping_layers, ch, noise_min_res=noise_min_res)


def fine_noise_min_res(resolution: int) -> int:
    """Noise only in the two finest blocks (64 and 128 px of a 128-px generator): a noise pixel
    there spans 1-2 output pixels and a few 3x3 convolutions, far below one LR pixel at the
    paper's 16x and 32x, so noise can add texture but cannot place cells."""
    return max(4, resolution // 2)


# ----------------------------------------------------------------------------- ops

def _fir_kernel(taps: Sequence[float]) -> torch.Tensor:
    k = torch.tensor(taps, dtype=torch.float32)
    k = torch.outer(k, k)
    return k / k.sum()


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, up: int = 1, pad: Tuple[int, int, int, int] = (0, 0, 0, 0),
              gain: float = 1.0) -> torch.Tensor:
    """Upsample by zero insertion, pad (x0, x1, y0, y1), then true 2-D convolution with `f`."""
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(b, c, h * up, w * up)
    weight = (f * gain).flip([0, 1]).to(x.dtype)[None, None].expand(c, 1, *f.shape)
    if len(set(pad)) == 1 and pad[0] >= 0:  # symmetric: let the conv pad (no extra full-size copy)
        return F.conv2d(x, weight, padding=pad[0], groups=c)
    return F.conv2d(F.pad(x, list(pad)), weight, groups=c)


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x FIR upsampling with unit DC gain (the skip path of ToRGB outputs).

    For even filters this is one depthwise transposed convolution (zero insertion and the
    filter in one op, equal to `upfirdn2d` up to float rounding). It keeps channels-last
    inputs channels-last; the zero-insertion reshape below makes a contiguous copy, and
    oneDNN's depthwise convolution of a 2-channel contiguous image ran ~15x slower (docs/performance.md).
    """
    fw = f.shape[-1]
    p0, p1 = (fw + 1) // 2, (fw - 2) // 2
    crop0, crop1 = fw - 1 - p0, fw - 2 - p1  # what a transposed conv's full output has too much
    if crop0 == crop1 >= 0 and f.shape[0] == fw:
        c = x.shape[1]
        # conv_transpose2d scatters x[i] * weight[a] to 2i + a: a true convolution, as upfirdn2d's.
        weight = (f * 4.0).to(x.dtype)[None, None].expand(c, 1, fw, fw)
        return F.conv_transpose2d(x, weight, stride=2, padding=crop0, groups=c)
    return upfirdn2d(x, f, up=2, pad=(p0, p1, p0, p1), gain=4.0)


# ----------------------------------------------------------------------------- layers

class EqualLinear(nn.Module):
    """Fully connected layer with equalised learning rate (StyleGAN convention)."""

    def __init__(self, in_features: int, out_features: int, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activation: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.bias_gain = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        if self.activation:
            x = F.leaky_relu(x, 0.2) * SQRT2
        return x


class MappingNetwork(nn.Module):
    """z -> w: 2nd-moment normalisation then `mapping_layers` leaky-ReLU FC layers."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.z_dim, self.w_dim = cfg.z_dim, cfg.w_dim
        dims = [cfg.z_dim] + [cfg.w_dim] * cfg.mapping_layers
        for i in range(cfg.mapping_layers):
            setattr(self, f"fc{i}", EqualLinear(dims[i], dims[i + 1], lr_mul=cfg.mapping_lr_mul, activation=True))
        self.num_layers = cfg.mapping_layers
        # Mean w: filled by fit-prior or an importer; used for truncation and search starts.
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if truncation_psi != 1.0:
            x = self.w_avg.lerp(x, truncation_psi)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (+ optional 2x upsampling), noise, bias, leaky ReLU, clamp."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, up: bool,
                 blur: torch.Tensor, conv_clamp: Optional[float], use_noise: bool = True) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.use_noise = use_noise
        if use_noise:
            self.noise_strength = nn.Parameter(torch.zeros([]))
        else:  # a zero buffer: the same state-dict keys, nothing to train
            self.register_buffer("noise_strength", torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("resample_filter", blur.clone(), persistent=False)
        self.up, self.resolution, self.conv_clamp = up, resolution, conv_clamp
        self.weight_gain = 1.0 / math.sqrt(in_ch * 9)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const",
                noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        styles = self.affine(w)  # (B, in)
        weight = self.weight * self.weight_gain
        # sum_{i,k} (W_oik s_i)^2 = s^2 @ sum_k W_oik^2: no (B, out, in, k, k) tensor needed.
        # sqrt(2) (the activation gain) is folded into the per-channel scale, the noise and
        # the bias: lrelu(a) * c == lrelu(a * c) for c > 0. On CPU these layers are bound by
        # memory traffic, so every full-size pass saved counts (docs/performance.md).
        scale = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt() * SQRT2
        filt = self.resample_filter if self.up else None
        if self.conv_clamp is None and _frozen_layer_search(x, self, noise):
            # No autocast here (see _frozen_layer_search), so x's dtype is the conv output's.
            return FrozenModConv.apply(x, styles, scale, weight, self._noise_term(noise, noise_mode, x),
                                       (self.bias * SQRT2).to(x.dtype), filt)
        x = _modulated_conv(x, styles, weight, filt)
        # Noise and bias in the conv output's dtype (bfloat16 under autocast).
        x = _demod_noise_act(x, scale, self._noise_term(noise, noise_mode, x), (self.bias * SQRT2).to(x.dtype))
        if self.conv_clamp is not None:  # after the gain, at +-conv_clamp (as NVlabs' bias_act)
            # Not in place: leaky_relu_ saved its output for the backward.
            x = x.clamp(-self.conv_clamp, self.conv_clamp)
        return x

    def _noise_term(self, noise: Optional[torch.Tensor], noise_mode: str,
                    like: torch.Tensor) -> Optional[torch.Tensor]:
        """noise * strength * sqrt(2) in `like`'s dtype (None: no noise), from `noise` or else
        `noise_mode`; random draws are (batch, 1, r, r) on `like`'s device."""
        if not self.use_noise:
            return None
        if noise is None:
            if noise_mode == "const":
                noise = self.noise_const[None, None]
            elif noise_mode == "random":
                noise = torch.randn(like.shape[0], 1, self.resolution, self.resolution, device=like.device,
                                    dtype=like.dtype)
            else:
                return None
        return (noise * (self.noise_strength * SQRT2)).to(like.dtype)


def _modulated_conv(x: torch.Tensor, styles: torch.Tensor, weight: torch.Tensor,
                    filt: Optional[torch.Tensor]) -> torch.Tensor:
    """Modulate the input channels, then the 3x3 conv (or, when `filt` is given, the 2x
    transposed conv and the FIR that follows it)."""
    x = x * styles[:, :, None, None]
    if filt is not None:
        x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
        return upfirdn2d(x, filt, pad=(1, 1, 1, 1), gain=4.0)
    return F.conv2d(x, weight, padding=1)


def _demod_noise_act(x: torch.Tensor, scale: torch.Tensor, nterm: Optional[torch.Tensor],
                     bias: torch.Tensor) -> torch.Tensor:
    """Demodulate (the per-sample, per-channel scale), add noise and bias, leaky ReLU; `x` is
    left as it is (the hand-written backward needs it)."""
    s = scale[:, :, None, None].to(x.dtype)
    if nterm is not None:  # one pass: x * scale + noise * strength (the bias goes in below)
        x = torch.addcmul(nterm, x, s).add_(bias[None, :, None, None])
    else:
        x = torch.addcmul(bias[None, :, None, None], x, s)
    return F.leaky_relu_(x, 0.2)


# ----------------------------------------------------------------------------- search backward

# Below this many output elements a layer keeps autograd's backward: the hand-written one
# saves full-size passes, but its Python costs ~0.07 ms per layer and step, more than the
# passes save on small activations (at batch 1 it made the search step ~7 % slower).
FROZEN_MIN_ELEMENTS = 1 << 18


def _frozen_layer_search(x: torch.Tensor, layer: "SynthesisLayer", noise: Optional[torch.Tensor]) -> bool:
    """True where a layer uses `FrozenModConv`: gradients are wanted (for the latent only: none
    of the layer's weights and not its noise input train), the activations are large enough
    for it to pay, and neither autocast nor torch.compile is tracing. Latent searches meet this
    at their default batch; training does not, nor do the layers whose noise maps PULSE searches."""
    if not _SEARCH_BACKWARD.get() or not torch.is_grad_enabled():
        return False
    if x.shape[0] * layer.weight.shape[0] * layer.resolution ** 2 < FROZEN_MIN_ELEMENTS:
        return False
    if any(p.requires_grad for p in layer.parameters()) or (noise is not None and noise.requires_grad):
        return False
    if _compiling() or _autocast_enabled(x.device.type):
        return False
    return True


def _compiling() -> bool:
    """True while torch.compile traces (torch.compiler from 2.3, torch._dynamo before)."""
    fn = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    if fn is None:
        fn = getattr(getattr(torch, "_dynamo", None), "is_compiling", None)
    return bool(fn()) if fn is not None else False


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 has no device argument
        return torch.is_autocast_enabled() if device_type == "cuda" else torch.is_autocast_cpu_enabled()


# Switch for tests and benchmarks (`reference_backward()`); the hand-written path is the default.
# A context variable, so that switching it in one thread leaves searches in other threads alone.
_SEARCH_BACKWARD: "contextvars.ContextVar[bool]" = contextvars.ContextVar("rls_search_backward", default=True)


@contextlib.contextmanager
def reference_backward() -> Iterator[None]:
    """Synthesis layers use autograd's own backward (the reference) instead of `FrozenModConv`'s,
    in this thread, inside the `with` block. Both give the same gradients up to float rounding
    (tests/test_generator.py); the reference also allows double backward and torch.func."""
    token = _SEARCH_BACKWARD.set(False)
    try:
        yield
    finally:
        _SEARCH_BACKWARD.reset(token)


class FrozenModConv(torch.autograd.Function):
    """A synthesis layer (`_modulated_conv`, `_demod_noise_act`) whose backward is written
    out, for latent searches.

    The forward is the same arithmetic as the reference path (bit for bit). The backward returns
    gradients for the layer's input, styles and demodulation scale only (the weights, bias and
    noise are frozen during a search) and makes fewer full-size passes than autograd's chain:
    no product with addcmul's unit value, the scale and style products in place, and the
    FIR's adjoint as a forward convolution (oneDNN's depthwise backward ran ~2x slower).
    Not twice differentiable and without torch.func rules (no search needs either); where
    something does, `reference_backward()` restores autograd's path.
    """

    @staticmethod
    def forward(ctx, x, styles, scale, weight, nterm, bias, filt):  # type: ignore[override]
        pre = _modulated_conv(x, styles, weight, filt)
        out = _demod_noise_act(pre, scale, nterm, bias)
        ctx.save_for_backward(x, styles, scale, weight, pre, out, filt)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        x, styles, scale, weight, pre, out, filt = ctx.saved_tensors
        g = torch.ops.aten.leaky_relu_backward(grad, out, 0.2, True)  # sign(out) == sign(input)
        grad_scale = (g * pre).sum((2, 3)) if ctx.needs_input_grad[2] else None
        g = g.mul_(scale[:, :, None, None].to(g.dtype))
        if filt is not None:
            # Adjoint of the FIR (a 4x4 correlation, pad 1): the flipped filter, pad 2.
            g = upfirdn2d(g, filt.flip([0, 1]), pad=(2, 2, 2, 2), gain=4.0)
            g = F.conv2d(g, weight.transpose(0, 1), stride=2)  # adjoint of the transposed conv
        else:
            g = F.conv_transpose2d(g, weight, padding=1)
        grad_styles = (g * x).sum((2, 3)) if ctx.needs_input_grad[1] else None
        grad_x = g.mul_(styles[:, :, None, None]) if ctx.needs_input_grad[0] else None
        return grad_x, grad_styles, grad_scale, None, None, None, None


class ToRGB(nn.Module):
    """Modulated 1x1 conv without demodulation, as in StyleGAN2's skip generator."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, conv_clamp: Optional[float]) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.weight_gain = 1.0 / math.sqrt(in_ch)
        self.conv_clamp = conv_clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        # A 1x1 conv with a per-sample weight is a batched matmul over the pixels: one pass
        # over x instead of modulating x first. With channels-last activations the
        # (B, H*W, C) view below is free. (baddbmm with the broadcast bias ran ~5x slower on
        # CPU than bmm and an in-place add on the few output channels.)
        b, c, h, wd = x.shape
        weight = self.weight[:, :, 0, 0][None] * styles[:, None, :]  # (B, out, in)
        x = torch.bmm(x.permute(0, 2, 3, 1).reshape(b, h * wd, c), weight.transpose(1, 2).to(x.dtype))
        x = x.add_(self.bias.to(x.dtype))
        x = x.reshape(b, h, wd, -1).permute(0, 3, 1, 2)
        if self.conv_clamp is not None:
            x = x.clamp(-self.conv_clamp, self.conv_clamp)
        return x


class SynthesisBlock(nn.Module):
    def __init__(self, cfg: GeneratorConfig, res: int, in_ch: int, out_ch: int, blur: torch.Tensor) -> None:
        super().__init__()
        self.res = res
        if res == 4:
            self.conv0 = None
        else:
            self.conv0 = SynthesisLayer(in_ch, out_ch, cfg.w_dim, res, True, blur, cfg.conv_clamp,
                                        res >= cfg.noise_min_res)
        self.conv1 = SynthesisLayer(out_ch, out_ch, cfg.w_dim, res, False, blur, cfg.conv_clamp,
                                    res >= cfg.noise_min_res)
        self.torgb = ToRGB(out_ch, cfg.img_channels, cfg.w_dim, cfg.conv_clamp)
        self.num_conv = 1 if res == 4 else 2


class SynthesisNetwork(nn.Module):
    """W+ (B, num_ws, w_dim) -> image (B, img_channels, R, R) in roughly [-1, 1]."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        blur = _fir_kernel(cfg.blur_kernel)
        self.register_buffer("resample_filter", blur, persistent=False)
        self.const = nn.Parameter(torch.randn(cfg.channels[0], 4, 4))
        self.block_resolutions = cfg.resolutions
        for i, res in enumerate(self.block_resolutions):
            in_ch = cfg.channels[max(i - 1, 0)]
            setattr(self, f"b{res}", SynthesisBlock(cfg, res, in_ch, cfg.channels[i], blur))
        self.num_ws = cfg.num_ws

    def layers(self) -> List[SynthesisLayer]:
        """Noise-carrying layers in W+ order (the order of `noise` lists)."""
        out: List[SynthesisLayer] = []
        for res in self.block_resolutions:
            blk = getattr(self, f"b{res}")
            if blk.conv0 is not None:
                out.append(blk.conv0)
            out.append(blk.conv1)
        return out

    def noise_shapes(self) -> List[Tuple[int, int]]:
        return [(layer.resolution, layer.resolution) for layer in self.layers()]

    def forward(self, ws: torch.Tensor, noise_mode: str = "const",
                noise: Optional[Sequence[Optional[torch.Tensor]]] = None) -> torch.Tensor:
        """`noise`: optional list (one per layer, see `layers()`) of tensors broadcastable to
        (B, 1, r, r); entries that are None fall back to `noise_mode`."""
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if ws.ndim != 3 or ws.shape[1] != self.num_ws:
            raise ValueError(f"expected W+ of shape (B, {self.num_ws}, w_dim), got {tuple(ws.shape)}")
        # Channels-last activations: on CPU, oneDNN's convolutions and above all the
        # depthwise FIR of the upsampling layers run ~3x faster in NHWC (docs/performance.md).
        x = self.const[None].expand(ws.shape[0], -1, -1, -1).contiguous(memory_format=torch.channels_last)
        img = None
        w_idx, n_idx = 0, 0
        for res in self.block_resolutions:
            blk = getattr(self, f"b{res}")
            for layer in (blk.conv0, blk.conv1):
                if layer is None:
                    continue
                nz = noise[n_idx] if noise is not None else None
                x = layer(x, ws[:, w_idx], noise_mode, nz)
                w_idx += 1
                n_idx += 1
            # The image path (ToRGB outputs summed over resolutions) always runs in float32:
            # it is cheap (a few channels), and under bf16 autocast the output image would
            # otherwise be rounded to 8 significant bits at every resolution.
            # (float64 stays float64: tests check batch independence at that precision.)
            with torch.autocast(x.device.type, enabled=False):
                dt = torch.float64 if ws.dtype == torch.float64 else torch.float32
                y = blk.torgb(x.to(dt), ws[:, w_idx].to(dt))
                img = y if img is None else upsample2d(img, self.resample_filter) + y
        return img.contiguous()


class Generator(nn.Module):
    """StyleGAN2 generator: `mapping` (z -> w) and `synthesis` (W+ -> image) exposed separately."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.mapping = MappingNetwork(cfg)
        self.synthesis = SynthesisNetwork(cfg)
        self.num_ws = cfg.num_ws

    @property
    def w_avg(self) -> torch.Tensor:
        return self.mapping.w_avg

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, noise_mode: str = "const") -> torch.Tensor:
        w = self.mapping(z, truncation_psi)
        return self.synthesis(w[:, None].expand(-1, self.num_ws, -1), noise_mode=noise_mode)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def estimate_w_avg(self, n: int = 10000, seed: int = 0, batch: int = 4096) -> torch.Tensor:
        """Mean of mapped samples; stored in `mapping.w_avg`."""
        g = torch.Generator().manual_seed(seed)
        dev = self.w_avg.device
        total = torch.zeros(self.cfg.w_dim, dtype=torch.float64)
        done = 0
        while done < n:
            k = min(batch, n - done)
            z = torch.randn(k, self.cfg.z_dim, generator=g).to(dev)
            total += self.mapping(z).double().sum(0).cpu()
            done += k
        self.mapping.w_avg.copy_((total / n).to(self.w_avg.dtype))
        return self.mapping.w_avg

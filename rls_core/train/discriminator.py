"""Residual StyleGAN2 discriminator in plain PyTorch (runs on CPU and GPU alike).

Architecture as in StyleGAN2's "resnet" D: a 1x1 FromRGB at full resolution, one residual
block per resolution halving the size (3x3 conv, 3x3 conv with [1,3,3,1]-blurred stride-2
downsampling, a 1x1 downsampled skip, both branches scaled by sqrt(1/2)), then at 4x4 a
minibatch-stddev feature (lets D see a lack of variety, i.e. mode collapse), a 3x3 conv
and two fully connected layers. Equalised learning rate throughout, like the generator.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..generator import GeneratorConfig, _fir_kernel, upfirdn2d

SQRT2 = math.sqrt(2.0)
SQRT_HALF = math.sqrt(0.5)
BLUR = (1.0, 3.0, 3.0, 1.0)


@dataclass
class DiscriminatorConfig:
    """Feature widths per resolution 4..R (same order as GeneratorConfig.channels)."""

    resolution: int = 128
    img_channels: int = 2
    channels: Tuple[int, ...] = (96, 96, 64, 32, 16, 8)
    mbstd_group: int = 4
    conv_clamp: Optional[float] = None

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        n = int(math.log2(self.resolution)) - 1
        if 2 ** (n + 1) != self.resolution or len(self.channels) != n:
            raise ValueError(f"need one width per resolution 4..{self.resolution}, got {self.channels}")

    def to_dict(self) -> Dict:
        return asdict(self)

    @classmethod
    def preset(cls, name: str, resolution: int = 128, img_channels: int = 2,
               width_mult: float = 1.0) -> "DiscriminatorConfig":
        """Mirror the widths of the generator preset of the same name (x `width_mult`)."""
        return cls.mirror(GeneratorConfig.preset(name, resolution, img_channels), width_mult)

    @classmethod
    def mirror(cls, g: GeneratorConfig, width_mult: float = 1.0) -> "DiscriminatorConfig":
        """A discriminator as wide as generator `g` at every resolution (x `width_mult`)."""
        ch = tuple(max(1, min(512, int(round(c * width_mult)))) for c in g.channels)
        return cls(g.resolution, g.img_channels, ch)


class EqualConv2d(nn.Module):
    """Conv with equalised LR; optional blur + stride-2 downsampling and leaky ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, bias: bool = True, activation: bool = True,
                 down: bool = False, blur_taps: Tuple[float, ...] = BLUR, gain: float = 1.0,
                 conv_clamp: Optional[float] = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.kernel, self.activation, self.down, self.gain, self.conv_clamp = kernel, activation, down, gain, conv_clamp
        if down:
            self.register_buffer("blur", _fir_kernel(blur_taps), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The output gains (sqrt 2 of the activation, `gain`) are positive, so they fold into
        # the weight and bias: lrelu(a) * c == lrelu(a * c). Bias and conv run as one op and
        # the activation in place, saving three full-size passes per layer on CPU.
        c = (SQRT2 if self.activation else 1.0) * self.gain
        w = self.weight * (self.weight_gain * c)
        b = self.bias * c if self.bias is not None else None
        if self.down:
            # Blur before the strided conv so it does not alias; pads chosen so 2N -> N.
            fw = self.blur.shape[-1]
            if self.kernel > 1:
                p = (fw - 2 + self.kernel - 1) // 2
                x = F.conv2d(upfirdn2d(x, self.blur, pad=(p, p, p, p)), w, b, stride=2)
            else:  # 1x1: blur straight to every other pixel (a strided depthwise conv)
                p, ch = (fw - 2) // 2, x.shape[1]
                k = self.blur.flip([0, 1]).to(x.dtype)[None, None].expand(ch, 1, fw, fw)
                x = F.conv2d(F.conv2d(x, k, stride=2, padding=p, groups=ch), w, b)
        else:
            x = F.conv2d(x, w, b, padding=self.kernel // 2)
        if self.activation:
            x = F.leaky_relu_(x, 0.2)
        if self.conv_clamp is not None:
            x = x.clamp_(-self.conv_clamp * self.gain, self.conv_clamp * self.gain)
        return x


class EqualLinearD(nn.Module):
    def __init__(self, in_f: int, out_f: int, activation: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_f, in_f))
        self.bias = nn.Parameter(torch.zeros(out_f))
        self.weight_gain, self.activation = 1.0 / math.sqrt(in_f), activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias)
        return F.leaky_relu(x, 0.2) * SQRT2 if self.activation else x


class DBlock(nn.Module):
    """Residual block: res -> res / 2, in_ch -> out_ch."""

    def __init__(self, in_ch: int, out_ch: int, conv_clamp: Optional[float]) -> None:
        super().__init__()
        self.conv0 = EqualConv2d(in_ch, in_ch, 3, conv_clamp=conv_clamp)
        self.conv1 = EqualConv2d(in_ch, out_ch, 3, down=True, gain=SQRT_HALF, conv_clamp=conv_clamp)
        self.skip = EqualConv2d(in_ch, out_ch, 1, bias=False, activation=False, down=True, gain=SQRT_HALF)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.conv1(self.conv0(x))


def minibatch_stddev(x: torch.Tensor, group: int) -> torch.Tensor:
    """Append one feature map: the mean std of features across a group of images."""
    n, c, h, w = x.shape
    g = max(d for d in range(1, min(group, n) + 1) if n % d == 0)
    y = x.reshape(g, n // g, c, h, w)
    y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt()  # (n/g, c, h, w)
    y = y.mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y], dim=1)


class Discriminator(nn.Module):
    """Image (B, C, R, R) in [-1, 1] -> realness logit (B,)."""

    def __init__(self, cfg: DiscriminatorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = {2 ** (i + 2): c for i, c in enumerate(cfg.channels)}
        res = cfg.resolution
        self.fromrgb = EqualConv2d(cfg.img_channels, ch[res], 1, conv_clamp=cfg.conv_clamp)
        self.blocks = nn.ModuleList()
        while res > 4:
            self.blocks.append(DBlock(ch[res], ch[res // 2], cfg.conv_clamp))
            res //= 2
        self.conv = EqualConv2d(ch[4] + 1, ch[4], 3, conv_clamp=cfg.conv_clamp)
        self.fc = EqualLinearD(ch[4] * 16, ch[4], activation=True)
        self.out = EqualLinearD(ch[4], 1, activation=False)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        # Channels-last activations, as in the generator: oneDNN's convolutions and the
        # depthwise blur before each downsampling are several times faster in NHWC on CPU.
        x = self.fromrgb(img.contiguous(memory_format=torch.channels_last))
        for blk in self.blocks:
            x = blk(x)
        x = minibatch_stddev(x, self.cfg.mbstd_group)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        return self.out(x).squeeze(1)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

"""Named generator sizes (pure data, no torch: the CLIs read the names without importing it).

Each preset gives the latent size, the mapping depth and the synthesis width per resolution
(4 px up to 1024 px). `GeneratorConfig.preset` builds configs from this table and the
discriminator mirrors the same widths.

- standard: the paper's latent (z = w = 512, 8 mapping layers with lr multiplier 0.01) with
  synthesis widths sized for search on CPU: docs/performance.md gives the measurements behind
  them (whole RLS step <= 30 ms per tile on 2 cores, 64/128-px layers twice the cpu preset's,
  bundle <= 12 MiB). The preset of the training campaign.
- cpu: the small 128-d, 4-layer preset of the first shipped models (0.57 M parameters).
- paper: the authors' exact 128-px StyleGAN2 (channel multiplier 2), for imports and GPUs.
- tiny: for tests.
"""
from __future__ import annotations

from typing import Dict, NamedTuple


class Preset(NamedTuple):
    z_dim: int
    w_dim: int
    mapping_layers: int
    widths: Dict[int, int]  # resolution -> feature channels


PRESETS: Dict[str, Preset] = {
    "standard": Preset(512, 512, 8, {4: 192, 8: 192, 16: 128, 32: 64, 64: 32, 128: 16, 256: 16, 512: 16,
                                     1024: 16}),
    "cpu": Preset(128, 128, 4, {4: 96, 8: 96, 16: 64, 32: 32, 64: 16, 128: 8, 256: 8, 512: 8, 1024: 8}),
    "paper": Preset(512, 512, 8, {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64,
                                  1024: 32}),
    "tiny": Preset(32, 32, 2, {2 ** i: max(4, 32 >> (i - 2)) for i in range(2, 11)}),
}
PRESET_NAMES = tuple(PRESETS)

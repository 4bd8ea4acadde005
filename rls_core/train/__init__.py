"""`rls train`: StyleGAN2 training on HR microscopy fields, ending in a model bundle.

Heavy imports (torch) happen when the submodules are used, so importing the package is cheap.
"""
from __future__ import annotations

__all__ = ["TrainConfig", "TrainError", "train"]

#: which generator a bundle holds (`rls train --export`): StyleGAN's EMA average, the raw G, or
#: the better of the two at the best realism measurement of the run (`--metrics-every`)
EXPORTS = ("ema", "raw", "best")
#: where the D step's fakes come from (the first is the default): the G step's batch (one G and
#: one D forward fewer; trained as well over six paired seeds, docs/performance.md), or a new
#: batch from the updated G (NVlabs' phases)
FAKES = ("shared", "fresh")


def __getattr__(name: str):
    if name in __all__:
        from . import loop

        return getattr(loop, name)
    raise AttributeError(name)

"""`rls train`: StyleGAN2 training on HR microscopy fields, ending in a model bundle.

Heavy imports (torch) happen when the submodules are used, so importing the package is cheap.
"""
from __future__ import annotations

__all__ = ["TrainConfig", "TrainError", "train"]

#: which generator a bundle holds (`rls train --export`): StyleGAN's EMA average, the raw G, or
#: the better of the two at the best realism measurement of the run (`--metrics-every`)
EXPORTS = ("ema", "raw", "best")


def __getattr__(name: str):
    if name in __all__:
        from . import loop

        return getattr(loop, name)
    raise AttributeError(name)

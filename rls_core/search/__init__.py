"""The latent searches, one interface (`LatentSearch`), built from the method table.

The table (rls_core.methods) says which search class a method uses and with which weights:
  rls        RLS, the paper's method (p_w flow prior + p_cross)
  plain      "w/o Regu.": the RLS search with every prior weight 0
  pulse      PULSE baseline
  brgm       BRGM baseline (without its LPIPS term: no pretrained VGG here)
  rls-no-pw, rls-no-pcross   ablations of RLS (paper Fig. 7)
`bicubic` has no search; the tile driver (rls_core.reconstruct) handles it.
"""
from __future__ import annotations

from typing import Dict, Type

from ..methods import get_method
from .base import LatentSearch, SearchResult, lr_schedule, psnr
from .brgm import BRGM
from .pulse import Pulse
from .refine import project_l1_ball, refine
from .rls import RLS

#: the table's `search` field -> class
SEARCHES: Dict[str, Type[LatentSearch]] = {"rls": RLS, "pulse": Pulse, "brgm": BRGM}


def make_search(method: str, model, operator, realism: float = 1.0, start_spread: float = 0.0,
                p_w: str = "flow", **overrides: float) -> LatentSearch:
    """Build the search of a table method; `overrides` replace the method's default weights.
    `p_w` ('flow' or 'gaussian') only concerns the RLS family."""
    spec = get_method(method)
    if spec.search is None:
        raise ValueError(f"method {method!r} runs no latent search")
    cls = SEARCHES[spec.search]
    kwargs = dict(overrides)
    if issubclass(cls, RLS):
        kwargs["p_w"] = p_w
    return cls(model, operator, spec, realism, start_spread, **kwargs)


__all__ = ["LatentSearch", "SearchResult", "SEARCHES", "make_search", "refine",
           "project_l1_ball", "lr_schedule", "psnr", "RLS", "Pulse", "BRGM"]

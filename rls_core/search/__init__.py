"""The searches, one interface (`LatentSearch`), selected by name.

  rls        the paper's method (p_w flow prior + p_cross)
  plain      "w/o Regu." (no prior)
  pulse      PULSE baseline
  brgm       BRGM baseline (without its LPIPS term: no pretrained VGG here)
  bicubic    no search: plain bicubic interpolation (handled by the API)
Ablations of RLS (paper Fig. 7) are weight overrides: `rls-no-pw`, `rls-no-pcross`.
"""
from __future__ import annotations

from typing import Dict, Type

from .base import LatentSearch, SearchResult, lr_schedule, psnr
from .brgm import BRGM
from .pulse import Pulse
from .refine import project_l1_ball, refine
from .rls import RLS, Plain

SEARCHES: Dict[str, Type[LatentSearch]] = {"rls": RLS, "plain": Plain, "pulse": Pulse, "brgm": BRGM}
#: method name -> (search, fixed weight overrides)
ABLATIONS = {
    "rls-no-pw": ("rls", {"lambda_logp": 0.0, "lambda_pnorm": 0.0}),
    "rls-no-pcross": ("rls", {"lambda_cross": 0.0}),
}
METHODS = ("rls", "pulse", "brgm", "plain", "bicubic") + tuple(ABLATIONS)


def make_search(method: str, model, operator, realism: float = 1.0, start_spread: float = 0.0,
                p_w: str = "flow", **weights) -> LatentSearch:
    """Build a search by method name; `weights` override the method's defaults.
    `p_w` ('flow' or 'gaussian') only concerns the RLS family."""
    fixed: dict = {}
    if method in ABLATIONS:
        method, fixed = ABLATIONS[method]
    if method not in SEARCHES:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    cls = SEARCHES[method]
    kwargs = {**weights, **fixed}
    if issubclass(cls, RLS):
        kwargs["p_w"] = p_w
    return cls(model, operator, realism, start_spread, **kwargs)


__all__ = ["LatentSearch", "SearchResult", "SEARCHES", "METHODS", "ABLATIONS", "make_search", "refine",
           "project_l1_ball", "lr_schedule", "psnr", "RLS", "Plain", "Pulse", "BRGM"]

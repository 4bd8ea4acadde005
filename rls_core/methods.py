"""The one table of super-resolution methods (imports no torch).

Every place that lists methods reads this table: the searches (their loss weights and
schedules), `super_resolve`, the CLI's choices, the CellProfiler module's choices, `rls
evaluate`'s labels and `pipelines/make_pipelines.py`. Adding a method means adding a row here
and, for a new search, a class in `rls_core.search`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Dict, Mapping, Optional, Tuple

#: when the method needs the bundle's fitted latent prior (`rls fit-prior`)
PRIOR_NEVER, PRIOR_IF_WEIGHTED, PRIOR_ALWAYS = "never", "if weighted", "always"

#: start codes for K > 1 samples per tile: w_mean + spread * (map(z) - w_mean), so the K
#: searches start apart and their spread is an uncertainty map
SAMPLES_START_SPREAD = 0.3
DEFAULT_METHOD = "rls"
#: RLS's latent prior p_w: the paper's MAF flow, or the cheaper full-covariance Gaussian
P_W_CHOICES = ("flow", "gaussian")


@dataclass(frozen=True)
class Method:
    """One row of the table."""

    name: str                       # what the library and the CLI call it
    label: str                      # what reports and figures call it (the paper's names)
    description: str
    search: Optional[str]           # the search class (rls_core.search.SEARCHES); None: no search
    weights: Mapping[str, float] = field(default_factory=dict)  # loss weights at realism 1
    prior_weights: Tuple[str, ...] = ()   # the weights the fidelity-vs-realism knob multiplies
    prior: str = PRIOR_NEVER        # PRIOR_*: when the fitted latent prior must be in the bundle
    steps: int = 0                  # default search steps per tile
    lr: float = 0.0                 # default base learning rate
    schedule: str = "constant"      # learning-rate schedule (rls_core.search.lr_schedule)
    module_label: Optional[str] = None  # the CellProfiler module's choice (None: not offered there);
                                        # saved pipelines store it, so it never changes

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", MappingProxyType(dict(self.weights)))
        unknown = set(self.prior_weights) - set(self.weights)
        if unknown:
            raise ValueError(f"method {self.name}: prior weights {sorted(unknown)} are not among its weights")

    def weights_at(self, realism: float = 1.0, overrides: Optional[Mapping[str, float]] = None) -> Dict[str, float]:
        """The loss weights a search uses: defaults, then `overrides`, then the knob.

        The knob is applied here and nowhere else: 0 = no prior, 1 = the defaults (the paper's
        for RLS), > 1 more realism at the cost of fidelity."""
        overrides = dict(overrides or {})
        unknown = set(overrides) - set(self.weights)
        if unknown:
            raise ValueError(f"method {self.name!r} has no weight(s) {sorted(unknown)}; "
                             f"its weights are {sorted(self.weights) or 'none'}")
        if not 0 <= realism < math.inf:  # also refuses NaN
            raise ValueError(f"realism must be a finite number >= 0 (0 = no prior, 1 = the defaults), got {realism}")
        bad = {k: v for k, v in overrides.items() if not 0 <= float(v) < math.inf}
        if bad:  # a negative weight would silently switch its term off (searches skip terms <= 0)
            raise ValueError(f"method {self.name!r}: weights must be finite numbers >= 0 (0 switches a term off), "
                             f"got {', '.join(f'{k}={v}' for k, v in sorted(bad.items()))}")
        w = {**self.weights, **{k: float(v) for k, v in overrides.items()}}
        for k in self.prior_weights:
            w[k] *= realism
        return w

    def needs_prior(self, weights: Mapping[str, float]) -> bool:
        """Whether a search with these (knob-scaled) weights reads the fitted prior."""
        if self.prior == PRIOR_ALWAYS:
            return True
        return self.prior == PRIOR_IF_WEIGHTED and any(weights[k] > 0 for k in self.prior_weights)


_RLS_WEIGHTS = {"lambda_fid": 10.0, "lambda_logp": 0.002, "lambda_pnorm": 0.004, "lambda_cross": 0.5,
                "lambda_gauss": 0.0}
_RLS_PRIORS = ("lambda_logp", "lambda_pnorm", "lambda_cross", "lambda_gauss")
_RLS_SEARCH = dict(search="rls", steps=500, lr=0.5, schedule="onecycle")

_TABLE = (
    Method("rls", "RLS", "regularized latent search (the paper's method): p_w flow prior + p_cross",
           weights=_RLS_WEIGHTS, prior_weights=_RLS_PRIORS, prior=PRIOR_IF_WEIGHTED, module_label="RLS",
           **_RLS_SEARCH),
    Method("pulse", "PULSE", "PULSE: sphere-constrained search in a Gaussianised latent space + GEOCROSS",
           search="pulse", weights={"lambda_l2": 100.0, "lambda_geocross": 0.05, "trainable_noise": 5.0},
           prior_weights=("lambda_geocross",), prior=PRIOR_ALWAYS, steps=100, lr=0.4, schedule="onecycle",
           module_label="PULSE"),
    Method("brgm", "BRGM", "BRGM: Gaussian prior around w_avg + cosine cross-layer prior (no LPIPS term offline)",
           search="brgm", weights={"lambda_pix": 65.025, "lambda_w": 100.0, "lambda_c": 0.1},
           prior_weights=("lambda_w", "lambda_c"), prior=PRIOR_IF_WEIGHTED, steps=500, lr=0.1,
           schedule="rampdown", module_label="BRGM"),
    Method("plain", "w/o Regu.", "w/o Regu.: the RLS search without any prior (fidelity only)",
           weights=dict(_RLS_WEIGHTS, lambda_logp=0.0, lambda_pnorm=0.0, lambda_cross=0.0),
           prior_weights=_RLS_PRIORS, prior=PRIOR_IF_WEIGHTED, module_label="w/o regularisation", **_RLS_SEARCH),
    Method("bicubic", "Bicubic", "no search: bicubic interpolation of each tile", search=None,
           module_label="bicubic"),
    # Ablations of RLS (paper Fig. 7): RLS with one prior's weights fixed at 0.
    Method("rls-no-pw", "RLS w/o p_w", "RLS without the p_w flow prior (ablation)",
           weights=dict(_RLS_WEIGHTS, lambda_logp=0.0, lambda_pnorm=0.0), prior_weights=_RLS_PRIORS,
           prior=PRIOR_IF_WEIGHTED, **_RLS_SEARCH),
    Method("rls-no-pcross", "RLS w/o p_cross", "RLS without the cross-layer prior p_cross (ablation)",
           weights=dict(_RLS_WEIGHTS, lambda_cross=0.0), prior_weights=_RLS_PRIORS, prior=PRIOR_IF_WEIGHTED,
           **_RLS_SEARCH),
)

#: name -> Method, in the order the CLI and the reports list them
METHODS: Mapping[str, Method] = MappingProxyType({m.name: m for m in _TABLE})
METHOD_NAMES: Tuple[str, ...] = tuple(METHODS)
#: the CellProfiler module's choices, in order: label -> method name
MODULE_CHOICES: Mapping[str, str] = MappingProxyType({m.module_label: m.name for m in _TABLE if m.module_label})


def valid_factors(resolution: int) -> Tuple[int, ...]:
    """The upscaling factors a model of `resolution`-px tiles supports: those that divide the
    tile into an LR tile of at least 2 px."""
    return tuple(f for f in (2, 4, 8, 16, 32, 64) if resolution % f == 0 and resolution // f >= 2)


def get_method(name: str) -> Method:
    """The table row for `name`, or a ValueError that lists the choices."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHOD_NAMES)}") from None

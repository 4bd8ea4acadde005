"""Defaults of fitting a bundle's latent prior (imports no torch: every CLI's --help reads them).

`rls fit-prior`, `rls import --fit-prior` and `rls train` all fit through
`rls_core.priors.fit_bundle_prior` with these defaults.
"""
from __future__ import annotations

#: mapped w samples for the latent statistics and the flow
PRIOR_SAMPLES = 100_000
#: MAF blocks, as in the authors' code
FLOW_BLOCKS = 5
#: flow training epochs
FLOW_EPOCHS = 20
#: std of the Gaussian noise the flow is fitted through (standardised w units); 0: the samples as they are
FLOW_NOISE = 0.0
FLOW_NOISE_HELP = ("fit the flow to the mapped samples plus Gaussian noise of this std (per-dimension standardised "
                   "units): a smoother density with fewer narrow peaks for RLS's p_w term to climb off the "
                   "samples (docs/models.md, 'Two blockers in the search'); 0 fits the samples as they are "
                   "(default: %(default)s)")


def default_flow_hidden(w_dim: int) -> int:
    """MADE hidden units when not given: 2 x w_dim up to 128-d latents (as before); 128 for
    wider ones. The authors' 1024 for 512-d would cost ~1 GFLOP per tile-step and ~25 MB per
    bundle (float16), against the 12 MiB bundle budget; 128 keeps both small
    (docs/performance.md)."""
    return 2 * w_dim if w_dim <= 128 else 128


def check_prior_settings(n_samples: int, flow_blocks: int, flow_hidden, flow_epochs: int,
                         flow_noise: float, samples_name: str = "samples") -> None:
    """ValueError naming the first setting that no prior can be fitted with (before any work),
    by its option name without dashes (`samples_name`: what the caller calls the sample count)."""
    import math

    if n_samples < 2:
        raise ValueError(f"{samples_name} must be >= 2 (default {PRIOR_SAMPLES}), got {n_samples}")
    if flow_blocks < 1:
        raise ValueError(f"flow-blocks must be >= 1 (default {FLOW_BLOCKS}), got {flow_blocks}")
    if flow_hidden is not None and flow_hidden < 1:
        raise ValueError(f"flow-hidden (units) must be >= 1 (leave it out for the default), got {flow_hidden}")
    if flow_epochs < 1:
        raise ValueError(f"flow-epochs must be >= 1 (default {FLOW_EPOCHS}): an untrained flow is no prior, "
                         f"got {flow_epochs}")
    if not 0 <= flow_noise < math.inf:
        raise ValueError(f"flow-noise must be a finite number >= 0 (0: none), got {flow_noise}")

"""How realistic are a model's own samples, measured like `rls evaluate` measures SR outputs?

RLS's priors pull a search toward the generator's typical images, so RLS cannot be more
realistic than those images. This script prints the realism distance (SWD x 1e3 against the
same real reference crops as `rls evaluate --seed S` uses) of random samples, of
truncated samples and of the mean-w image. Compare it with the Table 1 column of a report.

    python benchmarks/sample_realism.py --assay translocation --model translocation
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from rls_core.evaluate.data import load_test_and_reference
from rls_core.evaluate.defaults import DEFAULT_SEED
from rls_core.evaluate.degrade import hr_unit
from rls_core.evaluate.stats import realism_distance
from rls_core.model import load_model
from rls_core.seeding import TileKey, tile_seeds


@torch.no_grad()
def samples(model, n: int, psi: float, seed: int) -> np.ndarray:
    """n images in [0, 1] from w = w_mean + psi * (mapping(z) - w_mean), fixed random noise."""
    gens = [torch.Generator().manual_seed(s) for s in tile_seeds(seed, [TileKey(f"sample{i}") for i in range(n)])]
    w = model.sample_w(gens)
    w = model.w_mean + psi * (w - model.w_mean)
    w_plus = w[:, None].expand(-1, model.num_ws, -1)
    return model.render(w_plus, model.random_noise(gens)).clamp(0, 1).cpu().numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assay", required=True, choices=("translocation", "golgi", "fly"))
    ap.add_argument("--model", required=True)
    ap.add_argument("--n-per-condition", type=int, default=16, help="as in the report (default 16)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help="the report's --seed (default 9000)")
    ap.add_argument("--psi", type=float, nargs="+", default=[1.0, 0.7, 0.4, 0.0],
                    help="truncation values (0 = the mean-w image)")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    model = load_model(args.model, "cpu")
    test, ref = load_test_and_reference(args.assay, model, args.n_per_condition, args.seed, progress=False)
    ref_u, test_u = hr_unit(model, ref.hr), hr_unit(model, test.hr)
    n = len(test)
    print(f"{args.model}: realism SWD x1e3 vs {len(ref)} reference crops (seed {args.seed + 1}), {n} images each")
    print(f"  real held-out crops (the floor)   {realism_distance(ref_u, test_u, seed=args.seed):8.1f}")
    for psi in args.psi:
        x = samples(model, n, psi, seed=0)
        print(f"  model samples, truncation {psi:<5g}   {realism_distance(ref_u, x, seed=args.seed):8.1f}")


if __name__ == "__main__":
    main()

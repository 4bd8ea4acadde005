"""Which RLS prior term keeps the search from fitting the LR input? LR-PSNR per variant.

Takes crops of a field folder (every k-th DNA file and its partner channel), downscales them
with the bicubic operator and runs each variant's search on all crops in one batch through the
users' reconstructor (`rls_core.reconstruct`). Prints the median / min / max LR-PSNR and the
converged share per variant: a search that cannot reach the LR input shows here first.

With `--source generated` the crops are the model's own samples, each drawn from a single w
(no style mixing). Such a crop lies on the generator's range by construction, so a variant that
fails here fails because of its search (weights, start, steps), not because the generator cannot
draw the data; comparing both sources separates the two causes. There the sample's true code is
known too, so each variant's loss is also evaluated at the true code (W+ = that w repeated, with
the search's noise) and at the code the search returned. "objective wrong" counts the crops whose
returned code scores *better* than the truth: the loss itself prefers the wrong image, and no
optimiser can fix that (weights or the priors must change). Where the truth scores better, the
optimiser stopped short (steps, learning rate, start). The per-term differences (returned minus
true, median) show which term pulls the search away.

    python benchmarks/prior_ablation.py training/checkpoints/translocation.h5 \
        data/train/translocation_s3000 --steps 200 --threads 1
    python benchmarks/prior_ablation.py training/checkpoints/translocation.h5 --source generated
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

#: name -> (table method, make_reconstructor options): the paper's RLS with one change each
VARIANTS = {
    "plain": ("plain", {}),
    "rls": ("rls", {}),
    "no_pcross": ("rls", {"weights": {"lambda_cross": 0.0}}),
    "no_pw": ("rls", {"weights": {"lambda_logp": 0.0, "lambda_pnorm": 0.0}}),
    "no_pnorm": ("rls", {"weights": {"lambda_pnorm": 0.0}}),
    "cross0.05": ("rls", {"weights": {"lambda_cross": 0.05}}),
    "gauss": ("rls", {"p_w": "gaussian"}),  # the flow replaced by the LeakyReLU Gaussian (--p-w gaussian)
}


def load_crops(model, folder: Path, n: int, size: int) -> np.ndarray:
    """n crops (model units, clipped to [0, 1]) from the centre of every k-th field of `folder`."""
    from rls_core.io import plan_fields, read_field

    specs = [s for s in plan_fields(sorted(folder.glob("*.tif")), model.channel_names) if not s.problem]
    if not specs:
        sys.exit(f"no fields with the model's channels ({', '.join(model.channel_names)}) in {folder}")
    picked = specs[::max(1, len(specs) // n)][:n]
    crops = []
    for spec in picked:
        img, _ = read_field(spec, model.channel_names)
        y0, x0 = (img.shape[1] - size) // 2, (img.shape[2] - size) // 2
        crops.append(np.clip(model.to_unit(img[:, y0:y0 + size, x0:x0 + size]), 0, 1))
    return np.stack(crops).astype(np.float32)


def generated_crops(model, n: int, seed: int = 12345) -> Tuple[np.ndarray, "torch.Tensor"]:
    """n single-w samples of the model in [0, 1] and their codes (n, D)."""
    import torch

    w, _, img = model.single_w_samples([torch.Generator().manual_seed(seed + i) for i in range(n)])
    return img.cpu().numpy().astype(np.float32), w


def objective_check(search, w_true, y, steps: int, seeds: List[int]) -> Tuple[np.ndarray, Dict[str, np.ndarray], Any]:
    """Run `search` and score its loss terms at the returned code and at the true one.

    Returns (LR-PSNR per crop, returned-minus-true per term and "total", the search result).
    Both codes render with the search's own noise, as the search sees them."""
    import torch

    res = search.run(y, seeds, steps=steps)
    model = search.model

    def terms(w_plus):
        with torch.no_grad():
            x_lr = search.operator(model.render(w_plus, res.noise))
            t = search.loss_terms({}, w_plus, x_lr, y)
        return {k: v.float().cpu().numpy() for k, v in t.items()}

    found = terms(res.w_plus)
    true = terms(w_true[:, None].repeat(1, model.num_ws, 1).to(res.w_plus))
    gap = {k: found[k] - true[k] for k in found}
    gap["total"] = sum(gap.values())
    return res.lr_psnr.cpu().numpy(), gap, res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="bundle path or shipped model name")
    ap.add_argument("data", type=Path, nargs="?", help="folder of HR fields (e.g. from `rls simulate`); "
                    "not needed with --source generated")
    ap.add_argument("--source", choices=("data", "generated"), default="data",
                    help="crops of DATA, or the model's own single-w samples (default: data)")
    ap.add_argument("--factor", type=int, default=16)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--lr", type=float, default=None, help="base learning rate (default: each method's)")
    ap.add_argument("--crops", type=int, default=8)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from: " + ", ".join(VARIANTS))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if args.source == "data" and args.data is None:
        ap.error("give a folder of HR fields, or --source generated")

    import torch

    torch.set_num_threads(args.threads)
    from rls_core.model import load_model
    from rls_core.operators import make_operator
    from rls_core.reconstruct import make_reconstructor, reconstruct_tiles
    from rls_core.seeding import TileKey, tile_seeds

    model = load_model(args.model, "cpu")
    w_true = None
    if args.source == "data":
        hr = load_crops(model, args.data, args.crops, model.resolution)
    else:
        hr, w_true = generated_crops(model, args.crops)
    lr = make_operator("bicubic", args.factor)(torch.from_numpy(hr)).clamp(0, 1).numpy()
    keys = [TileKey(f"crop{i}", 0, 0) for i in range(len(lr))]
    print(f"{model.name}: {len(lr)} {args.source} crops, {args.factor}x, {args.steps} steps, {args.threads} thread(s)")
    header = f"{'variant':<10} {'median':>7} {'min':>6} {'max':>6} {'converged':>10} {'seconds':>8}"
    print(header + ("  objective wrong   returned - true code, median per term" if w_true is not None else ""))
    returned = {}
    for name in args.variants.split(","):
        method, options = VARIANTS[name]
        t0 = time.perf_counter()
        recon = make_reconstructor(model, method, args.factor, "bicubic", 1, steps=args.steps,
                                   learning_rate=args.lr, **options)
        if w_true is None:
            res = reconstruct_tiles(recon, lr, keys, 0, batch_size=len(lr))
            ps, conv, extra = res.lr_psnr[:, 0], res.converged[:, 0], ""
        else:
            # The search itself (same per-tile seeds as the reconstructor uses), to keep its codes.
            ps, gap, out = objective_check(recon.search, w_true, torch.from_numpy(lr), args.steps,
                                           tile_seeds(0, keys, 1))
            conv = out.converged.cpu().numpy()
            returned[name] = out.w_plus
            wrong = int((gap["total"] < 0).sum())
            extra = f"  {wrong:>3} of {len(lr):<3}        " + ", ".join(
                f"{k} {np.median(v):+.3f}" for k, v in gap.items())
        print(f"{name:<10} {np.median(ps):7.1f} {ps.min():6.1f} {ps.max():6.1f} {100 * conv.mean():9.0f}% "
              f"{time.perf_counter() - t0:8.0f}" + extra, flush=True)
    if returned and model.bundle.has_prior:
        flow_report(model, returned)
    return 0


def flow_report(model, returned: Dict[str, Any], n_ref: int = 2000) -> None:
    """Where the returned codes sit in the flow's density, against the model's own codes: a
    search that finds codes far *more* likely than any mapped sample is climbing a peak of the
    fitted flow that the mapping network never produces."""
    import torch
    from rls_core.priors import FlowPrior

    prior = FlowPrior(model.flow(), model.stat("w_mean"), model.stat("w_std"))
    with torch.no_grad():
        z = torch.randn(n_ref, model.G.cfg.z_dim, generator=torch.Generator().manual_seed(777))
        ref = prior.terms(model.G.mapping(z.to(model.device))[:, None])["logp"].cpu().numpy()
        print(f"\nflow -log p(w), mean over layers (lower = rated more likely); {n_ref} mapped samples: "
              f"min {ref.min():.0f}, 1st percentile {np.percentile(ref, 1):.0f}, median {np.median(ref):.0f}")
        for name, w_plus in returned.items():
            got = prior.terms(w_plus)["logp"].cpu().numpy()
            print(f"  {name:<10} returned codes: median {np.median(got):.0f}, min {got.min():.0f}; "
                  f"{int((got < ref.min()).sum())} of {len(got)} beyond every mapped sample")


if __name__ == "__main__":
    sys.exit(main())

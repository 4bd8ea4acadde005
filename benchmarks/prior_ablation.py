"""Which RLS prior term keeps the search from fitting the LR input? LR-PSNR per variant.

Takes crops of a field folder (every k-th DNA file and its partner channel), downscales them
with the bicubic operator and runs each variant's search on all crops in one batch through the
users' reconstructor (`rls_core.reconstruct`). Prints the median / min / max LR-PSNR and the
converged share per variant: a search that cannot reach the LR input shows here first.

With `--source generated` the crops are the model's own samples, each drawn from a single w
(no style mixing). Such a crop lies on the generator's range by construction, so a variant that
fails here fails because of its search (weights, start, steps), not because the generator cannot
draw the data; comparing both sources separates the two causes.

    python benchmarks/prior_ablation.py training/checkpoints/translocation.h5 \
        data/train/translocation_s3000 --steps 200 --threads 1
    python benchmarks/prior_ablation.py training/checkpoints/translocation.h5 --source generated
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

VARIANTS = {
    "plain": ("plain", None),
    "rls": ("rls", {}),
    "no_pcross": ("rls", {"lambda_cross": 0.0}),
    "no_pw": ("rls", {"lambda_logp": 0.0, "lambda_pnorm": 0.0}),
    "no_pnorm": ("rls", {"lambda_pnorm": 0.0}),
    "cross0.05": ("rls", {"lambda_cross": 0.05}),
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


def generated_crops(model, n: int, seed: int = 12345) -> np.ndarray:
    """n samples of the model, one single w each (the search's own p_cross ideal), in [0, 1]."""
    import torch

    gens = [torch.Generator().manual_seed(seed + i) for i in range(n)]
    w = model.sample_w(gens)
    with torch.no_grad():
        img = model.render(w[:, None].repeat(1, model.num_ws, 1), noise=model.random_noise(gens))
    return img.clamp(0, 1).cpu().numpy().astype(np.float32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="bundle path or shipped model name")
    ap.add_argument("data", type=Path, nargs="?", help="folder of HR fields (e.g. from `rls simulate`); "
                    "not needed with --source generated")
    ap.add_argument("--source", choices=("data", "generated"), default="data",
                    help="crops of DATA, or the model's own single-w samples (default: data)")
    ap.add_argument("--factor", type=int, default=16)
    ap.add_argument("--steps", type=int, default=200)
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
    from rls_core.seeding import TileKey

    model = load_model(args.model, "cpu")
    hr = (load_crops(model, args.data, args.crops, model.resolution) if args.source == "data"
          else generated_crops(model, args.crops))
    lr = make_operator("bicubic", args.factor)(torch.from_numpy(hr)).clamp(0, 1).numpy()
    keys = [TileKey(f"crop{i}", 0, 0) for i in range(len(lr))]
    print(f"{model.name}: {len(lr)} {args.source} crops, {args.factor}x, {args.steps} steps, {args.threads} thread(s)")
    print(f"{'variant':<10} {'median':>7} {'min':>6} {'max':>6} {'converged':>10} {'seconds':>8}")
    for name in args.variants.split(","):
        method, weights = VARIANTS[name]
        t0 = time.perf_counter()
        recon = make_reconstructor(model, method, args.factor, "bicubic", 1, weights=weights, steps=args.steps)
        res = reconstruct_tiles(recon, lr, keys, 0, batch_size=len(lr))
        ps = res.lr_psnr[:, 0]
        print(f"{name:<10} {np.median(ps):7.1f} {ps.min():6.1f} {ps.max():6.1f} {100 * res.converged.mean():9.0f}% "
              f"{time.perf_counter() - t0:8.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Does the generator put the image's layout in its noise inputs? A latent search cannot fit that.

RLS (and plain, BRGM) keep the per-layer noise maps fixed at random draws and search only W+.
If a coarse layer's noise decides where the cells are, then no code can reproduce an LR input
with other noise, however good the search. This script measures it on the model's own
single-w samples (which a search should be able to reach exactly):

1. the learned noise strength of every layer;
2. how much the 16x-downscaled image changes (PSNR against the original sample) when the noise
   of one resolution is redrawn, when all noise is redrawn, and when w is redrawn instead: a
   searchable generator changes little with noise and much with w;
3. (unless --no-search) RLS at the paper's weights on those samples' LR images, once with the
   search's own fixed noise (as users run it) and once with the samples' own noise (the gap is
   what the noise costs the search), and the search without priors (plain) with their own noise.

    python benchmarks/noise_dependence.py training/checkpoints/translocation.h5 --threads 2
"""
from __future__ import annotations

import argparse
import sys
import time

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="bundle path or shipped model name")
    ap.add_argument("--samples", type=int, default=16, help="single-w samples (default: 16)")
    ap.add_argument("--factor", type=int, default=16)
    ap.add_argument("--steps", type=int, default=200, help="search steps (default: 200)")
    ap.add_argument("--no-search", action="store_true", help="only the noise and w sensitivity (seconds)")
    ap.add_argument("--seed", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from rls_core.model import load_model
    from rls_core.operators import make_operator
    from rls_core.search import make_search, psnr

    model = load_model(args.model, "cpu")
    layers = model.G.synthesis.layers()
    n, op = args.samples, make_operator("bicubic", args.factor)

    def streams(offset: int):
        return [torch.Generator().manual_seed(args.seed + offset + i) for i in range(n)]

    w, noise, ref = model.single_w_samples(streams(0))
    other_noise = model.random_noise(streams(10_000))
    other_w = model.sample_w(streams(20_000))

    def render(w_single: torch.Tensor, nz) -> torch.Tensor:
        with torch.no_grad():
            return model.render(w_single[:, None].repeat(1, model.num_ws, 1), nz).clamp(0, 1)

    print(f"{model.name}: {n} single-w samples, LR = {args.factor}x bicubic; median PSNR against the sample "
          "(higher = the change matters less)")
    print("noise strength per layer (resolution: strength): "
          + ", ".join(f"{l.resolution}: {float(l.noise_strength):+.3f}" + ("" if l.use_noise else " (no noise)")
                      for l in layers))
    print(f"{'change':<34} {'HR PSNR':>8} {'LR PSNR':>8}")

    def row(label: str, img: torch.Tensor) -> None:
        print(f"{label:<34} {float(psnr(img, ref).median()):8.1f} {float(psnr(op(img), op(ref)).median()):8.1f}")

    for res in sorted({l.resolution for l in layers}):
        mixed = [b if l.resolution == res else a for a, b, l in zip(noise, other_noise, layers)]
        row(f"noise redrawn at {res} px", render(w, mixed))
    row("all noise redrawn", render(w, other_noise))
    row("w redrawn (same noise)", render(other_w, noise))

    if args.no_search:
        return 0
    y = op(ref).clamp(0, 1)
    print(f"\n{args.steps} search steps on the samples' LR images:")
    runs = (("rls", "search's fixed random noise (as users run it)", False),
            ("rls", "the samples' own noise", True),
            ("plain", "the samples' own noise", True))
    for method, label, own in runs:
        t0 = time.perf_counter()
        search = make_search(method, model, op)
        if own:
            search.noise = lambda p: noise  # the one thing changed: the noise maps the search renders with
        res = search.run(y, list(range(n)), steps=args.steps)
        print(f"  {method:<5} with {label:<47} LR-PSNR {float(res.lr_psnr.median()):5.1f} dB, converged "
              f"{100 * float(res.converged.float().mean()):3.0f} %, HR PSNR {float(psnr(res.images, ref).median()):5.1f} dB "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

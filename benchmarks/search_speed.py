"""Search speed: ms per tile per step and tiles per second, batched vs one tile at a time.

    python benchmarks/search_speed.py                      # shipped default model (or the cpu preset)
    python benchmarks/search_speed.py --model golgi --device cuda --batches 1 8 64

Prints one row per batch size for the RLS search (generator forward + backward, flow
prior, p_cross), then the throughput of 64 tiles searched as one batch against 64
one-tile searches. Figures, not assertions: the targets (<= 30 ms per tile per step on 2
CPU cores; batch 64 >= 5x one-at-a-time) are read off the output.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def bench_model(args):
    from rls_core.model import load_model
    from rls_core.registry import list_models

    if args.model:
        return load_model(args.model, args.device)
    shipped = list_models()
    if "translocation" in shipped:
        return load_model("translocation", args.device)
    # No shipped model yet: a randomly initialised 'cpu'-preset generator with a quick prior
    # has the same cost per step as a trained one.
    from rls_core.bundle import ModelBundle, save_bundle, set_prior
    from rls_core.generator import Generator, GeneratorConfig
    from rls_core.priors import fit_prior

    torch.manual_seed(0)
    G = Generator(GeneratorConfig.preset("cpu", 128, 2)).eval()
    G.estimate_w_avg(4000)
    stats, flow = fit_prior(G.mapping, G.cfg.z_dim, n_samples=4000, flow_epochs=1, progress=False)
    path = Path(tempfile.mkdtemp()) / "cpu_preset.h5"
    save_bundle(set_prior(ModelBundle.from_generator(G, ["DNA", "NFkB"]), stats, flow), path)
    return load_model(path, args.device)


def time_search(search, y, steps: int) -> float:
    """Seconds for `steps` steps, per-search setup left out (generator_speed.py times one step
    the same way)."""
    from generator_speed import time_search as seconds_per_step  # this folder is on sys.path

    return seconds_per_step(search, y, steps)[0] * steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model name or bundle (default: translocation or cpu preset)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--factor", type=int, default=16)
    ap.add_argument("--method", default="rls")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per measurement")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    ap.add_argument("--serial-tiles", type=int, default=64, help="tiles for the batched-vs-serial comparison")
    args = ap.parse_args()

    from rls_core.operators import make_operator
    from rls_core.search import make_search

    m = bench_model(args)
    op = make_operator("bicubic", args.factor).to(m.device)
    search = make_search(args.method, m, op)
    t = m.resolution // args.factor
    C = len(m.channel_names)
    print(f"model {m.name}: {m.resolution}px, {C} channels, {m.G.num_params() / 1e6:.2f} M params; "
          f"device {m.device}; torch threads {torch.get_num_threads()}; method {args.method}, x{args.factor}")
    print(f"{'batch':>6} {'ms/step':>9} {'ms/tile/step':>13} {'tiles/s (500 steps)':>20}")
    per_tile = {}
    for b in args.batches:
        y = torch.rand(b, C, t, t, device=m.device) * 0.5
        sec = time_search(search, y, args.steps)
        ms_step = 1000 * sec / args.steps
        per_tile[b] = ms_step / b
        print(f"{b:>6} {ms_step:>9.1f} {ms_step / b:>13.2f} {b / (sec / args.steps * 500):>20.3f}")
    n = args.serial_tiles
    y = torch.rand(n, C, t, t, device=m.device) * 0.5
    batched = time_search(search, y, args.steps)
    t0 = time.perf_counter()
    for i in range(n):
        search.run(y[i:i + 1], [i], steps=args.steps)
    if m.device.type == "cuda":
        torch.cuda.synchronize()
    serial = time.perf_counter() - t0
    print(f"{n} tiles x {args.steps} steps: batched {batched:.2f} s, one at a time {serial:.2f} s "
          f"-> batched throughput {serial / batched:.1f}x")


if __name__ == "__main__":
    main()

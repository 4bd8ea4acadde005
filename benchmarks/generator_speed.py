"""Generator and discriminator speed against this machine's own limit.

    python benchmarks/generator_speed.py                       # shipped default model + standard preset
    python benchmarks/generator_speed.py --preset standard --accel compile --batches 1 32
    python benchmarks/generator_speed.py --threads 1 --json runs/speed.json

Prints, side by side, for each model:
  (a) counted FLOPs per tile of one whole RLS search step (synthesis forward + backward to
      W+, operator, p_w flow, p_cross), with torch.utils.flop_counter;
  (b) ms per tile per search step (the per-search setup left out) and tiles/s of whole
      500-step searches (setup included) at each batch size;
  (c) images/s of one full training iteration (G step, D step, R1 every 16 amortised) of
      the model's preset, with D's fakes shared with the G step (`rls train`'s default) and
      fresh (NVlabs' phases; `--fakes`);
  (d) the machine's measured peak: a large float32 matmul and a bfloat16 matmul on the same
      threads, so every figure is also a fraction of the peak ("% fp32 peak");
  (e) with `--conv-floor`, the time of the step's convolutions alone (every synthesis layer's
      convolution, FIR and ToRGB product, forward and adjoint, at the largest batch): what
      the step would take if nothing else cost anything, the ceiling of (b) on this machine.
`--backward both` also times the searches with autograd's own layer backward (the reference
path, `rls_core.generator.reference_backward`) beside the hand-written one that `rls` uses.
Measure with nothing else running (a background training run halves these figures).
Figures, not assertions: docs/performance.md holds the targets and the measured values.

Old code: the script only needs GeneratorConfig, the searches and the training loop's
iteration, so `--widths` / `--latent` / `--mapping-layers` describe a generator explicitly
and the same script can time an earlier commit (PYTHONPATH=<checkout>).
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry


def matmul_peak(dtype: torch.dtype, device: str = "cpu", n: int = 2048, seconds: float = 2.0) -> float:
    """GFLOP/s of an n x n x n matmul in `dtype`, best of repeated runs for `seconds`."""
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    a = torch.randn(n, n, device=dev).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)
    a @ b
    sync()
    best, t_end = 0.0, time.perf_counter() + seconds
    while best == 0.0 or time.perf_counter() < t_end:  # at least one timed run
        t = time.perf_counter()
        a @ b
        sync()
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t) / 1e9)
    return best


def bf16_is_native(device: str) -> bool:
    try:
        from rls_core.accel import native_bf16
    except ImportError:  # code from before the accel switch
        return torch.device(device).type == "cuda"
    return native_bf16(device)


class FlopCount(TorchDispatchMode):
    """FLOPs of every op run inside it, by torch.utils.flop_counter's formulas (convolutions,
    their backward, matmuls). FlopCounterMode itself also tracks modules, which fails on the
    training loop's frozen-D passes; the counts are the same."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def malloc_tuning() -> str:
    """Apply rls_core.cpu_alloc's tuning as `rls` does (searches via load_model, training
    via train()); 'absent' on code from before it. RLS_MALLOC_TUNING=0 gives glibc's defaults."""
    import rls_core

    try:
        from rls_core import cpu_alloc
    except ImportError:
        return "absent"
    if Path(cpu_alloc.__file__).parent != Path(rls_core.__file__).parent:
        return "absent"  # an editable install's finder supplied it to an older checkout
    return "on" if cpu_alloc.reuse_freed_memory() else "off"


def generator_config(args, name: Optional[str]):
    from rls_core.generator import GeneratorConfig

    if args.widths:
        ch = tuple(int(c) for c in args.widths.split(","))
        return GeneratorConfig(args.resolution, args.channels, args.latent, args.latent, args.mapping_layers, ch)
    return GeneratorConfig.preset(name, args.resolution, args.channels)


def random_model(cfg, accel: str, device: str):
    """A randomly initialised generator with a quickly fitted prior: same cost per step as a
    trained one of the same shape."""
    from rls_core.bundle import ModelBundle, save_bundle, set_prior
    from rls_core.generator import Generator
    from rls_core.priors import fit_prior

    torch.manual_seed(0)
    G = Generator(cfg).eval()
    G.estimate_w_avg(2000)
    stats, flow = fit_prior(G.mapping, cfg.z_dim, n_samples=2000, flow_epochs=1, progress=False)
    path = Path(tempfile.mkdtemp()) / "bench.h5"
    save_bundle(set_prior(ModelBundle.from_generator(G, [f"c{i}" for i in range(cfg.img_channels)]), stats, flow),
                path)
    return _load(path, device, accel)


def _load(model, device: str, accel: str):
    from rls_core.model import load_model

    if accel == "none":
        return load_model(model, device)  # also works on code from before the accel switch
    return load_model(model, device, accel=accel)


def tile_seeds(y: torch.Tensor) -> list:
    """One seed per tile, as the searches require (the timings do not depend on them)."""
    return list(range(y.shape[0]))


def run_search(search, y: torch.Tensor, steps: int):
    """`search.run` with per-tile seeds (older code took one `seed` keyword instead)."""
    if "seeds" in inspect.signature(search.run).parameters:
        return search.run(y, tile_seeds(y), steps=steps)
    return search.run(y, steps=steps)


def search_step_flops(search, y: torch.Tensor) -> float:
    """Counted FLOPs per tile of one step, on autograd's layer backward (the reference path's
    arithmetic: what "% fp32 peak" credits, whichever path is timed)."""
    with backward_context("reference"), FlopCount() as fc:
        run_search(search, y, 1)
    return fc.total / y.shape[0]


def time_search(search, y: torch.Tensor, steps: int) -> Tuple[float, float]:
    """(seconds per step, seconds of per-search setup) after a warm-up run (which also triggers
    any compilation). A 1-step search is timed too and taken off, so the per-step figure leaves
    out what a search does once (noise draws, optimiser, final scoring): a 500-step search
    spreads that over 500 steps, a 5-step timing would not."""
    def timed(n: int) -> float:
        if y.device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        run_search(search, y, n)
        if y.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    run_search(search, y, 2)
    one = timed(1)
    many = timed(steps + 1)
    per_step = (many - one) / steps
    if per_step <= 0:  # timing noise larger than the steps (tiny models): no setup split
        per_step = many / (steps + 1)
    return per_step, max(one - per_step, 0.0)


def conv_floor(G, batch: int, device: str, reps: int = 5) -> float:
    """Seconds per step of the synthesis network's convolutions alone at `batch`: each layer's
    3x3 (or transposed 3x3 + 4x4 FIR) convolution and the ToRGB product, forward and adjoint
    (the input gradient that a search's backward computes), on random channels-last tensors of
    the layer's shapes. Everything else in a step (modulation, noise, bias, activation, their
    gradients, the priors, the optimiser) is left out, so this bounds the step from below."""
    import torch.nn.functional as F

    syn = G.synthesis
    cl = torch.channels_last
    ops = []
    for layer in syn.layers():
        out_ch, in_ch = layer.weight.shape[:2]
        r = layer.resolution
        w = layer.weight.detach()
        x = torch.randn(batch, in_ch, r // 2 if layer.up else r, r // 2 if layer.up else r,
                        device=device).contiguous(memory_format=cl)
        if layer.up:
            wt = w.transpose(0, 1)
            fir = torch.full((out_ch, 1, 4, 4), 1 / 16, device=device)
            y = F.conv_transpose2d(x, wt, stride=2)
            g = torch.randn(batch, out_ch, r, r, device=device).contiguous(memory_format=cl)
            ops += [lambda x=x, wt=wt: F.conv_transpose2d(x, wt, stride=2),
                    lambda y=y, f=fir, c=out_ch: F.conv2d(y, f, padding=1, groups=c),
                    lambda g=g, f=fir, c=out_ch: F.conv2d(g, f, padding=2, groups=c),
                    lambda y=y, wt=wt: F.conv2d(y, wt, stride=2)]
        else:
            g = torch.randn(batch, out_ch, r, r, device=device).contiguous(memory_format=cl)
            ops += [lambda x=x, w=w: F.conv2d(x, w, padding=1),
                    lambda g=g, w=w: F.conv_transpose2d(g, w, padding=1)]
    for res in syn.block_resolutions:  # ToRGB: a per-sample (B, H*W, C) x (B, C, img) product
        c = getattr(syn, f"b{res}").torgb.weight.shape[1]
        a = torch.randn(batch, res * res, c, device=device)
        wr = torch.randn(batch, c, syn.cfg.img_channels, device=device)
        gi = torch.randn(batch, res * res, syn.cfg.img_channels, device=device)
        ops += [lambda a=a, wr=wr: torch.bmm(a, wr),
                lambda gi=gi, wr=wr: torch.bmm(gi, wr.transpose(1, 2))]
    with torch.no_grad():
        for f in ops:
            f()
        best = float("inf")
        for _ in range(reps):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            for f in ops:
                f()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
    return best


def backward_context(mode: str):
    """The context that selects a layer backward path (see `backward_modes`)."""
    if mode == "reference":
        try:
            from rls_core.generator import reference_backward
        except ImportError:  # older code: autograd's is the only path
            return contextlib.nullcontext()
        return reference_backward()
    return contextlib.nullcontext()


def backward_modes(asked: str) -> List[str]:
    """Layer backward paths to time: 'frozen' (what `rls` uses), 'reference' (autograd's), or
    both. Code from before the hand-written backward only has the reference."""
    try:
        from rls_core.generator import reference_backward  # noqa: F401
    except ImportError:
        return ["reference"]
    return ["frozen", "reference"] if asked == "both" else [asked]


def training_iteration(gcfg, batch: int, iters: int, device: str, accel: str = "none",
                       fakes: Optional[str] = None) -> Dict[str, float]:
    """Seconds and counted FLOPs of one training iteration (R1 amortised over 16); `fakes` as
    `rls train --fakes` (None: the default)."""
    from rls_core.generator import Generator
    from rls_core.train import loop
    from rls_core.train.augment import AugmentConfig
    from rls_core.train.discriminator import Discriminator, DiscriminatorConfig

    torch.manual_seed(0)
    kw = {"fakes": fakes} if fakes else {}
    if accel in ("bf16", "auto"):  # as `rls train --accel` (training has no compile mode)
        from rls_core.accel import resolve_accel

        kw["accel"] = resolve_accel(accel, device)
    cfg = loop.TrainConfig(batch=batch, **kw)
    dev = torch.device(device)
    G = Generator(gcfg).to(dev).train()
    D = Discriminator(DiscriminatorConfig(gcfg.resolution, gcfg.img_channels, gcfg.channels)).to(dev).train()
    import copy

    st = loop._State(G, D, copy.deepcopy(G).eval().requires_grad_(False),
                     loop._make_opt(G, cfg, None), loop._make_opt(D, cfg, cfg.r1_interval),
                     pl_mean=torch.zeros([], device=dev))
    real = torch.rand(batch, gcfg.img_channels, gcfg.resolution, gcfg.resolution, device=dev) * 2 - 1
    aug = AugmentConfig(p=cfg.augment_p)

    def run(with_r1: bool) -> float:
        st.iteration = 0 if with_r1 else 1
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        loop._iteration(st, cfg, real, aug)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    if dev.type == "cpu":
        malloc_tuning()  # as `rls train` does
    flush = dev.type == "cpu" and torch.set_flush_denormal(True)  # as `rls train` does (searches do not)
    run(True)
    plain = min(run(False) for _ in range(iters))
    with_r1 = min(run(True) for _ in range(max(1, iters // 3)))
    flops = {}
    for r1 in (False, True):
        st.iteration = 0 if r1 else 1
        with FlopCount() as fc:
            loop._iteration(st, cfg, real, aug)
        flops[r1] = fc.total
    if flush:
        torch.set_flush_denormal(False)
    k = cfg.r1_interval
    sec = plain + (with_r1 - plain) / k
    return {"s_per_iter": sec, "images_per_s": batch / sec,
            "flops_per_iter": flops[False] + (flops[True] - flops[False]) / k}


def train_fakes(asked: str) -> List[Optional[str]]:
    """The `--fakes` rows to time: the checkout's own choices (a checkout from before the option
    only has fresh fakes, timed as None)."""
    try:
        from rls_core.train import FAKES
    except ImportError:
        return [None]
    return list(FAKES) if asked == "all" else [asked]


def main(argv: Optional[List[str]] = None) -> Dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=None,
                    help="shipped model name or bundle to time (repeatable; default: translocation)")
    ap.add_argument("--preset", action="append", default=None,
                    help="also time a randomly initialised generator of this preset (repeatable; "
                         "default: standard)")
    ap.add_argument("--widths", default=None, help="explicit synthesis widths 4..R px, e.g. 192,192,128,64,32,16 "
                    "(with --latent, --mapping-layers; replaces --preset)")
    ap.add_argument("--latent", type=int, default=512)
    ap.add_argument("--mapping-layers", type=int, default=8)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--channels", type=int, default=2, help="image channels of preset/width models")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--accel", default="none", help="accel mode (rls_core.accel; default none) of the searches and, "
                    "where it is bf16 or auto, of the training iteration (`rls train --accel`)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--factor", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5, help="timed search steps per batch size")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 64])
    ap.add_argument("--train-batch", type=int, default=16)
    ap.add_argument("--train-iters", type=int, default=3, help="timed training iterations (best of)")
    ap.add_argument("--no-train", action="store_true", help="skip the training-iteration figures")
    ap.add_argument("--fakes", default="all",
                    help="training rows to time, as `rls train --fakes`: shared, fresh, or all (default: all; "
                         "the first printed is rls train's default)")
    ap.add_argument("--backward", default="frozen", choices=("frozen", "reference", "both"),
                    help="search rows: the hand-written layer backward that rls uses (frozen), autograd's "
                         "own (reference), or both")
    ap.add_argument("--conv-floor", action="store_true",
                    help="also time the step's convolutions alone at the largest batch (the step's floor)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    from rls_core.operators import make_operator
    from rls_core.search import make_search

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cpu":
        import numpy as np

        np.finfo(np.float32), np.finfo(np.float64)  # cache numpy's limits before flushing denormals
    threads = torch.get_num_threads()
    big = 8192 if torch.device(args.device).type == "cuda" else 2048
    peak32 = matmul_peak(torch.float32, args.device, big)
    # Without native bf16 a large bf16 matmul takes most of a minute (0.3 GFLOP/s here): time a small one.
    peak16 = matmul_peak(torch.bfloat16, args.device, big if bf16_is_native(args.device) else 512)
    tuning = malloc_tuning() if torch.device(args.device).type == "cpu" else "n/a"
    print(f"machine limit on {threads} thread(s): fp32 matmul {peak32:.0f} GFLOP/s, "
          f"bf16 matmul {peak16:.0f} GFLOP/s ({args.device}, torch {torch.__version__}); "
          f"malloc tuning {tuning}")
    out: Dict = {"threads": threads, "device": args.device, "peak_fp32_gflops": peak32,
                 "peak_bf16_gflops": peak16, "accel": args.accel, "malloc_tuning": tuning, "models": []}

    targets = []
    if args.widths:
        targets.append(("widths " + args.widths, generator_config(args, None)))
    else:
        for name in (args.model if args.model is not None else ["translocation"]):
            targets.append((name, None))
        for name in (args.preset if args.preset is not None else ["standard"]):
            targets.append((f"{name} preset (random init)", generator_config(args, name)))

    for label, gcfg in targets:
        m = random_model(gcfg, args.accel, args.device) if gcfg is not None else _load(label, args.device, args.accel)
        gcfg = m.cfg
        op = make_operator("bicubic", args.factor).to(m.device)
        search = make_search("rls", m, op)
        t = m.resolution // args.factor
        C = gcfg.img_channels
        nparam = sum(p.numel() for p in m.G.parameters())
        y1 = torch.rand(2, C, t, t, device=m.device) * 0.5
        flops = search_step_flops(search, y1)
        print(f"\n{label}: {m.resolution} px, {C} ch, z/w {gcfg.z_dim}, mapping {gcfg.mapping_layers}, "
              f"widths {list(gcfg.channels)}, {nparam / 1e6:.2f} M params; accel {args.accel}")
        print(f"  RLS search step, x{args.factor}: {flops / 1e9:.3f} GFLOP per tile (counted)")
        modes = backward_modes(args.backward)
        print(f"  {'batch':>6} {'ms/tile/step':>13} {'tiles/s (500 steps)':>20} {'GFLOP/s':>9} {'% fp32 peak':>12}"
              + ("  backward" if len(modes) > 1 else ""))
        rows = []
        for b in args.batches:
            y = torch.rand(b, C, t, t, device=m.device) * 0.5
            for mode in modes:
                with backward_context(mode):
                    sec, setup = time_search(search, y, args.steps)
                ms_tile = 1000 * sec / b
                rate = flops / (ms_tile / 1000) / 1e9
                tiles_s = b / (setup + sec * 500)
                rows.append({"batch": b, "backward": mode, "ms_per_tile_step": ms_tile, "setup_s": setup,
                             "tiles_per_s_500": tiles_s, "gflops": rate, "frac_fp32_peak": rate / peak32})
                print(f"  {b:>6} {ms_tile:>13.2f} {tiles_s:>20.3f} {rate:>9.1f} {100 * rate / peak32:>11.1f}%"
                      + (f"  {mode}" if len(modes) > 1 else ""))
        rec = {"label": label, "config": gcfg.to_dict(), "params": nparam, "gflop_per_tile_step": flops / 1e9,
               "search": rows}
        if args.conv_floor:
            b = max(args.batches)
            ms_tile = 1000 * conv_floor(m.G, b, args.device) / b
            rate = flops / (ms_tile / 1000) / 1e9
            rec["conv_floor"] = {"batch": b, "ms_per_tile_step": ms_tile, "frac_fp32_peak_if_free": rate / peak32}
            print(f"  convolutions alone (batch {b}): {ms_tile:.2f} ms per tile; the step at "
                  f"{100 * rate / peak32:.1f}% fp32 peak if nothing else took time")
        for fakes in ([] if args.no_train else train_fakes(args.fakes)):
            tr = training_iteration(gcfg, args.train_batch, args.train_iters, args.device, args.accel, fakes)
            rate = tr["flops_per_iter"] / tr["s_per_iter"] / 1e9
            tr.update({"gflops": rate, "frac_fp32_peak": rate / peak32, "fakes": fakes or "fresh"})
            rec.setdefault("train", tr)  # the first row: the default of `rls train`
            rec.setdefault("train_rows", []).append(tr)
            print(f"  training iteration (batch {args.train_batch}, D mirrors G, R1/16, {tr['fakes']} fakes): "
                  f"{tr['s_per_iter']:.3f} s, {tr['images_per_s']:.2f} images/s, "
                  f"{tr['flops_per_iter'] / 1e9:.1f} GFLOP, {rate:.1f} GFLOP/s = {100 * rate / peak32:.1f}% fp32 peak")
        out["models"].append(rec)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return out


if __name__ == "__main__":
    main()

"""Where a search step's time goes: every tensor operation of a few RLS steps, timed where it runs.

    python benchmarks/search_step_ops.py                          # shipped default model, batch 32
    python benchmarks/search_step_ops.py --backward reference     # autograd's own layer backward
    python benchmarks/search_step_ops.py --model golgi --batch 8 --top 40

Each aten operation (forward and backward) is timed by a dispatch hook, so the figures are the
operation's time inside the step, with the step's own cache state, and they add up to the step
(the hook's overhead is printed beside them). torch.profiler, by contrast, doubled the big
operations' times on this project's CPUs. Prints the step time, the operations per step, the
time per activation resolution (operations on a (batch, C, r, r) tensor) and the costliest
operations with their shapes. Per-search setup (noise draws, optimiser, final scoring) is
left out: a 1-step search is timed the same way and taken off, operation by operation.
Measure with nothing else running. See docs/performance.md.
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generator_speed import _load, backward_context, malloc_tuning, run_search  # noqa: E402


class OpTimer(TorchDispatchMode):
    """Sums the wall time of every aten call by (op name, shapes of its first two tensor args)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: Dict[tuple, float] = collections.defaultdict(float)
        self.calls: Dict[tuple, int] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        t = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        dt = time.perf_counter() - t
        shapes = tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor))[:2]
        key = (func.overloadpacket.__name__, shapes)
        self.seconds[key] += dt
        self.calls[key] += 1
        return out


def resolution_of(shapes: tuple, batch: int) -> Optional[int]:
    """The activation resolution an op works at: that of its first (batch, C, r, r) argument,
    odd sizes (the transposed convolutions' r + 1) folded onto r."""
    for s in shapes:
        if len(s) == 4 and s[0] == batch and s[2] == s[3] and s[2] >= 4:
            return s[2] - (s[2] % 2)
    return None


def main(argv: Optional[List[str]] = None) -> Dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="translocation", help="shipped model name or bundle (default: translocation)")
    ap.add_argument("--batch", type=int, default=32, help="tiles per search (default: 32, the product's default)")
    ap.add_argument("--factor", type=int, default=16)
    ap.add_argument("--steps", type=int, default=8, help="timed search steps")
    ap.add_argument("--backward", default="frozen", choices=("frozen", "reference"),
                    help="the layer backward: hand-written (what rls uses) or autograd's own")
    ap.add_argument("--top", type=int, default=25, help="operations to list")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    args = ap.parse_args(argv)

    from rls_core.operators import make_operator
    from rls_core.search import make_search

    if args.threads:
        torch.set_num_threads(args.threads)
    malloc_tuning()
    m = _load(args.model, "cpu", "none")
    search = make_search("rls", m, make_operator("bicubic", args.factor))
    t = m.resolution // args.factor
    y = torch.rand(args.batch, m.cfg.img_channels, t, t) * 0.5
    n = args.steps
    with backward_context(args.backward):
        run_search(search, y, 2)  # warm-up
        t0 = time.perf_counter()
        run_search(search, y, 1)
        t1 = time.perf_counter()
        run_search(search, y, n + 1)
        plain = (time.perf_counter() - t1 - (t1 - t0)) / n
        once, timer = OpTimer(), OpTimer()
        with once:
            run_search(search, y, 1)
        with timer:
            t0 = time.perf_counter()
            run_search(search, y, n + 1)
            hooked = (time.perf_counter() - t0) / (n + 1)
    for key, sec in once.seconds.items():  # what the 1-step search did: setup + one step
        timer.seconds[key] -= sec
        timer.calls[key] -= once.calls[key]
    total = sum(timer.seconds.values()) / n
    print(f"{args.model}, batch {args.batch}, x{args.factor}, {args.backward} backward, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"  step: {1000 * plain:.1f} ms ({1000 * plain / args.batch:.2f} ms per tile); with the timing hook "
          f"{1000 * hooked:.1f} ms (setup included); operations {1000 * total:.1f} ms, "
          f"{sum(timer.calls.values()) / n:.0f} per step")
    by_res: Dict[str, float] = collections.defaultdict(float)
    for (op, shapes), sec in timer.seconds.items():
        r = resolution_of(shapes, args.batch)
        by_res[f"{r} px" if r else "other (latent, priors, ToRGB products, optimiser)"] += sec / n
    print("  time per activation resolution:")
    for k, sec in sorted(by_res.items(), key=lambda kv: -kv[1]):
        print(f"    {k:>52s} {1000 * sec:7.1f} ms  {100 * sec / total:5.1f} %")
    print("  costliest operations (ms per step, calls per step, op, shapes):")
    rows = sorted(timer.seconds.items(), key=lambda kv: -kv[1])
    for (op, shapes), sec in rows[:args.top]:
        print(f"    {1000 * sec / n:7.2f}  x{round(timer.calls[(op, shapes)] / n):<3d} {op:24s} {shapes}")
    return {"step_s": plain, "ops_s": total, "by_resolution_s": dict(by_res),
            "ops": [{"op": op, "shapes": shapes, "s_per_step": sec / n, "calls_per_step": timer.calls[(op, shapes)] / n}
                    for (op, shapes), sec in rows]}


if __name__ == "__main__":
    main()

"""Shared parts of the same-run A/B training benchmarks (bf16_training.py, fakes_training.py):
the common command-line options and one short `rls train` run whose log comes back as rows."""
from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Dict, List, Optional


def add_run_arguments(ap: argparse.ArgumentParser, iters: int) -> argparse.ArgumentParser:
    """Options of the run both arms share (data, model size, length, device)."""
    ap.add_argument("data", help="training fields (as for rls train)")
    ap.add_argument("--channels", default="DNA,NFkB")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--iters", type=int, default=iters)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--log-every", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return ap


def train_run(args: argparse.Namespace, outdir: Path, **settings) -> List[Dict[str, Optional[float]]]:
    """One run in `outdir` (no prior fit, no snapshots, no checkpoints) with `settings` on top
    of the shared options; returns its train_log.csv rows as floats."""
    from rls_core.train.loop import TrainConfig, train

    base = dict(data_dir=args.data, outdir=str(outdir), name="m", channels=args.channels.split(","),
                resolution=args.resolution, preset=args.preset, iters=args.iters, batch=args.batch,
                seed=0, fit_prior_samples=0, snapshot_every=10 ** 9, checkpoint_every=10 ** 9,
                log_every=args.log_every, device=args.device, threads=args.threads,
                progress=args.progress)
    train(TrainConfig(**{**base, **settings}))
    with open(outdir / "train_log.csv", newline="") as fh:
        return [{k: float(v) if v else None for k, v in r.items()} for r in csv.DictReader(fh)]

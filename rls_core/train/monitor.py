"""Realism of the generators during training, and the best snapshot so far.

A GAN's last iteration is rarely its best: on our CPU campaign the raw G's samples swung
between SWD 68 and 203 from one checkpoint to the next (docs/models.md, chunk 5). So, as
NVlabs' stylegan2-ada measures FID at every snapshot against the training set, `rls train
--metrics-every N` measures the sliced Wasserstein distance (rls_core.metrics) of G's and its
EMA's samples to a fixed set of training crops, logs it to metrics.csv and keeps the better
generator of the best measurement in best.pt, which `--export best` writes into the bundle.

The measurement uses its own seeded streams (crops, latents, noise maps), so switching it on
does not change the training run itself.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from ..generator import Generator
from ..metrics import swd, swd_mean
from .data import CropSampler, FieldSet

#: crops on each side of a measurement. Measured on the chunk-5 translocation model: three
#: draws of the generated set spread 152-191 at 256 crops and 155-160 at 512, so 512 keeps
#: the draw's noise below the changes worth tracking; ~14 s per generator (standard preset,
#: 128 px, one CPU thread). Every measurement of a run uses the same crops and draws.
METRIC_CROPS = 512
METRICS_NAME = "metrics.csv"
METRICS_PLOT = "metrics.png"
BEST_NAME = "best.pt"
_COLUMNS = ["iteration", "kimg", "swd_G", "swd_G_ema", "best_iteration", "best_generator", "best_swd", "seconds"]


@dataclass
class Best:
    """The best measurement so far: which generator ("raw" or "ema"), when, and its SWD."""

    iteration: int
    generator: str
    swd: float

    def to_dict(self) -> Dict[str, Any]:
        return {"iteration": int(self.iteration), "generator": self.generator, "swd": float(self.swd)}


class RealismMonitor:
    """Measures SWD x1e3 of generated vs training crops, the same crops and draws every time."""

    def __init__(self, fields: FieldSet, resolution: int, seed: int, n: int = METRIC_CROPS) -> None:
        # (x + 1) / 2: the [0, 1] scale of benchmarks/prior_quality.py, so figures compare.
        sampler = CropSampler(fields, resolution, seed=seed)
        self.real = ((sampler.sample(n) + 1.0) * 0.5).numpy()
        self.n, self.seed = int(n), int(seed)

    @torch.no_grad()
    def samples(self, G: Generator, batch: int = 32) -> np.ndarray:
        """n samples of G (z ~ N(0, I), psi = 1, random noise maps as in training) in [0, 1],
        drawn from a private generator so the training's global RNG is untouched."""
        dev = G.w_avg.device
        gen = torch.Generator().manual_seed(self.seed)
        z = torch.randn(self.n, G.cfg.z_dim, generator=gen)
        shapes = G.synthesis.noise_shapes()
        out: List[np.ndarray] = []
        for i in range(0, self.n, batch):
            zb = z[i:i + batch]
            noise = [torch.randn(len(zb), 1, h, w, generator=gen).to(dev) for h, w in shapes]
            ws = G.mapping(zb.to(dev))[:, None].repeat(1, G.num_ws, 1)
            img = G.synthesis(ws.float(), noise=noise)
            out.append(((img.clamp(-1, 1) + 1) * 0.5).float().cpu().numpy())
        return np.concatenate(out)

    def measure(self, G: Generator) -> float:
        """SWD x1e3 (the unit prior_quality.py prints)."""
        return 1e3 * swd_mean(swd(self.real, self.samples(G), seed=self.seed))


def update_best(best: Optional[Best], iteration: int, scores: Dict[str, float]) -> Optional[Best]:
    """The new best if one of `scores` ({"raw": swd, "ema": swd}) beats `best`, else None."""
    which = min(scores, key=lambda k: scores[k])
    if best is None or scores[which] < best.swd:
        return Best(iteration, which, scores[which])
    return None


def save_best(path: Path, G: Generator, best: Best) -> Path:
    """The generator's weights with what they scored, replaced atomically."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"best": best.to_dict(),
                "G": {k: v.detach().cpu().clone() for k, v in G.state_dict().items()}}, tmp)
    os.replace(tmp, path)
    return path


def load_best(path: Path) -> Dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def append_csv_row(path: Path, columns: List[str], row: Dict[str, Any]) -> None:
    """One row of a log CSV (header first when new); floats to 6 significant digits, missing blank.
    A file begun by an older version keeps its own header: rows follow it (so a resumed run's
    log stays rectangular), and columns it lacks are not written."""
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        with open(path) as fh:
            header = fh.readline().strip()
        if header:
            columns = header.split(",")
    with open(path, "a") as fh:
        if new:
            fh.write(",".join(columns) + "\n")
        fh.write(",".join("" if row.get(c) is None else
                          (f"{row[c]:.6g}" if isinstance(row[c], float) else str(row[c])) for c in columns) + "\n")


def append_metrics(path: Path, row: Dict[str, Any]) -> None:
    append_csv_row(path, _COLUMNS, row)


def read_metrics(path: Path) -> List[Dict[str, str]]:
    import csv

    with open(path) as fh:
        return list(csv.DictReader(fh))


def plot_metrics(path: Path, out: Path) -> Optional[Path]:
    """SWD of G and its EMA against kimg, the best marked: the curve people look at to decide
    whether a run still improves. Returns None when there is nothing to plot yet."""
    rows = read_metrics(path)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kimg = [float(r["kimg"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for col, label in (("swd_G", "G (raw)"), ("swd_G_ema", "G_ema")):
        ax.plot(kimg, [float(r[col]) for r in rows], marker="o", ms=3, label=label)
    last = rows[-1]
    kimg_per_iteration = kimg[-1] / max(int(last["iteration"]), 1)
    best_kimg = int(last["best_iteration"]) * kimg_per_iteration
    ax.axvline(best_kimg, color="gray", ls=":", label=f"best: {last['best_generator']} at it. {last['best_iteration']}")
    ax.set_xlabel("kimg (this run)")
    ax.set_ylabel("SWD x1e3 vs training crops")
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out)
    return out

"""Measured quality of a StyleGAN2 prior: realism distance and interpretable features.

    python benchmarks/prior_quality.py                          # every shipped model, 256 crops
    python benchmarks/prior_quality.py --model golgi --n 512 --out runs/quality
    python benchmarks/prior_quality.py --model runs/translocation/checkpoint.pt  # a run in progress
    python benchmarks/prior_quality.py --model fly              # real images: data/fly/heldout

A script, not a timed test: it prints figures to be read (and, with --out, writes
prior_quality.csv and one prior_quality_<model>.png per model). For each model:

1. Real held-out crops, made exactly like training crops (random --resolution crops with
   flips / 90-degree rotations, full scale = raw / dtype max, then the bundle's per-channel
   low/high, clipped to [0, 1]). Simulated assays: fresh fields from `rls simulate`-style
   seeds (--seed, default 9000; the shipped cpu models trained on 1000 and 2000, the
   campaign on 3000 and 4000), half the crops per condition.
   Other models (e.g. `fly`): crops of the images in --heldout (default data/<name>/heldout).
   Near-empty crops are kept on both sides: the generator should reproduce them too.
2. The same number of generated crops (z ~ N(0, I), psi = 1, random noise, clipped).
3. SWD on Laplacian-pyramid 7x7 patches (rls_core.metrics; x 1e3, lower is better) of
   generated vs real, next to two calibration sets: real vs real from other fields (the
   floor: what a perfect generator would score with this many crops) and real vs those
   other fields blurred with a Gaussian of --blur px (a clearly worse reference). Folder
   models whose training folder is known also get train-fields vs held-out (domain shift).
   With --draws K, K generated and K floor sets: both sides are noisy at a few hundred
   crops, so "x times the floor" is read off the means of the draws.
4. Simulated assays only: per-cell translocation ratio / Golgi spot area (rls_core.features)
   on real crops per condition and on generated crops: medians, the KS statistic against
   the real pooled cells, and the fraction of treated-like cells (beyond the midpoint of the
   DMSO and treatment medians). Generated crops carry no condition, so the generator must
   produce both phenotypes, in about the real (50/50 conditions) proportion.

Defaults take well under 3 min per 128-px model on one CPU core.
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rls_core.features import ASSAY_FEATURES, TREATED_DIRECTION, measure_crops  # noqa: E402
from rls_core.metrics import blur, swd, swd_mean  # noqa: E402
from rls_core.simulate import ASSAYS, CONDITIONS, simulate_field  # noqa: E402
from rls_core.train.data import CropSampler, load_fields, normalize  # noqa: E402

#: default crops drawn from each simulated 512-px field (fields take ~0.5 s each); fewer per
#: field give sets of more independent crops, as a generator's samples are (--crops-per-field)
CROPS_PER_FIELD = 16
FIELD_SIZE = 512


@dataclass
class Crops:
    """(N, C, H, W) crops in [0, 1] and the condition each came from ('' = unknown)."""

    x: np.ndarray
    conditions: List[str]
    source: str


@dataclass
class Report:
    name: str
    rows: List[Tuple[str, str, str, float]] = field(default_factory=list)  # section, set, key, value

    def add(self, section: str, which: str, key: str, value: float) -> None:
        self.rows.append((section, which, key, float(value)))


# ----------------------------------------------------------------------------- models

def load_any(spec: str, device: str, generator: str = "ema"):
    """(name, LoadedModel) from a shipped name, a bundle path, or an `rls train` checkpoint.pt
    (its EMA generator, or with generator="raw" the raw G, so runs can be measured while they
    train and `rls train --export` can be chosen)."""
    from rls_core.model import LoadedModel, load_model

    p = Path(spec)
    if p.suffix == ".pt" and p.is_file():
        from rls_core.bundle import ModelBundle
        from rls_core.generator import Generator, GeneratorConfig
        from rls_core.train.loop import load_checkpoint

        ck = load_checkpoint(p)
        G = Generator(GeneratorConfig.from_dict(ck["generator_config"]))
        if generator == "raw" and "G" not in ck:
            sys.exit(f"{p} is a slim checkpoint without the raw G; give the run's checkpoint.pt")
        G.load_state_dict(ck["G_ema" if generator == "ema" else "G"])
        name = (ck["config"].get("name") or p.parent.name) + ("" if generator == "ema" else "-raw")
        prov = {"name": name, "data": ck["data"], "iterations": int(ck["iteration"])}
        bundle = ModelBundle.from_generator(G, ck["data"]["channels"], ck["data"]["normalization"], prov)
        return f"{name}@{int(ck['iteration'])}", LoadedModel(bundle, device)
    m = load_model(spec, device)
    return m.name, m


def base_name(name: str) -> str:
    return name.split("@")[0]


def infer_assay(name: str, model) -> Optional[str]:
    """The simulated assay a model was trained on: by name, else by its channel names."""
    n = base_name(name)
    if n in ASSAYS and tuple(model.channel_names) == ASSAYS[n]:
        return n
    sim = (model.bundle.provenance.get("data") or {}).get("simulation") or {}
    if sim.get("assay") in ASSAYS:
        return sim["assay"]
    for assay, chans in ASSAYS.items():
        if tuple(model.channel_names) == chans:
            return assay
    return None


def training_seed(model) -> Optional[int]:
    sim = (model.bundle.provenance.get("data") or {}).get("simulation") or {}
    return sim.get("seed")


# ----------------------------------------------------------------------------- crops

def _field_seed(seed: int, cond_index: int, site: int) -> int:
    """Same derivation as rls_core.simulate.write_dataset, so --seed S == `rls simulate --seed S`."""
    return int(np.random.SeedSequence([int(seed), cond_index, site]).generate_state(1)[0])


def _random_crops(field01: np.ndarray, k: int, res: int, rng: np.random.Generator) -> List[np.ndarray]:
    """k random crops with the trainer's augmentation (random 90-degree turn and flip)."""
    out = []
    _, h, w = field01.shape
    for _ in range(k):
        y, x = int(rng.integers(0, h - res + 1)), int(rng.integers(0, w - res + 1))
        c = np.rot90(field01[:, y:y + res, x:x + res], int(rng.integers(0, 4)), axes=(1, 2))
        if rng.integers(0, 2):
            c = c[:, :, ::-1]
        out.append(np.ascontiguousarray(c))
    return out


def simulated_crops(assay: str, normalization, n: int, res: int, seed: int,
                    per_field: int = CROPS_PER_FIELD) -> Crops:
    """n crops of fresh simulated fields, half per condition, normalised like training."""
    conds = CONDITIONS[assay]
    rng = np.random.default_rng([seed, 1])
    xs: List[np.ndarray] = []
    labels: List[str] = []
    for ci, cond in enumerate(conds):
        want = n // len(conds) + (1 if ci < n % len(conds) else 0)
        site = 0
        while want > 0:
            site += 1
            f = simulate_field(assay, cond, _field_seed(seed, ci, site), size=max(FIELD_SIZE, res))
            full = np.stack([f.channels[c] for c in ASSAYS[assay]]).astype(np.float32) / 65535.0
            field01 = (normalize(full, normalization) + 1.0) * 0.5
            k = min(want, per_field)
            xs += _random_crops(field01, k, res, rng)
            labels += [cond] * k
            want -= k
    return Crops(np.stack(xs).astype(np.float32), labels,
                 f"simulated {assay}, seed {seed}, {site} fields per condition, <= {per_field} crops each")


def folder_crops(folder: Path, model, n: int, seed: int) -> Crops:
    """n training-style crops (rls_core.train.data.CropSampler) of the fields in a folder."""
    fs = load_fields(folder, model.channel_names, crop=model.resolution,
                     normalization=model.bundle.normalization)
    x = CropSampler(fs, model.resolution, seed=seed).sample(n).numpy()
    nf = len(fs.fields)
    return Crops((x + 1.0) * 0.5, [""] * n, f"{folder} ({nf} field{'s' if nf != 1 else ''}), crop seed {seed}")


@torch.no_grad()
def generated_crops(model, n: int, seed: int, batch: int = 32) -> np.ndarray:
    """n samples z ~ N(0, I), psi = 1, random noise maps (as in training), in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, model.cfg.z_dim, generator=gen)
    torch.manual_seed(seed)  # noise_mode="random" draws from the global generator
    out = []
    for i in range(0, n, batch):
        img = model.G(z[i:i + batch].to(model.device), noise_mode="random")
        out.append(((img.clamp(-1, 1) + 1) * 0.5).float().cpu().numpy())
    return np.concatenate(out)


# ----------------------------------------------------------------------------- evaluation

def eval_swd(rep: Report, real: Crops, sets: Dict[str, np.ndarray], seed: int) -> Dict[str, float]:
    print(f"  SWD x1e3 (Laplacian pyramid, 7x7 patches; lower is better) vs {real.source}")
    header, means = None, {}
    for which, x in sets.items():
        d = swd(real.x, x, seed=seed)
        if header is None:
            header = list(d)
            print("    " + f"{'':<28}" + "".join(f"{r:>9}" for r in header) + f"{'mean':>9}")
        m = swd_mean(d)
        print("    " + f"{which:<28}" + "".join(f"{v * 1e3:>9.2f}" for v in d.values()) + f"{m * 1e3:>9.2f}")
        for r, v in d.items():
            rep.add("swd_x1e3", which, str(r), v * 1e3)
        rep.add("swd_x1e3", which, "mean", m * 1e3)
        means[which] = m * 1e3
    return means


def _spread(vals: List[float]) -> str:
    v = np.array(vals)
    return f"mean {v.mean():.2f}, sd {v.std(ddof=1):.2f}, range {v.min():.2f}-{v.max():.2f}"


def eval_draws(rep: Report, real: Crops, model, first: float, first_floor: float, other_real,
               args: argparse.Namespace) -> None:
    """SWD of further generated sets (other z and noise) and of further real sets (other fields
    or crops, from `other_real(k)`): how much of a difference one draw of --n crops can resolve.
    The floor is the noisier side: at 256 crops, 8 floor draws against one real set spread 21-52
    where 8 generated draws spread 51-57, and fewer crops per field do not narrow it
    (docs/models.md); so the ratio to the floor is read off the means of the draws."""
    gen, flo = [first], [first_floor]  # the sets eval_swd measured
    for k in range(1, args.draws):
        gen.append(swd_mean(swd(real.x, generated_crops(model, args.n, args.seed + 7919 * k), seed=args.seed)) * 1e3)
        flo.append(swd_mean(swd(real.x, other_real(k).x, seed=args.seed)) * 1e3)
    print(f"    generated, {len(gen)} draws: {_spread(gen)}")
    print(f"    real vs real, {len(flo)} draws: {_spread(flo)}")
    ratio = float(np.mean(gen) / np.mean(flo))
    print(f"    generated / floor (means of the draws): {ratio:.2f}x")
    for k, (g, f) in enumerate(zip(gen, flo)):
        rep.add("swd_x1e3", f"generated draw {k}", "mean", float(g))
        rep.add("swd_x1e3", f"floor draw {k}", "mean", float(f))
    rep.add("swd_x1e3", "generated draws", "sd", float(np.std(gen, ddof=1)))
    rep.add("swd_x1e3", "floor draws", "sd", float(np.std(flo, ddof=1)))
    rep.add("swd_x1e3", "generated / floor", "ratio of means", ratio)


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import ks_2samp

    return float(ks_2samp(a, b).statistic) if len(a) and len(b) else math.nan


def _median(a: np.ndarray) -> float:
    return float(np.median(a)) if len(a) else math.nan


def eval_features(rep: Report, assay: str, real: Crops, floor: Crops, fake: np.ndarray
                  ) -> Dict[str, np.ndarray]:
    feat = ASSAY_FEATURES[assay]
    ctrl, treat = CONDITIONS[assay]
    cond = np.array(real.conditions)
    vals = {f"real {ctrl}": measure_crops(assay, real.x[cond == ctrl]),
            f"real {treat}": measure_crops(assay, real.x[cond == treat])}
    vals["real pooled"] = np.concatenate(list(vals.values()))
    vals["real, other fields"] = measure_crops(assay, floor.x)
    vals["generated"] = measure_crops(assay, fake)
    thr = 0.5 * (_median(vals[f"real {ctrl}"]) + _median(vals[f"real {treat}"]))
    sign = TREATED_DIRECTION[assay]
    print(f"  {feat} per cell (treated-like: {'>' if sign > 0 else '<'} {thr:.3g}, midway between "
          f"the {ctrl} and {treat} medians)")
    print(f"    {'':<22}{'cells':>7}{'median':>10}{'q10':>10}{'q90':>10}{'KS vs pooled':>14}{'treated-like':>14}")
    pooled = vals["real pooled"]
    for which, v in vals.items():
        tl = float(np.mean(sign * (v - thr) > 0)) if len(v) else math.nan
        ks = _ks(v, pooled) if which in ("generated", "real, other fields") else math.nan
        q10, q90 = (np.percentile(v, [10, 90]) if len(v) else (math.nan, math.nan))
        print(f"    {which:<22}{len(v):>7}{_median(v):>10.3g}{q10:>10.3g}{q90:>10.3g}"
              f"{'' if math.isnan(ks) else f'{ks:.3f}':>14}{tl:>14.1%}")
        sec = f"feature:{feat}"
        rep.add(sec, which, "n_cells", len(v))
        rep.add(sec, which, "median", _median(v))
        rep.add(sec, which, "treated_like_fraction", tl)
        if not math.isnan(ks):
            rep.add(sec, which, "ks_vs_real_pooled", ks)
    rep.add(f"feature:{feat}", "all", "treated_like_threshold", thr)
    return vals


def save_figure(path: Path, name: str, real: Crops, fake: np.ndarray, feats: Optional[Dict[str, np.ndarray]],
                assay: Optional[str], k: int = 16) -> None:
    """Sample grid (generated | real, channel 0 blue, 1 green, 2 red) and feature histograms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rls_core.train.loop import composite_rgb

    def grid(x: np.ndarray) -> np.ndarray:
        rgb = composite_rgb(x[:k])
        cols = int(math.ceil(math.sqrt(len(rgb))))
        rows = int(math.ceil(len(rgb) / cols))
        h, w = rgb.shape[1:3]
        canvas = np.ones((rows * (h + 2) + 2, cols * (w + 2) + 2, 3), np.float32)
        for i, im in enumerate(rgb):
            r, c = divmod(i, cols)
            canvas[2 + r * (h + 2):2 + r * (h + 2) + h, 2 + c * (w + 2):2 + c * (w + 2) + w] = im
        return canvas

    # a real sample that mixes the conditions instead of showing one condition first
    order = np.random.default_rng(0).permutation(len(real.x))
    if feats and not any(len(v) for v in feats.values()):
        feats = None  # no cell found in any crop (e.g. a model of small crops): no histogram to draw
    ncol = 3 if feats else 2
    fig, ax = plt.subplots(1, ncol, figsize=(5.2 * ncol, 5.4))
    ax[0].imshow(grid(fake))
    ax[0].set_title(f"{name}: generated")
    ax[1].imshow(grid(real.x[order]))
    ax[1].set_title("real held-out")
    for a in ax[:2]:
        a.axis("off")
    if feats:
        allv = np.concatenate([v for v in feats.values() if len(v)])
        log = assay == "golgi"
        lo, hi = np.percentile(allv, [0.5, 99.5])
        bins = (np.geomspace(max(lo, 1), hi, 40) if log else np.linspace(lo, hi, 40))
        ctrl, treat = CONDITIONS[assay]
        for which, style in ((f"real {ctrl}", dict(color="tab:blue", alpha=0.45)),
                             (f"real {treat}", dict(color="tab:orange", alpha=0.45)),
                             ("generated", dict(color="k", histtype="step", lw=2))):
            v = feats[which]
            if len(v):
                ax[2].hist(v, bins=bins, weights=np.full(len(v), 1.0 / len(v)),
                           label=f"{which} (n={len(v)})", **style)
        if log:
            ax[2].set_xscale("log")
        ax[2].set_xlabel(ASSAY_FEATURES[assay] + " per cell")
        ax[2].set_ylabel("fraction of cells per bin")
        ax[2].legend(fontsize=8)
        ax[2].set_title("feature distributions")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate(spec: str, args: argparse.Namespace) -> Report:
    t0 = time.perf_counter()
    name, model = load_any(spec, args.device, args.generator)
    rep = Report(name)
    res = model.resolution
    assay = None if args.heldout else infer_assay(name, model)
    print(f"\n== {name}: {res} px, channels {', '.join(model.channel_names)}, "
          f"{model.G.num_params() / 1e6:.2f} M params; {args.n} crops")
    if assay is not None:
        tseed = training_seed(model)
        if tseed is not None and args.seed <= tseed <= args.seed + args.draws:
            print(f"  warning: held-out seeds {args.seed}..{args.seed + args.draws} overlap the training data "
                  f"seed {tseed}; pick another --seed")
        real = simulated_crops(assay, model.bundle.normalization, args.n, res, args.seed, args.crops_per_field)

        def other_real(k: int) -> Crops:  # k-th set of other fields: seeds seed+1, seed+2, ...
            return simulated_crops(assay, model.bundle.normalization, args.n, res, args.seed + 1 + k,
                                   args.crops_per_field)
        floor = other_real(0)
        extra: Dict[str, np.ndarray] = {}
    else:
        folder = Path(args.heldout) if args.heldout else ROOT / "data" / base_name(name) / "heldout"
        if not folder.is_dir():
            raise SystemExit(f"{name}: channels {model.channel_names} match no simulated assay and "
                             f"{folder} does not exist; pass --heldout DIR with held-out fields")
        real = folder_crops(folder, model, args.n, args.seed)

        def other_real(k: int) -> Crops:  # other crops of the same held-out fields
            return folder_crops(folder, model, args.n, args.seed + 1 + k)
        floor = other_real(0)
        floor.source = "same held-out fields, other crops"
        extra = {}
        train_dir = (model.bundle.provenance.get("data") or {}).get("folder")
        if train_dir and Path(train_dir).is_dir() and Path(train_dir).resolve() != folder.resolve():
            extra["train fields vs held-out"] = folder_crops(Path(train_dir), model, args.n, args.seed).x
    t_real = time.perf_counter()
    fake = generated_crops(model, args.n, args.seed)
    t_gen = time.perf_counter()
    floor_key = "real, other " + ("fields" if assay else "crops")
    sets = {"generated": fake, floor_key: floor.x,
            f"real blurred (sigma {args.blur:g} px)": blur(floor.x, args.blur), **extra}
    means = eval_swd(rep, real, sets, args.seed)
    if args.draws > 1:
        eval_draws(rep, real, model, means["generated"], means[floor_key], other_real, args)
    t_swd = time.perf_counter()
    feats = eval_features(rep, assay, real, floor, fake) if assay is not None else None
    t_feat = time.perf_counter()
    if args.out:
        png = Path(args.out) / f"prior_quality_{name.replace('@', '_')}.png"
        save_figure(png, name, real, fake, feats, assay)
        print(f"  figure: {png}")
    print(f"  time: real crops {t_real - t0:.0f} s, generate {t_gen - t_real:.0f} s, SWD {t_swd - t_gen:.0f} s, "
          f"features {t_feat - t_swd:.0f} s; total {time.perf_counter() - t0:.0f} s")
    rep.add("run", "all", "n_crops", args.n)
    rep.add("run", "all", "seed", args.seed)
    rep.add("run", "all", "crops_per_field", args.crops_per_field)
    return rep


def write_csv(path: Path, reports: List[Report]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["model", "section", "set", "key", "value"])
        for r in reports:
            for sec, which, key, v in r.rows:
                w.writerow([r.name, sec, which, key, f"{v:.6g}"])


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=None,
                    help="shipped name, bundle .h5 or rls-train checkpoint.pt; repeatable "
                         "(default: every shipped model)")
    ap.add_argument("--n", type=int, default=256, help="real and generated crops per set (default: 256)")
    ap.add_argument("--seed", type=int, default=9000,
                    help="held-out simulation seed (seed+1 makes the floor set, seed+2.. its further "
                         "--draws) and sampling seed (default: 9000; the campaign's training data used "
                         "3000 and 4000, validation 8500)")
    ap.add_argument("--heldout", default=None, metavar="DIR",
                    help="folder of held-out fields for a non-simulated model (default: data/<model>/heldout)")
    ap.add_argument("--blur", type=float, default=2.0, help="sigma (px) of the 'clearly worse' reference")
    ap.add_argument("--out", default=None, metavar="DIR", help="write prior_quality.csv and PNG figures here")
    ap.add_argument("--generator", choices=("ema", "raw"), default="ema",
                    help="for a checkpoint.pt: its EMA generator or the raw G (`rls train --export`; default: ema)")
    ap.add_argument("--draws", type=int, default=1, metavar="K",
                    help="also measure K-1 further generated sets and K-1 further real sets (other fields) "
                         "and print the spread of both and the ratio of their means: what tells a real "
                         "change from the draws' noise (default: 1)")
    ap.add_argument("--crops-per-field", type=int, default=CROPS_PER_FIELD, metavar="K",
                    help="simulated assays: crops drawn from each held-out field; fewer give more "
                         "independent crops and a steadier floor, at ~0.5 s per field "
                         f"(default: {CROPS_PER_FIELD}, the figures of the training log)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.n < 2:
        ap.error("--n must be at least 2")
    if args.draws < 1:
        ap.error("--draws must be at least 1")
    if args.crops_per_field < 1:
        ap.error("--crops-per-field must be at least 1")

    specs = args.model
    if not specs:
        from rls_core.registry import list_models

        specs = list(list_models())
        if not specs:
            print("no shipped models in rls_core/models/; pass --model NAME|PATH (a bundle or a "
                  "runs/<name>/checkpoint.pt)", file=sys.stderr)
            return 2
    reports = [evaluate(s, args) for s in specs]
    if args.out:
        path = Path(args.out) / "prior_quality.csv"
        write_csv(path, reports)
        print(f"\nnumbers: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

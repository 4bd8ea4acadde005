"""The report's figures (PNG, matplotlib Agg): Fig. 5 boxplots, Fig. 6 robustness, Fig. 7
ablation, Fig. 8 samples + uncertainty, the fidelity-vs-realism curve and an example gallery.

Each function takes the evaluation results (and the rows of tables.py) and writes one PNG;
a figure without data (no objects, section skipped) says so inside the image instead of
being left out, so the report never points at a missing file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .degrade import degradation_kind

COLORS = {"HR": "#333333", "bicubic": "#8c8c8c", "plain": "#d62728", "pulse": "#ff7f0e", "brgm": "#9467bd",
          "rls": "#1f77b4", "rls-no-pw": "#17becf", "rls-no-pcross": "#2ca02c"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, wrap=True, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def _stretch_like(img: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0, 1] -> RGB for display with `ref`'s per-channel stretch (99.5th percentile,
    so dim stains stay visible and SR and HR are comparable): DNA blue, 2nd channel green, 3rd red."""
    out = np.zeros((img.shape[1], img.shape[2], 3), np.float32)
    slots = [2, 1, 0]
    for i in range(min(img.shape[0], 3)):
        hi = max(float(np.percentile(ref[i], 99.5)), 1e-6)
        out[..., slots[i]] += np.clip(img[i] / hi, 0, 1)
    return np.clip(out, 0, 1)


# ----------------------------------------------------------------------------- Fig. 5

def fig5_boxplots(res, path: Path, factors: Sequence[int], keys_by_factor: Dict[int, List[str]],
                  level: str) -> Path:
    """Per factor: the feature per condition, HR then each method; solid box = control,
    dotted box = treatment (as in the paper)."""
    plt = _plt()
    m = res.measured
    order = res.test.condition_order
    width = max(5.0, 1.1 * (1 + max(len(v) for v in keys_by_factor.values())) * len(factors) + 1.5)
    fig, axes = plt.subplots(1, max(1, len(factors)), figsize=(width, 4.0), squeeze=False)
    conds = np.asarray(res.test.conditions)
    for ax, f in zip(axes[0], factors):
        keys = ["HR"] + keys_by_factor[f]
        any_data = False
        for gi, key in enumerate(keys):
            if level == "cell":
                vals, crops = m.cell_values[key], m.cell_crops[key]
                cc = conds[crops] if len(crops) else np.asarray([])
            else:
                vals, cc = m.crop_values[key], conds
            meth = "HR" if key == "HR" else res.variants[key].variant.method
            for ci, c in enumerate(order[:2]):
                v = vals[(cc == c) & np.isfinite(vals)] if len(vals) else np.asarray([])
                pos = gi * 3 + ci
                if len(v) == 0:
                    ax.text(pos + 1, 0.5, "no\nobjects", ha="center", va="center", fontsize=6,
                            transform=ax.get_xaxis_transform())
                    continue
                any_data = True
                bp = ax.boxplot([v], positions=[pos + 1], widths=0.8, patch_artist=True, showfliers=True,
                                flierprops=dict(markersize=2, alpha=0.5))
                for box in bp["boxes"]:
                    box.set(facecolor=COLORS.get(meth, "#777777") + ("55" if ci == 0 else "18"),
                            edgecolor=COLORS.get(meth, "#777777"), linestyle="-" if ci == 0 else ":",
                            linewidth=1.4)
                for part in ("whiskers", "caps"):
                    for ln in bp[part]:
                        ln.set(color=COLORS.get(meth, "#777777"), linestyle="-" if ci == 0 else ":")
                for ln in bp["medians"]:
                    ln.set(color="black")
        ax.set_xticks([gi * 3 + 1.5 for gi in range(len(keys))])
        ax.set_xticklabels(["HR" if k == "HR" else res.variants[k].variant.label for k in keys], rotation=30,
                           ha="right", fontsize=8)
        ax.set_xlim(0, len(keys) * 3)
        ax.set_title(f"{f}x" if f else "", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        if not any_data:
            _empty(ax, f"{f}x: no objects found by the pipeline")
    axes[0][0].set_ylabel(m.label + f" (per {level})", fontsize=8)
    from matplotlib.patches import Patch

    handles = [Patch(facecolor="#bbbbbb", edgecolor="k", linestyle="-", label=f"{order[0]} (solid)")]
    if len(order) > 1:
        handles.append(Patch(facecolor="#eeeeee", edgecolor="k", linestyle=":", label=f"{order[1]} (dotted)"))
    fig.legend(handles=handles, loc="lower center", fontsize=8, ncol=2, frameon=False)
    fig.suptitle(f"Fig. 5: {res.cfg.assay} read-out by condition, HR vs SR (HR pipeline, CellProfiler)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.94))
    return _save(fig, path)


# ----------------------------------------------------------------------------- Fig. 6

def fig6_robustness(res, path: Path, rows: Dict[str, Dict[str, object]], level: Optional[str]) -> Path:
    """Accuracy and HR PSNR against the degradation level, one column per kind, one line per method."""
    plt = _plt()
    variants = list(res.sections.get("robustness", []))
    kinds = [k for k in ("noise", "saltpepper", "blur") if any(degradation_kind(v.degradation)[0] == k
                                                                for v in variants)]
    nrow = 2 if level else 1
    fig, axes = plt.subplots(nrow, max(1, len(kinds)), figsize=(3.4 * max(1, len(kinds)), 2.8 * nrow),
                             squeeze=False)
    if not kinds:
        _empty(axes[0][0], "robustness not evaluated")
        return _save(fig, path)
    names = {"noise": "Gaussian noise σ", "saltpepper": "salt-and-pepper amount", "blur": "blur σ (LR px)"}
    methods = list(dict.fromkeys(v.method for v in variants))
    hr_acc = rows.get("HR", {}).get(f"acc_{level}") if level else None
    for j, kind in enumerate(kinds):
        for meth in methods:
            pts = sorted([(degradation_kind(v.degradation)[1], v.key) for v in variants
                          if v.method == meth and degradation_kind(v.degradation)[0] in (kind, "none")])
            xs = [p[0] for p in pts]
            col = COLORS.get(meth, None)
            axes[0][j].plot(xs, [float(np.mean(res.scores[k].psnr)) for _, k in pts], "o-", color=col,
                            label=res.variants[pts[0][1]].variant.label.split(" [")[0])
            if level:
                axes[1][j].plot(xs, [100 * float(rows.get(k, {}).get(f"acc_{level}", np.nan)) for _, k in pts],
                                "o-", color=col)
        axes[0][j].set_title(names[kind], fontsize=9)
        axes[0][j].set_ylabel("HR PSNR (dB)", fontsize=8)
        axes[0][j].grid(alpha=0.3)
        if level:
            if hr_acc is not None and np.isfinite(hr_acc):
                axes[1][j].axhline(100 * hr_acc, color="k", ls="--", lw=1, label="HR")
            axes[1][j].set_ylabel(f"accuracy per {level} (%)", fontsize=8)
            axes[1][j].set_xlabel(names[kind], fontsize=8)
            axes[1][j].grid(alpha=0.3)
    for ax in axes[:, 0]:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"Fig. 6: robustness to LR degradations ({res.cfg.first_factor}x)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return _save(fig, path)


# ----------------------------------------------------------------------------- Fig. 7

def fig7_ablation(res, path: Path, rows: Dict[str, Dict[str, object]], level: Optional[str]) -> Path:
    """Bars per ablation variant: HR PSNR, realism SWD, accuracy and |Δd| vs HR."""
    plt = _plt()
    vs = res.sections.get("ablation", [])
    panels = [("HR PSNR (dB) ↑", lambda k: float(np.mean(res.scores[k].psnr))),
              ("realism SWD ×1e3 ↓", lambda k: res.scores[k].swd)]
    if level:
        panels += [(f"accuracy per {level} (%) ↑",
                    lambda k: 100 * float(rows.get(k, {}).get(f"acc_{level}", np.nan))),
                   ("|Cohen's d − HR| ↓", lambda k: abs(float(rows.get(k, {}).get(f"dd_{level}", np.nan))))]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.7 * len(panels), 3.2), squeeze=False)
    if not vs:
        _empty(axes[0][0], "ablation not evaluated")
        return _save(fig, path)
    labels = [v.label.replace("RLS ", "") if v.method != "rls" else "full RLS" for v in vs]
    for ax, (title, fn) in zip(axes[0], panels):
        vals = [fn(v.key) for v in vs]
        ax.bar(range(len(vs)), [0 if not np.isfinite(x) else x for x in vals],
               color=[COLORS.get(v.method, "#777") for v in vs])
        for i, x in enumerate(vals):
            ax.text(i, 0 if not np.isfinite(x) else x, "n/a" if not np.isfinite(x) else f"{x:.2f}",
                    ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(vs)))
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Fig. 7: ablation of the RLS priors ({res.cfg.first_factor}x)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    return _save(fig, path)


# ----------------------------------------------------------------------------- Fig. 8

def fig8_samples(res, path: Path) -> Path:
    """Rows = LR inputs: LR, ground truth, K samples, their mean and the std (uncertainty) map."""
    plt = _plt()
    key = next((v.key for v in res.sections.get("samples", [])), None)
    if key is None or key not in res.variants:
        fig, ax = plt.subplots(figsize=(4, 2))
        _empty(ax, "samples not evaluated (--samples 1 or skipped)")
        return _save(fig, path)
    r = res.variants[key]
    idx = res.sample_idx
    K = r.samples.shape[1]
    f = r.variant.factor
    lr = res.lr[(f, "none")][idx]
    ncol = K + 4
    fig = _plt().figure(figsize=(1.35 * ncol + 0.6, 1.45 * len(idx) + 0.6))
    grid = fig.add_gridspec(len(idx), ncol + 1, width_ratios=[1] * ncol + [0.08], wspace=0.08, hspace=0.12)
    vmax = max(float(r.std.mean(1).max()), 1e-6)
    im = None
    for row, i in enumerate(idx):
        gt = res.hr_u[i]
        up = np.repeat(np.repeat(lr[row], f, axis=1), f, axis=2)
        tiles = [("LR", _stretch_like(up, gt)), ("GT (HR)", _stretch_like(gt, gt))]
        tiles += [(f"sample {k + 1}", _stretch_like(r.samples[row, k], gt)) for k in range(K)]
        tiles += [("mean", _stretch_like(r.sr[row], gt))]
        for col in range(ncol):
            ax = fig.add_subplot(grid[row, col])
            if col < ncol - 1:
                title, img = tiles[col]
                ax.imshow(img, interpolation="nearest")
            else:
                title = "std (uncertainty)"
                im = ax.imshow(r.std[row].mean(0), cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
            if row == 0:
                ax.set_title(title, fontsize=7)
            if col == 0:
                ax.set_ylabel(res.test.conditions[i], fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    cax = fig.add_subplot(grid[:, ncol])
    fig.colorbar(im, cax=cax)
    cax.tick_params(labelsize=6)
    colours = ", ".join(f"{n} {c}" for n, c in zip(res.test.channel_names, ("blue", "green", "red")))
    fig.suptitle(f"Fig. 8: {K} RLS samples per LR input ({f}x; starts w̄ + 0.3·(map(z) − w̄)); {colours}",
                 fontsize=8)
    return _save(fig, path)


# ----------------------------------------------------------------------------- realism curve

def fig_realism(res, path: Path, rows: Dict[str, Dict[str, object]], level: Optional[str]) -> Path:
    """The realism knob swept: HR PSNR (fidelity) against the realism distance and the feature error."""
    plt = _plt()
    vs = res.sections.get("realism", [])
    n = 2 if level else 1
    fig, axes = plt.subplots(1, n, figsize=(4.0 * n, 3.4), squeeze=False)
    if not vs:
        _empty(axes[0][0], "realism sweep not evaluated")
        return _save(fig, path)
    ps = [float(np.mean(res.scores[v.key].psnr)) for v in vs]
    sw = [res.scores[v.key].swd for v in vs]
    axes[0][0].plot(ps, sw, "o-", color=COLORS["rls"])
    for v, x, y in zip(vs, ps, sw):
        axes[0][0].annotate(f"{v.realism:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axes[0][0].axhline(res.hr_swd, color="k", ls="--", lw=1, label="real HR (floor)")
    axes[0][0].set_xlabel("HR PSNR (dB) → more faithful", fontsize=8)
    axes[0][0].set_ylabel("realism SWD ×1e3 (lower = more realistic)", fontsize=8)
    axes[0][0].legend(fontsize=7)
    axes[0][0].grid(alpha=0.3)
    if level:
        fe = [float(rows.get(v.key, {}).get(f"median_err_{level}", np.nan)) for v in vs]
        axes[0][1].plot(ps, fe, "o-", color=COLORS["rls"])
        for v, x, y in zip(vs, ps, fe):
            if np.isfinite(y):
                axes[0][1].annotate(f"{v.realism:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        axes[0][1].set_xlabel("HR PSNR (dB)", fontsize=8)
        axes[0][1].set_ylabel(f"|median SR − HR| feature, per {level}", fontsize=8)
        axes[0][1].grid(alpha=0.3)
        if not any(np.isfinite(fe)):
            _empty(axes[0][1], "no objects: feature error undefined")
    fig.suptitle(f"Fidelity vs realism: RLS realism knob (labels) at {res.cfg.first_factor}x", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return _save(fig, path)


# ----------------------------------------------------------------------------- gallery

def fig_examples(res, path: Path, keys_by_factor: Dict[int, List[str]], n: int = 2) -> Path:
    """A few crops: LR, HR and every Table-1 method per factor (same display stretch as HR)."""
    plt = _plt()
    idx = res.sample_idx[:n] if res.sample_idx else list(range(min(n, len(res.test))))
    cols: List[tuple] = []
    for f, keys in keys_by_factor.items():
        cols.append((f"LR {f}x", ("lr", f)))
        cols += [(f"{res.variants[k].variant.label} {f}x", ("sr", k)) for k in keys]
    cols.append(("HR", ("hr", None)))
    fig, axes = plt.subplots(len(idx), len(cols), figsize=(1.3 * len(cols), 1.45 * len(idx) + 0.5), squeeze=False)
    for row, i in enumerate(idx):
        gt = res.hr_u[i]
        for col, (title, (kind, what)) in enumerate(cols):
            if kind == "lr":
                lr = res.lr[(what, "none")][i]
                im = np.repeat(np.repeat(lr, what, axis=1), what, axis=2)
            elif kind == "sr":
                im = res.variants[what].sr[i]
            else:
                im = gt
            axes[row][col].imshow(_stretch_like(im, gt), interpolation="nearest")
            axes[row][col].set_xticks([])
            axes[row][col].set_yticks([])
            if row == 0:
                axes[row][col].set_title(title, fontsize=6)
        axes[row][0].set_ylabel(res.test.conditions[i], fontsize=7)
    colours = ", ".join(f"{n} {c}" for n, c in zip(res.test.channel_names, ("blue", "green", "red")))
    fig.suptitle(f"Examples (held-out crops; {colours}; every panel with the HR crop's display range)", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return _save(fig, path)

"""Tables 1 and 2 (and the numbers behind the figures) as rows, markdown and long-format CSV rows.

Every number that appears in the report comes from these rows, and every row also goes to
results.csv, so the report and the CSV cannot disagree.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from .run_methods import Variant
from .stats import cohens_d, cross_fitted_accuracy, finite_mean, fmt, median_feature_error

Row = Dict[str, object]


def _sd(x: np.ndarray) -> float:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return float(x.std(ddof=1)) if len(x) > 1 else float("nan")


# ----------------------------------------------------------------------------- Table 1

def table1_rows(res) -> List[Row]:
    """Per factor and method: PSNR, SSIM, LR PSNR, SWD, s/tile, converged; plus the HR floor."""
    rows: List[Row] = [{"factor": "—", "method": "HR (real, held-out)", "key": "HR", "psnr": np.nan,
                        "psnr_sd": np.nan, "ssim": np.nan, "lr_psnr": np.nan, "swd": res.hr_swd,
                        "sec_per_tile": np.nan, "converged": np.nan}]
    for v in res.sections["table1"]:
        s = res.scores[v.key]
        rows.append({"factor": v.factor, "method": v.label, "key": v.key, "psnr": finite_mean(s.psnr),
                     "psnr_sd": _sd(s.psnr), "ssim": finite_mean(s.ssim), "lr_psnr": finite_mean(s.lr_psnr),
                     "swd": s.swd, "sec_per_tile": s.seconds_per_tile, "converged": s.converged})
    return rows


def table1_markdown(rows: List[Row], steps_note: str) -> str:
    out = ["| factor | method | HR PSNR (dB) ↑ | SSIM ↑ | LR consistency PSNR (dB) ↑ | realism SWD ×1e3 ↓ "
           "| s / tile | converged |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        psnr = "—" if not np.isfinite(r["psnr"]) else f"{r['psnr']:.2f} ± {fmt(r['psnr_sd'])}"
        out.append(f"| {r['factor']} | {r['method']} | {psnr} | {fmt(r['ssim'], 3)} | {fmt(r['lr_psnr'])} "
                   f"| {fmt(r['swd'])} | {fmt(r['sec_per_tile'], 2)} | {fmt(r['converged'], pct=True)}"
                   f"{'' if not np.isfinite(r['converged']) else ' %'} |")
    out.append("")
    out.append(f"HR PSNR / SSIM against the held-out HR crop (mean ± SD over crops, model units [0, 1]); LR "
               f"consistency = PSNR of D(SR) against the LR input; realism = sliced Wasserstein distance of "
               f"Laplacian-pyramid patches (rls_core.metrics) to a disjoint set of real HR crops (the HR row is "
               f"the floor: real vs real); s / tile = wall time per LR crop ({steps_note}).")
    return "\n".join(out)


# ----------------------------------------------------------------------------- biology

def _cells(res, key: str):
    m = res.measured
    conds = np.asarray(res.test.conditions)
    v, c = m.cell_values[key], m.cell_crops[key]
    return v, c, conds[c] if len(c) else np.asarray([], dtype=conds.dtype)


def _crops(res, key: str):
    m = res.measured
    return m.crop_values[key], np.arange(len(res.test.conditions)), np.asarray(res.test.conditions)


def primary_level(res) -> str:
    return "cell" if res.measured is not None and res.measured.per_cell else "image"


def biology_rows(res, keys: Sequence[str]) -> List[Row]:
    """HR + the given variant keys: SVM accuracy (per cell, per image), Cohen's d, medians, counts."""
    m = res.measured
    if m is None:
        return []
    order = res.test.condition_order
    ctrl, treat = (order[0], order[1]) if len(order) >= 2 else (order[0], None)
    levels = ["cell", "image"] if m.per_cell else ["image"]
    acc = {}
    for level in levels:
        get = _cells if level == "cell" else _crops
        hv, hc, _ = get(res, "HR")
        sv = {k: get(res, k)[0] for k in keys}
        sc = {k: get(res, k)[1] for k in keys}
        acc[level] = cross_fitted_accuracy(hv, hc, sv, sc, res.test.conditions, res.cfg.folds)
    rows: List[Row] = []
    hr_d = {}
    for key in ["HR"] + list(keys):
        row: Row = {"key": key, "method": "HR" if key == "HR" else _label(res, key)}
        for level in levels:
            get = _cells if level == "cell" else _crops
            v, _, conds = get(res, key)
            a, n = acc[level][key]
            row[f"acc_{level}"] = a
            row[f"n_{level}"] = n
            d = cohens_d(v[conds == ctrl], v[conds == treat]) if treat else float("nan")
            row[f"d_{level}"] = d
            if key == "HR":
                hr_d[level] = d
            row[f"dd_{level}"] = d - hr_d[level]
            for c in order:
                sel = v[(conds == c) & np.isfinite(v)]
                row[f"median_{level}_{c}"] = float(np.median(sel)) if len(sel) else float("nan")
                row[f"count_{level}_{c}"] = int(len(sel))
            hv, _, hconds = get(res, "HR")
            row[f"median_err_{level}"] = median_feature_error(hv, hconds, v, conds, order)
        row["no_objects_crops"] = int((m.crop_objects[key] == 0).sum() + (~np.isfinite(m.crop_objects[key])).sum())
        rows.append(row)
    return rows


def _label(res, key: str) -> str:
    return res.variants[key].variant.label if key in res.variants else key


def table2_markdown(rows_by_factor: Dict[int, List[Row]], per_cell: bool, order: Sequence[str]) -> str:
    levels = ["cell", "image"] if per_cell else ["image"]
    head = "| factor | method | " + " | ".join(
        [f"accuracy per {lv} (%) (n)" for lv in levels] + [f"Cohen's d per {lv} (Δ vs HR)" for lv in levels]
        + [f"median {order[0]} / {order[-1]}"] + ["crops without objects"]) + " |"
    out = [head, "|" + "---|" * (3 + 2 * len(levels) + 1)]
    for f, rows in rows_by_factor.items():
        for r in rows:
            cells = [f"{fmt(r[f'acc_{lv}'], pct=True)} ({r[f'n_{lv}']})" if r[f"n_{lv}"] else "no objects"
                     for lv in levels]
            cells += [("—" if not np.isfinite(r[f"d_{lv}"]) else
                       f"{r[f'd_{lv}']:.2f}" + ("" if r["key"] == "HR" else f" ({r[f'dd_{lv}']:+.2f})"))
                      for lv in levels]
            lv = levels[0]
            cells.append(f"{fmt(r[f'median_{lv}_{order[0]}'])} / {fmt(r[f'median_{lv}_{order[-1]}'])}")
            cells.append(str(r["no_objects_crops"]))
            out.append(f"| {f} | {r['method']} | " + " | ".join(cells) + " |")
    return "\n".join(out)


# ----------------------------------------------------------------------------- goal check

def goal_check(res, rows_by_factor: Dict[int, List[Row]], factors: Sequence[int] = (16, 32),
               margin: float = 0.05) -> List[str]:
    """Per factor: is RLS accuracy within `margin` of HR and above every other method, and is
    its effect size the closest to HR's? Plain sentences with the numbers."""
    lines: List[str] = []
    if res.measured is None:
        return ["Not evaluated: this assay has no interpretable-feature pipeline."]
    level = primary_level(res)
    for f in sorted(set(factors) | set(rows_by_factor)):
        rows = rows_by_factor.get(f)
        goal = "" if f in factors else " (not a goal factor)"
        if not rows:
            lines.append(f"- **{f}x**: not evaluated (factor not in --factors).")
            continue
        by = {r["key"]: r for r in rows}
        rk = f"rls_x{f}"
        if rk not in by:
            lines.append(f"- **{f}x**{goal}: not evaluated (rls not in --methods).")
            continue
        hr, rl = by["HR"], by[rk]
        others = [r for r in rows if r["key"] not in ("HR", rk)]
        a_hr, a_rls = hr[f"acc_{level}"], rl[f"acc_{level}"]
        if not (np.isfinite(a_hr) and np.isfinite(a_rls)):
            lines.append(f"- **{f}x**{goal}: no answer: accuracy is undefined (no objects found by the pipeline: "
                         f"HR {fmt(a_hr, pct=True)}, RLS {fmt(a_rls, pct=True)}).")
            continue
        within = a_rls >= a_hr - margin
        above = all(not np.isfinite(r[f"acc_{level}"]) or a_rls > r[f"acc_{level}"] for r in others)
        d_hr = hr[f"d_{level}"]
        gaps = {r["method"]: abs(r[f"d_{level}"] - d_hr) for r in others if np.isfinite(r[f"d_{level}"])}
        g_rls = abs(rl[f"d_{level}"] - d_hr)
        closest = np.isfinite(g_rls) and all(g_rls < g for g in gaps.values())
        other_txt = ", ".join(f"{r['method']} {fmt(r[f'acc_{level}'], pct=True)}" for r in others) or "none"
        gap_txt = ", ".join(f"{k} {v:.2f}" for k, v in gaps.items()) or "none"
        lines.append(
            f"- **{f}x**{goal} (per {level}): accuracy RLS {100 * a_rls:.1f}% vs HR {100 * a_hr:.1f}% → within "
            f"{100 * margin:.0f} points: **{'yes' if within else 'no'}**; above every other method "
            f"({other_txt}; a tie is not above): **{'yes' if above else 'no'}**. "
            f"Effect size: HR d = {fmt(d_hr)}, RLS d = "
            f"{fmt(rl[f'd_{level}'])} (|Δ| {fmt(g_rls)}; others: {gap_txt}) → closest to HR: "
            f"**{'yes' if closest else 'no'}**.")
    return lines


# ----------------------------------------------------------------------------- long CSV

def long_rows(res, t1: List[Row], bio: Dict[str, Dict[int, List[Row]]]) -> List[Row]:
    """Every number in one long table: section, variant, method, factor, degradation, realism,
    level, condition, metric, value."""
    out: List[Row] = []

    def add(section, key, metric, value, level="", condition=""):
        v: Optional[Variant] = res.variants[key].variant if key in res.variants else None
        out.append({"section": section, "variant": key, "method": v.method if v else key,
                    "factor": v.factor if v else "", "degradation": v.degradation if v else "",
                    "realism": v.realism if v else "", "level": level, "condition": condition,
                    "metric": metric, "value": value})

    for r in t1:
        for mkey in ("psnr", "psnr_sd", "ssim", "lr_psnr", "swd", "sec_per_tile", "converged"):
            add("table1", r["key"], mkey if mkey != "swd" else "swd_x1e3", r[mkey])
    for key, s in res.scores.items():  # every scored variant, also those only in figures
        add("quality", key, "psnr", finite_mean(s.psnr))
        add("quality", key, "ssim", finite_mean(s.ssim))
        add("quality", key, "lr_psnr", finite_mean(s.lr_psnr))
        add("quality", key, "swd_x1e3", s.swd)
        add("quality", key, "sec_per_tile", s.seconds_per_tile)
    for section, by_f in bio.items():
        for f, rows in by_f.items():
            for r in rows:
                for k, val in r.items():
                    if k in ("key", "method"):
                        continue
                    level = "cell" if "_cell" in k else ("image" if "_image" in k else "")
                    cond = ""
                    for c in res.test.condition_order:
                        if k.endswith("_" + c):
                            cond = c
                    add(section, r["key"], k, val, level, cond)
    for name, t in res.timings.items():
        out.append({"section": "timing", "variant": "", "method": "", "factor": "", "degradation": "",
                    "realism": "", "level": "", "condition": "", "metric": f"seconds_{name}", "value": t})
    return out


__all__ = ["table1_rows", "table1_markdown", "biology_rows", "table2_markdown", "goal_check", "long_rows",
           "primary_level"]

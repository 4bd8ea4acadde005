"""Write the evaluation folder: report.md (tables, figures, configuration, command, time,
goal check), results.csv (every number, long format), features.csv (every measured cell /
image), config.json, and the PNG figures."""
from __future__ import annotations

import csv
import json
import platform
import shlex
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from . import figures, tables
from .experiment import Results, config_dict


def _rows_by_key(rows) -> Dict[str, Dict[str, object]]:
    return {r["key"]: r for r in rows}


def _jsonable(o):
    if isinstance(o, (np.floating, float)):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, Path):
        return str(o)
    return o


def _versions() -> Dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for mod in ("torch", "numpy", "scipy", "skimage", "sklearn", "cellprofiler"):
        try:
            out[mod] = str(__import__(mod).__version__)
        except Exception:  # optional: not every module exposes a version
            out[mod] = "n/a"
    from .. import __version__

    out["rls_core"] = __version__
    return out


def write_report(res: Results, command: Optional[str] = None, wall_start: Optional[float] = None) -> Path:
    """All outputs into res.cfg.out; returns the path of report.md."""
    cfg = res.cfg
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t_fig = time.perf_counter()
    level = tables.primary_level(res) if res.measured is not None else None
    t1 = tables.table1_rows(res)
    table_keys = {f: [v.key for v in res.sections["table1"] if v.factor == f] for f in cfg.factors}
    bio: Dict[str, Dict[int, List[dict]]] = {}
    if res.measured is not None:
        bio["table2"] = {f: tables.biology_rows(res, table_keys[f]) for f in cfg.factors}
        extra = [v.key for s in ("robustness", "ablation", "realism") for v in res.sections.get(s, [])]
        extra = [k for k in dict.fromkeys(extra) if k in res.scores]
        if extra:
            bio["figures"] = {cfg.first_factor: tables.biology_rows(res, extra)}
    fig_rows = _rows_by_key(bio.get("figures", {}).get(cfg.first_factor, []))
    if not fig_rows and "table2" in bio:
        fig_rows = _rows_by_key(bio["table2"].get(cfg.first_factor, []))

    figs: Dict[str, Path] = {}
    if res.measured is not None:
        figs["fig5"] = figures.fig5_boxplots(res, out / "fig5_boxplots.png", cfg.factors, table_keys, level)
    if cfg.wants("robustness"):
        figs["fig6"] = figures.fig6_robustness(res, out / "fig6_robustness.png", fig_rows, level)
    if cfg.wants("ablation"):
        figs["fig7"] = figures.fig7_ablation(res, out / "fig7_ablation.png", fig_rows, level)
    if cfg.wants("samples"):
        figs["fig8"] = figures.fig8_samples(res, out / "fig8_samples.png")
    if cfg.wants("realism"):
        figs["realism"] = figures.fig_realism(res, out / "fidelity_vs_realism.png", fig_rows, level)
    figs["examples"] = figures.fig_examples(res, out / "examples.png", table_keys)
    res.timings["figures"] = time.perf_counter() - t_fig

    # ---- CSVs and config
    long = tables.long_rows(res, t1, bio)
    with open(out / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(long[0].keys()))
        w.writeheader()
        for r in long:
            v = r["value"]
            if isinstance(v, (float, np.floating)):
                r = dict(r, value="nan" if not np.isfinite(v) else f"{float(v):.6g}")
            w.writerow(r)
    if res.measured is not None:
        m = res.measured
        with open(out / "features.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["set", "crop", "condition", "origin", "level", "value"])
            for key in m.crop_values:
                for i, val in enumerate(m.crop_values[key]):
                    w.writerow([key, i, res.test.conditions[i], res.test.origins[i], "image", f"{val:.6g}"])
                if m.per_cell:
                    for val, c in zip(m.cell_values[key], m.cell_crops[key]):
                        w.writerow([key, int(c), res.test.conditions[c], res.test.origins[c], "cell", f"{val:.6g}"])
    total = (time.perf_counter() - wall_start) if wall_start is not None else sum(res.timings.values())
    conf = {"config": config_dict(cfg), "command": command, "model": res.model_info, "versions": _versions(),
            "data": {"test": res.test.source, "reference": res.reference.source, "n_test": len(res.test),
                     "n_reference": len(res.reference), "conditions": res.test.condition_order,
                     "object_scale": res.test.object_scale},
            "variants": {k: {"variant": v.variant.__dict__, "steps": v.steps, "seconds": v.seconds,
                             "cached": v.cached} for k, v in res.variants.items()},
            "timings_s": res.timings, "total_s": total}
    (out / "config.json").write_text(json.dumps(_jsonable(conf), indent=2, default=str) + "\n")

    # ---- markdown
    steps_note = (f"{cfg.steps} steps for every search" if cfg.steps is not None
                  else "each method's default steps: rls/plain/brgm 500, pulse 100")
    steps_note += f"; crops searched in batches of {cfg.batch_size} on {res.model_info['device']}"
    md: List[str] = [f"# RLS evaluation: {cfg.assay}, model {res.model_name}", ""]
    if cfg.quick:
        md += ["> **--quick run**: tiny crop counts and few search steps, to check that everything runs. "
               "The numbers below are not results.", ""]
    md += [f"Generated by `rls evaluate` on {time.strftime('%Y-%m-%d %H:%M')} in {total / 60:.1f} min "
           f"({platform.node()}, device {res.model_info['device']}).", "",
           "```", command or "(called from Python)", "```", ""]
    counts = ", ".join(f"{res.test.conditions.count(c)} {c}" for c in res.test.condition_order)
    md += ["## Data", "",
           f"- Test crops: {len(res.test)} ({counts}), "
           f"{res.model_info['resolution']} px = the model's resolution: {res.test.source}.",
           f"- Realism reference: {len(res.reference)} other real crops: {res.reference.source}.",
           f"- LR inputs: D(HR) with the {cfg.operator} operator (rls_core.operators) in full-scale units, "
           f"then the model's normalisation; factors {', '.join(map(str, cfg.factors))} "
           f"(LR {', '.join(str(res.model_info['resolution'] // f) + ' px' for f in cfg.factors)}).",
           f"- Model: `{res.model_info['path']}` ({', '.join(res.model_info['channels'])}); searches: {steps_note}; "
           f"batch {cfg.batch_size}, search seed {cfg.search_seed}.", ""]
    if res.measured is not None:
        md += [f"- Read-out: **{res.measured.label}**, measured by CellProfiler with `{res.measured.pipeline}` "
               f"(a copy of `pipelines/{cfg.assay}_hr.cppipe`"
               + (f" with object sizes × {res.test.object_scale:g} for {res.model_info['resolution']}-px crops"
                  if res.test.object_scale != 1 else ", unchanged") + ") on 16-bit TIFFs of the HR crops and of "
               f"every SR output ({res.measured.seconds:.0f} s).", ""]
    for note in res.notes:
        md += [f"> {note}", ""]
    md += ["## Table 1: super-resolution quality", "", tables.table1_markdown(t1, steps_note), ""]
    if res.measured is not None:
        md += ["## Table 2: classifying " + " vs ".join(res.test.condition_order[:2]) + " from the single feature",
               "", tables.table2_markdown(bio["table2"], res.measured.per_cell, res.test.condition_order), "",
               f"RBF SVM (scikit-learn SVC, C = 1, gamma 'scale', feature standardised) trained on **HR** features, "
               f"tested on the HR and on each method's SR features of held-out crops ({cfg.folds}-fold cross-fitting "
               f"by crop: no crop is tested by an SVM that saw its HR features). Cohen's d = (mean treatment − mean "
               f"control) / pooled SD; Δ = method − HR. '—' = undefined (no objects found, or a single "
               f"value).", ""]
        md += ["## Figure 5: read-out per condition", "", "![Figure 5](fig5_boxplots.png)", "",
               "Solid boxes: " + res.test.condition_order[0] + "; dotted boxes: "
               + (res.test.condition_order[1] if len(res.test.condition_order) > 1 else "—") + ".", ""]
    sec = [("fig6", "Figure 6: robustness to degraded LR inputs", "fig6_robustness.png",
            f"LR inputs at {cfg.first_factor}x further degraded ({', '.join(cfg.degradations)}; noise and "
            f"salt-and-pepper on [0, 1] LR values, blur σ in LR pixels), methods {', '.join(cfg.robust_methods)}."),
           ("fig7", "Figure 7: ablation", "fig7_ablation.png",
            f"{', '.join(cfg.ablation)} at {cfg.first_factor}x (plain = w/o Regu.)."),
           ("fig8", "Figure 8: diversity and uncertainty", "fig8_samples.png",
            f"{cfg.samples} RLS searches per LR input from random starts; std = per-pixel standard deviation "
            f"over the samples (mean over channels)."),
           ("realism", "Fidelity vs realism", "fidelity_vs_realism.png",
            f"RLS with the realism knob (all prior weights × {', '.join(f'{r:g}' for r in cfg.realism)}) at "
            f"{cfg.first_factor}x: fidelity (HR PSNR) against realism distance and feature error.")]
    for key, title, fname, caption in sec:
        if key in figs:
            md += [f"## {title}", "", f"![{title}]({fname})", "", caption, ""]
            if key in ("fig6", "fig7", "realism"):
                md += [_figure_table(res, key, fig_rows, level), ""]
    md += ["## Examples", "", "![examples](examples.png)", ""]
    md += ["## Goal check", ""]
    if cfg.quick:
        md += ["_Quick run: the answers below only show the format; they mean nothing with a tiny model._", ""]
    md += tables.goal_check(res, bio.get("table2", {}))
    md += ["", "The goal: at 16x and 32x, RLS classification accuracy within 5 points of HR and above every other "
           "method, and its effect size (Cohen's d) the closest to HR's. Accuracy level: "
           + (f"per {level}" if level else "n/a") + ".", ""]
    md += ["## Time", "", "| stage | seconds |", "|---|---|"]
    md += [f"| {k} | {v:.1f} |" for k, v in res.timings.items()] + [f"| wall total | {total:.1f} |", ""]
    md += ["## Files", "", "- `results.csv`: every number (long format: section, variant, method, factor, "
           "degradation, realism, level, condition, metric, value)",
           "- `features.csv`: every measured value per crop / cell and set" if res.measured is not None else "",
           "- `config.json`: the full configuration, versions, model provenance, timings",
           "- `cache/`: SR results per variant (re-running the same command reuses them; `--clean` deletes it)",
           "- `cellprofiler/`: the pipeline copy, CellProfiler CSVs and logs", ""]
    path = out / "report.md"
    path.write_text("\n".join(x for x in md if x is not None) + "\n")
    return path


def _figure_table(res, key: str, rows: Dict[str, Dict[str, object]], level: Optional[str]) -> str:
    """The numbers plotted in a figure, as a small markdown table."""
    from .stats import fmt

    section = {"fig6": "robustness", "fig7": "ablation", "realism": "realism"}[key]
    head = "| variant | HR PSNR (dB) | SSIM | realism SWD ×1e3 |"
    sep = "|---|---|---|---|"
    if level:
        head += f" accuracy per {level} (%) | Cohen's d (Δ vs HR) | |median − HR| |"
        sep += "---|---|---|"
    out = [head, sep]
    for v in res.sections.get(section, []):
        s = res.scores[v.key]
        line = f"| {v.label} | {fmt(float(np.mean(s.psnr)))} | {fmt(float(np.mean(s.ssim)), 3)} | {fmt(s.swd)} |"
        if level:
            r = rows.get(v.key, {})
            d, dd = r.get(f"d_{level}", np.nan), r.get(f"dd_{level}", np.nan)
            line += (f" {fmt(r.get(f'acc_{level}', np.nan), pct=True)} | "
                     + ("—" if not np.isfinite(d) else f"{d:.2f} ({dd:+.2f})")
                     + f" | {fmt(r.get(f'median_err_{level}', np.nan))} |")
        out.append(line)
    return "\n".join(out)


def command_line(cfg) -> str:
    """The command that reproduces this report: `rls evaluate` with every resolved setting that
    changes the numbers (so it does not depend on --quick's defaults or on how it was called)."""
    from .experiment import EvalConfig

    base = EvalConfig(assay=cfg.assay, model=cfg.model, out=cfg.out)
    parts = ["rls", "evaluate", "--assay", cfg.assay, "--model", str(cfg.model), "-o", str(cfg.out),
             "--factors", *map(str, cfg.factors), "--methods", *cfg.methods,
             "--n-per-condition", str(cfg.n_per_condition)]
    if cfg.steps is not None:
        parts += ["--steps", str(cfg.steps)]
    opt = [("seed", "--seed"), ("hr_dir", "--hr-dir"), ("condition_regex", "--condition-regex"),
           ("control", "--control"), ("n_reference", "--n-reference"), ("aux_factor", "--aux-factor"),
           ("samples", "--samples"), ("sample_inputs", "--sample-inputs"), ("batch_size", "--batch-size"),
           ("device", "--device"), ("threads", "--threads"), ("operator", "--operator"), ("folds", "--folds"),
           ("search_seed", "--search-seed"), ("pipeline", "--pipeline"), ("object_scale", "--object-scale")]
    for attr, flag in opt:
        v = getattr(cfg, attr)
        if v is not None and v != getattr(base, attr):
            parts += [flag, str(v)]
    lists = [("degradations", "--degradations"), ("robust_methods", "--robust-methods"), ("ablation", "--ablation"),
             ("realism", "--realism"), ("skip", "--skip")]
    for attr, flag in lists:
        v = getattr(cfg, attr)
        if list(v) != list(getattr(base, attr)):
            parts += [flag, *[f"{x:g}" if isinstance(x, float) else str(x) for x in v]] if v else []
    if cfg.quick:
        parts.append("--quick")
    return " ".join(shlex.quote(p) for p in parts)

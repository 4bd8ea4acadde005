"""Reproduce the paper's tables and figures (Table 1, Fig. 5, Table 2, Figs. 6-8, fidelity vs realism) on held-out data.

`rls evaluate` makes held-out HR crops (fresh simulator seeds, your HR folder, or the fly
held-out field), downsamples them, super-resolves them with every method, scores image
quality, measures the biological read-out with the repository's own HR CellProfiler
pipeline on HR and on every SR output, and writes REPORTDIR/report.md with PNG figures,
results.csv (every number) and config.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional

from ..methods import METHOD_NAMES as METHODS
from .defaults import (ABLATION, DEFAULT_CONDITION_REGEX, DEFAULT_SEED, QUICK_TABLE1_METHODS, ROBUSTNESS, SECTIONS,
                       TABLE1_METHODS)

EPILOG = f"""\
what it produces (in REPORTDIR):
  report.md          Table 1 (HR PSNR, SSIM, LR consistency, realism SWD, s/tile per method and
                     factor), Table 2 (HR-trained RBF SVM accuracy DMSO vs treatment on each
                     method's features, Cohen's d vs HR), Figs. 5-8, fidelity-vs-realism curve,
                     the exact command and configuration, timings and a yes/no "Goal check"
  *.png              fig5_boxplots, fig6_robustness, fig7_ablation, fig8_samples,
                     fidelity_vs_realism, examples
  results.csv        every number (long format); features.csv every measured cell / image
  config.json        configuration, versions, model provenance, timings
  cache/             SR results per variant: re-running the same command resumes / reuses them

data:
  translocation, golgi  fresh simulated fields (--seed, default {DEFAULT_SEED}; the shipped models were
                        trained on seeds 1000 / 2000, which are refused), crops of the model's
                        resolution holding >= 1 whole nucleus, --n-per-condition per condition
  fly                   the held-out ExampleFly field data/fly/heldout (no feature pipeline:
                        Table 1, Fig. 8 and the realism curve only)
  --hr-dir DIR          your own HR fields (one file per channel, <field>_<channel>.tif, or
                        multi-channel TIFFs); the condition is read from each field name with
                        --condition-regex; --assay picks the pipeline (translocation / golgi)

the read-out is measured by CellProfiler (headless, `cellprofiler -c -r -p ... -e imageio_reader`)
with pipelines/<assay>_hr.cppipe, so the numbers are the ones a user of the pipeline gets.

cost: (crops x methods x factors x steps) search tile-steps plus one CellProfiler run per
image set. The full default run (2 factors, 5 methods, 32 crops per condition and every
section) takes hours per assay on a 2-core CPU (docs/results/README.md has measured times)
and minutes of search on a GPU (--device cuda). Reduce with --n-per-condition, --skip, fewer
--degradations / --realism. --dry-run prints the plan and a time estimate measured on your
machine, then stops.
  --quick: one factor, 3 methods, 3 crops per condition, 10 steps, tiny robustness /
  ablation / realism / samples sections: a smoke test (it still runs CellProfiler and
  writes the full report; its numbers mean nothing).

examples:
  rls evaluate --assay translocation --model translocation -o docs/results/translocation
  rls evaluate --assay golgi --model golgi --factors 16 32 --n-per-condition 50 -o docs/results/golgi
  rls evaluate --assay translocation --model my.h5 --hr-dir my_hr/ \\
      --condition-regex '_(?P<Condition>DMSO|TNFa)_' -o out/eval_mine
  rls evaluate --assay translocation --model translocation -o /tmp/q --quick
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `rls evaluate` options (the lead's `rls` parser calls this)."""
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    g = p.add_argument_group("what to evaluate")
    g.add_argument("--assay", required=True, choices=["translocation", "golgi", "fly"],
                   help="which read-out / held-out data (fly: no feature pipeline)")
    g.add_argument("--model", required=True, help="shipped model name or .h5 bundle path")
    g.add_argument("-o", "--output", required=True, metavar="REPORTDIR", help="folder for report.md and the rest")
    g.add_argument("--factors", type=int, nargs="+", default=None, help="upscaling factors (default: 16 32)")
    g.add_argument("--methods", nargs="+", default=None, choices=list(METHODS), metavar="METHOD",
                   help=f"Table 1/2 methods (default: {' '.join(TABLE1_METHODS)}; "
                        f"--quick: {' '.join(QUICK_TABLE1_METHODS)})")
    g.add_argument("--n-per-condition", type=int, default=None, metavar="N",
                   help="held-out crops per condition (default: 32; --quick: 3)")
    g.add_argument("--steps", type=int, default=None,
                   help="search steps for every method (default: each method's own: 500, pulse 100; --quick: 10)")
    g.add_argument("--quick", action="store_true", help="a CI-sized run (see 'cost' below)")
    g.add_argument("--dry-run", action="store_true", help="print the plan and a measured time estimate, then stop")
    d = p.add_argument_group("data")
    d.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help="simulator seed of the held-out fields (default: %(default)s; the reference set uses seed+1)")
    d.add_argument("--hr-dir", default=None, metavar="DIR", help="evaluate on your own HR fields instead")
    d.add_argument("--condition-regex", default=DEFAULT_CONDITION_REGEX,
                   help="regex on the field name giving the condition (group 'Condition' or group 1; "
                        "default: %(default)r)")
    d.add_argument("--control", default=None, help="the control condition (default: DMSO / control-like name, "
                                                     "else the first alphabetically)")
    d.add_argument("--n-reference", type=int, default=None,
                   help="real crops per condition in the realism reference set (default: = --n-per-condition)")
    s = p.add_argument_group("sections")
    s.add_argument("--skip", nargs="+", default=[], choices=[x for x in SECTIONS if x != "table1"],
                   help="leave sections out (biology = CellProfiler, Table 2, Fig. 5)")
    s.add_argument("--aux-factor", type=int, default=None,
                   help="factor of Figs. 6-8 and the realism curve (default: the first of --factors)")
    s.add_argument("--degradations", nargs="+", default=None,
                   help=f"Fig. 6 LR degradations (default: {' '.join(ROBUSTNESS)})")
    s.add_argument("--robust-methods", nargs="+", default=None, choices=list(METHODS), metavar="METHOD",
                   help="Fig. 6 methods (default: bicubic rls)")
    s.add_argument("--ablation", nargs="+", default=None, choices=list(METHODS), metavar="METHOD",
                   help=f"Fig. 7 variants (default: {' '.join(ABLATION)})")
    s.add_argument("--realism", type=float, nargs="+", default=None,
                   help="realism knob values of the fidelity-vs-realism curve (default: 0 0.5 1 2 4)")
    s.add_argument("--samples", type=int, default=None, metavar="K", help="Fig. 8 samples per input (default: 5)")
    s.add_argument("--sample-inputs", type=int, default=None, help="Fig. 8 LR inputs (default: 3)")
    r = p.add_argument_group("running")
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    r.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    r.add_argument("--batch-size", type=int, default=32, help="crops searched together (default: %(default)s)")
    r.add_argument("--operator", default="bicubic", choices=["bicubic", "area"],
                   help="HR -> LR operator, both to make the LR inputs and in the searches (default: %(default)s)")
    r.add_argument("--search-seed", type=int, default=0, help="seed of the searches (default: %(default)s)")
    r.add_argument("--folds", type=int, default=5, help="cross-fitting folds of the SVM (default: %(default)s)")
    r.add_argument("--cellprofiler", default=None, metavar="PATH", help="cellprofiler executable "
                   "(default: next to this Python, else on PATH)")
    r.add_argument("--pipeline", default=None, metavar="CPPIPE",
                   help="HR pipeline to use instead of pipelines/<assay>_hr.cppipe (same CSV names/columns)")
    r.add_argument("--object-scale", type=float, default=None,
                   help="multiply the pipeline's object sizes (default: model resolution / 128 for simulated "
                        "data, whose cells are simulated at that scale; 1 for --hr-dir)")
    r.add_argument("--cp-jobs", type=int, default=1, help="parallel CellProfiler processes (default: 1)")
    r.add_argument("--clean", action="store_true",
                   help="delete REPORTDIR/cache (the SR arrays, large for full runs) after writing the report")
    r.add_argument("--keep-images", action="store_true", help="keep the TIFFs given to CellProfiler")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _given(value, default):
    """An explicit option wins, 0 included (then refused by `run`, not silently the default)."""
    return default if value is None else value


def config_from_args(a: argparse.Namespace):
    """An EvalConfig; defaults depend on --quick, anything given explicitly wins."""
    from .experiment import EvalConfig

    q = bool(a.quick)
    factors = a.factors or ([16] if q else [16, 32])
    if q and a.factors:
        factors = a.factors[:1]
    cfg = EvalConfig(
        assay=a.assay, model=a.model, out=a.output, factors=factors,
        methods=a.methods or list(QUICK_TABLE1_METHODS if q else TABLE1_METHODS),
        n_per_condition=_given(a.n_per_condition, 3 if q else 32),
        steps=a.steps if a.steps is not None else (10 if q else None),
        seed=a.seed, search_seed=a.search_seed, hr_dir=a.hr_dir, condition_regex=a.condition_regex,
        control=a.control, n_reference=a.n_reference, aux_factor=a.aux_factor,
        degradations=a.degradations or (["noise:0.1"] if q else list(ROBUSTNESS)),
        robust_methods=a.robust_methods or ["bicubic", "rls"], ablation=a.ablation or list(ABLATION),
        realism=a.realism or ([0.0, 1.0, 4.0] if q else [0.0, 0.5, 1.0, 2.0, 4.0]),
        samples=_given(a.samples, 3 if q else 5), sample_inputs=_given(a.sample_inputs, 2 if q else 3),
        skip=list(a.skip),
        batch_size=a.batch_size, device=a.device, operator=a.operator, threads=a.threads, folds=a.folds,
        cellprofiler=a.cellprofiler, pipeline=a.pipeline, object_scale=a.object_scale, cp_jobs=a.cp_jobs,
        keep_images=a.keep_images, quick=q, progress=not a.quiet)
    if cfg.assay == "fly" and cfg.hr_dir is None and "biology" not in cfg.skip:
        cfg.skip.append("biology")
    return cfg


def _check_factors(cfg) -> None:
    """Every --factors value must fit the model's tile (before the plan, not hours into the run)."""
    from ..api import check_factor
    from ..model import load_model

    model = load_model(cfg.model, cfg.device)
    for f in {*cfg.factors, *([cfg.aux_factor] if cfg.aux_factor else [])}:
        check_factor(model, f)


def _estimate(cfg, log) -> float:
    """Plan + a time estimate from a 2-step timing of the RLS search on this machine."""
    import torch

    from ..model import load_model
    from ..reconstruct import make_reconstructor
    from .experiment import plan, tile_steps, unique_variants

    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    model = load_model(cfg.model, cfg.device)
    n_cond = 1 if (cfg.assay == "fly" and not cfg.hr_dir) else 2
    n = cfg.n_per_condition * n_cond
    sections = plan(cfg)
    steps, sets = tile_steps(cfg, sections, n)
    b = max(1, min(cfg.batch_size, n))
    f = cfg.first_factor
    y = torch.rand(b, len(model.channel_names), model.resolution // f, model.resolution // f) * 0.5
    seeds = list(range(b))  # any seeds: only the time counts
    for n_steps in (1, 2):  # the first call warms up; the second is timed
        recon = make_reconstructor(model, "rls" if model.bundle.has_prior else "plain", f, cfg.operator,
                                   steps=n_steps)
        t = time.perf_counter()
        recon.reconstruct(y, seeds)
    per = (time.perf_counter() - t) / (2 * b)
    cp_s = 0.0 if (not cfg.wants("biology") or cfg.assay == "fly") else 0.6 * sets + 10.0
    total = per * steps + cp_s
    log(f"[evaluate] plan: {len(unique_variants(sections))} variants "
        f"({', '.join(f'{k}: {len(v)}' for k, v in sections.items())}); {n} crops of {model.resolution} px; "
        f"{steps:,} search tile-steps x {1e3 * per:.1f} ms (measured) = {per * steps / 60:.1f} min; "
        f"CellProfiler ~{cp_s / 60:.1f} min ({sets} image sets); estimated total ~{total / 60:.1f} min")
    return total


def run(args: argparse.Namespace) -> int:
    """Entry point of `rls evaluate`; returns the exit status. Bad settings, data, models or a
    missing CellProfiler raise an RLSError, which errors.run_command reports (exit 2)."""
    from ..errors import InputError
    from .degrade import validate
    from .measure import READOUTS, find_cellprofiler

    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    cfg = config_from_args(args)
    for x in (cfg.n_per_condition, cfg.batch_size, cfg.samples, cfg.sample_inputs, cfg.folds, cfg.cp_jobs):
        if x < 1:
            raise InputError("counts (--n-per-condition, --batch-size, --samples, --folds, ...) must be >= 1")
    if cfg.steps is not None and cfg.steps < 1:
        raise InputError(f"--steps must be >= 1 (leave it out for each method's default), got {cfg.steps}")
    bad = [r for r in cfg.realism if not 0 <= r < float("inf")]
    if bad:
        raise InputError(f"--realism values must be finite numbers >= 0, got {bad}")
    _check_factors(cfg)
    validate(cfg.degradations)
    if cfg.wants("biology") and cfg.assay in READOUTS:
        find_cellprofiler(cfg.cellprofiler)  # fail now, not after hours of searching
    _estimate(cfg, log)
    if args.dry_run:
        return 0
    from .experiment import run as run_experiment
    from .report import command_line, write_report

    res = run_experiment(cfg, log)
    path = write_report(res, command_line(cfg), t0)
    if args.clean:
        import shutil

        shutil.rmtree(path.parent / "cache", ignore_errors=True)
    log(f"[evaluate] wrote {path} ({(time.perf_counter() - t0) / 60:.1f} min)")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """`python -m rls_core.evaluate.cli ...` (same as `rls evaluate ...`)."""
    from ..errors import run_command

    p = argparse.ArgumentParser(prog="rls evaluate", description=__doc__.strip().splitlines()[0])
    add_arguments(p)
    return run_command("evaluate", run, p.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

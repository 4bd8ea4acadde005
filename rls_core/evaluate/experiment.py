"""What to run (the variants behind each table and figure) and running it.

`EvalConfig` holds every setting; `plan(config)` lists the SR variants each section needs
(shared ones run once: e.g. RLS at the first factor serves Table 1, Fig. 6, Fig. 7 and the
realism curve); `run(config)` makes the held-out crops, runs the variants, scores them and
measures every SR set with the HR CellProfiler pipeline in one batch.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from .data import DEFAULT_CONDITION_REGEX, DEFAULT_SEED, EvalCrops, load_test_and_reference
from .defaults import ABLATION, ROBUSTNESS, TABLE1_METHODS
from .degrade import hr_unit, make_lr
from .measure import READOUTS, Measured, measure_sets
from .run_methods import Variant, VariantResult, run_variant
from .stats import psnr_per_crop, realism_distance, ssim_per_crop



@dataclass
class EvalConfig:
    assay: str
    model: str
    out: str
    factors: List[int] = field(default_factory=lambda: [16, 32])
    methods: List[str] = field(default_factory=lambda: list(TABLE1_METHODS))
    n_per_condition: int = 32
    steps: Optional[int] = None
    seed: int = DEFAULT_SEED
    search_seed: int = 0
    hr_dir: Optional[str] = None
    condition_regex: Optional[str] = DEFAULT_CONDITION_REGEX
    control: Optional[str] = None
    n_reference: Optional[int] = None
    aux_factor: Optional[int] = None
    degradations: List[str] = field(default_factory=lambda: list(ROBUSTNESS))
    robust_methods: List[str] = field(default_factory=lambda: ["bicubic", "rls"])
    ablation: List[str] = field(default_factory=lambda: list(ABLATION))
    realism: List[float] = field(default_factory=lambda: [0.0, 0.5, 1.0, 2.0, 4.0])
    samples: int = 5
    sample_inputs: int = 3
    skip: List[str] = field(default_factory=list)
    batch_size: int = 32
    device: str = "auto"
    threads: Optional[int] = None
    operator: str = "bicubic"
    folds: int = 5
    cellprofiler: Optional[str] = None
    pipeline: Optional[str] = None
    object_scale: Optional[float] = None
    cp_jobs: int = 1
    keep_images: bool = False
    quick: bool = False
    progress: bool = True

    @property
    def first_factor(self) -> int:
        return int(self.aux_factor or self.factors[0])

    def wants(self, section: str) -> bool:
        return section not in self.skip


def plan(cfg: EvalConfig) -> Dict[str, List[Variant]]:
    """Section -> its variants (a variant may serve several sections; it runs once)."""
    f = cfg.first_factor
    out: Dict[str, List[Variant]] = {"table1": [Variant(m, fac) for fac in cfg.factors for m in cfg.methods]}
    if cfg.wants("robustness"):
        out["robustness"] = [Variant(m, f, d) for m in cfg.robust_methods for d in ["none"] + cfg.degradations]
    if cfg.wants("ablation"):
        out["ablation"] = [Variant(m, f) for m in cfg.ablation]
    if cfg.wants("realism"):
        out["realism"] = [Variant("rls", f, realism=float(r)) for r in cfg.realism]
    if cfg.wants("samples") and cfg.samples > 1:
        out["samples"] = [Variant("rls", f, samples=cfg.samples)]
    return out


def unique_variants(sections: Dict[str, List[Variant]]) -> List[Variant]:
    seen: Dict[str, Variant] = {}
    for vs in sections.values():
        for v in vs:
            seen.setdefault(v.key, v)
    return list(seen.values())


def tile_steps(cfg: EvalConfig, sections: Dict[str, List[Variant]], n_crops: int) -> Tuple[int, int]:
    """(search tile-steps, CellProfiler image sets) the plan costs; for the time estimate."""
    from ..methods import METHODS

    total = 0
    sets = 1
    for v in unique_variants(sections):
        n = cfg.sample_inputs if v.samples > 1 else n_crops
        if v.samples == 1:
            sets += 1
        if v.method == "bicubic":
            continue
        steps = cfg.steps if cfg.steps is not None else METHODS[v.method].steps
        total += n * max(1, v.samples) * steps
    return total, sets * n_crops


@dataclass
class Scores:
    """Image-quality numbers of one variant (per crop, plus set-level ones)."""

    psnr: np.ndarray
    ssim: np.ndarray
    lr_psnr: np.ndarray
    swd: float
    seconds_per_tile: float
    converged: float


@dataclass
class Results:
    cfg: EvalConfig
    model_name: str
    model_info: Dict[str, object]
    test: EvalCrops
    reference: EvalCrops
    sections: Dict[str, List[Variant]]
    variants: Dict[str, VariantResult]
    scores: Dict[str, Scores]
    hr_swd: float
    measured: Optional[Measured]
    lr: Dict[Tuple[int, str], np.ndarray]
    hr_u: np.ndarray
    sample_idx: List[int]
    timings: Dict[str, float]
    notes: List[str]


def pick_sample_inputs(conditions: List[str], order: List[str], k: int) -> List[int]:
    """k crop indices alternating over conditions (Fig. 8 shows both phenotypes)."""
    by = {c: [i for i, x in enumerate(conditions) if x == c] for c in order}
    out: List[int] = []
    j = 0
    while len(out) < min(k, len(conditions)):
        for c in order:
            if j < len(by[c]) and len(out) < k:
                out.append(by[c][j])
        j += 1
    return out


def run(cfg: EvalConfig, log=print) -> Results:
    """Everything numeric behind the report (no files but the cache and CellProfiler's)."""
    import torch

    from ..api import check_factor
    from ..model import load_model

    t_start = time.perf_counter()
    timings: Dict[str, float] = {}
    notes: List[str] = []
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    out = Path(cfg.out)
    model = load_model(cfg.model, cfg.device)
    for fac in cfg.factors + [cfg.first_factor]:
        check_factor(model, fac)
    t = time.perf_counter()
    test, ref = load_test_and_reference(cfg.assay, model, cfg.n_per_condition, cfg.seed,
                                        Path(cfg.hr_dir) if cfg.hr_dir else None, cfg.condition_regex,
                                        cfg.n_reference, progress=cfg.progress)
    if cfg.object_scale is not None:
        test.object_scale = float(cfg.object_scale)
    if cfg.control is not None:
        from .data import control_first
        test.condition_order = control_first(test.condition_order, cfg.control)
    timings["data"] = time.perf_counter() - t
    counts = ", ".join(f"{test.conditions.count(c)} {c}" for c in test.condition_order)
    log(f"[evaluate] {len(test)} held-out crops ({counts}), "
        f"{len(ref)} reference crops; {test.source}")
    sections = plan(cfg)
    hr_u = hr_unit(model, test.hr)
    ref_u = hr_unit(model, ref.hr)
    variants: Dict[str, VariantResult] = {}
    lr_cache: Dict[Tuple[int, str], np.ndarray] = {}
    sample_idx = pick_sample_inputs(test.conditions, test.condition_order, cfg.sample_inputs)
    t = time.perf_counter()
    todo = unique_variants(sections)
    log(f"[evaluate] {len(todo)} SR variants: {', '.join(v.key for v in todo)}")
    for i, v in enumerate(todo, 1):
        key = (v.factor, v.degradation)
        if key not in lr_cache:
            lr_cache[key] = make_lr(model, test.hr, v.factor, v.degradation, seed=cfg.seed, operator=cfg.operator)
        lr = lr_cache[key][sample_idx] if v.samples > 1 else lr_cache[key]
        names = [test.origins[j] for j in sample_idx] if v.samples > 1 else test.origins
        r = run_variant(model, lr, v, cfg.steps, cfg.search_seed, cfg.batch_size, cfg.operator,
                        out / "cache", progress=cfg.progress, names=names)
        variants[v.key] = r
        log(f"[evaluate] ({i}/{len(todo)}) {v.key}: {r.seconds:.1f} s "
            f"({r.seconds_per_tile:.2f} s/tile{', cached' if r.cached else ''})")
    timings["search"] = time.perf_counter() - t
    t = time.perf_counter()
    scores: Dict[str, Scores] = {}
    for key, r in variants.items():
        if r.variant.samples > 1:
            continue
        scores[key] = Scores(psnr_per_crop(r.sr, hr_u), ssim_per_crop(r.sr, hr_u), r.lr_psnr,
                             realism_distance(ref_u, r.sr, seed=cfg.seed), r.seconds_per_tile,
                             float(np.mean(r.converged)))
    hr_swd = realism_distance(ref_u, hr_u, seed=cfg.seed)
    timings["scores"] = time.perf_counter() - t
    measured = None
    if cfg.assay in READOUTS and cfg.wants("biology"):
        t = time.perf_counter()
        sets = {"HR": test.hr}
        for key, r in variants.items():
            if r.variant.samples == 1:
                sets[key] = np.stack([model.from_unit(x) for x in r.sr]).astype(np.float32)
        log(f"[evaluate] measuring {len(sets)} sets x {len(test)} crops with pipelines/{cfg.assay}_hr.cppipe "
            f"(object scale {test.object_scale:g})")
        measured = measure_sets(cfg.assay, sets, test.conditions, test.condition_order, test.channel_names,
                                out / "cellprofiler", test.object_scale,
                                Path(cfg.pipeline) if cfg.pipeline else None, cfg.cellprofiler, cfg.cp_jobs,
                                keep_images=cfg.keep_images, progress=cfg.progress)
        timings["cellprofiler"] = time.perf_counter() - t
        n_hr = np.isfinite(measured.crop_values["HR"]).sum()
        if n_hr == 0:
            notes.append("The HR pipeline found no objects in any HR crop: no biological read-out.")
    elif cfg.assay not in READOUTS:
        notes.append(f"No interpretable-feature pipeline for assay '{cfg.assay}': Table 2, Fig. 5 and the "
                     f"feature parts of Fig. 6/7 and the realism curve are not produced.")
    timings["run (before report)"] = time.perf_counter() - t_start
    info = {"name": model.name, "path": str(getattr(model.bundle, "path", "") or cfg.model),
            "resolution": model.resolution, "channels": list(model.channel_names), "device": str(model.device),
            "provenance": model.bundle.provenance}
    return Results(cfg, model.name, info, test, ref, sections, variants, scores, hr_swd, measured, lr_cache,
                   hr_u, sample_idx, timings, notes)


def config_dict(cfg: EvalConfig) -> Dict[str, object]:
    return asdict(cfg)

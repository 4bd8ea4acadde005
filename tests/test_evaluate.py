"""`rls evaluate`: a --quick run end to end (real CellProfiler pipeline, tiny model), the
statistics against hand-computed values, and the pieces that must not break on small or
empty crops."""
from __future__ import annotations

import csv
import json
import math
import types
from pathlib import Path

import numpy as np
import pytest

from rls_core.evaluate import stats
from rls_core.evaluate.measure import find_cellprofiler, scale_pipeline_text


def have_cellprofiler() -> bool:
    try:
        find_cellprofiler()
        return True
    except RuntimeError:
        return False


needs_cp = pytest.mark.skipif(not have_cellprofiler(), reason="CellProfiler is not installed in this environment")


# ----------------------------------------------------------------------------- hand-computed statistics

def test_cohens_d_hand_computed():
    assert stats.cohens_d([1, 2, 3], [4, 5, 6]) == pytest.approx(3.0)
    # means 2.5 / 5, variances 5/3 / 20/3 -> pooled 25/6 -> d = 2.5 / sqrt(25/6) = sqrt(6)/2
    assert stats.cohens_d([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(math.sqrt(6) / 2)
    assert stats.cohens_d([4, 5, 6], [1, 2, 3]) == pytest.approx(-3.0)  # sign = direction of the effect
    assert stats.cohens_d([1, 2, 3, np.nan], [4, 5, 6, np.inf]) == pytest.approx(3.0)  # NaN = no object
    assert math.isnan(stats.cohens_d([1.0], [2.0, 3.0]))
    assert math.isnan(stats.cohens_d([1.0, 1.0], [1.0, 1.0]))


def test_svm_accuracy_hand_computed():
    train_x = [0.0, 0.1, 0.2, 1.0, 1.1, 1.2]
    train_y = ["DMSO"] * 3 + ["TNFa"] * 3
    # 0.05 -> DMSO (right), 1.05 -> TNFa (right), 0.9 -> TNFa (wrong: labelled DMSO), NaN dropped
    acc, n = stats.svm_accuracy(train_x, train_y, [0.05, 1.05, 0.9, np.nan], ["DMSO", "TNFa", "DMSO", "TNFa"])
    assert n == 3 and acc == pytest.approx(2 / 3)
    acc, n = stats.svm_accuracy([0.0, 0.1], ["DMSO", "DMSO"], [0.0], ["DMSO"])  # one class: no classifier
    assert math.isnan(acc) and n == 0


def test_cross_fitted_accuracy_hand_computed():
    conds = ["DMSO"] * 4 + ["TNFa"] * 4
    assert list(stats.crop_folds(conds, 2)) == [0, 1, 0, 1, 0, 1, 0, 1]
    assert stats.crop_folds(["A", "A", "B"], 5).max() == 0  # k limited by the smallest condition
    crops = np.arange(8)
    hr = np.array([0.0, 0.1, 0.2, 0.3, 2.0, 2.1, 2.2, 2.3])
    good = hr + 0.05
    swapped = hr.copy()
    swapped[[0, 4]] = swapped[[4, 0]]  # one DMSO crop looks treated and vice versa: 6 / 8 right
    half_missing = np.where(crops % 2 == 0, hr, np.nan)  # no objects in half the crops
    out = stats.cross_fitted_accuracy(hr, crops, {"good": good, "swapped": swapped, "missing": half_missing},
                                      {"good": crops, "swapped": crops, "missing": crops}, conds, k=2)
    assert out["HR"] == (pytest.approx(1.0), 8)
    assert out["good"] == (pytest.approx(1.0), 8)
    assert out["swapped"] == (pytest.approx(0.75), 8)
    assert out["missing"] == (pytest.approx(1.0), 4)
    # per-cell values: several cells per crop, all cells of a crop in the crop's fold
    cells = np.array([0, 0, 1, 2, 3, 4, 5, 5, 6, 7])
    vals = np.array([0.0, 0.1, 0.1, 0.2, 0.3, 2.0, 2.1, 2.2, 2.2, 2.3])
    out = stats.cross_fitted_accuracy(vals, cells, {}, {}, conds, k=2)
    assert out["HR"] == (pytest.approx(1.0), 10)


def test_image_scores():
    hr = np.full((2, 2, 16, 16), 0.5, np.float32)
    sr = hr + 0.1
    assert stats.psnr_per_crop(sr, hr) == pytest.approx([20.0, 20.0], abs=1e-4)
    assert stats.ssim_per_crop(hr, hr) == pytest.approx([1.0, 1.0])
    rng = np.random.default_rng(0)
    real = rng.random((8, 2, 32, 32)).astype(np.float32)
    assert stats.realism_distance(real, real) == pytest.approx(0.0, abs=1e-9)
    assert stats.realism_distance(real, real * 0.2) > 0
    assert stats.median_feature_error(np.array([1.0, 3.0]), np.array(["A", "B"]), np.array([2.0, 3.0]),
                                      np.array(["A", "B"]), ["A", "B"]) == pytest.approx(0.5)


# ----------------------------------------------------------------------------- small pieces

def test_pipeline_object_sizes_scale_for_small_crops():
    text = ("    Typical diameter of objects, in pixel units (Min,Max):15,50\n    Feature size:12\n"
            "    Size of smoothing filter:10\n    Threshold correction factor:1.0\n")
    out = scale_pipeline_text(text, 0.25)
    assert "(Min,Max):3,13\n" in out and "Feature size:3\n" in out and "Size of smoothing filter:2\n" in out
    assert "Threshold correction factor:1.0" in out
    assert scale_pipeline_text(text, 1.0) == text
    shared = (Path(__file__).resolve().parents[1] / "pipelines" / "translocation_hr.cppipe").read_text()
    assert scale_pipeline_text(shared, 0.25) != shared  # the shared pipeline's settings are found


def test_plan_runs_shared_variants_once():
    from rls_core.evaluate.experiment import EvalConfig, plan, tile_steps, unique_variants

    cfg = EvalConfig(assay="translocation", model="m", out="o", factors=[16, 32], steps=None)
    sections = plan(cfg)
    keys = [v.key for v in unique_variants(sections)]
    assert len(keys) == len(set(keys))
    assert "rls_x16" in keys and "rls_x16_realism1" not in keys  # realism 1 = the Table 1 run
    assert {v.key for v in sections["ablation"]} <= set(keys)
    steps, sets = tile_steps(cfg, sections, 10)
    assert steps > 0 and sets > 10


def test_heldout_crops_hold_cells_and_refuse_training_seeds(tiny_model):
    from rls_core.evaluate.data import DataSetupError, check_heldout_seed, simulated_crops

    c = simulated_crops("translocation", 2, 32, seed=9000, progress=False)
    assert c.hr.shape == (4, 2, 32, 32) and c.conditions == ["DMSO", "DMSO", "TNFa", "TNFa"]
    assert c.object_scale == pytest.approx(0.25) and c.hr.max() > 0
    with pytest.raises(DataSetupError, match="training seed"):
        check_heldout_seed(1000, tiny_model)
    check_heldout_seed(9000, tiny_model)


def test_no_objects_gives_a_report_line_not_a_crash(tmp_path):
    """Tables, goal check and Fig. 5 on a read-out where the pipeline found nothing."""
    from rls_core.evaluate import figures, tables
    from rls_core.evaluate.measure import Measured
    from rls_core.evaluate.run_methods import Variant

    conds = ["DMSO", "DMSO", "TNFa", "TNFa"]
    nan4 = np.full(4, np.nan)
    keys = ["rls_x16", "bicubic_x16"]
    measured = Measured(cell_values={k: np.zeros(0) for k in ["HR"] + keys},
                        cell_crops={k: np.zeros(0, int) for k in ["HR"] + keys},
                        crop_values={k: nan4 for k in ["HR"] + keys},
                        crop_objects={k: np.zeros(4) for k in ["HR"] + keys}, per_cell=True, label="ratio")
    variants = {k: types.SimpleNamespace(variant=Variant(k.split("_")[0], 16)) for k in keys}
    res = types.SimpleNamespace(measured=measured, variants=variants, cfg=types.SimpleNamespace(folds=5, assay="x"),
                                test=types.SimpleNamespace(conditions=conds, condition_order=["DMSO", "TNFa"]))
    rows = tables.biology_rows(res, keys)
    assert all(r["n_cell"] == 0 and math.isnan(r["acc_cell"]) for r in rows)
    md = tables.table2_markdown({16: rows}, True, ["DMSO", "TNFa"])
    assert "no objects" in md
    lines = tables.goal_check(res, {16: rows})
    assert any("no objects" in ln for ln in lines) and any("32x" in ln and "not evaluated" in ln for ln in lines)
    png = figures.fig5_boxplots(res, tmp_path / "f5.png", [16], {16: keys}, "cell")
    assert png.stat().st_size > 1000


# ----------------------------------------------------------------------------- the real thing

@needs_cp
def test_quick_evaluation_end_to_end(tiny_model_path, tmp_path):
    """`rls evaluate --quick` on the tiny 32-px model: real searches, real CellProfiler, full report."""
    from rls_core.cli import main

    out = tmp_path / "report"
    rc = main(["evaluate", "--assay", "translocation", "--model", str(tiny_model_path), "--factors", "8",
               "-o", str(out), "--quick", "--threads", "1", "-q"])
    assert rc == 0
    report = (out / "report.md").read_text()
    for heading in ("## Table 1", "## Table 2", "## Figure 5", "## Figure 6", "## Figure 7", "## Figure 8",
                    "## Fidelity vs realism", "## Goal check", "rls evaluate --assay translocation"):
        assert heading in report, heading
    for png in ("fig5_boxplots", "fig6_robustness", "fig7_ablation", "fig8_samples", "fidelity_vs_realism",
                "examples"):
        assert (out / f"{png}.png").stat().st_size > 5000, png
        assert f"({png}.png)" in report
    # CellProfiler really ran the shared HR pipeline (scaled copy) and wrote its CSVs
    cp_dir = out / "cellprofiler"
    assert (cp_dir / "translocation_hr_eval.cppipe").is_file()
    assert list(cp_dir.glob("csv_*/Translocation_Cells.csv")) and list(cp_dir.glob("csv_*/Translocation_Image.csv"))
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    t1 = {(r["variant"], r["metric"]): float(r["value"]) for r in rows if r["section"] == "table1"}
    for method in ("bicubic", "plain", "rls"):
        for metric in ("psnr", "ssim", "lr_psnr", "swd_x1e3", "sec_per_tile"):
            assert math.isfinite(t1[(f"{method}_x8", metric)]), (method, metric)
    assert math.isfinite(t1[("HR", "swd_x1e3")])
    bio = {(r["variant"], r["metric"]): float(r["value"]) for r in rows if r["section"] == "table2"}
    assert math.isfinite(bio[("HR", "acc_image")]) and bio[("HR", "n_image")] > 0  # HR crops hold cells
    assert math.isfinite(bio[("HR", "d_image")])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["quick"] is True and cfg["config"]["factors"] == [8]
    assert cfg["data"]["object_scale"] == pytest.approx(0.25)


@needs_cp
def test_blank_crops_measure_as_no_objects(tmp_path):
    """The real pipeline on empty crops: NaN features and zero counts, no exception."""
    from rls_core.evaluate.measure import measure_sets

    blank = np.zeros((2, 2, 32, 32), np.float32)
    m = measure_sets("translocation", {"HR": blank}, ["DMSO", "TNFa"], ["DMSO", "TNFa"], ["DNA", "NFkB"],
                     tmp_path, object_scale=0.25, progress=False)
    assert np.isnan(m.crop_values["HR"]).all() and len(m.cell_values["HR"]) == 0
    assert (np.nan_to_num(m.crop_objects["HR"]) == 0).all()


@pytest.mark.parametrize("bad, message", [
    (["--degradations", "fog:3"], "bad degradation 'fog:3'"),
    (["--batch-size", "0"], "must be >= 1"),
    (["--model", "no_such_model"], "no_such_model"),
    # an explicit 0 is refused, not replaced by the (hours-long) default
    (["--n-per-condition", "0"], "must be >= 1"), (["--samples", "0"], "must be >= 1"),
    (["--steps", "0"], "--steps must be >= 1"), (["--factors", "3"], "factor 3 does not fit"),
    (["--realism", "-1"], "--realism values must be finite"),
])
def test_bad_settings_stop_before_any_search_with_a_message(tiny_model_path, tmp_path, capsys, bad, message):
    """Refused up front (exit 2, the problem named, no traceback), before any output is written."""
    from rls_core.cli import main

    args = ["evaluate", "--assay", "translocation", "--model", str(tiny_model_path), "--factors", "8",
            "-o", str(tmp_path / "report"), "--quick", "--threads", "1", "-q", "--dry-run"]
    assert main(args + bad) == 2
    err = capsys.readouterr().err
    assert "rls evaluate: error:" in err and message in err and "Traceback" not in err
    assert not (tmp_path / "report" / "report.md").exists()

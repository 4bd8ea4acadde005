"""The shared pipelines (pipelines/*.cppipe) in real CellProfiler 5: in-process and through the CLI.

Small inputs and tiny models keep this quick; the SR pipelines' model setting is pointed at a
tiny model with pipelines/make_pipelines.py's `customize` (as a user would for their own model).
One in-process run uses the shipped translocation model and the real search (fewer steps) and
checks that the nuclei are found.
The HR reference pipelines run on the committed examples and must show the biology. The
scientific SR check with the shipped models is marked slow and skips while they are missing.
"""
from __future__ import annotations

import csv
import math
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import load_script
from test_plugin import cp  # noqa: F401  (session fixture: headless CellProfiler + plugins)

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = ROOT / "pipelines"
EXAMPLES = ROOT / "examples"
CELLPROFILER = Path(sys.executable).with_name("cellprofiler")
CSV = {"translocation": ("Translocation_Cells.csv", "Mean_Nuclei_Math_TranslocationRatio"),
       "golgi": ("Golgi_Image.csv", "Mean_GolgiSpots_AreaShape_Area")}
CONDITIONS = {"translocation": ("DMSO", "TNFa"), "golgi": ("DMSO", "Nocodazole")}
CHANNELS = {"translocation": ("DNA", "NFkB"), "golgi": ("DNA", "Golgi")}



@pytest.fixture(scope="session")
def summarize():
    return load_script(ROOT / "scripts" / "summarize.py", "summarize")


@pytest.fixture(scope="session")
def tiny_models(tiny_model_path, tmp_path_factory):
    from conftest import make_tiny_bundle

    golgi = make_tiny_bundle(tmp_path_factory.mktemp("golgi_model") / "tiny_golgi.h5", channels=CHANNELS["golgi"])
    return {"translocation": tiny_model_path, "golgi": golgi}


@pytest.fixture(scope="session")
def small_lr(tmp_path_factory):
    """Site 1 of each condition of the examples, shrunk 4x (64x64 px): fast, yet segmentable."""
    make_examples = load_script(EXAMPLES / "make_examples.py", "make_examples")
    out = {}
    for assay in CHANNELS:
        hr = tmp_path_factory.mktemp(f"{assay}_hr1")
        for p in (EXAMPLES / assay / "hr").glob(f"{assay}_*_s1_*.tif"):
            shutil.copy(p, hr / p.name)
        lr = tmp_path_factory.mktemp(f"{assay}_lr4")
        make_examples.downscale_folder(hr, lr, factor=4)
        out[assay] = lr
    return out


def custom_pipeline(cp, assay, model, dest: Path, **settings) -> Path:
    """The shared SR pipeline pointed at `model`, saved to `dest`."""
    p = cp.customize(cp.load(PIPELINES / f"{assay}.cppipe"), str(model), **settings)
    cp.save(p, dest)
    return dest


def header(path: Path):
    with open(path, newline="") as fh:
        return next(csv.reader(fh))


def read_rows(path: Path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def finite(values):
    out = []
    for v in values:
        try:
            x = float(v)
        except ValueError:
            continue
        if math.isfinite(x):
            out.append(x)
    return out


def run_cli(pipeline: Path, input_dir: Path, output_dir: Path, timeout: int = 600):
    cmd = [str(CELLPROFILER), "-c", "-r", "-p", str(pipeline), "--plugins-directory", str(ROOT / "plugins"),
           "-i", str(input_dir), "-o", str(output_dir), "-e", "imageio_reader"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


# ----------------------------------------------------------------------------- the files
def test_pipelines_regenerate_identically(cp, tmp_path):
    cp.main(["--out", str(tmp_path)])
    for name in ("translocation", "translocation_hr", "golgi", "golgi_hr"):
        assert (tmp_path / f"{name}.cppipe").read_text() == (PIPELINES / f"{name}.cppipe").read_text(), \
            f"pipelines/{name}.cppipe is stale: run pipelines/make_pipelines.py"


def settings_of(module):
    return [(s.text, s.value_text) for s in module.settings()]


@pytest.mark.parametrize("assay", ["translocation", "golgi"])
def test_pipelines_structure_and_portability(cp, assay):
    text = (PIPELINES / f"{assay}.cppipe").read_text()
    assert "/work" not in text and "/tmp" not in text and "Elsewhere...|/" not in text  # nothing absolute
    sr, hr = cp.load(PIPELINES / f"{assay}.cppipe"), cp.load(PIPELINES / f"{assay}_hr.cppipe")
    sr_names = [m.module_name for m in sr.modules()]
    assert sr_names[:5] == ["Images", "Metadata", "NamesAndTypes", "Groups", "SuperResolveRLS"]
    assert sr_names[-1] == "ExportToSpreadsheet"
    srm = sr.modules()[4]
    assert srm.model_choice.value == assay and srm.factor.value == 16 and srm.method.value == "RLS"
    assert srm.output_names() == list(CHANNELS[assay])
    # identical downstream analysis: SR after its SuperResolveRLS, HR right after Groups
    down_sr, down_hr = sr.modules()[5:], hr.modules()[4:]
    assert [m.module_name for m in down_sr] == [m.module_name for m in down_hr]
    for a, b in zip(down_sr, down_hr):
        assert settings_of(a) == settings_of(b), a.module_name
    export = sr.modules()[-1]
    assert export.directory.dir_choice == "Default Output Folder"


# ----------------------------------------------------------------------------- in-process runs
@pytest.mark.parametrize("assay", ["translocation", "golgi"])
def test_sr_pipeline_in_process(cp, tiny_models, small_lr, tmp_path, assay):
    import cellprofiler_core.preferences as prefs

    # factor 2: 16-px LR tiles, 25 per 64-px field (the tiny model's values are noise anyway)
    p = cp.customize(cp.load(PIPELINES / f"{assay}.cppipe"), str(tiny_models[assay]), factor=2, steps=2)
    prefs.set_default_output_directory(str(tmp_path))
    prefs.set_default_image_directory(str(small_lr[assay]))
    p.add_pathnames_to_file_list(sorted(str(f) for f in small_lr[assay].glob("*.tif")))
    m = p.run()
    assert m.get_experiment_measurement("Exit_Status") == "Complete"
    assert "SuperResolveRLS" in [mod.module_name for mod in p.modules()]
    images = m.get_image_numbers()
    assert len(images) == 2
    for i in images:
        assert m.get_measurement("Image", "ModuleError_05SuperResolveRLS", i) == 0
        assert math.isfinite(m.get_measurement("Image", "SuperResolveRLS_LRPSNR_DNA", i))
        assert m.get_measurement("Image", "SuperResolveRLS_NumberOfTiles_DNA", i) == 25
    fname, column = CSV[assay]
    # the random tiny model draws noise, so this checks the plumbing and the columns; the cells
    # themselves: test_sr_pipeline_in_process_with_the_shipped_model_finds_the_nuclei
    cols = header(tmp_path / fname)
    assert column in cols and "Metadata_Condition" in cols
    image_rows = read_rows(tmp_path / fname.replace("_Cells.csv", "_Image.csv"))
    assert {r["Metadata_Condition"] for r in image_rows} == set(CONDITIONS[assay])
    assert "SuperResolveRLS_LRPSNR_DNA" in image_rows[0]


# ----------------------------------------------------------------------------- command line
@pytest.mark.parametrize("assay", ["translocation", "golgi"])
def test_sr_pipeline_cli(cp, tiny_models, small_lr, tmp_path, assay):
    """`cellprofiler -c -r` with the plugin; bicubic so that the values are meaningful with a tiny model."""
    pipe = custom_pipeline(cp, assay, tiny_models[assay], tmp_path / "sr.cppipe", factor=4, method="bicubic")
    res = run_cli(pipe, small_lr[assay], tmp_path / "out")
    assert res.returncode == 0, res.stderr[-3000:]
    fname, column = CSV[assay]
    assert (tmp_path / "out" / fname).exists(), "no CSV: plugin not loaded? " + res.stderr[-3000:]
    rows = read_rows(tmp_path / "out" / fname)
    by_cond = {c: finite(r[column] for r in rows if r["Metadata_Condition"] == c) for c in CONDITIONS[assay]}
    assert all(by_cond.values()), by_cond


def test_cli_bad_model_fails_clearly(cp, small_lr, tmp_path):
    bad = tmp_path / "not_a_model.h5"
    bad.write_text("hello")
    pipe = custom_pipeline(cp, "translocation", bad, tmp_path / "bad.cppipe", factor=4)
    res = run_cli(pipe, small_lr["translocation"], tmp_path / "out")
    assert res.returncode != 0
    assert "SuperResolveRLS: " in res.stderr and "not an HDF5 file" in res.stderr
    assert not (tmp_path / "out" / "Translocation_Cells.csv").exists()


@pytest.mark.parametrize("on_failure", ["Continue with blank outputs", "Stop the analysis"])
def test_a_bad_image_set_between_good_ones_keeps_their_rows(cp, tiny_models, small_lr, tmp_path, on_failure):
    """Headless: a set whose channels differ in size sits between two good sets. "Continue"
    (the shared pipelines' setting) keeps every good set's CSV rows and flags the bad one;
    "Stop" ends the run with the error."""
    import numpy as np
    import tifffile

    lr = tmp_path / "lr"
    shutil.copytree(small_lr["translocation"], lr)
    dna = tifffile.imread(lr / "translocation_DMSO_B02_s1_DNA.tif")
    tifffile.imwrite(lr / "translocation_DMSO_B02_s5_DNA.tif", dna)
    tifffile.imwrite(lr / "translocation_DMSO_B02_s5_NFkB.tif", np.ascontiguousarray(dna[:-8]))  # 8 rows short
    pipe = custom_pipeline(cp, "translocation", tiny_models["translocation"], tmp_path / "sr.cppipe", factor=4,
                           method="bicubic", on_failure=on_failure)
    res = run_cli(pipe, lr, tmp_path / "out")
    if on_failure.startswith("Stop"):
        assert res.returncode != 0 and "same size" in res.stderr
        return
    assert res.returncode == 0, res.stderr[-3000:]
    rows = read_rows(tmp_path / "out" / "Translocation_Image.csv")
    assert len(rows) == 3, [r.get("FileName_DNA_LR") for r in rows]
    by_site = {r["Metadata_Site"]: r for r in rows}
    assert by_site["5"]["SuperResolveRLS_Succeeded_DNA"] == "0"
    assert "same size" in by_site["5"]["SuperResolveRLS_FailureReason_DNA"]
    for site in ("1",):
        good = [r for r in rows if r["Metadata_Site"] == site]
        assert good and all(r["SuperResolveRLS_Succeeded_DNA"] == "1" for r in good)
        assert all(math.isfinite(float(r["SuperResolveRLS_LRPSNR_DNA"])) for r in good)
    cells = read_rows(tmp_path / "out" / "Translocation_Cells.csv")
    assert {r["Metadata_Condition"] for r in cells if finite([r[CSV["translocation"][1]]])} == {"DMSO", "TNFa"}


def test_hr_pipelines_show_the_biology(cp, summarize, tmp_path):
    """HR references on the committed examples: TNFa raises the ratio, nocodazole shrinks Golgi spots."""
    for assay in ("translocation", "golgi"):
        out = tmp_path / assay / "hr"
        res = run_cli(PIPELINES / f"{assay}_hr.cppipe", EXAMPLES / assay / "hr", out)
        assert res.returncode == 0, res.stderr[-3000:]
        values = summarize.load_values(out, assay)
        ctrl, treated = (statistics.mean(values[c]) for c in CONDITIONS[assay])
        if assay == "translocation":
            assert treated > 1.5 * ctrl, values
            assert len(values["DMSO"]) >= 20 and len(values["TNFa"]) >= 20
        else:
            assert treated < 0.5 * ctrl, values
            assert len(values["DMSO"]) == len(values["Nocodazole"]) == 3


# ----------------------------------------------------------------------------- the science, shipped models
def _effect(values, conditions):
    """Cohen's d (treated - control) and its large-sample standard error
    sqrt((n1 + n2) / (n1 n2) + d^2 / (2 (n1 + n2))) (Hedges & Olkin)."""
    from rls_core.evaluate.stats import cohens_d

    ctrl, treated = (values[c] for c in conditions)
    d = cohens_d(ctrl, treated)
    n1, n2 = len(ctrl), len(treated)
    return d, math.sqrt((n1 + n2) / (n1 * n2) + d * d / (2 * (n1 + n2)))


def _blank_lr_psnr(model, lr_files, channels):
    """The LR consistency (dB) of an all-zero output for one field: the floor that a search
    must clear by a margin, or its result is no better than nothing."""
    import numpy as np
    import tifffile

    lr = np.stack([tifffile.imread(str(lr_files).replace("_DNA.tif", f"_{c}.tif")).astype(np.float32) / 65535
                   for c in channels])
    return float(-10 * np.log10(np.mean((model.to_unit(lr) - model.to_unit(np.zeros_like(lr))) ** 2))), lr.shape[1:]


@pytest.mark.slow
@pytest.mark.parametrize("assay", [
    "translocation",
    # Measured with the 0.3.0 golgi model (cpu preset, ~40 kimg): SR finds 14 nuclei where HR
    # finds 50, its spots are 7x HR's area (857 vs 114 px), d = -0.2 vs HR's -9.2, and two
    # fields reach only 2.6 dB above a blank output. The 0.4.0 model (standard preset, session
    # 14) still fails first on the LR fit: golgi_DMSO_B02_s1 reaches 21.7 dB against a blank
    # output's 19.1 (RLS's priors hold the search away from the LR input, issue 12).
    # strict: the day a retrained model passes, this marker must go.
    pytest.param("golgi", marks=pytest.mark.xfail(strict=True, reason="shipped golgi model too weak (issue 12)")),
])
def test_sr_with_shipped_models_preserves_the_biology(cp, summarize, tmp_path, assay):
    """The shared SR pipeline as shipped (RLS, 16x, the shipped model, 200 steps) on the LR
    examples, against the HR reference pipeline on the HR examples."""
    import hashlib

    import rls_core
    from rls_core.api import default_overlap
    from rls_core.model import load_model
    from rls_core.tiling import make_grid

    model_file = ROOT / "rls_core" / "models" / f"{assay}.h5"
    res = run_cli(PIPELINES / f"{assay}.cppipe", EXAMPLES / assay / "lr", tmp_path / "sr", timeout=3600)
    assert res.returncode == 0, res.stderr[-3000:]
    res = run_cli(PIPELINES / f"{assay}_hr.cppipe", EXAMPLES / assay / "hr", tmp_path / "hr")
    assert res.returncode == 0, res.stderr[-3000:]
    image_csv = CSV[assay][0] if assay == "golgi" else "Translocation_Image.csv"
    sr_rows, hr_rows = read_rows(tmp_path / "sr" / image_csv), read_rows(tmp_path / "hr" / image_csv)
    assert len(sr_rows) == len(hr_rows) == 6

    # The module's record of every image set: done, by this model file and package, in range.
    m = load_model(assay, "cpu")
    digest = hashlib.sha256(model_file.read_bytes()).hexdigest()
    for r in sr_rows:
        assert r["SuperResolveRLS_Succeeded_DNA"] == "1" and r["SuperResolveRLS_FailureReason_DNA"] == ""
        assert r["SuperResolveRLS_Model_DNA"] == assay and r["SuperResolveRLS_ModelChecksum_DNA"] == digest
        assert r["SuperResolveRLS_Version_DNA"] == rls_core.__version__
        assert 0.0 <= float(r["SuperResolveRLS_ConvergedFraction_DNA"]) <= 1.0
        blank_db, lr_shape = _blank_lr_psnr(m, EXAMPLES / assay / "lr" / r["FileName_DNA_LR"], CHANNELS[assay])
        tile = m.resolution // 16
        assert int(float(r["SuperResolveRLS_NumberOfTiles_DNA"])) == len(
            make_grid(lr_shape, tile, 16, default_overlap(tile)).positions)
        # 3 dB (half the error power) over an all-zero output: a result that does not follow
        # the LR input at all (blank, noise, a wrong channel) stays within ~1 dB of the floor
        assert float(r["SuperResolveRLS_LRPSNR_DNA"]) > blank_db + 3, (r["FileName_DNA_LR"], blank_db)

    # Objects: SR must find about the nuclei HR finds. Over the 6 fields HR finds ~50-55;
    # segmentation on a faithful SR image differs by merges/splits of touching nuclei (a few
    # per field), while a blurred or hallucinated image loses or merges most of them (the weak
    # golgi model: 28 %). 0.7-1.3x separates the two.
    n_sr = sum(float(r["Count_Nuclei"]) for r in sr_rows)
    n_hr = sum(float(r["Count_Nuclei"]) for r in hr_rows)
    assert 0.7 * n_hr <= n_sr <= 1.3 * n_hr, (n_sr, n_hr)

    # The read-out per condition: finite, and enough of it for the statistics below.
    results = summarize.summarize([("sr", tmp_path / "sr"), ("hr", tmp_path / "hr")], assay)
    conditions = CONDITIONS[assay]
    for run, values in results.items():
        assert all(len(values.get(c, [])) >= (10 if assay == "translocation" else 3) for c in conditions), (run, values)
        assert all(math.isfinite(v) for c in conditions for v in values[c])

    # The effect must survive and must not be invented. With d and its standard error SE:
    # - survive: SR's effect has HR's sign and is more than 2 SE from zero (a result that lost the
    #   biology, or swapped the conditions, is not: its d is ~0 or of the other sign);
    # - not invented: SR's effect is not larger than HR's by more than 2 SE of their difference.
    d_hr, se_hr = _effect(results["hr"], conditions)
    d_sr, se_sr = _effect(results["sr"], conditions)
    sign = 1.0 if d_hr > 0 else -1.0
    assert sign * d_sr > 2 * se_sr, (d_sr, se_sr, d_hr)
    assert sign * d_sr <= sign * d_hr + 2 * math.sqrt(se_sr ** 2 + se_hr ** 2), (d_sr, d_hr)


def test_cellprofiler_batch_mode_halves_equal_one_run(cp, tiny_models, small_lr, tmp_path):
    """CellProfiler's own scale-out: CreateBatchFiles writes Batch_data.h5 from the shared
    translocation pipeline (tiny model, RLS, 3 steps); `-f/-l` runs it in two halves, as a
    cluster would, and their CSV rows together equal one full run's. Columns that describe
    the run rather than the image set (timing, CellProfiler's per-run group numbering) are
    left out."""
    from cellprofiler_core.utilities.core.modules import instantiate_module

    pipe = cp.customize(cp.load(PIPELINES / "translocation.cppipe"), str(tiny_models["translocation"]),
                        factor=4, method="rls", steps=3)
    batch = instantiate_module("CreateBatchFiles")
    batch.set_module_num(len(pipe.modules()) + 1)
    batch.wants_default_output_directory.value = True
    pipe.add_module(batch)
    cp.save(pipe, tmp_path / "batch.cppipe")
    res = run_cli(tmp_path / "batch.cppipe", small_lr["translocation"], tmp_path / "batch")
    # CellProfiler 5 ends the run that writes the batch file with exit code 1 (CreateBatchFiles
    # stops the analysis after preparing it); the file is what counts
    assert (tmp_path / "batch" / "Batch_data.h5").exists(), res.stderr[-3000:]
    assert "SuperResolveRLS:" not in res.stderr

    def run_sets(first, last, out):
        cmd = [str(CELLPROFILER), "-c", "-r", "-p", str(tmp_path / "batch" / "Batch_data.h5"), "-f", str(first),
               "-l", str(last), "--plugins-directory", str(ROOT / "plugins"), "-o", str(out), "-e", "imageio_reader"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-3000:]
        return read_rows(out / "Translocation_Image.csv")

    n = len(list(small_lr["translocation"].glob("*_DNA.tif")))
    assert n >= 2
    full = run_sets(1, n, tmp_path / "full")
    halves = run_sets(1, n // 2, tmp_path / "h1") + run_sets(n // 2 + 1, n, tmp_path / "h2")
    assert len(full) == len(halves) == n
    per_run = ("ExecutionTime_", "Group_", "SuperResolveRLS_Seconds")
    keep = [k for k in full[0] if not k.startswith(per_run)]
    assert "SuperResolveRLS_LRPSNR_DNA" in keep and "Count_Nuclei" in keep
    assert all(r["SuperResolveRLS_Succeeded_DNA"] == "1" for r in full)
    assert [{k: r[k] for k in keep} for r in halves] == [{k: r[k] for k in keep} for r in full]


@pytest.fixture(scope="session")
def site1_lr16(tmp_path_factory):
    """Site 1 of each condition of the committed 16x LR examples (16x16 px, 9 tiles of the shipped models)."""
    out = {}
    for assay in CHANNELS:
        d = tmp_path_factory.mktemp(f"{assay}_lr16_s1")
        for p in (EXAMPLES / assay / "lr").glob(f"{assay}_*_s1_*.tif"):
            shutil.copy(p, d / p.name)
        out[assay] = d
    return out


def true_nuclei(assay: str, condition: str) -> int:
    import numpy as np
    import tifffile

    labels = tifffile.imread(next((EXAMPLES / assay / "hr").glob(f"{assay}_{condition}_*_s1_nuclei_labels.tif")))
    return len(np.unique(labels[labels > 0]))


def test_sr_pipeline_in_process_with_the_shipped_model_finds_the_nuclei(cp, site1_lr16, tmp_path):
    """The shared translocation pipeline as shipped (shipped model, RLS, 16x), only with 60 steps
    instead of 500: the real search in real CellProfiler must give images in which the standard
    modules find the nuclei. (The golgi model cannot draw its cells yet: its shipped-pipeline test,
    test_sr_with_shipped_models_preserves_the_biology, is an expected failure until it is retrained.)"""
    import cellprofiler_core.preferences as prefs

    assay = "translocation"
    p = cp.customize(cp.load(PIPELINES / f"{assay}.cppipe"), None, steps=60)
    prefs.set_default_output_directory(str(tmp_path))
    prefs.set_default_image_directory(str(site1_lr16[assay]))
    p.add_pathnames_to_file_list(sorted(str(f) for f in site1_lr16[assay].glob("*.tif")))
    m = p.run()
    assert m.get_experiment_measurement("Exit_Status") == "Complete"
    images = m.get_image_numbers()
    assert len(images) == 2
    for i in images:
        cond = m.get_measurement("Image", "Metadata_Condition", i)
        assert m.get_measurement("Image", "ModuleError_05SuperResolveRLS", i) == 0
        assert m.get_measurement("Image", "SuperResolveRLS_Succeeded_DNA", i) == 1
        # 16 px LR, 8-px tiles overlapping by 2 (a quarter): 3 x 3
        assert m.get_measurement("Image", "SuperResolveRLS_NumberOfTiles_DNA", i) == 9
        assert math.isfinite(m.get_measurement("Image", "SuperResolveRLS_LRPSNR_DNA", i))
        found, truth = m.get_measurement("Image", "Count_Nuclei", i), true_nuclei(assay, cond)
        # At 16x a nucleus (20-35 px) spans ~2 LR pixels, so touching nuclei merge and some are
        # lost (measured: 5 of 9 and 7 of 14). The lower bound fails a search that draws no
        # nucleus-like blobs; the upper one, one that breaks them up.
        assert truth / 3 <= found <= 1.5 * truth, (cond, found, truth)

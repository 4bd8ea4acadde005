"""Tests for the HCS field simulator (rls_core.simulate): fast, small fields."""
from __future__ import annotations

import argparse
import csv
import re

import numpy as np
import pytest
from skimage.filters import threshold_otsu
from skimage.measure import label as cc_label
from skimage.segmentation import expand_labels

from rls_core.simulate import ASSAYS, CONDITIONS, SimulatedField, simulate_field, write_dataset
from rls_core.simulate import cli as sim_cli

SIZE = 256
IMAGE_RE = re.compile(r"^(?P<Assay>[a-z]+)_(?P<Condition>[A-Za-z]+)_(?P<Well>[A-P][0-9]{2})"
                      r"_s(?P<Site>[0-9]+)_(?P<Channel>[A-Za-z]+)\.tif$")


def _fields(assay, condition, seeds=(11, 12, 13)):
    return [simulate_field(assay, condition, s, size=SIZE) for s in seeds]


@pytest.fixture(scope="module")
def transloc():
    return {c: _fields("translocation", c) for c in CONDITIONS["translocation"]}


@pytest.fixture(scope="module")
def golgi():
    return {c: _fields("golgi", c) for c in CONDITIONS["golgi"]}


def test_determinism():
    a = simulate_field("translocation", "TNFa", 5, size=SIZE)
    b = simulate_field("translocation", "TNFa", 5, size=SIZE)
    c = simulate_field("translocation", "TNFa", 6, size=SIZE)
    for name in ASSAYS["translocation"]:
        assert np.array_equal(a.channels[name], b.channels[name])
        assert np.array_equal(a.clean[name], b.clean[name])
        assert not np.array_equal(a.channels[name], c.channels[name])
    assert np.array_equal(a.cells, b.cells) and np.array_equal(a.nuclei, b.nuclei)
    assert not np.array_equal(a.nuclei, c.nuclei)
    assert a.cell_table == b.cell_table


@pytest.mark.parametrize("assay", sorted(ASSAYS))
def test_types_shapes_and_labels(assay):
    f = simulate_field(assay, CONDITIONS[assay][1], 3, size=SIZE)
    assert isinstance(f, SimulatedField)
    assert tuple(f.channels) == ASSAYS[assay]
    for name in ASSAYS[assay]:
        assert f.channels[name].dtype == np.uint16 and f.channels[name].shape == (SIZE, SIZE)
        assert f.clean[name].dtype == np.float32 and f.clean[name].shape == (SIZE, SIZE)
        assert f.clean[name].min() >= 0.0 and f.clean[name].max() <= 1.0
    assert f.nuclei.dtype == np.int32 and f.cells.dtype == np.int32
    n = len(f.cell_table)
    assert n >= 5
    ids = np.arange(1, n + 1)
    assert np.array_equal(np.unique(f.nuclei[f.nuclei > 0]), ids)
    assert np.array_equal(np.unique(f.cells[f.cells > 0]), ids)
    assert [int(r["label"]) for r in f.cell_table] == list(ids)
    # every nucleus pixel lies in the cell with the same id; every cell has cytoplasm
    nuc = f.nuclei > 0
    assert np.array_equal(f.cells[nuc], f.nuclei[nuc])
    cyto_area = np.bincount(np.where(nuc, 0, f.cells).ravel(), minlength=n + 1)[1:]
    assert np.all(cyto_area > 0)
    # every cell is one connected piece
    for k in ids:
        assert cc_label(f.cells == k, connectivity=1).max() == 1
    for r in f.cell_table:
        assert r["area"] > r["nucleus_area"] > 0


def test_intensity_range_is_realistic():
    """The camera model's documented scale (optics.py): background = offset + background
    fluorescence x illumination (>= 0.3 of the peak), plus a little haze; interphase nuclei
    ~1500-3000 ADU. Separates a lost offset, a wrong bit depth or a [0, 1] image from success
    (measured on this field: background 164, nuclei 2039)."""
    from rls_core.simulate.optics import OpticsParams

    p = OpticsParams()
    dna_bg = p.channels["DNA"].background_adu
    f = simulate_field("translocation", "DMSO", 2, size=SIZE)
    dna = f.channels["DNA"].astype(float)
    bg = np.median(dna[f.cells == 0])
    assert p.camera_offset + 0.3 * dna_bg <= bg <= p.camera_offset + 1.5 * dna_bg
    n = len(f.cell_table)
    nuc_mean = np.bincount(f.nuclei.ravel(), dna.ravel(), n + 1)[1:] / np.bincount(f.nuclei.ravel(), minlength=n + 1)[1:]
    assert 1500 <= np.median(nuc_mean) <= 3000
    assert dna.max() < 65535                     # no saturation by default


def _camera_ratio(f: SimulatedField) -> np.ndarray:
    """Plain measurement: mean NF-kB in nucleus / in a 5-px cytoplasm ring (GT labels)."""
    img = f.channels["NFkB"].astype(float)
    n = len(f.cell_table)
    ring = expand_labels(f.nuclei, 5)
    ring = np.where((ring == f.cells) & (f.nuclei == 0), ring, 0)
    mn = np.bincount(f.nuclei.ravel(), img.ravel(), n + 1) / np.maximum(np.bincount(f.nuclei.ravel(), minlength=n + 1), 1)
    mr = np.bincount(ring.ravel(), img.ravel(), n + 1) / np.maximum(np.bincount(ring.ravel(), minlength=n + 1), 1)
    ok = np.bincount(ring.ravel(), minlength=n + 1) > 5
    return (mn / np.where(ok, mr, np.nan))[1:][ok[1:]]


def test_translocation_truth_and_camera_measurement(transloc):
    truth = {c: np.array([r["true_translocation_ratio"] for f in fs for r in f.cell_table])
             for c, fs in transloc.items()}
    assert np.nanmean(truth["DMSO"]) < 0.8
    assert np.nanmean(truth["TNFa"]) > np.nanmean(truth["DMSO"]) + 1.0
    resp = {c: np.array([r["responder"] for f in fs for r in f.cell_table]) for c, fs in transloc.items()}
    assert resp["DMSO"].sum() == 0
    assert 0.6 < resp["TNFa"].mean() <= 1.0
    # responders are the translocated ones, non-responders look like DMSO
    t = truth["TNFa"]
    assert np.nanmedian(t[resp["TNFa"] == 1]) > 2 * np.nanmedian(t[resp["TNFa"] == 0])
    cam = {c: np.concatenate([_camera_ratio(f) for f in fs]) for c, fs in transloc.items()}
    assert np.nanmedian(cam["TNFa"]) > 1.5 * np.nanmedian(cam["DMSO"])
    assert np.nanmedian(cam["DMSO"]) < 1.0 < np.nanmedian(cam["TNFa"])


def _otsu_spots(f: SimulatedField):
    """Otsu threshold of the Golgi channel inside cells -> (n spots per cell, mean area)."""
    img = f.channels["Golgi"].astype(float)
    inside = f.cells > 0
    thr = threshold_otsu(img[inside])
    spots = cc_label(np.where((img > thr) & inside, f.cells, 0), connectivity=2)
    areas = np.bincount(spots.ravel())[1:]
    return spots.max() / len(f.cell_table), areas


def test_golgi_dispersal(golgi):
    per_cell, areas = {}, {}
    for c, fs in golgi.items():
        res = [_otsu_spots(f) for f in fs]
        per_cell[c] = np.mean([r[0] for r in res])
        areas[c] = np.concatenate([r[1] for r in res]).mean()
    assert areas["Nocodazole"] < 0.6 * areas["DMSO"]
    assert per_cell["Nocodazole"] > 2 * per_cell["DMSO"]
    gt_area = {c: np.nanmean([r["golgi_mean_spot_area"] for f in fs for r in f.cell_table])
               for c, fs in golgi.items()}
    gt_count = {c: np.mean([r["golgi_spot_count"] for f in fs for r in f.cell_table])
                for c, fs in golgi.items()}
    assert gt_area["Nocodazole"] < 0.5 * gt_area["DMSO"]
    assert gt_count["Nocodazole"] > 3 * gt_count["DMSO"]


def test_write_dataset(tmp_path):
    paths = write_dataset(tmp_path / "a", "translocation", None, fields=2, seed=7, size=96,
                          progress=False)
    assert len(paths) == 2 * 2 * 2 and all(p.exists() for p in paths)
    import tifffile
    for p in paths:
        m = IMAGE_RE.match(p.name)
        assert m, p.name
        assert m["Assay"] == "translocation" and m["Channel"] in ASSAYS["translocation"]
        assert m["Well"] == {"DMSO": "B02", "TNFa": "B03"}[m["Condition"]]
        img = tifffile.imread(p)
        assert img.dtype == np.uint16 and img.shape == (96, 96)
    names = sorted(q.name for q in (tmp_path / "a").iterdir())
    labels = [q for q in names if q.endswith("_labels.tif")]
    assert len(labels) == 2 * 2 * 2
    assert not any(IMAGE_RE.match(q) for q in labels)
    assert "translocation_TNFa_B03_s2_NFkB.tif" in names
    with open(tmp_path / "a" / "ground_truth.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and {"image", "condition", "well", "site", "label",
                     "true_translocation_ratio"} <= set(rows[0])
    stem = rows[0]["image"]
    lab = tifffile.imread(tmp_path / "a" / f"{stem}_cells_labels.tif")
    assert int(lab.max()) == sum(r["image"] == stem for r in rows)
    # same seed -> bit-identical files (and ground truth), also from 3 worker processes
    write_dataset(tmp_path / "b", "translocation", None, fields=2, seed=7, size=96, progress=False,
                  workers=3)
    assert sorted(q.name for q in (tmp_path / "b").iterdir()) == names
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


@pytest.mark.parametrize("call, match", [
    (lambda: simulate_field("mitosis", "DMSO", 0), r"'mitosis'.*golgi.*translocation"),
    (lambda: simulate_field("golgi", "TNFa", 0), r"'TNFa'.*DMSO, Nocodazole"),
    (lambda: simulate_field("golgi", "DMSO", 0, size=32), r"size.*64.*32"),
    (lambda: simulate_field("golgi", "DMSO", 0, responder_fraction=1.5), r"responder_fraction"),
    (lambda: write_dataset("/tmp/unused_sim", "golgi", ["DMSO"], fields=0, seed=0), r"fields.*0"),
    (lambda: write_dataset("/tmp/unused_sim", "golgi", ["TNFa"], fields=1, seed=0), r"Nocodazole"),
    (lambda: write_dataset("/tmp/unused_sim", "golgi", ["DMSO"], fields=1, seed=0, workers=0), r"workers.*0"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_cli(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="rls simulate")
    sim_cli.add_arguments(parser)
    args = parser.parse_args(["--assay", "golgi", "--condition", "Nocodazole", "--fields", "1",
                              "--seed", "3", "--size", "80", "-o", str(tmp_path), "--no-progress"])
    assert sim_cli.run(args) == 0
    assert (tmp_path / "golgi_Nocodazole_B03_s1_Golgi.tif").exists()
    assert (tmp_path / "golgi_Nocodazole_B03_s1_DNA.tif").exists()
    assert not list(tmp_path.glob("golgi_DMSO_*"))
    # a bad condition: the message names the valid ones, exit 2, no traceback
    assert sim_cli.main(["--assay", "golgi", "--condition", "TNFa", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "rls simulate: error:" in err and "Nocodazole" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    out = capsys.readouterr().out
    assert "rls simulate --assay" in out and "--condition" in out

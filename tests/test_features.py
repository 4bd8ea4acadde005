"""rls_core.features: per-cell read-outs separate the simulated conditions (fast, 256-px fields)."""
from __future__ import annotations

import numpy as np
import pytest

from rls_core.features import (golgi_spot_areas, measure_crop, measure_crops, segment_nuclei,
                               translocation_ratios)
from rls_core.simulate import ASSAYS, simulate_field
from rls_core.train.data import measure_normalization, normalize


def _unit_fields(assay: str, conditions, seeds=(11, 12), size: int = 256):
    """Fields in the model's [0, 1] units, with one normalisation shared by all (as a model has)."""
    fields = {c: [simulate_field(assay, c, s, size=size) for s in seeds] for c in conditions}
    full = {c: [np.stack([f.channels[k] for k in ASSAYS[assay]]).astype(np.float32) / 65535.0 for f in fs]
            for c, fs in fields.items()}
    norm = measure_normalization([x for xs in full.values() for x in xs])
    unit = {c: np.stack([(normalize(x, norm) + 1) * 0.5 for x in xs]) for c, xs in full.items()}
    return fields, unit


def test_nuclei_found_and_empty_images_give_none():
    fields, unit = _unit_fields("translocation", ["DMSO"], seeds=(3,))
    f, u = fields["DMSO"][0], unit["DMSO"][0]
    lab = segment_nuclei(u[0], drop_border=False)
    n_true = len(f.cell_table)
    assert 0.6 * n_true <= lab.max() <= 1.3 * n_true
    # found nuclei sit on true nuclei
    assert np.mean(f.nuclei[lab > 0] > 0) > 0.9
    rng = np.random.default_rng(0)
    assert segment_nuclei(0.02 * rng.random((64, 64))).max() == 0  # background noise only
    assert segment_nuclei(np.zeros((64, 64))).max() == 0
    inner = segment_nuclei(u[0])
    for edge in (inner[0], inner[-1], inner[:, 0], inner[:, -1]):
        assert not edge.any()


def test_translocation_ratio_higher_with_tnfa():
    _, unit = _unit_fields("translocation", ["DMSO", "TNFa"])
    dmso = measure_crops("translocation", unit["DMSO"])
    tnfa = measure_crops("translocation", unit["TNFa"])
    assert len(dmso) >= 10 and len(tnfa) >= 10
    assert np.median(dmso) < 0.8 < 1.3 < np.median(tnfa)


def test_golgi_spot_area_smaller_with_nocodazole():
    _, unit = _unit_fields("golgi", ["DMSO", "Nocodazole"])
    dmso = measure_crops("golgi", unit["DMSO"])
    noc = measure_crops("golgi", unit["Nocodazole"])
    assert len(dmso) >= 10 and len(noc) >= 10
    assert np.median(noc) < 0.5 * np.median(dmso)


def test_synthetic_cell_values():
    """One round nucleus with a known nuclear/cytoplasmic NF-kB level and known spots."""
    yy, xx = np.mgrid[:96, :96]
    r = np.hypot(yy - 48, xx - 48)
    dna = (r < 10).astype(np.float32) * 0.8
    nfkb = np.where(r < 10, 0.6, np.where(r < 25, 0.2, 0.0)).astype(np.float32)
    assert translocation_ratios(dna, nfkb) == pytest.approx([3.0], rel=0.05)
    golgi = np.zeros_like(dna)
    for cy, cx in [(30, 30), (30, 66), (66, 30), (66, 66)]:  # four 3x3 puncta
        golgi[cy - 1:cy + 2, cx - 1:cx + 2] = 0.9
    areas = golgi_spot_areas(dna, golgi, cell_radius=25, sigma=0.0)
    assert areas == pytest.approx([9.0])


def test_unknown_assay():
    with pytest.raises(ValueError, match="no feature"):
        measure_crop("mitosis", np.zeros((2, 32, 32), np.float32))

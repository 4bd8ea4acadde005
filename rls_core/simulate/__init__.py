"""Simulated fluorescence high-content-screening (HCS) fields with ground truth.

Real HCS plates cannot be downloaded here, so we simulate fields whose truth we know: to
train StyleGAN2 priors on HR crops, to make LR/HR example sets, and to test whether
interpretable measurements (NF-kB nuclear translocation, Golgi dispersal) survive
super-resolution.

Assays (channel names in order) and conditions::

    translocation: DNA, NFkB   conditions DMSO (p65 cytoplasmic) / TNFa (p65 nuclear)
    golgi:         DNA, Golgi  conditions DMSO (perinuclear ribbon) / Nocodazole (puncta)

Modules: ``cells`` (geometry), ``assays`` (clean channel rendering), ``optics`` (PSF,
illumination, camera noise, uint16), ``cli`` (``rls simulate``).

File layout written by :func:`write_dataset` (one well per condition, in the assay's
condition order: first condition -> B02, second -> B03; sites 1..N)::

    {assay}_{condition}_{well}_s{site}_{channel}.tif   uint16 camera image, e.g.
                                                       translocation_TNFa_B03_s2_NFkB.tif
    {assay}_{condition}_{well}_s{site}_nuclei_labels.tif   uint16 nucleus labels
    {assay}_{condition}_{well}_s{site}_cells_labels.tif    uint16 cell labels (same ids)
    ground_truth.csv                                   one row per cell
    simulation.json                                    parameters used

Images match the CellProfiler metadata regex::

    ^(?P<Assay>[a-z]+)_(?P<Condition>[A-Za-z]+)_(?P<Well>[A-P][0-9]{2})_s(?P<Site>[0-9]+)_(?P<Stain>[A-Za-z]+)\\.tif$

Label files do *not* match it (the ``_labels`` part adds an underscore that
``[A-Za-z]+`` cannot cross), so a NamesAndTypes rule on Stain in {DNA, NFkB, Golgi}
picks only camera images; load labels as objects with::

    ^(?P<Assay>[a-z]+)_(?P<Condition>[A-Za-z]+)_(?P<Well>[A-P][0-9]{2})_s(?P<Site>[0-9]+)_(?P<Objects>nuclei|cells)_labels\\.tif$

Ground truth (``SimulatedField.cell_table`` and ``ground_truth.csv``) is *measured on the
clean images with the true labels*, so it is what a perfect pipeline would report:

* ``true_translocation_ratio``: mean clean NF-kB in the nucleus / mean clean NF-kB in the
  cytoplasm (cell minus nucleus). DMSO ~0.4-0.6, TNFa responders ~2-4.
* ``golgi_spot_count`` / ``golgi_mean_spot_area``: 8-connected components of the clean
  Golgi image above ``assays.GOLGI_GT_THRESHOLD`` x the cell's Golgi brightness, within
  the cell. ``golgi_elements`` is the number of Golgi stacks/mini-stacks drawn.
* ``responder``: 1 if the cell responds to the treatment (always 0 in DMSO).
* ``area``, ``nucleus_area`` (px), centroid, ``mitotic``, ``dim``, ``touches_border``.

Everything is deterministic: the same (assay, condition, seed, parameters) gives
bit-identical arrays and files.
"""
from __future__ import annotations

import csv
import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import InputError
from .assays import ASSAYS, CONDITIONS, render_dna, render_golgi, render_nfkb
from .cells import make_geometry
from .optics import OpticsParams, acquire, illumination_field

__all__ = ["simulate_field", "SimulatedField", "write_dataset", "ASSAYS", "CONDITIONS",
           "OpticsParams", "WELLS", "image_name"]

#: well of each condition (by its position in CONDITIONS[assay])
WELLS: Tuple[str, ...] = ("B02", "B03", "B04", "B05")
MIN_SIZE = 64


@dataclass
class SimulatedField:
    """One simulated field of view with its ground truth."""

    assay: str
    condition: str
    seed: int
    channels: Dict[str, np.ndarray]          # name -> uint16 (H, W) camera image
    clean: Dict[str, np.ndarray]             # name -> float32 (H, W) noiseless truth in [0, 1]
    nuclei: np.ndarray                       # int32 labels
    cells: np.ndarray                        # int32 labels, same ids as nuclei
    cell_table: List[Dict[str, float]] = field(default_factory=list)


def _check_assay_condition(assay: str, condition: str) -> None:
    if assay not in ASSAYS:
        raise InputError(f"unknown assay {assay!r}; valid assays: {', '.join(sorted(ASSAYS))}")
    if condition not in CONDITIONS[assay]:
        raise InputError(f"condition {condition!r} is not valid for assay {assay!r}; "
                         f"valid conditions: {', '.join(CONDITIONS[assay])}")


def _check_params(size, density, responder_fraction, nucleus_diameter, dose, seed) -> None:
    if not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
        raise InputError(f"size must be an integer >= {MIN_SIZE} px, got {size!r}")
    if not (isinstance(seed, (int, np.integer)) and seed >= 0):
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    if not (density > 0 and math.isfinite(density)):
        raise InputError(f"density must be > 0 (1.0 = typical sub-confluent), got {density!r}")
    if not 0.0 <= responder_fraction <= 1.0:
        raise InputError(f"responder_fraction must be in [0, 1], got {responder_fraction!r}")
    if not 0.0 <= dose <= 1.0:
        raise InputError(f"dose must be in [0, 1] (1 = saturating), got {dose!r}")
    try:
        dmin, dmax = (float(v) for v in nucleus_diameter)
    except (TypeError, ValueError):
        raise InputError(f"nucleus_diameter must be a (min, max) pair in px, got {nucleus_diameter!r}")
    if not (4.0 <= dmin <= dmax) or dmax >= size:
        raise InputError(f"nucleus_diameter must satisfy 4 <= min <= max < size, "
                         f"got {nucleus_diameter!r} for size {size}")


def _stable_id(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def simulate_field(assay: str, condition: str, seed: int, size: int = 512, density: float = 1.0,
                   responder_fraction: float = 0.85,
                   nucleus_diameter: Tuple[float, float] = (20, 35), dose: float = 1.0,
                   optics: Optional[OpticsParams] = None) -> SimulatedField:
    """Simulate one field (all channels of ``ASSAYS[assay]``) with ground truth.

    ``density`` scales the expected number of cells (1.0 ~ 40-60 cells per 512^2 field,
    with clusters and empty areas); ``responder_fraction`` and ``dose`` (0..1) set how many
    treated cells respond and how strongly; ``nucleus_diameter`` sets the scale of
    everything. The random stream is derived from (seed, assay, condition), so different
    conditions with the same seed are independent fields.
    """
    _check_assay_condition(assay, condition)
    _check_params(size, density, responder_fraction, nucleus_diameter, dose, seed)
    ss = np.random.SeedSequence([int(seed), _stable_id(assay), _stable_id(condition)])
    geo_ss, dna_ss, marker_ss, optics_ss = ss.spawn(4)
    geom = make_geometry(np.random.default_rng(geo_ss), int(size), float(density),
                         (float(nucleus_diameter[0]), float(nucleus_diameter[1])))
    clean: Dict[str, np.ndarray] = {}
    clean["DNA"], dna_rows = render_dna(geom, np.random.default_rng(dna_ss))
    marker = ASSAYS[assay][1]
    mrng = np.random.default_rng(marker_ss)
    if assay == "translocation":
        clean[marker], m_rows = render_nfkb(geom, mrng, condition, responder_fraction, dose)
    else:
        clean[marker], m_rows = render_golgi(geom, mrng, condition, responder_fraction, dose)

    params = optics or OpticsParams()
    orng = np.random.default_rng(optics_ss)
    illum = illumination_field(orng, int(size), params.vignetting)
    channels = {name: acquire(clean[name], name, orng, illum, params, geom.scale)
                for name in ASSAYS[assay]}

    table = _base_table(geom)
    for row, d, m in zip(table, dna_rows, m_rows):
        row.update(d)
        row.update(m)
    return SimulatedField(assay=assay, condition=condition, seed=int(seed), channels=channels,
                          clean=clean, nuclei=geom.nuclei, cells=geom.cells, cell_table=table)


def _base_table(geom) -> List[Dict[str, float]]:
    n = geom.n_cells
    H, W = geom.cells.shape
    lab = geom.cells.ravel()
    area = np.bincount(lab, minlength=n + 1)
    nuc_area = np.bincount(geom.nuclei.ravel(), minlength=n + 1)
    yy, xx = np.divmod(np.arange(H * W), W)
    cy = np.bincount(lab, yy, minlength=n + 1) / np.maximum(area, 1)
    cx = np.bincount(lab, xx, minlength=n + 1) / np.maximum(area, 1)
    border = np.zeros(n + 1, bool)
    for edge in (geom.cells[0], geom.cells[-1], geom.cells[:, 0], geom.cells[:, -1]):
        border[edge] = True
    rows = []
    for sp in geom.specs:
        k = sp.label
        rows.append({"label": float(k), "area": float(area[k]), "nucleus_area": float(nuc_area[k]),
                     "centroid_y": float(cy[k]), "centroid_x": float(cx[k]),
                     "mitotic": float(sp.mitotic), "touches_border": float(border[k])})
    return rows


def image_name(assay: str, condition: str, well: str, site: int, channel: str) -> str:
    """File name of one channel image (see the module docstring for the convention)."""
    return f"{assay}_{condition}_{well}_s{site}_{channel}.tif"


def _field_seed(seed: int, cond_index: int, site: int) -> int:
    return int(np.random.SeedSequence([int(seed), cond_index, site]).generate_state(1)[0])


def _write_field(out: Path, assay: str, cond: str, site: int, seed: int, size: int,
                 kw: Dict[str, object]) -> Tuple[List[Path], List[Dict[str, object]]]:
    """Simulate one site and write its channel TIFFs and label images; returns the channel
    paths and the field's ground-truth rows. One job of :func:`write_dataset`: everything it
    draws comes from the field's own seed, so any number of workers writes the same files."""
    import tifffile

    ci = CONDITIONS[assay].index(cond)
    well = WELLS[ci]
    fseed = _field_seed(seed, ci, site)
    f = simulate_field(assay, cond, fseed, size=size, **kw)
    if int(f.cells.max()) > 65535:
        raise InputError("more than 65535 cells in one field; use a smaller size")
    stem = f"{assay}_{cond}_{well}_s{site}"
    written = []
    for name in ASSAYS[assay]:
        p = out / image_name(assay, cond, well, site, name)
        tifffile.imwrite(p, f.channels[name], photometric="minisblack", metadata=None)
        written.append(p)
    tifffile.imwrite(out / f"{stem}_nuclei_labels.tif", f.nuclei.astype(np.uint16),
                     photometric="minisblack", metadata=None)
    tifffile.imwrite(out / f"{stem}_cells_labels.tif", f.cells.astype(np.uint16),
                     photometric="minisblack", metadata=None)
    rows: List[Dict[str, object]] = []
    for r in f.cell_table:
        row: Dict[str, object] = {"image": stem, "assay": assay, "condition": cond,
                                  "well": well, "site": site, "field_seed": fseed}
        for k, v in r.items():
            row[k] = int(v) if k in _INT_COLUMNS else v
        rows.append(row)
    return written, rows


def write_dataset(out_dir: Union[str, Path], assay: str, conditions: Optional[Sequence[str]],
                  fields: int, seed: int, size: int = 512, progress: bool = True,
                  workers: int = 1, **kw) -> List[Path]:
    """Simulate ``fields`` sites per condition and write TIFFs + ``ground_truth.csv``.

    ``conditions`` None/empty means all conditions of the assay. Each field gets its own
    seed derived from (seed, condition, site), stored in the CSV's ``field_seed`` column so
    a single field can be regenerated with :func:`simulate_field`. ``workers`` > 1 simulates
    that many fields at once in separate processes; the files are the same for any number.
    Extra keyword arguments go to :func:`simulate_field`. Returns the written channel-image paths.
    """
    from tqdm import tqdm

    if assay not in ASSAYS:
        raise InputError(f"unknown assay {assay!r}; valid assays: {', '.join(sorted(ASSAYS))}")
    conds = list(conditions) if conditions else list(CONDITIONS[assay])
    for c in conds:
        _check_assay_condition(assay, c)
    if len(set(conds)) != len(conds):
        raise InputError(f"conditions must not repeat, got {conds}")
    if not isinstance(fields, (int, np.integer)) or fields < 1:
        raise InputError(f"fields must be an integer >= 1, got {fields!r}")
    if not isinstance(workers, (int, np.integer)) or workers < 1:
        raise InputError(f"workers must be an integer >= 1, got {workers!r}")
    _check_params(size, kw.get("density", 1.0), kw.get("responder_fraction", 0.85),
                  kw.get("nucleus_diameter", (20, 35)), kw.get("dose", 1.0), seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    jobs = [(c, s) for c in conds for s in range(1, fields + 1)]
    args = [(out, assay, c, s, int(seed), int(size), kw) for c, s in jobs]
    workers = min(int(workers), len(jobs))
    bar = tqdm(total=len(jobs), desc=f"simulate {assay}", unit="field", disable=not progress)
    written: List[Path] = []
    rows: List[Dict[str, object]] = []
    pool = None
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        # spawn, not fork: the caller may hold torch's thread pools, which forked children inherit broken
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        results = pool.map(_write_field, *zip(*args)) if pool else (_write_field(*a) for a in args)
        for paths, field_rows in results:  # in job order, whichever worker finished first
            written += paths
            rows += field_rows
            bar.update(1)
            bar.set_postfix(cells=len(field_rows))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)

    keys: List[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    with open(out / "ground_truth.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys, restval="", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (_fmt(v) if isinstance(v, float) else v) for k, v in r.items()})
    meta = {"assay": assay, "conditions": conds, "fields": int(fields), "seed": int(seed),
            "size": int(size), "channels": list(ASSAYS[assay]),
            "wells": {c: WELLS[CONDITIONS[assay].index(c)] for c in conds},
            "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()
                        if isinstance(v, (int, float, str, tuple, list))}}
    (out / "simulation.json").write_text(json.dumps(meta, indent=2) + "\n")
    return written


_INT_COLUMNS = {"label", "area", "nucleus_area", "mitotic", "touches_border", "responder",
                "dim", "golgi_elements", "golgi_spot_count"}


def _fmt(v: float) -> str:
    return "nan" if not math.isfinite(v) else f"{v:.6g}"

"""Interpretable per-cell features, measured the same way on real and generated crops.

A prior is only useful for screening if what biologists measure survives it, so the
quality benchmark compares two assay read-outs on generated vs real crops:

* translocation: per-cell NF-kB ratio = mean NF-kB in the nucleus / mean NF-kB in a
  cytoplasmic ring (the usual CellProfiler "ring" cytoplasm), high when p65 is nuclear;
* golgi: per-cell mean Golgi spot area, large for the perinuclear ribbon (DMSO) and small
  for dispersed mini-stacks (Nocodazole).

The measurement is deliberately simple and has no learned parts: Otsu nuclei on the
smoothed DNA channel, split by a distance-transform watershed and size-filtered; cells and
rings by fixed-distance label expansion (``skimage.segmentation.expand_labels``), which
behaves identically on any image whatever its marker looks like. Nuclei touching the crop
border are skipped (their cells are cut off). Inputs are (C, H, W) crops in the model's
[0, 1] units (full scale normalised by the bundle's low/high), channel 0 = DNA, channel 1
= the marker. Defaults are in pixels for the simulator's scale (nuclei 20-35 px across).
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import gaussian, threshold_otsu
from skimage.measure import label as cc_label
from skimage.segmentation import expand_labels, watershed

#: feature measured for each assay (name used in tables)
ASSAY_FEATURES: Dict[str, str] = {"translocation": "nfkb_ratio", "golgi": "golgi_spot_area"}
#: direction of the treatment effect: +1 = treated cells have larger values
TREATED_DIRECTION: Dict[str, int] = {"translocation": +1, "golgi": -1}


def segment_nuclei(dna: np.ndarray, min_area: int = 80, sigma: float = 1.0,
                   min_distance: int = 7, min_threshold: float = 0.08,
                   drop_border: bool = True) -> np.ndarray:
    """Otsu nuclei on the smoothed DNA image; touching nuclei split at distance-map peaks.

    The threshold is at least ``min_threshold`` (unit intensities): on a crop with no
    nucleus Otsu would otherwise split the background noise into fake nuclei.
    Returns int32 labels (0 = background).
    """
    img = gaussian(np.asarray(dna, np.float32), sigma=sigma, preserve_range=True)
    if not np.isfinite(img).all() or float(img.max() - img.min()) < 1e-6:
        return np.zeros(img.shape, np.int32)
    mask = ndi.binary_fill_holes(img > max(float(threshold_otsu(img)), min_threshold))
    dist = ndi.distance_transform_edt(mask)
    cc = cc_label(mask)
    peaks = peak_local_max(dist, min_distance=min_distance, labels=cc, exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    lab = watershed(-dist, markers, mask=mask)
    sizes = np.bincount(lab.ravel())
    keep = sizes >= min_area
    keep[0] = False
    if drop_border:
        for edge in (lab[0], lab[-1], lab[:, 0], lab[:, -1]):
            keep[edge] = False
    ids = np.flatnonzero(keep)
    lut = np.zeros(len(keep), np.int32)
    lut[ids] = np.arange(1, len(ids) + 1)
    return lut[lab]


def _label_means(img: np.ndarray, lab: np.ndarray, n: int) -> np.ndarray:
    s = np.bincount(lab.ravel(), img.ravel(), minlength=n + 1)[1:]
    c = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        return s / c


def translocation_ratios(dna: np.ndarray, nfkb: np.ndarray, ring_inner: int = 2,
                         ring_outer: int = 8, nuclei: Optional[np.ndarray] = None) -> np.ndarray:
    """Per cell: mean NF-kB in the nucleus / mean NF-kB in a ring ``ring_inner``..``ring_outer``
    px outside it (the gap keeps blurred nuclear signal out of the cytoplasm estimate)."""
    nuc = segment_nuclei(dna) if nuclei is None else nuclei
    n = int(nuc.max())
    if n == 0:
        return np.zeros(0)
    inner = expand_labels(nuc, ring_inner)
    ring = expand_labels(nuc, ring_outer)
    ring[inner > 0] = 0
    img = np.asarray(nfkb, np.float64)
    nuc_mean = _label_means(img, nuc, n)
    cyt_mean = _label_means(img, ring, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = nuc_mean / np.maximum(cyt_mean, 1e-3)
    return r[np.isfinite(r)]


def golgi_spot_areas(dna: np.ndarray, golgi: np.ndarray, cell_radius: int = 16,
                     rel_threshold: float = 0.35, sigma: float = 0.7,
                     nuclei: Optional[np.ndarray] = None) -> np.ndarray:
    """Per cell: mean area (px) of Golgi spots within the cell (nucleus expanded by
    ``cell_radius``). Spots are 8-connected pixels above ``rel_threshold`` x the cell's
    brightest (smoothed) Golgi pixel, so the ribbon gives one big spot and dispersed
    mini-stacks many small ones, independently of the cell's overall brightness (as the
    simulator's ground truth does). Cells whose Golgi is no brighter than the background
    (max below 0.1 in unit intensities) are skipped."""
    nuc = segment_nuclei(dna) if nuclei is None else nuclei
    n = int(nuc.max())
    if n == 0:
        return np.zeros(0)
    cells = expand_labels(nuc, cell_radius)
    img = gaussian(np.asarray(golgi, np.float32), sigma=sigma, preserve_range=True)
    peak = np.asarray(ndi.maximum(img, cells, np.arange(1, n + 1)), np.float64)
    lut = np.concatenate([[np.inf], rel_threshold * peak])
    fg = (img > lut[cells]) & (cells > 0)
    spots = cc_label(fg, connectivity=2)
    if spots.max() == 0:
        return np.zeros(0)
    # a spot belongs to the cell under its brightest pixel (spots rarely straddle cells)
    pos = ndi.maximum_position(img, spots, np.arange(1, spots.max() + 1))
    owner = np.array([cells[p] for p in pos], int)
    area = np.bincount(spots.ravel())[1:]
    tot = np.bincount(owner, area, minlength=n + 1)[1:]
    cnt = np.bincount(owner, minlength=n + 1)[1:]
    ok = (cnt > 0) & (peak > 0.1)
    return tot[ok] / cnt[ok]


def measure_crop(assay: str, crop: np.ndarray) -> np.ndarray:
    """The assay's per-cell feature (see ASSAY_FEATURES) for one (C, H, W) crop in [0, 1]."""
    if assay == "translocation":
        return translocation_ratios(crop[0], crop[1])
    if assay == "golgi":
        return golgi_spot_areas(crop[0], crop[1])
    raise ValueError(f"no feature for assay {assay!r}; known: {', '.join(ASSAY_FEATURES)}")


def measure_crops(assay: str, crops: np.ndarray) -> np.ndarray:
    """Per-cell features pooled over a stack of (N, C, H, W) crops."""
    parts = [measure_crop(assay, c) for c in crops]
    return np.concatenate(parts) if parts else np.zeros(0)

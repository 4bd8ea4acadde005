"""Cell geometry for simulated HCS fields: where the cells are and what shape they have.

Everything downstream (channel rendering, ground-truth tables) reads the :class:`Geometry`
made here, so that all channels of one field describe the same cells.

Model, in short:

* Nuclei centres are placed by dart throwing on a smooth random *density landscape*, so a
  field has dense clusters of touching cells, isolated cells and empty areas, as a real
  sub-confluent culture does. Nuclei never overlap (minimum centre distance).
* A nucleus is an irregular ellipse: a polar radius ``r(theta)`` made of an ellipse times a
  few low-order Fourier harmonics (smooth, sometimes kidney-shaped).
* A cell body is a larger, much more irregular polar shape around an off-centre point near
  its nucleus (harmonics up to order 9 plus a small-scale noise field for ruffled edges).
  Where the bodies of neighbours would overlap, a pixel goes to the cell whose *normalised*
  radial distance (distance / local radius) is smallest: a weighted-Voronoi partition that
  makes straight-ish contact lines between touching cells and free irregular edges
  elsewhere. A rim around every nucleus is forced into its own cell, and only the connected
  piece of a cell that holds its nucleus is kept, so every nucleus lies inside its cell.
* A few cells are mitotic (small, round cell body; small, condensed chromatin mass that is
  a lumpy ball or a metaphase bar) and a few are dim.

Sizes scale with ``nucleus_diameter`` (default 20-35 px, i.e. a 20x objective on a
~0.33 um/px camera after binning, or a 40x objective at ~0.65 um/px).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Tuple

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label as cc_label
from skimage.segmentation import find_boundaries

#: fraction of cells that are mitotic / dim (per field, on average)
MITOTIC_FRACTION = 0.035
DIM_FRACTION = 0.08
#: harmonic orders used for nucleus / cell outlines
_NUC_K = np.arange(2, 6)
_CELL_K = np.arange(2, 10)


@dataclass
class CellSpec:
    """Parameters of one cell (index ``label - 1`` in :attr:`Geometry.specs`)."""

    label: int
    cy: float                      # nucleus centre (row, col), px
    cx: float
    r_nuc: float                   # equivalent nuclear radius, px
    nuc_aspect: float
    nuc_angle: float
    nuc_amps: np.ndarray
    nuc_phases: np.ndarray
    ccy: float                     # cell-body centre
    ccx: float
    r_cell: float
    cell_aspect: float
    cell_angle: float
    cell_amps: np.ndarray
    cell_phases: np.ndarray
    stage: str = "interphase"      # interphase | prometaphase | metaphase
    dim: bool = False
    dna_level: float = 1.0         # relative Hoechst brightness (ploidy, staining)
    expression: float = 1.0        # relative marker expression (assay channel)
    nucleoli: List[Tuple[float, float, float]] = field(default_factory=list)

    @property
    def mitotic(self) -> bool:
        return self.stage != "interphase"

    def nucleus_radius(self, theta: np.ndarray) -> np.ndarray:
        """Polar radius of the nucleus outline at angle(s) ``theta`` (radians)."""
        return polar_radius(theta, self.r_nuc, self.nuc_aspect, self.nuc_angle,
                            self.nuc_amps, self.nuc_phases, _NUC_K)


@dataclass
class Geometry:
    """Label images plus per-pixel maps that the renderers need (all (H, W))."""

    size: int
    scale: float                   # mean nucleus diameter / 27.5 px
    nuclei: np.ndarray             # int32 labels
    cells: np.ndarray              # int32 labels, same ids
    nuc_rho: np.ndarray            # float32: normalised radius in nuclei (0 centre, 1 edge)
    nucleolus: np.ndarray          # float32 0..1: nucleolus occupancy (smooth)
    depth: np.ndarray              # float32: distance (px) to the cell's own edge
    free_depth: np.ndarray         # float32: distance (px) to cell-free background
    nuc_dist: np.ndarray           # float32: distance (px) to the nearest nucleus
    specs: List[CellSpec]

    @property
    def n_cells(self) -> int:
        return len(self.specs)

    @property
    def cytoplasm(self) -> np.ndarray:
        return (self.cells > 0) & (self.nuclei == 0)


def polar_radius(theta, r0, aspect, angle, amps, phases, ks) -> np.ndarray:
    """Radius of an area-normalised ellipse times (1 + sum of Fourier harmonics)."""
    theta = np.asarray(theta, dtype=np.float64)
    a = math.sqrt(aspect)
    c = np.cos(theta - angle) * (1.0 / a)
    s = np.sin(theta - angle) * a
    r = r0 / np.sqrt(c * c + s * s)
    pert = 1.0 + np.cos(theta[..., None] * ks + phases) @ amps
    return r * np.maximum(pert, 0.35)


def polar_radius_grid(yy: np.ndarray, xx: np.ndarray, d: np.ndarray, r0, aspect, angle,
                      amps, phases, ks) -> np.ndarray:
    """:func:`polar_radius` on a pixel grid, without trig: z = e^{i theta} from (x, y)/d and
    harmonics by repeated complex multiplication (the hot loop of the geometry)."""
    z = ((xx + 1j * yy) / np.maximum(d, 1e-9)).astype(np.complex64)
    z[d == 0] = 1.0                                  # the centre pixel: any direction
    zr = z * np.complex64(np.exp(-1j * angle))
    a = math.sqrt(aspect)
    c = zr.real * (1.0 / a)
    s = zr.imag * a
    r = r0 / np.sqrt(c * c + s * s)
    pert = np.ones(z.shape, np.float32)
    zk = z ** int(ks[0])
    for j in range(len(ks)):
        if j:
            zk = zk * z ** int(ks[j] - ks[j - 1])
        pert += amps[j] * (zk * np.complex64(np.exp(1j * phases[j]))).real
    return r * np.maximum(pert, 0.35)


def smooth_noise(rng: np.random.Generator, shape: Tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise, rescaled to zero mean and unit std (float32)."""
    n = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    n -= n.mean()
    sd = n.std()
    return n / sd if sd > 0 else n


def _density_landscape(rng: np.random.Generator, size: int):
    """Smooth acceptance probability in [0.03, 1] (clusters and empty areas), as a
    function of (rows, cols) arrays; a coarse random grid, cubic-interpolated."""
    low = max(4, size // 64)
    z = ndi.gaussian_filter(rng.standard_normal((low + 4, low + 4)), 1.0)
    z = (z - z.mean()) / (z.std() + 1e-9)
    coef = ndi.spline_filter(z, order=3)
    bias = rng.uniform(-0.3, 0.9)

    def prob(y: np.ndarray, x: np.ndarray) -> np.ndarray:
        zz = ndi.map_coordinates(coef, [y * low / size + 2, x * low / size + 2], order=3,
                                 prefilter=False)
        return np.clip(1.0 / (1.0 + np.exp(-(2.2 * zz + bias))), 0.03, 1.0)
    return prob


def _place_nuclei(rng, size, density, d_range, scale) -> Tuple[np.ndarray, np.ndarray]:
    """Dart throwing on the density landscape; returns centres (n, 2) and radii (n,)."""
    dmin, dmax = d_range
    r_mean = 0.25 * (dmin + dmax)
    cell_area = math.pi * (2.3 * r_mean) ** 2
    n_target = density * size * size / cell_area * 0.55 * rng.uniform(0.7, 1.3)
    n_target = max(1, int(round(n_target)))
    land = _density_landscape(rng, size)
    centres = np.empty((0, 2))
    radii = np.empty(0)
    attempts = 40 * n_target
    batch = 256
    tried = 0
    while len(radii) < n_target and tried < attempts:
        cand = rng.uniform(0, size, size=(batch, 2))
        acc = rng.random(batch) < land(cand[:, 0], cand[:, 1])
        d = 0.5 * (dmin + (dmax - dmin) * rng.beta(2.0, 2.2, size=batch))
        for k in range(batch):
            tried += 1
            y, x = cand[k]
            if not acc[k]:
                continue
            r = d[k]
            if len(radii):
                dist = np.hypot(centres[:, 0] - y, centres[:, 1] - x)
                if np.any(dist < 1.12 * (radii + r) + 3.0 * scale):
                    continue
            centres = np.vstack([centres, (y, x)])
            radii = np.append(radii, r)
            if len(radii) >= n_target or tried >= attempts:
                break
    return centres, radii


def _make_spec(rng, label, cy, cx, r, scale, stage, dim) -> CellSpec:
    ang = rng.uniform(0, 2 * np.pi)
    if stage == "interphase":
        nuc_aspect = 1.0 + min(abs(rng.normal(0, 0.22)), 0.8)
        nuc_amps = rng.normal(0, 1, _NUC_K.size) * np.array([0.045, 0.03, 0.018, 0.012])
        r_n = r
        r_cell = r * rng.uniform(1.75, 3.1)
        cell_aspect = 1.0 + min(rng.gamma(1.6, 0.35), 2.2)
        cell_amps = rng.normal(0, 1, _CELL_K.size) * 0.2 / _CELL_K ** 0.75
        off = rng.uniform(0.0, 0.45) * (r_cell - 1.25 * r)
        dna = float(np.exp(rng.normal(0, 0.12)))
        if rng.random() < 0.2:                   # G2-like: bigger, more DNA
            dna *= 1.25
    else:
        # condensed chromatin of a rounded-up mitotic cell
        if stage == "metaphase":
            nuc_aspect = rng.uniform(2.6, 3.6)
            r_n = r * rng.uniform(0.5, 0.6)
        else:
            nuc_aspect = 1.0 + abs(rng.normal(0, 0.15))
            r_n = r * rng.uniform(0.55, 0.68)
        nuc_amps = rng.normal(0, 1, _NUC_K.size) * np.array([0.06, 0.08, 0.08, 0.07])
        r_cell = r * rng.uniform(1.35, 1.6)
        cell_aspect = 1.0 + abs(rng.normal(0, 0.05))
        cell_amps = rng.normal(0, 1, _CELL_K.size) * 0.012
        off = 0.0
        dna = float(np.exp(rng.normal(0, 0.1)))
    off_ang = rng.uniform(0, 2 * np.pi)
    nucleoli = []
    if stage == "interphase":
        for _ in range(rng.integers(1, 5)):
            rr = rng.uniform(0.0, 0.55)
            aa = rng.uniform(0, 2 * np.pi)
            nucleoli.append((rr * r_n * math.sin(aa), rr * r_n * math.cos(aa),
                             r_n * rng.uniform(0.1, 0.19)))
    return CellSpec(
        label=label, cy=float(cy), cx=float(cx), r_nuc=float(r_n),
        nuc_aspect=float(nuc_aspect), nuc_angle=float(ang), nuc_amps=nuc_amps,
        nuc_phases=rng.uniform(0, 2 * np.pi, _NUC_K.size),
        ccy=float(cy + off * math.sin(off_ang)), ccx=float(cx + off * math.cos(off_ang)),
        r_cell=float(r_cell), cell_aspect=float(cell_aspect),
        cell_angle=float(rng.uniform(0, 2 * np.pi)), cell_amps=cell_amps,
        cell_phases=rng.uniform(0, 2 * np.pi, _CELL_K.size), stage=stage, dim=dim,
        dna_level=dna, expression=float(np.exp(rng.normal(0, 0.3))), nucleoli=nucleoli)


def _bbox(cy, cx, rad, size):
    y0, y1 = max(0, int(cy - rad) - 1), min(size, int(cy + rad) + 2)
    x0, x1 = max(0, int(cx - rad) - 1), min(size, int(cx + rad) + 2)
    return y0, y1, x0, x1


def _polar_grid(cy, cx, y0, y1, x0, x1):
    yy = np.arange(y0, y1, dtype=np.float64)[:, None] - cy
    xx = np.arange(x0, x1, dtype=np.float64)[None, :] - cx
    return np.hypot(yy, xx), yy, xx


def make_geometry(rng: np.random.Generator, size: int, density: float = 1.0,
                  nucleus_diameter: Tuple[float, float] = (20.0, 35.0)) -> Geometry:
    """Place and shape the cells of one field (see module docstring for the model)."""
    dmin, dmax = float(nucleus_diameter[0]), float(nucleus_diameter[1])
    scale = 0.5 * (dmin + dmax) / 27.5
    centres, radii = _place_nuclei(rng, size, density, (dmin, dmax), scale)
    n = len(radii)
    specs: List[CellSpec] = []
    for i in range(n):
        u = rng.random()
        stage = "interphase"
        if u < MITOTIC_FRACTION:
            stage = "metaphase" if rng.random() < 0.55 else "prometaphase"
        dim = stage == "interphase" and rng.random() < DIM_FRACTION
        specs.append(_make_spec(rng, i + 1, centres[i, 0], centres[i, 1], radii[i], scale,
                                stage, dim))

    shape = (size, size)
    ruffle = 0.035 * smooth_noise(rng, shape, 2.0 * scale) + 0.07 * smooth_noise(rng, shape, 5.0 * scale)

    best_c = np.full(shape, np.inf, np.float32)
    cells = np.zeros(shape, np.int32)
    best_n = np.full(shape, np.inf, np.float32)
    owner_n = np.zeros(shape, np.int32)
    nucleolus = np.zeros(shape, np.float32)
    for sp in specs:
        # cell body (weighted Voronoi on normalised radial distance)
        rmax = sp.r_cell * math.sqrt(sp.cell_aspect) * (1.0 + np.abs(sp.cell_amps).sum()) + 2
        y0, y1, x0, x1 = _bbox(sp.ccy, sp.ccx, rmax, size)
        if y1 > y0 and x1 > x0:
            d, yy, xx = _polar_grid(sp.ccy, sp.ccx, y0, y1, x0, x1)
            rc = polar_radius_grid(yy, xx, d, sp.r_cell, sp.cell_aspect, sp.cell_angle,
                                   sp.cell_amps, sp.cell_phases, _CELL_K)
            rho = (d / rc).astype(np.float32)
            if not sp.mitotic:
                rho = rho + ruffle[y0:y1, x0:x1]
            sub_b = best_c[y0:y1, x0:x1]
            upd = (rho < 1.0) & (rho < sub_b)
            sub_b[upd] = rho[upd]
            cells[y0:y1, x0:x1][upd] = sp.label
        # nucleus (plus a 1.35x rim that is forced into this cell later)
        rmax = sp.r_nuc * math.sqrt(sp.nuc_aspect) * (1.0 + np.abs(sp.nuc_amps).sum()) * 1.4 + 2
        y0, y1, x0, x1 = _bbox(sp.cy, sp.cx, rmax, size)
        if y1 <= y0 or x1 <= x0:
            continue
        d, yy, xx = _polar_grid(sp.cy, sp.cx, y0, y1, x0, x1)
        rho = (d / polar_radius_grid(yy, xx, d, sp.r_nuc, sp.nuc_aspect, sp.nuc_angle,
                                     sp.nuc_amps, sp.nuc_phases, _NUC_K)).astype(np.float32)
        sub_b = best_n[y0:y1, x0:x1]
        upd = (rho < 1.4) & (rho < sub_b)
        sub_b[upd] = rho[upd]
        owner_n[y0:y1, x0:x1][upd] = sp.label
        if sp.nucleoli:
            acc = np.zeros(d.shape, np.float32)
            for (oy, ox, orad) in sp.nucleoli:
                g = np.exp(-((yy - oy) ** 2 + (xx - ox) ** 2) / (2 * orad ** 2))
                acc = np.maximum(acc, g.astype(np.float32))
            sub = nucleolus[y0:y1, x0:x1]
            m = (owner_n[y0:y1, x0:x1] == sp.label) & (rho < 1.0)
            sub[m] = np.maximum(sub[m], acc[m])

    nuclei = np.where(best_n < 1.0, owner_n, 0).astype(np.int32)
    rim = np.where(best_n < 1.35, owner_n, 0)
    cells = np.where(rim > 0, rim, cells).astype(np.int32)
    nucleolus[nuclei == 0] = 0.0
    # keep only the connected piece of each cell that holds its nucleus
    comps = cc_label(cells, background=0, connectivity=1)
    keep = np.zeros(int(comps.max()) + 1, bool)
    keep[np.unique(comps[nuclei > 0])] = True
    keep[0] = False
    cells[~keep[comps]] = 0
    # drop cells whose nucleus ended up tiny (only a sliver at the border), relabel 1..n
    nuc_area = np.bincount(nuclei.ravel(), minlength=n + 1)
    ok = np.zeros(n + 1, bool)
    for sp in specs:
        full = math.pi * sp.r_nuc ** 2
        ok[sp.label] = nuc_area[sp.label] >= max(12.0, 0.2 * full)
    new_id = np.zeros(n + 1, np.int32)
    new_id[ok] = np.arange(1, int(ok.sum()) + 1, dtype=np.int32)
    nuclei = new_id[nuclei]
    cells = new_id[cells]
    kept = []
    for sp in specs:
        if ok[sp.label]:
            sp.label = int(new_id[sp.label])
            kept.append(sp)
    nuc_rho = np.where(nuclei > 0, best_n, 1.0).astype(np.float32)
    nucleolus[nuclei == 0] = 0.0

    boundary = find_boundaries(cells, connectivity=1, mode="inner")
    depth = ndi.distance_transform_edt(~boundary).astype(np.float32)
    depth[cells == 0] = 0.0
    free_depth = ndi.distance_transform_edt(cells > 0).astype(np.float32)
    nuc_dist = ndi.distance_transform_edt(nuclei == 0).astype(np.float32)
    return Geometry(size=size, scale=scale, nuclei=nuclei, cells=cells, nuc_rho=nuc_rho,
                    nucleolus=nucleolus, depth=depth, free_depth=free_depth,
                    nuc_dist=nuc_dist, specs=kept)

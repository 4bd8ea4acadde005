"""Channel rendering: the noiseless fluorescence "truth" of each stain, in [0, 1].

Intensities are in fixed units (not normalised per image), so conditions can be compared:
1.0 is the brightest a structure gets before the camera model (see ``optics``) maps it to
ADU. Each renderer returns the clean image and per-cell ground-truth columns.

* DNA (Hoechst-like): flat-topped nuclei with a slight dome, granular chromatin texture,
  a brighter periphery, dim nucleoli; mitotic chromatin ~2.5x brighter and lumpy.
* NF-kB (p65): cytoplasmic, textured, thicker (brighter) around the nucleus and thin at
  the cell edge. ``DMSO``: nucleus excluded (nuclear level ~0.3-0.45 of cytoplasm, the
  remainder being out-of-focus cytoplasm above/below the nucleus). ``TNFa``: a fraction
  ``responder_fraction`` of cells import p65 with a per-cell strength
  ``dose * Beta(5, 2)``; non-responders look like DMSO. Mitotic cells have no nuclear
  envelope: p65 is uniform over the rounded cell.
* Golgi (GM130-like): ``DMSO``: a compact perinuclear ribbon / crescent on the side of the
  nucleus facing the bulk of the cytoplasm, built from overlapping stacks (so it is lumpy)
  plus a few satellite fragments. ``Nocodazole`` (responders): the ribbon is dispersed into
  ~20-60 mini-stacks (puncta of 1-3 px radius) throughout the cytoplasm, with a
  perinuclear bias; ``dose`` < 1 scales the number of mini-stacks by ``dose`` and leaves
  ``1 - dose`` of the ribbon in place. Mitotic cells: faint dispersed haze.
"""
from __future__ import annotations

import math
from typing import Dict, List, Tuple

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label as cc_label

from .cells import Geometry, smooth_noise

ASSAYS: Dict[str, Tuple[str, ...]] = {"translocation": ("DNA", "NFkB"), "golgi": ("DNA", "Golgi")}
CONDITIONS: Dict[str, Tuple[str, ...]] = {"translocation": ("DMSO", "TNFa"),
                                          "golgi": ("DMSO", "Nocodazole")}
#: Ground-truth Golgi spots: connected pixels of the clean image above this fraction of the
#: cell's Golgi brightness (a single isolated mini-stack peaks at ~0.4-0.8 of it).
GOLGI_GT_THRESHOLD = 0.25

_DIM_FACTOR = (0.3, 0.55)


def _per_cell(geom: Geometry, values) -> np.ndarray:
    """Lookup table index label -> value (index 0 = background = 0)."""
    lut = np.zeros(geom.n_cells + 1, np.float32)
    lut[1:] = np.asarray(values, np.float32)
    return lut


def _dim_factors(geom: Geometry, rng: np.random.Generator) -> np.ndarray:
    return np.array([rng.uniform(*_DIM_FACTOR) if sp.dim else 1.0 for sp in geom.specs])


def cytoplasm_profile(geom: Geometry) -> np.ndarray:
    """Relative cytoplasm thickness: thin at the cell edge, thick around the nucleus."""
    s = geom.scale
    # lamellae thin out toward free edges; contacts between cells are only a little dimmer
    free = 1.0 - np.exp(-geom.free_depth / (3.0 * s))
    contact = 0.55 + 0.45 * (1.0 - np.exp(-(geom.depth + 0.5) / (2.5 * s)))
    edge = free * contact
    peri = 0.55 + 0.65 * np.exp(-geom.nuc_dist / (10.0 * s))
    prof = (edge * peri).astype(np.float32)
    mit = _per_cell(geom, [1.0 if sp.mitotic else 0.0 for sp in geom.specs])[geom.cells] > 0
    # rounded-up mitotic cells are thick everywhere (dome)
    prof[mit] = (0.6 + 0.8 * (1.0 - np.exp(-(geom.depth[mit] + 0.5) / (4.0 * s)))).astype(np.float32)
    prof[geom.cells == 0] = 0.0
    return prof


def render_dna(geom: Geometry, rng: np.random.Generator) -> Tuple[np.ndarray, List[Dict[str, float]]]:
    """Hoechst: chromatin texture, dome, bright periphery, dim nucleoli."""
    s = geom.scale
    shape = geom.nuclei.shape
    fine = smooth_noise(rng, shape, 0.7 * s)
    mid = smooth_noise(rng, shape, 2.0 * s)
    dim = _dim_factors(geom, rng)
    mit = np.array([sp.mitotic for sp in geom.specs], bool)
    level = np.array([sp.dna_level for sp in geom.specs]) * dim * rng.uniform(0.9, 1.1)
    level = np.where(mit, level * rng.uniform(2.2, 2.8, len(level)), level)
    lut_level = _per_cell(geom, 0.30 * level)
    lut_mit = _per_cell(geom, mit.astype(float))
    nuc = geom.nuclei > 0
    rho = np.clip(geom.nuc_rho, 0, 1)
    dome = 0.78 + 0.22 * np.sqrt(1.0 - rho ** 2)
    r_nuc = _per_cell(geom, [sp.r_nuc for sp in geom.specs])[geom.nuclei]
    rim = 0.12 * np.exp(-(1.0 - rho) * r_nuc / (1.5 * s))      # peripheral heterochromatin
    tex_inter = np.exp(0.16 * fine + 0.10 * mid) * (1.0 - 0.55 * geom.nucleolus) * (dome + rim)
    tex_mit = np.exp(0.35 * fine + 0.25 * mid) * (0.85 + 0.15 * np.sqrt(1.0 - rho ** 2))
    m = lut_mit[geom.nuclei] > 0
    img = np.where(m, tex_mit, tex_inter) * lut_level[geom.nuclei]
    img[~nuc] = 0.0
    # faint cytoplasmic Hoechst background (mitochondrial DNA, unbound dye)
    img += 0.006 * cytoplasm_profile(geom)
    img = np.clip(img, 0.0, 1.0).astype(np.float32)
    rows = [{"dna_level": float(level[i]), "dim": float(geom.specs[i].dim)}
            for i in range(geom.n_cells)]
    return img, rows


def render_nfkb(geom: Geometry, rng: np.random.Generator, condition: str,
                responder_fraction: float = 0.85, dose: float = 1.0
                ) -> Tuple[np.ndarray, List[Dict[str, float]]]:
    """p65 immunofluorescence; nuclear import in TNFa responders (see module docstring)."""
    s = geom.scale
    shape = geom.cells.shape
    n = geom.n_cells
    treated = condition != "DMSO"
    fine = smooth_noise(rng, shape, 0.8 * s)
    mid = smooth_noise(rng, shape, 2.5 * s)
    coarse = smooth_noise(rng, shape, 7.0 * s)
    dim = _dim_factors(geom, rng)
    mit = np.array([sp.mitotic for sp in geom.specs], bool)
    expr = np.array([sp.expression for sp in geom.specs]) * dim
    c0 = 0.34 * expr
    base_ratio = rng.uniform(0.28, 0.45, n)            # nuclear exclusion at rest
    responder = np.zeros(n, bool)
    strength = np.zeros(n)
    if treated:
        responder = (rng.random(n) < responder_fraction) & ~mit & (dose > 0)
        strength = np.where(responder, float(dose) * rng.beta(5.0, 2.0, n), 0.0)
    nuc_ratio = base_ratio + strength * rng.uniform(1.4, 2.2, n)
    cyto_level = c0 * (1.0 - 0.3 * strength)
    nuc_level = c0 * nuc_ratio
    nuc_level = np.where(mit, c0 * 0.9, nuc_level)

    prof = cytoplasm_profile(geom)
    lut_c = _per_cell(geom, cyto_level)
    lut_n = _per_cell(geom, nuc_level)
    cyto_tex = np.exp(0.24 * fine + 0.16 * mid + 0.10 * coarse)
    img = lut_c[geom.cells] * prof * cyto_tex
    nuc = geom.nuclei > 0
    rho = np.clip(geom.nuc_rho, 0, 1)
    nuc_tex = np.exp(0.10 * fine + 0.08 * mid) * (1.0 - 0.5 * geom.nucleolus) \
        * (0.9 + 0.1 * np.sqrt(1.0 - rho ** 2))
    img[nuc] = (lut_n[geom.nuclei] * nuc_tex)[nuc]
    img = np.clip(img, 0.0, 1.0).astype(np.float32)

    # truth: mean nuclear / mean cytoplasmic intensity of the clean image
    lab_n = geom.nuclei.ravel()
    lab_c = np.where(geom.cytoplasm, geom.cells, 0).ravel()
    sum_n = np.bincount(lab_n, img.ravel(), minlength=n + 1)
    cnt_n = np.bincount(lab_n, minlength=n + 1)
    sum_c = np.bincount(lab_c, img.ravel(), minlength=n + 1)
    cnt_c = np.bincount(lab_c, minlength=n + 1)
    rows = []
    for i in range(n):
        k = i + 1
        mn = sum_n[k] / cnt_n[k] if cnt_n[k] else float("nan")
        mc = sum_c[k] / cnt_c[k] if cnt_c[k] else float("nan")
        ratio = mn / mc if (cnt_c[k] and mc > 0) else float("nan")
        rows.append({"responder": float(responder[i]), "response_strength": float(strength[i]),
                     "true_translocation_ratio": float(ratio),
                     "nfkb_nuclear_mean": float(mn), "nfkb_cytoplasm_mean": float(mc)})
    return img, rows


def _splat(shape, ys, xs, amps, sigmas) -> np.ndarray:
    """Sum of Gaussian blobs (peak ~amp) at sub-pixel positions; one filter per sigma."""
    out = np.zeros(shape, np.float32)
    if len(ys) == 0:
        return out
    H, W = shape
    ys = np.asarray(ys, np.float64)
    xs = np.asarray(xs, np.float64)
    amps = np.asarray(amps, np.float64)
    sigmas = np.asarray(sigmas, np.float64)
    for sg in np.unique(sigmas):
        sel = sigmas == sg
        y, x, a = ys[sel], xs[sel], amps[sel]
        y0 = np.floor(y).astype(np.int64)
        x0 = np.floor(x).astype(np.int64)
        fy, fx = y - y0, x - x0
        acc = np.zeros(H * W, np.float64)
        for dy, dx, w in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                          (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
            yy, xx = y0 + dy, x0 + dx
            ok = (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
            acc += np.bincount((yy[ok] * W + xx[ok]), weights=(a * w)[ok], minlength=H * W)
        img = ndi.gaussian_filter(acc.reshape(H, W), sg, mode="constant", truncate=3.5)
        out += (img * (2.0 * math.pi * sg * sg)).astype(np.float32)
    return out


def _cell_pixels(labels: np.ndarray, n: int):
    """For each label 1..n, flat indices of its pixels (one argsort, no per-cell scans)."""
    flat = labels.ravel()
    order = np.argsort(flat, kind="stable")
    bounds = np.searchsorted(flat[order], np.arange(n + 2))
    return [order[bounds[k]:bounds[k + 1]] for k in range(n + 1)]


def render_golgi(geom: Geometry, rng: np.random.Generator, condition: str,
                 responder_fraction: float = 0.85, dose: float = 1.0
                 ) -> Tuple[np.ndarray, List[Dict[str, float]]]:
    """GM130: perinuclear ribbon (DMSO) or dispersed mini-stacks (Nocodazole responders)."""
    s = geom.scale
    shape = geom.cells.shape
    H, W = shape
    n = geom.n_cells
    treated = condition != "DMSO"
    dim = _dim_factors(geom, rng)
    g = np.array([sp.expression for sp in geom.specs]) ** 0.5 * dim
    mit = np.array([sp.mitotic for sp in geom.specs], bool)
    responder = np.zeros(n, bool)
    if treated:
        responder = (rng.random(n) < responder_fraction) & ~mit & (dose > 0)
    cyto = geom.cytoplasm
    cyto_lab = np.where(cyto, geom.cells, 0)
    pix = _cell_pixels(cyto_lab, n)
    cell_pix = _cell_pixels(geom.cells, n)
    # cell centroids (whole cell) to orient the ribbon toward the bulk of the cytoplasm
    lab = geom.cells.ravel()
    cnt = np.bincount(lab, minlength=n + 1).astype(np.float64)
    yy, xx = np.divmod(np.arange(H * W), W)
    cyc = np.bincount(lab, yy, minlength=n + 1) / np.maximum(cnt, 1)
    cxc = np.bincount(lab, xx, minlength=n + 1) / np.maximum(cnt, 1)

    Y: List[np.ndarray] = []
    X: List[np.ndarray] = []
    A: List[np.ndarray] = []
    S: List[np.ndarray] = []
    owner: List[np.ndarray] = []
    elements = np.zeros(n, np.int64)
    for i, sp in enumerate(geom.specs):
        k = sp.label
        if len(pix[k]) == 0:
            continue
        if sp.mitotic:                                   # fragmented Golgi haze
            m = int(rng.integers(60, 120))
            idx = rng.choice(pix[k], size=m)
            y = idx // W + rng.uniform(-0.5, 0.5, m)
            x = idx % W + rng.uniform(-0.5, 0.5, m)
            a = rng.uniform(0.03, 0.08, m) * g[i]
            sg = rng.choice([1.2, 1.8], m) * s
        elif responder[i]:                               # nocodazole mini-stacks
            # scattered over the cytoplasm (perinuclear bias); some lie above/below the
            # nucleus in this widefield projection
            cand = cell_pix[k]
            area = len(pix[k])
            m = int(np.clip(rng.uniform(0.012, 0.022) * area / s ** 2, 8, 90) * dose)
            in_nuc = geom.nuclei.ravel()[cand] > 0
            w = np.where(in_nuc, 0.25, 0.35 + np.exp(-geom.nuc_dist.ravel()[cand] / (14.0 * s)))
            w = w * (geom.depth.ravel()[cand] > 1.5)
            if w.sum() <= 0:
                w = np.ones(len(cand))
            idx = rng.choice(cand, size=m, p=w / w.sum())
            y = idx // W + rng.uniform(-0.5, 0.5, m)
            x = idx % W + rng.uniform(-0.5, 0.5, m)
            a = np.clip(0.6 * np.exp(rng.normal(0, 0.3, m)), 0.3, 1.0) * g[i]
            sg = rng.choice([0.7, 0.85, 1.0, 1.2], m, p=[0.3, 0.35, 0.25, 0.1]) * s
            # residual perinuclear elements: (1 - dose) of the ribbon, or a few at dose 1
            if dose < 1.0 or rng.random() < 0.2:
                y, x, a, sg = _ribbon(sp, rng, s, cyc[k], cxc[k], g[i],
                                      frac=max(0.2, 1.0 - dose), prev=(y, x, a, sg))
        else:                                            # intact ribbon
            y, x, a, sg = _ribbon(sp, rng, s, cyc[k], cxc[k], g[i])
        # keep only elements that sit in this cell's cytoplasm
        iy = np.clip(np.round(y).astype(int), 0, H - 1)
        ix = np.clip(np.round(x).astype(int), 0, W - 1)
        inside = (y > -0.5) & (y < H - 0.5) & (x > -0.5) & (x < W - 0.5)
        ok = inside & (geom.cells[iy, ix] == k)
        if not (responder[i] or sp.mitotic):             # the ribbon hugs, not covers, the nucleus
            ok &= geom.nuc_rho[iy, ix] > 0.9
        Y.append(y[ok]); X.append(x[ok]); A.append(a[ok]); S.append(sg[ok])
        owner.append(np.full(int(ok.sum()), k))
        elements[i] = int(ok.sum())
    ys = np.concatenate(Y) if Y else np.empty(0)
    xs = np.concatenate(X) if X else np.empty(0)
    am = np.concatenate(A) if A else np.empty(0)
    sgs = np.concatenate(S) if S else np.empty(0)
    img = _splat(shape, ys, xs, am, sgs)
    # diffuse GM130 background in the cytoplasm, less over the nucleus
    lut_g = _per_cell(geom, g)
    lut_bg = _per_cell(geom, np.where(mit, 0.07, 0.035) * g)
    bg = lut_bg[geom.cells] * cytoplasm_profile(geom)
    bg[geom.nuclei > 0] *= 0.6
    img += bg
    img = np.clip(img, 0.0, 1.0).astype(np.float32)

    # truth: connected spots above GOLGI_GT_THRESHOLD x cell brightness, inside the cell
    thr = (GOLGI_GT_THRESHOLD * lut_g)[geom.cells]
    spot_lab = np.where((img > thr) & (geom.cells > 0), geom.cells, 0)
    comps = cc_label(spot_lab, background=0, connectivity=2)
    nc = int(comps.max())
    comp_cell = np.zeros(nc + 1, np.int64)
    comp_cell[comps.ravel()] = spot_lab.ravel()
    comp_area = np.bincount(comps.ravel(), minlength=nc + 1)
    n_spots = np.bincount(comp_cell[1:], minlength=n + 1)
    area_sum = np.bincount(comp_cell[1:], comp_area[1:], minlength=n + 1)
    tot = np.bincount(geom.cells.ravel(), img.ravel(), minlength=n + 1)
    rows = []
    for i in range(n):
        k = i + 1
        rows.append({"responder": float(responder[i]),
                     "golgi_elements": float(elements[i]),
                     "golgi_spot_count": float(n_spots[k]),
                     "golgi_mean_spot_area": float(area_sum[k] / n_spots[k]) if n_spots[k] else float("nan"),
                     "golgi_total_intensity": float(tot[k])})
    return img, rows


def _ribbon(sp, rng, s, cyc, cxc, g, frac: float = 1.0, prev=None):
    """Perinuclear Golgi ribbon: overlapping stacks along an arc next to the nucleus."""
    phi = math.atan2(cyc - sp.cy, cxc - sp.cx)
    if not np.isfinite(phi) or math.hypot(cyc - sp.cy, cxc - sp.cx) < 2.0:
        phi = rng.uniform(0, 2 * math.pi)
    phi += rng.normal(0, 0.45)
    compact = rng.random() < 0.5
    half = rng.uniform(0.25, 0.5) if compact else rng.uniform(0.45, 0.85)
    r_edge = float(sp.nucleus_radius(np.float64(phi)))
    gap = rng.uniform(0.5, 2.5) * s
    arc_len = 2 * half * (r_edge + gap + 2 * s)
    # stacks: a few lumps along the arc, each a cluster of overlapping cisternae
    n_lumps = max(2, int(round(arc_len / (rng.uniform(3.0, 6.0) * s))))
    lump_t = np.sort(rng.uniform(-1.0, 1.0, n_lumps))
    lump_w = rng.uniform(0.5, 1.5, n_lumps)
    m = max(8 if frac >= 1.0 else 3, int(arc_len * rng.uniform(2.4, 3.4) * frac))
    j = rng.choice(n_lumps, m, p=lump_w / lump_w.sum())
    t = np.clip(lump_t[j] + rng.normal(0, 0.35, m), -1.1, 1.1)
    theta = phi + t * half
    depth_ = (rng.uniform(4.5, 8.0) if compact else rng.uniform(2.5, 5.0)) * s
    r = sp.nucleus_radius(theta) + gap + depth_ * rng.beta(1.3, 2.2, m)
    y = sp.cy + r * np.sin(theta)
    x = sp.cx + r * np.cos(theta)
    a = rng.uniform(0.1, 0.32, m) * g
    sg = rng.choice([1.0, 1.3, 1.7], m, p=[0.35, 0.4, 0.25]) * s
    # a few satellite fragments near the ribbon
    ns = int(rng.integers(0, 4)) if frac >= 1.0 else 0
    if ns:
        j = rng.integers(0, m, ns)
        ang = rng.uniform(0, 2 * math.pi, ns)
        dist = rng.uniform(4, 9, ns) * s
        y = np.concatenate([y, y[j] + dist * np.sin(ang)])
        x = np.concatenate([x, x[j] + dist * np.cos(ang)])
        a = np.concatenate([a, rng.uniform(0.35, 0.6, ns) * g])
        sg = np.concatenate([sg, np.full(ns, 0.9 * s)])
    if prev is not None:
        y = np.concatenate([prev[0], y]); x = np.concatenate([prev[1], x])
        a = np.concatenate([prev[2], a]); sg = np.concatenate([prev[3], sg])
    return y, x, a, sg

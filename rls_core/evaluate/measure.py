"""Interpretable features measured by the repository's own HR CellProfiler pipeline.

The read-out a biologist trusts is the one their pipeline produces, so HR crops and every
SR output are written as 16-bit TIFFs under the shared pipelines' file-name convention
(`{assay}_{Condition}_{Well}_s{Site}_{Stain}.tif`) and measured by
`pipelines/<assay>_hr.cppipe`, run headless (`cellprofiler -c -r -p ... -e imageio_reader`):
the same numbers a user gets. One CellProfiler run measures many image sets: every crop of
every variant gets its own Site number (variant * SITE_STRIDE + crop + 1), which is how the
CSV rows are mapped back. The pipelines measure each image on its own (global thresholds
per image), so batching changes no number.

Crops smaller than the pipelines' 128-px scale (the tiny test model) hold proportionally
smaller cells; a copy of the pipeline with its object-size settings scaled to match is
written next to the report (`object_scale` < 1). A crop where the pipeline finds no object
gives NaN features, which the tables report as "no objects" rather than failing.
"""
from __future__ import annotations

import csv
import math
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import RLSError
from ..resources import shared_dir

ROOT = Path(__file__).resolve().parents[2]
SITE_STRIDE = 100_000
WELLS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09")


@dataclass(frozen=True)
class Readout:
    """Where an assay's feature lives in the pipeline's CSVs and what one value is."""

    csv: str                 # CSV holding the values
    column: str              # value column
    per_cell: bool           # one row per cell (True) or per image (False)
    image_csv: str           # per-image CSV (lists every measured image set)
    label: str               # axis label
    objects_column: str      # per-image count of the objects the feature needs


READOUTS: Dict[str, Readout] = {
    "translocation": Readout("Translocation_Cells.csv", "Mean_Nuclei_Math_TranslocationRatio", True,
                             "Translocation_Image.csv", "NF-kB translocation ratio (nucleus / cytoplasm)",
                             "Count_Cells"),
    "golgi": Readout("Golgi_Image.csv", "Mean_GolgiSpots_AreaShape_Area", False, "Golgi_Image.csv",
                     "mean Golgi spot area (px)", "Count_GolgiSpots"),
}


class MeasureError(RLSError, RuntimeError):
    """CellProfiler could not measure; the message says where to look."""


@dataclass
class Measured:
    """Per-variant features: per-cell values (with the crop each came from) and per-crop values."""

    cell_values: Dict[str, np.ndarray] = field(default_factory=dict)   # variant -> (n_cells,)
    cell_crops: Dict[str, np.ndarray] = field(default_factory=dict)    # variant -> (n_cells,) crop index
    crop_values: Dict[str, np.ndarray] = field(default_factory=dict)   # variant -> (n_crops,) NaN = no objects
    crop_objects: Dict[str, np.ndarray] = field(default_factory=dict)  # variant -> (n_crops,) object counts
    per_cell: bool = True
    label: str = ""
    pipeline: str = ""
    seconds: float = 0.0


# ----------------------------------------------------------------------------- pipeline copy

_SIZE_LINES = (
    (re.compile(r"^(\s*Typical diameter of objects, in pixel units \(Min,Max\):)(\d+),(\d+)\s*$"), "pair"),
    (re.compile(r"^(\s*Feature size:)(\d+)\s*$"), "one"),
    (re.compile(r"^(\s*Size of smoothing filter:)(\d+)\s*$"), "one"),
    (re.compile(r"^(\s*Suppress local maxima that are closer than this minimum allowed distance:)(\d+)\s*$"),
     "one"),
)


def scale_pipeline_text(text: str, scale: float) -> str:
    """The .cppipe text with every object-size setting (diameters, speckle size, smoothing,
    maxima distance) multiplied by `scale` (kept >= 1 px); everything else unchanged."""
    if abs(scale - 1.0) < 1e-9:
        return text
    out = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        end = line[len(body):]
        for rx, kind in _SIZE_LINES:
            m = rx.match(body)
            if m:
                if kind == "pair":
                    lo, hi = int(m.group(2)), int(m.group(3))
                    lo2 = max(1, int(math.floor(lo * scale)))
                    hi2 = max(lo2 + 1, int(math.ceil(hi * scale)))
                    body = f"{m.group(1)}{lo2},{hi2}"
                else:
                    body = f"{m.group(1)}{max(1, int(round(int(m.group(2)) * scale)))}"
                break
        out.append(body + end)
    return "".join(out)


def prepare_pipeline(assay: str, dest: Path, object_scale: float = 1.0, pipeline: Optional[Path] = None) -> Path:
    """Copy the assay's HR pipeline (or `pipeline`) to `dest`, object sizes scaled; returns dest."""
    src = Path(pipeline) if pipeline is not None else shared_dir("pipelines") / f"{assay}_hr.cppipe"
    if not src.is_file():
        raise MeasureError(f"pipeline {src} not found")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(scale_pipeline_text(src.read_text(), object_scale))
    return dest


# ----------------------------------------------------------------------------- images

def condition_tokens(conditions: Sequence[str]) -> Dict[str, str]:
    """Condition -> a token the file-name regex accepts ([A-Za-z]+), unique."""
    out: Dict[str, str] = {}
    used = set()
    for c in conditions:
        tok = re.sub(r"[^A-Za-z]", "", c) or "cond"
        base, k = tok, 0
        while tok in used:
            k += 1
            tok = base + "x" * k
        used.add(tok)
        out[c] = tok
    return out


def to_uint16(full: np.ndarray) -> np.ndarray:
    """Full-scale (0..1) -> uint16, as a 16-bit camera file holds it (CellProfiler reads raw / 65535)."""
    return np.clip(np.round(np.asarray(full, np.float64) * 65535.0), 0, 65535).astype(np.uint16)


def write_images(folder: Path, assay_token: str, images: np.ndarray, conditions: Sequence[str],
                 channel_names: Sequence[str], variant_index: int, cond_order: Sequence[str]) -> List[Path]:
    """(N, C, H, W) full-scale images -> one uint16 TIFF per channel, Site = variant * stride + crop + 1."""
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    toks = condition_tokens(cond_order)
    paths = []
    for i, (img, cond) in enumerate(zip(images, conditions)):
        well = WELLS[list(cond_order).index(cond) % len(WELLS)]
        site = variant_index * SITE_STRIDE + i + 1
        for c, name in enumerate(channel_names):
            p = folder / f"{assay_token}_{toks[cond]}_{well}_s{site}_{name}.tif"
            tifffile.imwrite(p, to_uint16(img[c]), photometric="minisblack", metadata=None)
            paths.append(p)
    return paths


# ----------------------------------------------------------------------------- CSVs

def _read_csv(path: Path) -> Tuple[List[str], List[List[str]]]:
    """Header + rows; CellProfiler may repeat a column name (the first one wins in lookups)."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return [], []
    return rows[0], rows[1:]


def _col(header: List[str], name: str, path: Path) -> int:
    if name not in header:
        raise MeasureError(f"{path} has no column {name}; is this the right pipeline for the assay?")
    return header.index(name)


def _float(v: str) -> float:
    try:
        return float(v)
    except ValueError:
        return float("nan")


def parse_outputs(out_dir: Path, readout: Readout) -> Tuple[Dict[int, List[float]], Dict[int, float], Dict[int, float]]:
    """(site -> per-cell values, site -> per-image value, site -> object count) from one run's CSVs."""
    img_path = out_dir / readout.image_csv
    if not img_path.is_file() or img_path.stat().st_size == 0:
        raise MeasureError(f"{img_path} was not written: CellProfiler found no image sets or failed; "
                           f"see {out_dir / 'cellprofiler.log'}")
    h, rows = _read_csv(img_path)
    i_site, i_cnt = _col(h, "Metadata_Site", img_path), _col(h, readout.objects_column, img_path)
    counts = {int(r[i_site]): _float(r[i_cnt]) for r in rows}
    per_image: Dict[int, float] = {}
    cells: Dict[int, List[float]] = {s: [] for s in counts}
    if readout.per_cell:
        path = out_dir / readout.csv
        if not path.is_file():
            raise MeasureError(f"{path} was not written; see {out_dir / 'cellprofiler.log'}")
        h, rows = _read_csv(path)
        i_site, i_val = _col(h, "Metadata_Site", path), _col(h, readout.column, path)
        for r in rows:
            v = _float(r[i_val])
            if math.isfinite(v):
                cells.setdefault(int(r[i_site]), []).append(v)
        for s in counts:
            per_image[s] = float(np.mean(cells[s])) if cells.get(s) else float("nan")
    else:
        i_val = _col(h, readout.column, img_path)
        for r in rows:
            v = _float(r[i_val])
            per_image[int(r[i_site])] = v if math.isfinite(v) else float("nan")
            if math.isfinite(v):
                cells[int(r[i_site])] = [v]
    return cells, per_image, counts


# ----------------------------------------------------------------------------- running

def find_cellprofiler(explicit: Optional[str] = None) -> str:
    """The `cellprofiler` executable: explicit, next to this Python, or on PATH."""
    cands = [explicit] if explicit else [str(Path(sys.executable).with_name("cellprofiler")),
                                         shutil.which("cellprofiler") or ""]
    for c in cands:
        if c and Path(c).is_file():
            return c
    raise MeasureError("the `cellprofiler` command was not found (looked next to this Python and on PATH); "
                       "install CellProfiler 5 headless (scripts/install.sh) or pass --cellprofiler PATH")


def run_cellprofiler(cp: str, pipeline: Path, in_dir: Path, out_dir: Path, timeout: float = 7200) -> None:
    """One headless run; a missing CSV is an error even when CellProfiler exits 0."""
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "cellprofiler.log"
    cmd = [cp, "-c", "-r", "-p", str(pipeline), "-i", str(in_dir), "-o", str(out_dir), "-e", "imageio_reader"]
    with open(log, "w") as fh:
        fh.write(" ".join(cmd) + "\n")
        fh.flush()
        res = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout, cwd=str(ROOT))
    if res.returncode != 0:
        tail = log.read_text().splitlines()[-15:]
        raise MeasureError(f"CellProfiler failed (exit {res.returncode}) on {in_dir}; log {log}:\n  "
                           + "\n  ".join(tail))


def measure_sets(assay: str, sets: Dict[str, np.ndarray], conditions: Sequence[str], cond_order: Sequence[str],
                 channel_names: Sequence[str], work_dir: Path, object_scale: float = 1.0,
                 pipeline: Optional[Path] = None, cellprofiler: Optional[str] = None, jobs: int = 1,
                 chunk: int = 600, keep_images: bool = False, progress: bool = True) -> Measured:
    """Measure every named set of (N, C, H, W) full-scale images (same crops, same conditions)
    with the assay's HR pipeline; returns the features per set name."""
    import time

    from tqdm.auto import tqdm

    if assay not in READOUTS:
        raise MeasureError(f"no CellProfiler read-out for assay {assay!r}; known: {', '.join(READOUTS)}")
    readout = READOUTS[assay]
    cp = find_cellprofiler(cellprofiler)
    t0 = time.perf_counter()
    pipe = prepare_pipeline(assay, work_dir / f"{assay}_hr_eval.cppipe", object_scale, pipeline)
    names = list(sets)
    n = len(conditions)
    per_chunk = max(1, chunk // max(n, 1))
    chunks = [names[i:i + per_chunk] for i in range(0, len(names), per_chunk)]
    jobs_dirs = []
    for k, group in enumerate(chunks):
        in_dir = work_dir / f"images_{k:03d}"
        if in_dir.exists():
            shutil.rmtree(in_dir)
        for name in group:
            write_images(in_dir, assay, sets[name], conditions, channel_names, names.index(name), cond_order)
        jobs_dirs.append((in_dir, work_dir / f"csv_{k:03d}"))
    bar = tqdm(total=len(jobs_dirs), desc=f"CellProfiler {pipe.name} ({len(names)} sets x {n} crops)",
               unit="run", disable=not progress, leave=False)

    def one(pair):
        run_cellprofiler(cp, pipe, *pair)
        bar.update(1)

    with ThreadPoolExecutor(max_workers=max(1, int(jobs))) as ex:
        list(ex.map(one, jobs_dirs))
    bar.close()
    res = Measured(per_cell=readout.per_cell, label=readout.label, pipeline=str(pipe))
    for (in_dir, out_dir), group in zip(jobs_dirs, chunks):
        cells, per_image, counts = parse_outputs(out_dir, readout)
        for name in group:
            vi = names.index(name)
            vals, crops, crop_vals, crop_obj = [], [], np.full(n, np.nan), np.full(n, np.nan)
            for i in range(n):
                site = vi * SITE_STRIDE + i + 1
                if site not in counts:
                    raise MeasureError(f"CellProfiler did not measure image set Site {site} ({name}, crop {i}); "
                                       f"see {out_dir / 'cellprofiler.log'}")
                crop_obj[i] = counts[site]
                crop_vals[i] = per_image.get(site, float("nan"))
                vals += cells.get(site, [])
                crops += [i] * len(cells.get(site, []))
            res.cell_values[name] = np.asarray(vals, float)
            res.cell_crops[name] = np.asarray(crops, int)
            res.crop_values[name] = crop_vals
            res.crop_objects[name] = crop_obj
        if not keep_images:
            shutil.rmtree(in_dir, ignore_errors=True)
    res.seconds = time.perf_counter() - t0
    return res

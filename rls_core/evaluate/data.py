"""Held-out HR test crops: what every method is scored against.

Three sources, all giving (N, C, R, R) crops in *full-scale* units (raw / dtype max, what
CellProfiler reads) with R = the model's resolution, one condition label per crop:

* simulated assays (translocation, golgi): fresh `rls simulate` fields from seeds that are
  not the model's training seeds (default 9000; the shipped models used 1000 / 2000), so
  the prior has never seen these cells. Crops hold at least one whole nucleus (from the
  simulator's true labels), otherwise a crop tells nothing about the read-out. For models
  smaller than 128 px (the tiny test model) the cells are simulated proportionally
  smaller, so a crop still holds whole cells;
* a user's HR folder (`--hr-dir`): fields found as `rls train` finds them, the condition
  read from each field name with a regex; crops are non-overlapping grid positions whose
  DNA (first channel) foreground covers enough of the crop;
* `--assay fly`: the held-out ExampleFly field (data/fly/heldout), one condition.

A second, disjoint set of real crops (other seeds / other grid positions) is the reference
of the realism distance, so an SR crop is never compared with its own ground truth there.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import RLSError
from .defaults import DEFAULT_CONDITION_REGEX, DEFAULT_SEED

#: crop size the simulator's cell sizes (nuclei 20-35 px) and the shared pipelines are tuned for
REFERENCE_RES = 128
#: simulated field size at the reference scale (training fields are 512 px)
FIELD_SIZE = 512
ROOT = Path(__file__).resolve().parents[2]
FLY_HELDOUT = ROOT / "data" / "fly" / "heldout"


class DataSetupError(RLSError, ValueError):
    """The held-out data cannot be made; the message names the fix."""


@dataclass
class EvalCrops:
    """HR crops (N, C, R, R) float32 full-scale, their conditions and where each came from."""

    hr: np.ndarray
    conditions: List[str]
    origins: List[str]
    channel_names: List[str]
    source: str
    condition_order: List[str] = field(default_factory=list)
    #: object-size scale of the shared pipelines for these crops (1 = the pipelines' own settings)
    object_scale: float = 1.0

    def __len__(self) -> int:
        return int(self.hr.shape[0])

    def subset(self, idx: Sequence[int]) -> "EvalCrops":
        idx = list(idx)
        return EvalCrops(self.hr[idx], [self.conditions[i] for i in idx], [self.origins[i] for i in idx],
                         self.channel_names, self.source, self.condition_order, self.object_scale)


# ----------------------------------------------------------------------------- simulated

def training_seed(model) -> Optional[int]:
    """The simulator seed of the model's training data (recorded in the bundle), if any."""
    data = (model.bundle.provenance.get("data") or {})
    sim = data.get("simulation") or {}
    seed = sim.get("seed")
    return int(seed) if seed is not None else None


def check_heldout_seed(seed: int, model) -> None:
    """Refuse to evaluate on the fields the prior was trained on."""
    train = training_seed(model)
    known = {1000, 2000} if train is None else {train}
    if int(seed) in known:
        raise DataSetupError(f"--seed {seed} is a training seed ({sorted(known)}): the model has seen those "
                             f"fields; use a fresh seed (default {DEFAULT_SEED})")


def _field_seed(seed: int, cond_index: int, site: int) -> int:
    """Same derivation as rls_core.simulate.write_dataset, so `rls simulate --seed S` gives these fields."""
    return int(np.random.SeedSequence([int(seed), cond_index, site]).generate_state(1)[0])


def _cell_crop_positions(nuclei: np.ndarray, res: int, rng: np.random.Generator, k: int) -> List[Tuple[int, int]]:
    """Up to k non-overlapping crop corners (random grid offset) holding >= 1 whole nucleus."""
    h, w = nuclei.shape
    oy, ox = int(rng.integers(0, res)), int(rng.integers(0, res))
    ys = list(range(oy % res, h - res + 1, res)) or [0]
    xs = list(range(ox % res, w - res + 1, res)) or [0]
    cand = [(y, x) for y in ys for x in xs]
    rng.shuffle(cand)
    out = []
    for y, x in cand:
        sub = nuclei[y:y + res, x:x + res]
        ids = np.unique(sub[sub > 0])
        if ids.size == 0:
            continue
        edge = np.unique(np.concatenate([sub[0], sub[-1], sub[:, 0], sub[:, -1]]))
        if np.setdiff1d(ids, edge).size == 0:  # every nucleus is cut by the crop border
            continue
        out.append((y, x))
        if len(out) >= k:
            break
    return out


def simulated_crops(assay: str, n_per_condition: int, res: int, seed: int = DEFAULT_SEED,
                    crops_per_field: int = 4, progress: bool = True) -> EvalCrops:
    """`n_per_condition` crops per condition from fresh simulated fields (see module doc)."""
    from tqdm.auto import tqdm

    from ..simulate import ASSAYS, CONDITIONS, simulate_field

    if assay not in ASSAYS:
        raise DataSetupError(f"no simulator for assay {assay!r}; simulated assays: {', '.join(ASSAYS)}")
    scale = min(1.0, res / REFERENCE_RES)
    size = max(64, int(round(FIELD_SIZE * scale)), 2 * res)
    diam = (max(4.0, 20.0 * scale), max(4.0, 35.0 * scale))
    rng = np.random.default_rng([int(seed), 17])
    xs: List[np.ndarray] = []
    conds: List[str] = []
    origins: List[str] = []
    bar = tqdm(total=n_per_condition * len(CONDITIONS[assay]), desc=f"held-out {assay} crops (seed {seed})",
               unit="crop", disable=not progress, leave=False)
    for ci, cond in enumerate(CONDITIONS[assay]):
        got, site = 0, 0
        while got < n_per_condition:
            site += 1
            if site > 50 * n_per_condition + 50:
                raise DataSetupError(f"could not find {n_per_condition} {cond} crops with whole cells")
            fs = _field_seed(seed, ci, site)
            f = simulate_field(assay, cond, fs, size=size, nucleus_diameter=diam)
            full = np.stack([f.channels[c] for c in ASSAYS[assay]]).astype(np.float32) / 65535.0
            for y, x in _cell_crop_positions(f.nuclei, res, rng, min(crops_per_field, n_per_condition - got)):
                xs.append(full[:, y:y + res, x:x + res].copy())
                conds.append(cond)
                origins.append(f"seed{seed}/{cond}/site{site}/y{y}x{x}")
                got += 1
                bar.update(1)
    bar.close()
    desc = (f"simulated {assay} (rls_core.simulate), seed {seed}, {size}-px fields, nuclei "
            f"{diam[0]:g}-{diam[1]:g} px, {n_per_condition} crops of {res} px per condition with >= 1 whole nucleus")
    return EvalCrops(np.stack(xs).astype(np.float32), conds, origins, list(ASSAYS[assay]), desc,
                     list(CONDITIONS[assay]), object_scale=scale)


# ----------------------------------------------------------------------------- folders

def _foreground_fraction(dna: np.ndarray, threshold: float) -> float:
    return float((dna > threshold).mean())


def folder_crops(folder: Path, channels: Sequence[str], res: int, n_per_condition: int,
                 condition_regex: Optional[str] = DEFAULT_CONDITION_REGEX, seed: int = 0,
                 min_foreground: float = 0.05, skip: int = 0) -> EvalCrops:
    """Grid crops of a folder of HR fields, `n_per_condition` per condition, in a seeded order.

    `skip` drops the first crops of each condition's shuffled order (used to draw a disjoint
    reference set from the same folder). Conditions come from `condition_regex` applied to
    the field name (named group `Condition`, else group 1); None = one condition 'heldout'.
    """
    from skimage.filters import threshold_otsu

    from ..train.data import DataError, _load_field, discover_fields

    try:
        sources, names, _ = discover_fields(folder, list(channels))
    except DataError as e:
        raise DataSetupError(str(e)) from None
    rx = re.compile(condition_regex) if condition_regex else None
    by_cond: Dict[str, List[Tuple[str, np.ndarray, int, int]]] = {}
    unmatched = []
    for src in sources:
        if rx is None:
            cond = "heldout"
        else:
            m = rx.search(src.name)
            if not m:
                unmatched.append(src.name)
                continue
            cond = m.groupdict().get("Condition") or (m.group(1) if m.re.groups else m.group(0))
        arr = _load_field(src, len(names))
        if min(arr.shape[1:]) < res:
            raise DataSetupError(f"field {src.name} is {arr.shape[2]}x{arr.shape[1]} px, smaller than a {res}-px crop")
        thr = float(threshold_otsu(arr[0]))
        for y in range(0, arr.shape[1] - res + 1, res):
            for x in range(0, arr.shape[2] - res + 1, res):
                if _foreground_fraction(arr[0, y:y + res, x:x + res], thr) >= min_foreground:
                    by_cond.setdefault(cond, []).append((src.name, arr, y, x))
    if not by_cond:
        hint = f" (fields not matching the condition regex: {', '.join(unmatched[:5])})" if unmatched else ""
        raise DataSetupError(f"{folder}: no {res}-px crop with cells found{hint}; check --condition-regex")
    rng = np.random.default_rng([int(seed), 23])
    xs, conds, origins = [], [], []
    for cond in sorted(by_cond):
        items = by_cond[cond]
        order = rng.permutation(len(items))[skip:skip + n_per_condition]
        if len(order) == 0:
            raise DataSetupError(f"{folder}: condition {cond!r} has only {len(items)} crop(s) with cells; "
                                 f"lower --n-per-condition")
        for i in order:
            name, arr, y, x = items[i]
            xs.append(arr[:, y:y + res, x:x + res].copy())
            conds.append(cond)
            origins.append(f"{name}/y{y}x{x}")
    desc = (f"HR folder {folder} ({len(sources)} fields), {res}-px grid crops with >= {min_foreground:.0%} "
            f"DNA foreground, condition from {condition_regex!r}")
    return EvalCrops(np.stack(xs).astype(np.float32), conds, origins, list(names), desc, control_first(by_cond))


CONTROL_NAMES = ("dmso", "control", "ctrl", "untreated", "mock", "vehicle", "neg")


def control_first(conditions, control: Optional[str] = None) -> List[str]:
    """Conditions sorted with the control first (`control`, else a DMSO/control-like name)."""
    conds = sorted(conditions)
    if control is not None:
        if control not in conds:
            raise DataSetupError(f"control condition {control!r} not found; conditions: {', '.join(conds)}")
        return [control] + [c for c in conds if c != control]
    for c in conds:
        if c.lower() in CONTROL_NAMES:
            return [c] + [x for x in conds if x != c]
    return conds


# ----------------------------------------------------------------------------- entry point

def load_test_and_reference(assay: str, model, n_per_condition: int, seed: int = DEFAULT_SEED,
                            hr_dir: Optional[Path] = None, condition_regex: Optional[str] = DEFAULT_CONDITION_REGEX,
                            n_reference: Optional[int] = None, progress: bool = True
                            ) -> Tuple[EvalCrops, EvalCrops]:
    """(test crops, realism-reference crops) for an assay and a model (crop size = model resolution)."""
    res = int(model.resolution)
    channels = list(model.channel_names)
    n_ref = n_reference or n_per_condition
    if hr_dir is not None or assay == "fly":
        folder = Path(hr_dir) if hr_dir is not None else FLY_HELDOUT
        if not folder.is_dir():
            raise DataSetupError(f"{folder}: no such folder" + (" (run scripts/make_fly_data.py)" if hr_dir is None
                                                                 else ""))
        rx = condition_regex if hr_dir is not None else None
        test = folder_crops(folder, channels, res, n_per_condition, rx, seed)
        try:
            ref = folder_crops(folder, channels, res, n_ref, rx, seed, skip=n_per_condition)
        except DataSetupError:
            ref = test  # too few crops for a disjoint set: say so in the report
            ref.source += " (reference = the test crops themselves: too few crops for a disjoint set)"
        return test, ref
    from ..simulate import ASSAYS

    if assay not in ASSAYS:
        raise DataSetupError(f"unknown assay {assay!r}; choose translocation, golgi or fly (or give --hr-dir)")
    if tuple(channels) != tuple(ASSAYS[assay]):
        raise DataSetupError(f"model channels {channels} do not match the {assay} assay's {list(ASSAYS[assay])}")
    check_heldout_seed(seed, model)
    check_heldout_seed(seed + 1, model)
    test = simulated_crops(assay, n_per_condition, res, seed, progress=progress)
    ref = simulated_crops(assay, n_ref, res, seed + 1, progress=progress)
    return test, ref

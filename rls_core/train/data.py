"""Training data: random high-resolution crops from a folder of microscopy fields.

A *field* is one acquisition site with all its channels. Two folder layouts are read:

* one single-channel image per channel, named ``<field>_<channel>.<ext>`` (e.g.
  ``translocation_DMSO_B02_s1_DNA.tif`` + ``..._NFkB.tif``), selected by channel name;
* one multi-channel image per field (multi-page TIFF, CYX or YXC).

Intensities are converted to full-scale floats (raw / dtype max, the 0..1 units CellProfiler
uses), then mapped per channel to the generator's [-1, 1] range by robust percentiles
measured over all training fields. The same (low, high) pairs go into the model bundle,
so search inputs are normalised exactly as the training images were.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import RLSError
from ..io import IMAGE_SUFFIXES

# Segmentation outputs that live next to the images but are not images of the assay.
SKIP_SUFFIXES = ("_labels", "_nuclei", "_cells")
# Pixels per channel used to measure the percentiles (a seeded subsample beyond this).
MAX_PERCENTILE_PIXELS = 20_000_000
PathLike = Union[str, Path]


class DataError(RLSError, ValueError):
    """The training folder cannot be used; the message says what is wrong and how to fix it."""


@dataclass
class FieldSource:
    """Where one field's channels come from: one file per channel, or one multi-channel file."""

    name: str
    files: List[Path]
    multichannel: bool = False


@dataclass
class FieldSet:
    """Normalised fields in memory, (C, H, W) float16 in [-1, 1], plus what produced them."""

    fields: List[np.ndarray]
    names: List[str]
    channel_names: List[str]
    normalization: List[Dict[str, float]]
    folder: str = ""
    layout: str = ""

    def summary(self) -> Dict[str, Any]:
        """Small JSON-able description for provenance and checkpoints."""
        shapes = sorted({tuple(int(s) for s in f.shape[1:]) for f in self.fields})
        out = {
            "folder": _portable(self.folder),
            "layout": self.layout,
            "n_fields": len(self.fields),
            "channels": list(self.channel_names),
            "field_shapes": [list(s) for s in shapes[:5]] + (["..."] if len(shapes) > 5 else []),
            "normalization": self.normalization,
            "first_fields": self.names[:3],
        }
        sim = _simulation_meta(Path(self.folder))
        if sim is not None:
            out["simulation"] = sim
        return out


def _portable(folder: str) -> str:
    """The data folder as provenance records it: relative to the working directory when inside
    it (as typed in the documented commands), else its last two parts; never the training
    machine's absolute path."""
    p = Path(folder)
    try:
        return p.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return Path(*p.parts[-2:]).as_posix() if len(p.parts) > 1 else p.as_posix()


def _simulation_meta(folder: Path) -> Optional[Dict[str, Any]]:
    """`rls simulate` leaves simulation.json (assay, seed, ...) next to the images: keep it."""
    import json

    try:
        meta = json.loads((folder / "simulation.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


# ----------------------------------------------------------------------------- discovery

def _image_files(folder: Path) -> List[Path]:
    files = []
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.suffix.lower() not in IMAGE_SUFFIXES or p.name.startswith("."):
            continue
        if p.stem.endswith(SKIP_SUFFIXES):
            continue
        files.append(p)
    return files


def _split_channel(path: Path) -> Tuple[str, str]:
    """``a_b_DNA.tif`` -> (``a_b``, ``DNA``); no underscore -> (stem, '')."""
    stem = path.stem
    if "_" not in stem:
        return stem, ""
    key, token = stem.rsplit("_", 1)
    return key, token


def _read(path: Path) -> np.ndarray:
    """Full-scale float32 pixels by the one intensity rule of the searches and the module
    (rls_core.intensity: integers / dtype max, as CellProfiler; floats must already be in
    0..1), so a model is trained on the scale it is later applied at."""
    from ..intensity import to_full_scale
    from ..io import read_raw

    try:
        return to_full_scale(read_raw(path), source=str(path))
    except RLSError as e:  # its fix names the searches' --intensity-range, which training lacks
        raise DataError(f"{e.problem}; save training images as integers (e.g. uint16 camera counts) or as "
                        "floats scaled into 0..1") from None
    except (ValueError, FileNotFoundError) as e:
        raise DataError(str(e)) from None


def _as_cyx(arr: np.ndarray, path: Path) -> np.ndarray:
    """2-D -> (1, H, W); 3-D CYX or YXC (channels = the small axis, <= 4) -> (C, H, W)."""
    arr = np.squeeze(arr)
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3:
        if arr.shape[0] <= 4 and arr.shape[0] < min(arr.shape[1:]):
            return arr
        if arr.shape[-1] <= 4 and arr.shape[-1] < min(arr.shape[:2]):
            return np.moveaxis(arr, -1, 0)
    raise DataError(f"{path}: cannot tell the channel axis of an image of shape {arr.shape} "
                    "(expected Y,X or C,Y,X / Y,X,C with at most 4 channels)")


def _peek_ndim(path: Path) -> int:
    """Number of non-singleton axes without decoding the pixels where possible."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        from ..io import tifffile_quiet

        try:
            with tifffile_quiet(), tifffile.TiffFile(str(path)) as tf:
                shape = tf.series[0].shape
        except Exception as e:  # corrupt or not a TIFF: tifffile raises many types
            raise DataError(f"{path}: cannot be read as an image ({type(e).__name__}: {e})") from None
    else:
        shape = _read(path).shape
    return len([s for s in shape if s > 1])


def discover_fields(folder: PathLike, channels: Optional[Sequence[str]] = None
                    ) -> Tuple[List[FieldSource], List[str], str]:
    """Group the folder's images into fields; returns (fields, channel names, layout)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder; give the folder that holds the training images")
    files = _image_files(folder)
    if not files:
        raise DataError(f"{folder}: no training images found (looked for {', '.join(IMAGE_SUFFIXES)}; "
                        f"files ending in {', '.join(s + '.tif' for s in SKIP_SUFFIXES)} are skipped)")
    channels = [c.strip() for c in channels if c.strip()] if channels else []
    if len(set(channels)) != len(channels):
        raise DataError(f"channel names repeat: {channels}")

    if channels:
        groups: "OrderedDict[str, Dict[str, Path]]" = OrderedDict()
        for p in files:  # longest matching suffix first, so channel names may contain '_'
            for c in sorted(channels, key=len, reverse=True):
                if p.stem.endswith("_" + c) and len(p.stem) > len(c) + 1:
                    groups.setdefault(p.stem[:-len(c) - 1], {})[c] = p
                    break
        if groups:
            fields = []
            for key, by_ch in groups.items():
                missing = [c for c in channels if c not in by_ch]
                if missing:
                    have = ", ".join(sorted(by_ch))
                    raise DataError(f"{folder}: field '{key}' has no {' / '.join(missing)} image "
                                    f"(expected {key}_{missing[0]}.tif next to its {have} image); "
                                    "add the missing file or remove the field")
                fields.append(FieldSource(key, [by_ch[c] for c in channels]))
            return fields, channels, "one file per channel"

    multi = [p for p in files if _peek_ndim(p) == 3]
    if multi and len(multi) == len(files):
        n_ch = _as_cyx(_read(multi[0]), multi[0]).shape[0]
        if channels and len(channels) != n_ch:
            raise DataError(f"{multi[0]}: has {n_ch} channels but --channels names {len(channels)} "
                            f"({', '.join(channels)})")
        names = channels or [f"ch{i}" for i in range(n_ch)]
        return [FieldSource(p.stem, [p], multichannel=True) for p in multi], names, "multi-channel files"

    tokens = sorted({_split_channel(p)[1] for p in files if _split_channel(p)[1]})
    hint = f" (channel tokens found in the names: {', '.join(tokens[:8])})" if tokens else ""
    if channels:
        raise DataError(f"{folder}: no image named *_<channel>.tif for channels {', '.join(channels)}"
                        f"{hint}, and not every image is multi-channel")
    raise DataError(f"{folder}: these are single-channel images; name the channels to train on with "
                    f"--channels, e.g. --channels DNA,NFkB{hint}")


# ----------------------------------------------------------------------------- loading

def _load_field(src: FieldSource, n_channels: int) -> np.ndarray:
    if src.multichannel:
        arr = _as_cyx(_read(src.files[0]), src.files[0])
        if arr.shape[0] != n_channels:
            raise DataError(f"{src.files[0]}: has {arr.shape[0]} channels, the other fields {n_channels}")
        return arr.astype(np.float32, copy=False)
    planes = []
    for p in src.files:
        a = np.squeeze(_read(p))
        if a.ndim != 2:
            raise DataError(f"{p}: expected a single-channel image, got shape {a.shape}")
        planes.append(a)
    shapes = {a.shape for a in planes}
    if len(shapes) > 1:
        raise DataError(f"field '{src.name}': its channel images differ in size "
                        f"({', '.join(f'{p.name} {a.shape}' for p, a in zip(src.files, planes))})")
    return np.stack(planes).astype(np.float32, copy=False)


def measure_normalization(fields: Sequence[np.ndarray], low_pct: float = 0.1, high_pct: float = 99.9,
                          seed: int = 0) -> List[Dict[str, float]]:
    """Per-channel (low, high) percentiles in full-scale units over all fields."""
    n_ch = fields[0].shape[0]
    total = sum(int(np.prod(f.shape[1:])) for f in fields)
    rng = np.random.default_rng(seed)
    out = []
    for c in range(n_ch):
        parts = []
        for f in fields:
            v = f[c].reshape(-1)
            if total > MAX_PERCENTILE_PIXELS:
                k = max(1, int(v.size * MAX_PERCENTILE_PIXELS / total))
                v = v[rng.integers(0, v.size, k)]
            parts.append(v.astype(np.float32))
        lo, hi = np.percentile(np.concatenate(parts), [low_pct, high_pct])
        lo, hi = float(lo), float(hi)
        if not hi > lo:  # flat channel: avoid dividing by zero, keep the mapping monotone
            hi = lo + 1e-6
        out.append({"low": lo, "high": hi})
    return out


def normalize(field: np.ndarray, normalization: Sequence[Dict[str, float]]) -> np.ndarray:
    """Full-scale (C, H, W) -> clip((I - low) / (high - low), 0, 1) * 2 - 1."""
    lo = np.array([n["low"] for n in normalization], np.float32)[:, None, None]
    hi = np.array([n["high"] for n in normalization], np.float32)[:, None, None]
    return np.clip((field - lo) / (hi - lo), 0.0, 1.0) * 2.0 - 1.0


def load_fields(folder: PathLike, channels: Optional[Sequence[str]] = None, crop: int = 128,
                normalization: Optional[List[Dict[str, float]]] = None,
                low_pct: float = 0.1, high_pct: float = 99.9) -> FieldSet:
    """Read, check and normalise every field. `normalization` (e.g. from a checkpoint) is
    reused as is; otherwise it is measured here."""
    sources, names, layout = discover_fields(folder, channels)
    raw = [_load_field(s, len(names)) for s in sources]
    for s, f in zip(sources, raw):
        if min(f.shape[1:]) < crop:
            raise DataError(f"field '{s.name}' is {f.shape[2]}x{f.shape[1]} px, smaller than the "
                            f"{crop}-px training crop; use larger fields or a smaller --resolution")
    if normalization is None:
        normalization = measure_normalization(raw, low_pct, high_pct)
    elif len(normalization) != len(names):
        raise DataError(f"normalization has {len(normalization)} entries for {len(names)} channels")
    fields = [normalize(f, normalization).astype(np.float16) for f in raw]
    return FieldSet(fields, [s.name for s in sources], names, normalization,
                    folder=str(Path(folder).expanduser().resolve()), layout=layout)


# ----------------------------------------------------------------------------- sampling

class CropSampler:
    """Seeded random crops with flips and 90-degree rotations (cells have no orientation).

    Fields are drawn in proportion to their number of crop positions, so every pixel is
    about equally likely whatever the field sizes. All randomness comes from one numpy
    Generator whose state is checkpointed for exact resume.
    """

    def __init__(self, fields: FieldSet, crop: int, seed: int = 0, augment: bool = True) -> None:
        self.fields, self.crop, self.augment = fields.fields, int(crop), augment
        n_pos = np.array([(f.shape[1] - crop + 1) * (f.shape[2] - crop + 1) for f in self.fields], np.float64)
        self.prob = n_pos / n_pos.sum()
        self.rng = np.random.default_rng(seed)

    def sample(self, batch: int) -> torch.Tensor:
        """(batch, C, crop, crop) float32 in [-1, 1]."""
        out = []
        idx = self.rng.choice(len(self.fields), size=batch, p=self.prob)
        for i in idx:
            f = self.fields[i]
            y = int(self.rng.integers(0, f.shape[1] - self.crop + 1))
            x = int(self.rng.integers(0, f.shape[2] - self.crop + 1))
            c = f[:, y:y + self.crop, x:x + self.crop].astype(np.float32)
            if self.augment:
                k, flip = int(self.rng.integers(0, 4)), bool(self.rng.integers(0, 2))
                c = np.rot90(c, k, axes=(1, 2))
                if flip:
                    c = c[:, :, ::-1]
            out.append(np.ascontiguousarray(c))
        return torch.from_numpy(np.stack(out))

    def state_dict(self) -> Dict[str, Any]:
        return {"bit_generator": dict(self.rng.bit_generator.state)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["bit_generator"]

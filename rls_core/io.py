"""Reading LR fields and writing HR results (TIFF via tifffile, PNG via imageio).

Intensities are handled in *full-scale* units (raw / dtype max), the 0..1 values that
CellProfiler hands to modules, so the CLI and the plugin feed the model identically.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

IMAGE_SUFFIXES = (".tif", ".tiff", ".png")


@dataclass
class Field:
    """One multi-channel LR input: its channels (C, h, w) in full-scale units and a stem
    used to name the outputs."""

    stem: str
    image: np.ndarray
    sources: List[Path]


def to_full_scale(arr: np.ndarray) -> np.ndarray:
    """Integer images -> raw / dtype max; float images are taken as already 0..1."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
    return arr.astype(np.float32)


def read_planes(path: Path) -> np.ndarray:
    """A file -> (planes, h, w) array in full-scale units (RGB(A) and multi-page become planes)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"{path}: unsupported file type '{path.suffix}'; give TIFF or PNG images")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile
            arr = tifffile.imread(str(path))
        else:
            import imageio.v3 as iio
            arr = iio.imread(str(path))
    except Exception as e:  # the readers raise many types; all mean "cannot read"
        raise ValueError(f"{path}: cannot be read as an image ({type(e).__name__}: {e})") from None
    arr = np.asarray(arr)
    arr = to_full_scale(arr)
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3:
        # channels-last small last axis (RGB/RGBA PNG, YXC TIFF) -> CYX
        if arr.shape[-1] <= 4 and arr.shape[0] > 4:
            arr = np.moveaxis(arr, -1, 0)
        return arr
    raise ValueError(f"{path}: expected a 2-D image or a channel stack, got shape {arr.shape}")


def _channel_token(stem: str, channels: Sequence[str]) -> Optional[str]:
    """The model channel named in a file stem as a separate token (e.g. '_DNA' in 'a_DNA')."""
    for ch in sorted(channels, key=len, reverse=True):
        if re.search(rf"(^|[_\-. ]){re.escape(ch)}($|[_\-. ])", stem, flags=re.IGNORECASE):
            return ch
    return None


def group_fields(paths: Sequence[Path], channels: Sequence[str]) -> List[Field]:
    """Group input files into multi-channel fields.

    A file holding all model channels (multi-page TIFF, CYX stack) is a field by itself.
    Single-channel files are grouped by name: the model's channel names must appear as a
    token (`..._DNA.tif`, `..._NFkB.tif`); files that differ only in that token form one
    field. A one-channel model takes every single-plane file as a field.
    """
    fields: List[Field] = []
    groups: "OrderedDict[str, Dict[str, Path]]" = OrderedDict()
    n = len(channels)
    for p in map(Path, paths):
        planes = read_planes(p)
        if planes.shape[0] == n:  # a complete field in one file
            fields.append(Field(p.stem, planes, [p]))
            continue
        if planes.shape[0] != 1:
            raise ValueError(f"{p}: has {planes.shape[0]} planes but the model has {n} channel(s) "
                             f"({', '.join(channels)}); give one file per channel or one {n}-page file")
        ch = _channel_token(p.stem, channels)
        if ch is None:
            raise ValueError(f"{p}: the file name names none of the model's channels ({', '.join(channels)}); "
                             "name single-channel files like FIELD_<channel>.tif or give multi-page files")
        key = re.sub(rf"([_\-. ]?){re.escape(ch)}(?=$|[_\-. ])", "", p.stem, count=1, flags=re.IGNORECASE)
        key = str(p.parent / key)
        if ch in groups.setdefault(key, {}):
            raise ValueError(f"{p}: two files for channel {ch} of field {Path(key).name}")
        groups[key][ch] = p
    for key, by_ch in groups.items():
        missing = [c for c in channels if c not in by_ch]
        if missing:
            raise ValueError(f"field {Path(key).name}: missing channel(s) {', '.join(missing)} "
                             f"(found {', '.join(str(v.name) for v in by_ch.values())})")
        srcs = [by_ch[c] for c in channels]
        planes = [read_planes(s)[0] for s in srcs]
        shapes = {pl.shape for pl in planes}
        if len(shapes) != 1:
            raise ValueError(f"field {Path(key).name}: channels differ in size {sorted(shapes)}")
        fields.append(Field(Path(key).name, np.stack(planes), srcs))
    return fields


def write_tiff(path: Path, image: np.ndarray, channel_names: Optional[Sequence[str]] = None) -> Path:
    """(C, H, W) float32 -> multi-page TIFF (ImageJ-compatible hyperstack, one page per channel)."""
    import tifffile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    meta = {"axes": "CYX"}
    if channel_names:
        meta["Labels"] = list(channel_names)
    tifffile.imwrite(str(tmp), np.ascontiguousarray(image, dtype=np.float32), imagej=True, metadata=meta)
    tmp.replace(path)  # a crash never leaves a half-written result under the final name
    return path

"""Reading LR fields and writing HR results (TIFF via tifffile, PNG via imageio).

Pixels are scaled to 0..1 by the one rule in `rls_core.intensity` (CellProfiler's), so the CLI
and the module feed the model identically.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import InputError
from .intensity import IntensityRange, dtype_notes, to_full_scale

IMAGE_SUFFIXES = (".tif", ".tiff", ".png")


_QUIET_LOCK = threading.Lock()
_quiet = {"depth": 0, "level": logging.NOTSET}  # readers inside tifffile_quiet, the level to restore


@contextlib.contextmanager
def tifffile_quiet():
    """tifffile logs what it finds wrong with a damaged file ("<tifffile.TiffPages @...> invalid
    offset"); we report that file ourselves, in one line with the fix, so its log stays quiet.
    Counted under a lock: readers in several threads (a Dask worker) restore the level once."""
    logger = logging.getLogger("tifffile")
    with _QUIET_LOCK:
        if _quiet["depth"] == 0:
            _quiet["level"] = logger.level
            logger.setLevel(logging.CRITICAL)
        _quiet["depth"] += 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _quiet["depth"] -= 1
            if _quiet["depth"] == 0:
                logger.setLevel(_quiet["level"])


def read_raw(path: Path) -> np.ndarray:
    """A file's pixels as stored (ValueError says why it cannot be read)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"{path}: unsupported file type '{path.suffix}'; give TIFF or PNG images")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile
            with tifffile_quiet():
                arr = tifffile.imread(str(path))
        else:
            import imageio.v3 as iio
            arr = iio.imread(str(path))
    except Exception as e:  # the readers raise many types; all mean "cannot read"
        raise ValueError(f"{path}: cannot be read as an image ({type(e).__name__}: {e})") from None
    arr = np.asarray(arr)
    if arr.size == 0 or arr.ndim < 2:
        raise ValueError(f"{path}: cannot be read as an image (no pixel data: a damaged or truncated file?)")
    return arr


def _as_planes(arr: np.ndarray, path: Path) -> np.ndarray:
    """(h, w), (planes, h, w) or channels-last (h, w, <=4) -> (planes, h, w)."""
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3:
        # channels-last small last axis (RGB/RGBA PNG, YXC TIFF) -> CYX
        return np.moveaxis(arr, -1, 0) if (arr.shape[-1] <= 4 and arr.shape[0] > 4) else arr
    raise ValueError(f"{path}: expected a 2-D image or a channel stack, got shape {arr.shape}")


def read_planes(path: Path, intensity_range: Optional[IntensityRange] = None) -> Tuple[np.ndarray, List[str]]:
    """A file -> ((planes, h, w) float32 in 0..1, notes on its scaling). RGB(A) and multi-page
    files become planes. InputError if its values cannot be scaled into 0..1 (rls_core.intensity)."""
    path = Path(path)
    raw = _as_planes(read_raw(path), path)
    notes = [f"{path.name}: {n}" for n in dtype_notes(raw.dtype, intensity_range)]
    return to_full_scale(raw, intensity_range, source=str(path)), notes


#: characters that separate the tokens of a file stem ('plate_A01-s1.DNA')
_SEPARATORS = "_-. "


def _channel_token(stem: str, channels: Sequence[str]) -> Optional[Tuple[str, int, int]]:
    """The model channel named in a file stem as a separate token, with its span: the rightmost
    such token, so that an assay or plate name equal to a channel name earlier in the stem
    ('golgi_DMSO_s1_DNA' for channels DNA, Golgi) does not count. On a tie, the longer name."""
    best: Optional[Tuple[str, int, int]] = None
    sep = f"[{re.escape(_SEPARATORS)}]"
    for ch in channels:
        for m in re.finditer(rf"(?:^|(?<={sep})){re.escape(ch)}(?=$|{sep})", stem, flags=re.IGNORECASE):
            if best is None or (m.start(), len(ch)) > (best[1], len(best[0])):
                best = (ch, m.start(), m.end())
    return best


def _field_key(stem: str, start: int, end: int) -> str:
    """The stem without its channel token and the separator before it: what the channel files
    of one field share ('a_DNA', 'a_NFkB' -> 'a')."""
    if start > 0 and stem[start - 1] in _SEPARATORS:
        start -= 1
    return stem[:start] + stem[end:]


@dataclass
class FieldSpec:
    """One field to process, found from file names alone: its stem, its files (in the model's
    channel order) and, if the files already say it cannot work, why (it then fails alone)."""

    stem: str
    sources: List[Path]
    problem: Optional[str] = None


def _plane_count(path: Path) -> int:
    """How many planes `read_planes` would return, reading the header only where possible."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile
        try:
            with tifffile_quiet(), tifffile.TiffFile(str(path)) as tf:
                shape = tuple(tf.series[0].shape)
        except Exception as e:  # corrupt or not a TIFF: tifffile raises many types
            raise ValueError(f"{path}: cannot be read as an image ({type(e).__name__}: {e})") from None
        shape = tuple(d for d in shape if d != 1) if len(shape) > 3 else shape
        if len(shape) == 2:
            return 1
        if len(shape) == 3:
            return shape[-1] if (shape[-1] <= 4 and shape[0] > 4) else shape[0]
        raise ValueError(f"{path}: expected a 2-D image or a channel stack, got shape {shape}")
    return _as_planes(read_raw(path), path).shape[0]


def plan_fields(paths: Sequence[Path], channels: Sequence[str]) -> List[FieldSpec]:
    """Group input files into multi-channel fields without reading pixels.

    A file holding all model channels (multi-page TIFF, CYX stack) is a field by itself.
    Single-channel files are grouped by name: the model's channel names must appear as a
    token (`..._DNA.tif`, `..._NFkB.tif`; the rightmost one counts); files that differ only in
    that token form one field. A one-channel model takes every single-plane file as a field. A
    file or field that cannot work becomes a FieldSpec with a `problem`, so it fails alone and
    the batch goes on; only an empty input list raises.
    """
    if not paths:
        raise InputError("no input files given", "pass LR images (TIFF or PNG), e.g. lr/*_DNA.tif lr/*_NFkB.tif")
    specs: List[FieldSpec] = []
    groups: "OrderedDict[str, Dict[str, Path]]" = OrderedDict()
    dup: Dict[str, str] = {}
    n = len(channels)
    # The same file given twice (overlapping globs) counts once.
    for p in OrderedDict((Path(os.path.abspath(q)), Path(q)) for q in paths).values():
        token = _channel_token(p.stem, channels)
        ch = token[0] if token else None
        try:
            if not p.exists():
                raise ValueError(f"{p}: no such file")
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise ValueError(f"{p}: unsupported file type '{p.suffix}'; give TIFF or PNG images")
            planes = _plane_count(p)
        except ValueError as e:
            if ch is None or n == 1:  # no field to attach it to: it fails as its own field
                specs.append(FieldSpec(p.stem, [p], str(e)))
                continue
            planes = 1  # named like one channel of a field: that field fails when it is read
        if ch is not None and n > 1 and planes != 1:  # e.g. a z-pair named x_DNA.tif: not a whole field
            specs.append(FieldSpec(p.stem, [p], f"{p}: named as channel {ch} but has {planes} planes; a file "
                                               f"named after one channel must hold that channel alone (give "
                                               f"one plane per file, or a {n}-page file without a channel "
                                               "name)"))
            continue
        if planes == n:  # a complete field in one file
            specs.append(FieldSpec(p.stem, [p]))
            continue
        if planes != 1:
            specs.append(FieldSpec(p.stem, [p], f"{p}: has {planes} planes but the model has {n} channel(s) "
                                               f"({', '.join(channels)}); give one file per channel or one "
                                               f"{n}-page file"))
            continue
        if ch is None:
            specs.append(FieldSpec(p.stem, [p], f"{p}: the file name names none of the model's channels "
                                               f"({', '.join(channels)}); name single-channel files like "
                                               "FIELD_<channel>.tif or give multi-page files"))
            continue
        key = str(p.parent / _field_key(p.stem, token[1], token[2]))
        if ch in groups.setdefault(key, {}):
            dup[key] = f"two files for channel {ch}: {groups[key][ch].name} and {p.name}"
            continue
        groups[key][ch] = p
    for key, by_ch in groups.items():
        stem = Path(key).name
        missing = [c for c in channels if c not in by_ch]
        srcs = [by_ch[c] for c in channels if c in by_ch]
        if key in dup:
            specs.append(FieldSpec(stem, srcs, f"field {stem}: {dup[key]}"))
        elif missing:
            specs.append(FieldSpec(stem, srcs, f"field {stem}: missing channel(s) {', '.join(missing)} "
                                               f"(found {', '.join(s.name for s in srcs)})"))
        else:
            specs.append(FieldSpec(stem, srcs))
    return _refuse_shared_stems(specs)


def _refuse_shared_stems(specs: List[FieldSpec]) -> List[FieldSpec]:
    """Outputs are named by field (STEM_sr.tif): fields of the same name from different folders
    would overwrite each other, so each of them fails with a message instead."""
    by_stem: Dict[str, List[FieldSpec]] = {}
    for spec in specs:
        by_stem.setdefault(spec.stem, []).append(spec)
    out = []
    for spec in specs:
        same = by_stem[spec.stem]
        if len(same) > 1 and not spec.problem:
            where = ", ".join(str(s.sources[0].parent) for s in same)
            spec = FieldSpec(spec.stem, spec.sources,
                             f"field {spec.stem}: {len(same)} input fields have this name (in {where}), and "
                             f"their outputs would overwrite each other; run each folder with its own -o")
        out.append(spec)
    return out


SR_SUFFIX, STD_SUFFIX = "_sr", "_sr_std"  # a field's outputs: STEM_sr.tif and STEM_sr_std.tif


def output_paths(out: Path, stem: str) -> Tuple[Path, Path]:
    """Where a field's result and its uncertainty image go."""
    return out / f"{stem}{SR_SUFFIX}.tif", out / f"{stem}{STD_SUFFIX}.tif"


def is_sr_output(path: Path) -> bool:
    """True for an image that `rls super-resolve` wrote (`output_paths`, with the run's settings
    inside): not an LR input, though it may sit beside them after a rerun."""
    path = Path(path)
    if not path.stem.endswith((SR_SUFFIX, STD_SUFFIX)) or path.suffix.lower() not in (".tif", ".tiff"):
        return False
    info = read_tiff_info(path)
    return isinstance(info, dict) and "settings" in info


def read_field(spec: FieldSpec, channels: Sequence[str],
               intensity_range: Optional[IntensityRange] = None) -> Tuple[np.ndarray, List[str]]:
    """The (C, h, w) 0..1 image of one planned field and notes on its scaling; InputError
    says what is wrong."""
    if spec.problem:
        raise InputError(spec.problem)
    try:
        read = [read_planes(s, intensity_range) for s in spec.sources]
    except (ValueError, FileNotFoundError) as e:
        raise InputError(str(e)) from None
    notes = [n for _, ns in read for n in ns]
    planes = [pl for pl, _ in read]
    if len(spec.sources) == 1 and len(channels) > 1:
        return planes[0], notes
    for s, pl in zip(spec.sources, planes):
        if pl.shape[0] != 1:
            raise InputError(f"{s}: has {pl.shape[0]} planes where one channel was expected")
    shapes = {pl.shape[1:] for pl in planes}
    if len(shapes) != 1:
        raise InputError(f"field {spec.stem}: channels differ in size "
                         f"({', '.join(f'{s.name} {pl.shape[2]}x{pl.shape[1]}' for s, pl in zip(spec.sources, planes))})",
                         "give every channel of a field the same size")
    return np.concatenate(planes), notes


def write_tiff(path: Path, image: np.ndarray, channel_names: Optional[Sequence[str]] = None,
               info: Optional[Dict[str, Any]] = None) -> Path:
    """(C, H, W) float32 -> multi-page TIFF (ImageJ-compatible hyperstack, one page per channel).
    `info` (JSON-able: the settings that made the image) goes into the ImageJ "Info" property,
    which `read_tiff_info` reads back."""
    import tifffile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    meta: Dict[str, Any] = {"axes": "CYX"}
    if channel_names:
        meta["Labels"] = list(channel_names)
    if info is not None:
        meta["Info"] = json.dumps(info, sort_keys=True)
    tifffile.imwrite(str(tmp), np.ascontiguousarray(image, dtype=np.float32), imagej=True, metadata=meta)
    tmp.replace(path)  # a crash never leaves a half-written result under the final name
    return path


def read_tiff_info(path: Path) -> Optional[Dict[str, Any]]:
    """The `info` that `write_tiff` recorded, or None (no such file, unreadable, none recorded)."""
    import tifffile

    try:
        with tifffile_quiet(), tifffile.TiffFile(str(path)) as tf:
            text = (tf.imagej_metadata or {}).get("Info")
        return json.loads(text) if text else None
    except Exception:  # a damaged or foreign file is simply "not ours": it gets redone
        return None

"""The one intensity rule: how a file or an array becomes full-scale 0..1 values.

It follows CellProfiler's NamesAndTypes with "Set intensity range from: Image bit-depth" (the
shared pipelines' setting), so a file gives the same numbers to `rls super-resolve`, the
Python API and the module (docs/intensities.md has what CellProfiler does, line by line):

- unsigned integers: x / (2^bits - 1);
- signed integers: (x - INT_MIN) / (2^bits - 1), so 0 becomes ~0.5 (CellProfiler does this;
  a note says so, because counts stored as int16 then look half-saturated);
- floats: taken as already 0..1;
- a user-given range (LO, HI): (x - LO) / (HI - LO), for any type.

After scaling, NaN/Inf or values outside [0, 1] fail the field with the values and the fix;
saturation and constant images are warnings that go with the result.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from .errors import InputError

IntensityRange = Tuple[float, float]

#: more than this share of a channel's pixels at the top of the range -> "saturated" warning
SATURATED_FRACTION = 0.01

RANGE_FIX = ("give the range the values are in with --intensity-range LO,HI (CLI), intensity_range=(LO, HI) "
             "(Python), or in CellProfiler NamesAndTypes 'Set intensity range from: Manual'; e.g. 0,4095 "
             "for raw 12-bit counts")


def parse_intensity_range(text: Optional[str]) -> Optional[IntensityRange]:
    """'LO,HI' or 'HI' (LO = 0) -> (LO, HI); None stays None."""
    if text is None:
        return None
    try:
        parts = [float(p) for p in str(text).split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = [0.0, parts[0]]
    if len(parts) != 2 or not all(np.isfinite(parts)) or parts[1] <= parts[0]:
        raise InputError(f"--intensity-range expects LO,HI with LO < HI (or just HI), got {text!r}",
                         "e.g. --intensity-range 0,4095 for 12-bit counts, or 65535 for 16-bit")
    return parts[0], parts[1]


def check_range(intensity_range: Optional[Sequence[float]]) -> Optional[IntensityRange]:
    """A (LO, HI) pair from the API, checked like the CLI's."""
    if intensity_range is None:
        return None
    try:
        lo, hi = (float(v) for v in intensity_range)
    except (TypeError, ValueError):
        raise InputError(f"intensity_range must be a pair (LO, HI), got {intensity_range!r}") from None
    return parse_intensity_range(f"{lo!r},{hi!r}")


def dtype_notes(dtype: np.dtype, intensity_range: Optional[IntensityRange] = None) -> List[str]:
    """What the reader should know about how this type was scaled (today: signed integers)."""
    dtype = np.dtype(dtype)
    if intensity_range is None and np.issubdtype(dtype, np.signedinteger):
        info = np.iinfo(dtype)
        return [f"signed {dtype.name} data scaled as CellProfiler does ((x + {-info.min}) / {info.max - info.min}, "
                f"so 0 becomes 0.5); if the values are counts from 0, set the intensity range (e.g. 0,{info.max})"]
    return []


def to_full_scale(arr: np.ndarray, intensity_range: Optional[IntensityRange] = None,
                  source: str = "the image") -> np.ndarray:
    """Raw pixels -> float32 in [0, 1] by the rule above; InputError if the result is not."""
    arr = np.asarray(arr)
    if intensity_range is not None:
        lo, hi = intensity_range
        out = (arr.astype(np.float64) - lo) / (hi - lo)
    elif arr.dtype == np.bool_:
        out = arr.astype(np.float64)
    elif np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        out = (arr.astype(np.float64) - min(info.min, 0)) / float(info.max - min(info.min, 0))
    elif np.issubdtype(arr.dtype, np.floating):
        out = arr
    else:
        raise InputError(f"{source}: pixels of type {arr.dtype} are not an image", "give integer or float pixels")
    out = np.asarray(out, dtype=np.float32)
    check_full_scale(out, source, intensity_range)
    return out


def check_full_scale(arr: np.ndarray, source: str = "the image",
               intensity_range: Optional[IntensityRange] = None) -> None:
    """Fail on NaN/Inf and on values outside [0, 1], naming them and the fix."""
    finite = np.isfinite(arr)
    if not finite.all():
        raise InputError(f"{source}: {int((~finite).sum())} NaN or infinite pixel(s)",
                         "fix or mask them (e.g. replace NaN by 0) before super-resolving")
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if lo < 0.0 or hi > 1.0:
        where = "after scaling by the given range" if intensity_range is not None else "for a float image"
        raise InputError(f"{source}: values from {lo:.6g} to {hi:.6g} {where}; intensities must lie in 0..1",
                         RANGE_FIX)


def range_warnings(image: np.ndarray, names: Sequence[str], high: Sequence[float]) -> List[str]:
    """Warnings for channels of a full-scale (C, h, w) stack that exceed, on more than
    SATURATED_FRACTION of their pixels, the brightest intensity the model was trained on
    (`high`): the search cannot draw them, and the model's units clip them."""
    out = []
    for name, ch, hi in zip(names, image, high):
        above = float((ch > hi).mean()) if ch.size else 0.0
        if above > SATURATED_FRACTION:
            out.append(f"channel {name}: {100 * above:.1f} % of pixels are brighter than the model's training "
                       f"range (up to {hi:.4g} of full scale) and are clipped to it; check the intensity range "
                       "(--intensity-range) or use a model trained on images this bright")
    return out


def intensity_warnings(image: np.ndarray, names: Sequence[str]) -> List[str]:
    """Warnings for a full-scale (C, h, w) stack: saturated (> 1 % at the top) or constant channels."""
    out = []
    for name, ch in zip(names, image):
        top = float(ch.max()) if ch.size else 0.0
        if top >= 1.0 - 1e-6 and float((ch >= top).mean()) > SATURATED_FRACTION:
            out.append(f"channel {name} is saturated ({100 * float((ch >= top).mean()):.1f} % of pixels at the "
                       "maximum): intensities above it are lost, so the result there is a guess")
        elif ch.size and float(ch.min()) == top:
            out.append(f"channel {name} is constant ({top:.4g} everywhere): there is nothing to super-resolve")
    return out

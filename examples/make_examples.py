"""Write the small LR example sets (with their HR references) used by the main job and the pipelines.

    python examples/make_examples.py            # -> examples/{translocation,golgi}/{hr,lr}/

HR: simulated 256x256 fields (uint16, rls_core.simulate, fixed seeds that differ from the
training data's) with nucleus/cell labels and ground_truth.csv. LR: each HR channel shrunk
16x with the same bicubic operator the search uses (rls_core.operators, in the
simulator's full-scale units raw / 65535), saved as uint16 TIFF under the same file name,
so one CellProfiler pipeline reads both folders. The same seeds give identical files.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
#: assay -> seed of its example set (training sets use 1000 / 2000)
SEEDS = {"translocation": 7001, "golgi": 7002}
FACTOR = 16
SIZE = 256
FIELDS = 3


def downscale_folder(hr_dir: Path, lr_dir: Path, factor: int = FACTOR) -> list:
    """Bicubic-downscale every channel TIFF of hr_dir (not the label images) into lr_dir."""
    import tifffile
    import torch
    from rls_core.operators import make_operator

    op = make_operator("bicubic", factor)
    lr_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for p in sorted(hr_dir.glob("*.tif")):
        if p.stem.endswith("_labels"):
            continue
        hr = tifffile.imread(p)
        scale = float(np.iinfo(hr.dtype).max)
        with torch.no_grad():
            lr = op(torch.from_numpy(hr.astype(np.float32) / scale)[None, None])[0, 0].numpy()
        lr16 = np.clip(np.round(lr * scale), 0, scale).astype(hr.dtype)
        tifffile.imwrite(lr_dir / p.name, lr16, photometric="minisblack", metadata=None)
        written.append(lr_dir / p.name)
    return written


def compress_labels(folder: Path) -> None:
    """Rewrite the ground-truth label images zlib-compressed (they are mostly zeros): keeps the
    example set small enough to commit. The camera images stay uncompressed, as the simulator writes them."""
    import tifffile

    for p in sorted(folder.glob("*_labels.tif")):
        tifffile.imwrite(p, tifffile.imread(p), photometric="minisblack", metadata=None, compression="zlib")


def make_assay(assay: str, root: Path, fields: int = FIELDS, size: int = SIZE) -> None:
    from rls_core.simulate import write_dataset

    hr, lr = root / assay / "hr", root / assay / "lr"
    for d in (hr, lr):
        if d.exists():
            shutil.rmtree(d)
    write_dataset(hr, assay, None, fields, SEEDS[assay], size=size, progress=False)
    compress_labels(hr)
    n = len(downscale_folder(hr, lr))
    print(f"{assay}: {n} LR images ({size // FACTOR}x{size // FACTOR} px) in {lr}, HR references in {hr}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE, help="root folder (default: examples/)")
    ap.add_argument("--assay", nargs="+", default=sorted(SEEDS), choices=sorted(SEEDS))
    ap.add_argument("--fields", type=int, default=FIELDS, help="fields per condition (default: 3)")
    args = ap.parse_args(argv)
    for assay in args.assay:
        make_assay(assay, args.out, args.fields)


if __name__ == "__main__":
    main()

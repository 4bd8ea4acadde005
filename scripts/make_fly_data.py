"""Make data/fly: real fluorescence fields for a prior trained on real (not simulated) cells.

CellProfiler's wheel ships the ExampleFly images (Drosophila Kc167 cells; three fields
POS002, POS076, POS218 of 1006 x 1000 px, 8-bit; channels D = DAPI/DNA, F = FITC filter,
which outlines the cells (CellProfiler's example grows cells on it), R = rhodamine filter,
punctate). They are the only real HCS images available offline, so they are the check
that training and the quality benchmark work on real microscopy. This script copies them,
bytes unchanged, into the `<field>_<channel>.tif` layout `rls train` reads::

    data/fly/train/fly_POS002_{DNA,F,R}.tif   fly_POS076_{DNA,F,R}.tif
    data/fly/heldout/fly_POS218_{DNA,F,R}.tif   (for benchmarks/prior_quality.py --model fly)
    data/fly/source.json                        where each file came from

Model choices. All three channels (DNA, F, R): F gives the cell outlines and R the fine
puncta that super-resolution is about, and a 3-channel prior exercises the non-2-channel
code paths (use --channels DNA,F for a 2-channel model like the simulated ones). 64-px
crops: fly nuclei are ~18 px and cells ~25-30 px across (Otsu on D / F), so a 64-px crop
holds whole cells, about 2 cell diameters across, the same cells-per-crop as the 128-px
crops of the simulated assays (cells ~55 px), and cheaper per iteration.

Recommended training run (CPU, one thread). Measured: 0.94 s/iteration for 64 px, 3
channels, batch 16 while the two 128-px runs trained on the same 2 cores (3 processes);
expect less on a free core. 5000 iterations = 80 kimg (the 128-px models get
~64 kimg); the time limit stops it at ~75 min on a busy machine and still writes the bundle::

    rls train data/fly/train -o runs/fly --name fly --channels DNA,F,R --resolution 64 \\
        --preset cpu --iters 5000 --batch 16 --seed 0 --threads 1 --time-limit 75 \\
        --finish-at-limit --checkpoint-every 500 --snapshot-every 500

then `python benchmarks/prior_quality.py --model runs/fly/fly.h5` (held-out POS218), and
copy runs/fly/fly.h5 to rls_core/models/fly.h5 to ship it.

    python scripts/make_fly_data.py [--out data/fly] [--source DIR]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
TRAIN_FIELDS = ("POS002", "POS076")
HELDOUT_FIELDS = ("POS218",)
#: source letter in the ExampleFly file names -> our channel name
CHANNELS: Dict[str, str] = {"D": "DNA", "F": "F", "R": "R"}
TRAIN_CHANNELS = "DNA,F,R"

TRAIN_COMMAND = ("rls train {train} -o runs/fly --name fly --channels " + TRAIN_CHANNELS
                 + " --resolution 64 --preset cpu --iters 5000 --batch 16 --seed 0 --threads 1"
                 " --time-limit 75 --finish-at-limit --checkpoint-every 500 --snapshot-every 500")


def example_fly_dir() -> Path:
    """ExampleFly/images inside the installed CellProfiler package."""
    try:
        import cellprofiler
    except ImportError:
        raise SystemExit("CellProfiler is not installed in this environment; pass --source DIR "
                         "(the ExampleFly/images folder)") from None
    return Path(cellprofiler.__file__).resolve().parent / "data" / "examples" / "ExampleFly" / "images"


def find_source(src: Path, field: str, letter: str) -> Path:
    """01_POS002_D.TIF (any case of the extension)."""
    hits = [p for p in src.glob(f"*_{field}_{letter}.*") if p.suffix.lower() in (".tif", ".tiff")]
    if len(hits) != 1:
        raise SystemExit(f"{src}: expected one image for field {field} channel {letter}, found "
                         f"{[p.name for p in hits] or 'none'}")
    return hits[0]


def make(out: Path, src: Path) -> List[Path]:
    """Copy the fields into out/train and out/heldout; returns the written paths."""
    import tifffile

    written: List[Path] = []
    record: Dict[str, object] = {"source": str(src), "dataset": "CellProfiler ExampleFly (Drosophila Kc167)",
                                 "channels": CHANNELS, "files": {}}
    try:
        import cellprofiler

        record["cellprofiler_version"] = getattr(cellprofiler, "__version__", "unknown")
    except ImportError:
        pass
    for split, fields in (("train", TRAIN_FIELDS), ("heldout", HELDOUT_FIELDS)):
        d = out / split
        d.mkdir(parents=True, exist_ok=True)
        for field in fields:
            for letter, name in CHANNELS.items():
                s = find_source(src, field, letter)
                dst = d / f"fly_{field}_{name}.tif"
                shutil.copyfile(s, dst)
                arr = tifffile.imread(str(dst))  # fail here, not in the trainer, on a bad file
                if arr.ndim != 2:
                    raise SystemExit(f"{s}: expected a single-channel image, got shape {arr.shape}")
                record["files"][str(dst.relative_to(out))] = s.name  # type: ignore[index]
                written.append(dst)
    (out / "source.json").write_text(json.dumps(record, indent=2) + "\n")
    return written


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "data" / "fly"), help="output folder (default: data/fly)")
    ap.add_argument("--source", default=None, help="ExampleFly images folder (default: the installed CellProfiler's)")
    args = ap.parse_args(argv)
    src = Path(args.source) if args.source else example_fly_dir()
    if not src.is_dir():
        raise SystemExit(f"{src}: not a folder")
    out = Path(args.out)
    paths = make(out, src)
    print(f"wrote {len(paths)} images to {out}/train ({', '.join(TRAIN_FIELDS)}) and "
          f"{out}/heldout ({', '.join(HELDOUT_FIELDS)})")
    try:
        train = out.resolve().relative_to(Path.cwd().resolve()) / "train"
    except ValueError:
        train = out.resolve() / "train"
    print("train the fly prior with:\n  " + TRAIN_COMMAND.format(train=train))
    return 0


if __name__ == "__main__":
    sys.exit(main())

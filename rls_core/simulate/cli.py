"""``rls simulate``: write simulated HCS fields with ground truth to a folder.

The lead's CLI calls :func:`add_arguments` on its sub-parser and :func:`run` with the parsed
namespace. ``python -m rls_core.simulate.cli ...`` works stand-alone too.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from . import ASSAYS, CONDITIONS, write_dataset

DESCRIPTION = (
    "Simulate fluorescence high-content-screening fields (16-bit TIFF) with ground truth: "
    "nucleus and cell label images and a per-cell ground_truth.csv. "
    "Assays: translocation (channels DNA, NFkB; conditions DMSO, TNFa) and "
    "golgi (channels DNA, Golgi; conditions DMSO, Nocodazole).")

EPILOG = """\
examples:
  rls simulate --assay translocation --fields 4 --seed 1 -o sim/translocation
  rls simulate --assay golgi --condition DMSO Nocodazole --fields 8 --size 512 -o sim/golgi
  rls simulate --assay translocation --condition TNFa --dose 0.3 --responder-fraction 0.5 -o sim/low
  rls simulate --assay golgi --fields 200 --seed 4000 --workers 16 -o data/train/golgi_s4000

files: {assay}_{condition}_{well}_s{site}_{channel}.tif (first condition in well B02,
second in B03), {..}_nuclei_labels.tif, {..}_cells_labels.tif, ground_truth.csv,
simulation.json. CellProfiler metadata regex for the images:
  ^(?P<Assay>[a-z]+)_(?P<Condition>[A-Za-z]+)_(?P<Well>[A-P][0-9]{2})_s(?P<Site>[0-9]+)_(?P<Stain>[A-Za-z]+)\\.tif$
(label files do not match it). The same --seed gives bit-identical files, with any --workers.
"""


def _diameter(text: str):
    try:
        parts = [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX in px (e.g. 20,35), got {text!r}")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX in px (e.g. 20,35), got {text!r}")
    return (parts[0], parts[1])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``simulate`` options to ``parser`` (sets description/epilog if unset)."""
    if not parser.description:
        parser.description = DESCRIPTION
    if not parser.epilog:
        parser.epilog = EPILOG
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
    all_conditions = sorted({c for cs in CONDITIONS.values() for c in cs})
    parser.add_argument("--assay", required=True, choices=sorted(ASSAYS),
                        help="which assay to simulate: translocation (DNA + NF-kB p65) or "
                             "golgi (DNA + GM130)")
    parser.add_argument("--condition", nargs="+", default=None, metavar="COND",
                        help="one or more conditions, valid for the assay: translocation: "
                             "DMSO TNFa; golgi: DMSO Nocodazole (default: both). "
                             f"Known: {', '.join(all_conditions)}")
    parser.add_argument("--fields", type=int, default=4, metavar="N",
                        help="sites (fields of view) per condition (default: 4)")
    parser.add_argument("--seed", type=int, default=0,
                        help="base random seed; each field derives its own (default: 0)")
    parser.add_argument("--size", type=int, default=512, metavar="PX",
                        help="field width = height in pixels, >= 64 (default: 512)")
    parser.add_argument("-o", "--out", "--output", dest="out", required=True, metavar="DIR",
                        help="output folder (created if missing)")
    parser.add_argument("--density", type=float, default=1.0,
                        help="cell density factor; 1.0 ~ 40-60 cells per 512x512 field "
                             "(default: 1.0)")
    parser.add_argument("--responder-fraction", type=float, default=0.85, metavar="F",
                        help="fraction of treated cells that respond, 0..1 (default: 0.85)")
    parser.add_argument("--dose", type=float, default=1.0,
                        help="treatment strength 0..1, 1 = saturating (default: 1.0)")
    parser.add_argument("--nucleus-diameter", type=_diameter, default=(20.0, 35.0),
                        metavar="MIN,MAX",
                        help="nucleus diameter range in px; all sizes scale with it "
                             "(default: 20,35)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="simulate N fields at once in separate processes, e.g. the number of "
                             "cores; the files are the same for any N (default: 1)")
    parser.add_argument("--no-progress", action="store_true",
                        help="do not show the progress bar")


def run(args: argparse.Namespace) -> int:
    """Write the dataset described by ``args``; returns a process exit code. Bad parameters
    raise InputError (errors.run_command turns it into a message and exit 2)."""
    paths = write_dataset(
        args.out, args.assay, args.condition, args.fields, args.seed, size=args.size,
        progress=not getattr(args, "no_progress", False), workers=args.workers, density=args.density,
        responder_fraction=args.responder_fraction, dose=args.dose,
        nucleus_diameter=tuple(args.nucleus_diameter))
    conds = args.condition or list(CONDITIONS[args.assay])
    print(f"wrote {len(paths)} images ({len(conds)} condition(s) x {args.fields} field(s) x "
          f"{len(ASSAYS[args.assay])} channels) + labels + ground_truth.csv to {args.out}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    from ..errors import run_command

    parser = argparse.ArgumentParser(prog="rls simulate")
    add_arguments(parser)
    return run_command("simulate", run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

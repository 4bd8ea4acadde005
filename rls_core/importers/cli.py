"""Convert a StyleGAN2 checkpoint (rosinality .pt or NVlabs stylegan2-ada .pkl) into a model bundle.

``rls import CHECKPOINT -o BUNDLE.h5``: the lead's CLI calls :func:`add_arguments` on its
sub-parser and :func:`run` with the parsed namespace; ``python -m rls_core.importers.cli``
works stand-alone too. Nothing in the checkpoint is executed (see safe_pickle.py).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..prior_config import FLOW_EPOCHS, PRIOR_SAMPLES

DESCRIPTION = (
    "Convert an existing StyleGAN2 generator into a SuperResolveRLS model bundle (.h5). "
    "Reads rosinality/stylegan2-pytorch checkpoints (.pt, uses g_ema and latent_avg) and "
    "NVlabs/stylegan2-ada-pytorch network pickles (.pkl, uses G_ema), recognised by content. "
    "No code from the file is run: NVlabs pickles embed Python source that their own loader "
    "executes; ours reads only tensors and settings and refuses anything else by name.")

EPILOG = """\
examples:
  rls import network-snapshot-025000.pkl -o cells.h5 --channels DNA,Tubulin,Actin
  rls import 550000.pt -o cells.h5 --channels DNA,Tubulin,Actin --fit-prior
  rls import gray.pkl -o nuclei.h5 --channels DNA --intensity-range 0,0.25
  rls info cells.h5                      # check channels, config and provenance

channels:
  Names are given in the generator's channel order (RGB order for 3-channel models) and
  must equal the model's image channels (default: R,G,B for 3 channels, else ch0,ch1,...).
  `rls super-resolve` and the CellProfiler module match input images to channels by
  these names, so use the names of your CellProfiler images (e.g. DNA, Tubulin, Actin).

intensities:
  The generator's [-1, 1] output is mapped to full-scale intensity [LOW, HIGH] per channel
  (default 0,1: an 8/16-bit image's 0..max, the 0..1 values CellProfiler works with).
  If your training images were contrast-stretched (e.g. 16-bit data of which only 0..25%
  of full scale was used), give that range: --intensity-range 0,0.25 (one value for all
  channels, or repeat the option once per channel in channel order).

precision:
  The generator is evaluated in float32. NVlabs models trained with mixed precision
  (num_fp16_res > 0) therefore match upstream run with force_fp32=True (differences to
  upstream fp16 inference are ~1e-3, far below image noise).

prior (--fit-prior):
  Super-resolution with the RLS method needs the model's latent prior: statistics of
  mapped latents plus a normalizing flow (MAF). --fit-prior fits it now (the same as
  running `rls fit-prior BUNDLE.h5` later). With the defaults it takes minutes on one CPU
  thread for the project's presets (docs/performance.md); the authors' 1024-unit flow for
  a 512-d latent takes much longer on a CPU and minutes on a GPU (--device cuda).
  --prior-samples 20000 --flow-epochs 5 cuts it several-fold, at some cost in prior quality.
"""


def _names(text: str) -> List[str]:
    names = [s.strip() for s in text.split(",")]
    if not names or any(not s for s in names):
        raise argparse.ArgumentTypeError(f"expected comma-separated channel names (e.g. DNA,Tubulin,Actin), got {text!r}")
    return names


def _range(text: str) -> Dict[str, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH (e.g. 0,0.25), got {text!r}") from None
    if not high > low:
        raise argparse.ArgumentTypeError(f"need LOW < HIGH, got {text!r}")
    return {"low": low, "high": high}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``import`` options to ``parser`` (sets description/epilog when unset)."""
    if not parser.description or parser.description == (__doc__ or "").strip().splitlines()[0]:
        parser.description = DESCRIPTION
    if not parser.epilog:
        parser.epilog = EPILOG
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="rosinality .pt (torch.save; zip or legacy) or NVlabs stylegan2-ada .pkl snapshot")
    parser.add_argument("-o", "--output", required=True, metavar="BUNDLE.h5", help="model bundle to write")
    parser.add_argument("--channels", type=_names, default=None, metavar="NAMES",
                        help="comma-separated channel names in generator order, e.g. DNA,Tubulin,Actin "
                             "(default: R,G,B for 3 channels, else ch0,ch1,...)")
    parser.add_argument("--intensity-range", type=_range, action="append", default=None, metavar="LOW,HIGH",
                        help="full-scale intensity range the generator's output spans (default 0,1); once for "
                             "all channels or once per channel")
    parser.add_argument("--fit-prior", action="store_true",
                        help="also fit the latent prior (needed by the RLS method); see 'prior' below for the cost")
    parser.add_argument("--prior-samples", type=int, default=PRIOR_SAMPLES, metavar="N",
                        help="mapped samples for --fit-prior (default: %(default)s)")
    parser.add_argument("--flow-epochs", type=int, default=FLOW_EPOCHS, metavar="E",
                        help="flow training epochs for --fit-prior (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed for --fit-prior (default: %(default)s)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="device for --fit-prior (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="overwrite BUNDLE.h5 if it exists")


def _err(msg: str) -> int:
    print(f"rls import: error: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Convert, optionally fit the prior, save. Returns a process exit code (0 ok, 2 refused)."""
    from ..bundle import save_bundle
    from . import UnsafeCheckpointError, import_checkpoint

    out = Path(args.output)
    if out.suffix.lower() not in (".h5", ".hdf5"):
        return _err(f"{out}: the output must be an .h5 model bundle")
    if out.exists() and not args.force:
        return _err(f"{out} exists; choose another name or pass --force to overwrite it")
    t0 = time.perf_counter()
    try:
        bundle = import_checkpoint(args.checkpoint, args.channels, normalization=None)
    except UnsafeCheckpointError as e:
        return _err(f"{e}\nThe file was NOT loaded. Only import checkpoints whose origin you trust, and report "
                    "a genuine StyleGAN2 file that is refused.")
    n = len(bundle.channel_names)
    ranges = args.intensity_range
    if ranges:
        if len(ranges) == 1:
            ranges = ranges * n
        if len(ranges) != n:
            return _err(f"{len(ranges)} --intensity-range values for {n} channels; give one, or one per channel")
        bundle.normalization = [dict(r) for r in ranges]
    cfg = bundle.generator_config
    print(f"{bundle.provenance['source_format']} {bundle.provenance['source_network']}: {cfg['resolution']} px, "
          f"{n} channel(s) {','.join(bundle.channel_names)}, z {cfg['z_dim']}, w {cfg['w_dim']}, "
          f"mapping {cfg['mapping_layers']} layers, channels {list(cfg['channels'])}", file=sys.stderr)
    for w in bundle.provenance.get("warnings", []):
        print(f"rls import: warning: {w}", file=sys.stderr)
    if args.fit_prior:
        from ..model import resolve_device
        from ..priors import fit_bundle_prior

        dev = resolve_device(args.device)
        G = bundle.build_generator(dev)
        print(f"fitting the latent prior ({args.prior_samples} samples, {args.flow_epochs} flow epochs) on {dev}...",
              file=sys.stderr)
        fit_bundle_prior(bundle, G, n_samples=args.prior_samples, flow_epochs=args.flow_epochs, seed=args.seed,
                         device=dev)
    dest = save_bundle(bundle, out)
    print(f"wrote {dest} ({time.perf_counter() - t0:.1f} s)"
          + ("" if args.fit_prior else f"; run `rls fit-prior {dest}` before using the RLS method"), file=sys.stderr)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ..errors import run_command

    parser = argparse.ArgumentParser(prog="rls import")
    add_arguments(parser)
    return run_command("import", run, parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""`rls train`: command-line front end of rls_core.train.loop (argument parsing only)."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import List, Optional

from ..presets import PRESET_NAMES
from . import EXPORTS, FAKES
from ..prior_config import FLOW_EPOCHS, FLOW_NOISE, FLOW_NOISE_HELP, PRIOR_SAMPLES, check_prior_settings

DESCRIPTION = """\
Train a StyleGAN2 generator on high-resolution fields of one assay, then fit its latent
prior and write the model bundle OUTDIR/<name>.h5 that `rls sr` searches. No LR/HR pairs
are needed: only HR images. Random --resolution crops are drawn from every field (with
flips and 90-degree rotations); intensities are normalised per channel between the 0.1th
and 99.9th percentiles of the training fields, and that normalisation is stored in the
bundle so search inputs are scaled the same way.

Folder layouts: one single-channel image per channel named <field>_<channel>.tif (as
written by `rls simulate`: translocation_DMSO_B02_s1_DNA.tif + ..._NFkB.tif), selected
with --channels; or one multi-channel TIFF per field (CYX or YXC). *_labels.tif,
*_nuclei.tif, *_cells.tif and non-image files are ignored.
"""

EPILOG = """\
example (the campaign's translocation model, docs/models.md; standard preset, 128 px):
  rls simulate --assay translocation --fields 200 --seed 3000 --size 512 -o data/train/translocation_s3000
  rls train data/train/translocation_s3000 -o runs/translocation_std --name translocation \\
      --channels DNA,NFkB --resolution 128 --preset standard --batch 16 --seed 0 \\
      --threads 1 --time-limit 120
  # to train further later (the model settings come from the checkpoint):
  rls train data/train/translocation_s3000 -o runs/translocation_std --name translocation \\
      --iters 100000 --threads 1 --time-limit 120 --resume
  rls train -o runs/translocation_std --name translocation --finish   # bundle now
  # fine-tune trained weights on your own fields (a new run folder):
  rls train my_fields -o runs/my_assay --name my_assay --channels DNA,NFkB --init-from translocation

how long it takes: docs/performance.md has seconds per iteration for each preset and
thread count on a 2-core CPU (benchmarks/generator_speed.py measures your machine), and
docs/models.md the campaign's wall times. On a machine shared with other work, use
--threads 1: two threads can then be slower than one. The end of a run (w_avg, the prior
fit) takes a few minutes on one thread. A lent GPU: scripts/train_on_device.sh
(docs/models.md). For reference, the authors' model saw millions of images.

outputs in OUTDIR: checkpoint.pt (one file, replaced every --checkpoint-every iterations;
exact resume), samples_NNNNNN.png (latest sample grid from fixed latents; first channel
blue, second green, third red), samples_final.png, reals.png (training crops for
comparison), train_log.csv (losses per --log-every iterations), <name>.h5 (the bundle);
with --metrics-every: metrics.csv and metrics.png (realism of G and its EMA over the run)
and best.pt (the best measured generator, for --export best).
"""

def _name_list(text: str) -> List[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `rls train` options to `parser` (and its description/example if it has none)."""
    if not parser.description:
        parser.description = DESCRIPTION
    if not parser.epilog:
        parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter

    parser.add_argument("data_dir", nargs="?", metavar="DATA_DIR",
                        help="folder of HR training fields (not needed with --finish)")
    parser.add_argument("-o", "--outdir", required=True, metavar="OUTDIR",
                        help="run folder: checkpoint, sample grids, log and the final bundle")
    g = parser.add_argument_group("data and model")
    g.add_argument("--channels", type=_name_list, default=None, metavar="A,B",
                   help="channel names in order, matching the <field>_<channel>.tif file names "
                        "(e.g. DNA,NFkB); for multi-channel TIFFs they just name the channels")
    g.add_argument("--name", default="model", help="bundle name: OUTDIR/<name>.h5 (default: model)")
    g.add_argument("--resolution", type=int, default=128,
                   help="HR crop and generator size, a power of two >= 32 (default: 128, as in the paper)")
    g.add_argument("--preset", default="standard", choices=list(PRESET_NAMES),
                   help="generator/discriminator size: standard (the paper's 512-d latent and 8-layer "
                        "mapping, synthesis widths sized for CPU search; the campaign's models), cpu (the "
                        "small 128-d preset of the first shipped models), paper (the authors' exact "
                        "StyleGAN2; GPU), tiny (tests) (default: standard)")
    g.add_argument("--d-width", type=float, default=1.0,
                   help="discriminator widths = the preset's generator widths x this (default: 1)")
    g.add_argument("--noise-min-res", type=int, default=None, metavar="PX",
                   help="only layers of at least this resolution take a noise input (4: every layer, as in "
                        "StyleGAN2). Searches keep the noise fixed, so coarse noise must not decide where "
                        "cells are (docs/models.md) (default: half the resolution, i.e. the two finest blocks)")
    g.add_argument("--init-from", default=None, metavar="MODEL",
                   help="start from trained weights instead of random ones (fine-tuning): a bundle or shipped "
                        "model name (the generator; D starts afresh) or a checkpoint .pt of `rls train` (G and "
                        "D; a full checkpoint.pt gives its EMA generator, a slim resume.pt the generator of the bundle "
                        "written beside it, e.g. a raw or best export). The generator's shape comes from it; "
                        "--noise-min-res may switch off its coarse noise. Adam and the iteration count start afresh")
    g.add_argument("--data-seed", type=int, default=None,
                   help="seed that generated the data (e.g. of `rls simulate`); only recorded in provenance")

    g = parser.add_argument_group("training")
    g.add_argument("--iters", type=int, default=3000,
                   help="total iterations, each one G and one D step on --batch images (default: 3000)")
    g.add_argument("--batch", type=int, default=16, help="images per step (default: 16)")
    g.add_argument("--seed", type=int, default=0, help="seed of weights, latents and crops (default: 0)")
    g.add_argument("--lr", type=float, default=0.002, help="Adam learning rate, G and D (default: 0.002)")
    g.add_argument("--r1-gamma", type=float, default=1.0,
                   help="R1 gradient-penalty weight on reals, applied every 16 D steps; raise it (e.g. 5-10, "
                        "the authors used 10) if training is unstable, lower it if D cannot keep up "
                        "(default: 1)")
    g.add_argument("--pl-weight", type=float, default=0.0,
                   help="path-length regularisation weight, every 4 G steps (the paper used 2); off by "
                        "default on CPU to save time (~5-10%% per iteration) (default: 0)")
    g.add_argument("--style-mixing", type=float, default=0.9, help="style-mixing probability (default: 0.9)")
    g.add_argument("--ema-kimg", type=float, default=10.0,
                   help="half-life of the EMA generator in thousands of images; ramps up over the first "
                        "images of short runs (default: 10)")
    g.add_argument("--coverage-weight", type=float, default=0.0, metavar="W",
                   help="weight of the LR coverage loss: for each real crop, the nearest of "
                        "--coverage-candidates fresh single-w samples (in the LR image at "
                        "--coverage-factor) is pulled toward the crop's LR image, so that RLS, which searches about "
                        "one w per tile, can match real LR tiles (rls_core/train/coverage.py); "
                        "applied lazily, like the path-length term; experimental: it did not help "
                        "the campaign (docs/models.md); 0 turns it off (default: 0)")
    g.add_argument("--coverage-factor", type=int, default=16, metavar="F",
                   help="reduction factor of the coverage loss's LR images (default: 16)")
    g.add_argument("--coverage-candidates", type=int, default=64, metavar="K",
                   help="fresh samples per coverage step among which each real crop's nearest is "
                        "taken (default: 64)")
    g.add_argument("--d-warmup", type=int, default=0, metavar="N",
                   help="train only the discriminator for the run's first N iterations (G and its "
                        "EMA wait), so that the D of a fine-tune (--init-from, which restarts the "
                        "count at 0 and Adam's moments) catches up with a good G before G follows "
                        "it; a --resume keeps the checkpoint's setting; it did not help the "
                        "campaign (docs/models.md); 0 turns it off (default: 0)")
    g.add_argument("--fakes", choices=FAKES, default=None,
                   help="where D's step gets its fake images: 'shared' reuses the G step's batch and "
                        "D's logits on it (D has not changed in between), saving one G forward and one "
                        "D forward per iteration (~1.2x faster); 'fresh' draws a new batch from the "
                        "updated G, as NVlabs' StyleGAN2 does. Both trained alike in a paired "
                        "comparison (docs/performance.md). A --resume keeps the run's own choice (fresh for "
                        f"runs from before the option) (default: {FAKES[0]})")
    g.add_argument("--augment-p", type=float, default=0.5,
                   help="DiffAugment probability per op (colour, translation, cutout) for D's inputs; "
                        "0 turns it off; keep it on with few fields (default: 0.5)")

    g = parser.add_argument_group("run control")
    g.add_argument("--resume", action="store_true",
                   help="continue OUTDIR/checkpoint.pt exactly where it stopped (bit-identical on CPU; model settings come "
                        "from the checkpoint; --iters may be raised)")
    g.add_argument("--finish", action="store_true",
                   help="skip training: take OUTDIR/checkpoint.pt as it is, fit the prior, write the bundle")
    g.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                   help="checkpoint and exit cleanly before this many minutes have passed; resume later "
                        "with --resume (the prior fit at the end is not counted)")
    g.add_argument("--finish-at-limit", action="store_true",
                   help="when --time-limit stops training, still fit the prior and write the bundle "
                        "from the current state (the run can be resumed and finished again later)")
    g.add_argument("--export", choices=EXPORTS, default="ema",
                   help="the generator the bundle holds: ema, the moving average of G (StyleGAN's choice); raw, "
                        "G itself; or best, the generator (G or its EMA) of the best --metrics-every measurement "
                        "so far. A GAN's last iteration is rarely its best: in the campaign the average was at "
                        "times worse than G, and G swung from one checkpoint to the next (docs/models.md, chunk 5). "
                        "A slim resume restarts from the exported one (default: ema)")
    g.add_argument("--metrics-every", type=int, default=0, metavar="K",
                   help="every K iterations, measure the realism of G and its EMA (SWD x1e3 of 512 samples vs 512 "
                        "training crops, as benchmarks/prior_quality.py; ~30 s on one thread for the standard "
                        "preset at 128 px), log it to OUTDIR/metrics.csv and metrics.png, and keep the best "
                        "generator in OUTDIR/best.pt for --export best. The draws are its own: the run trains "
                        "the same with or without it (default: 0, off)")
    g.add_argument("--snapshot-every", type=int, default=250, metavar="K",
                   help="write a sample grid every K iterations (default: 250)")
    g.add_argument("--checkpoint-every", type=int, default=250, metavar="K",
                   help="overwrite OUTDIR/checkpoint.pt every K iterations (default: 250)")
    g.add_argument("--log-every", type=int, default=10, metavar="K",
                   help="average losses over K iterations into train_log.csv (default: 10)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    g.add_argument("--accel", default="none", choices=["none", "bf16", "auto"],
                   help="bf16: bfloat16 autocast of the main G and D passes (losses, R1 and the optimisers stay "
                        "float32); for GPUs and CPUs with native bf16, several times slower elsewhere; auto: bf16 "
                        "where native (default: none)")
    g.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: all cores); use 1 per run when two runs share "
                        "a 2-core machine")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")

    g = parser.add_argument_group("latent prior (fitted on the EMA generator at the end)")
    g.add_argument("--fit-prior-samples", type=int, default=PRIOR_SAMPLES, metavar="N",
                   help="mapped samples for the latent statistics and the flow; 0 skips the prior "
                        "(run `rls fit-prior` later) (default: 100000)")
    g.add_argument("--flow-epochs", type=int, default=FLOW_EPOCHS, help="MAF training epochs (default: %(default)s)")
    g.add_argument("--flow-noise", type=float, default=FLOW_NOISE, metavar="S", help=FLOW_NOISE_HELP)
    g.add_argument("--flow-blocks", type=int, default=5, help="MAF blocks (default: 5, as in the paper)")
    g.add_argument("--flow-hidden", type=int, default=None,
                   help="MAF hidden width (default: 2 x w_dim up to 128-d latents, 128 for wider "
                        "ones, to keep bundles <= 12 MiB; the paper used 1024 for w_dim 512)")
    return parser


def config_from_args(args: argparse.Namespace):
    from .loop import TrainConfig

    if not args.data_dir and not args.finish:
        raise SystemExit("rls train: error: DATA_DIR is required (except with --finish)")
    if not args.resume and not args.finish:  # a new run's shape and optimiser, checked before any data is read
        from ..generator import GeneratorConfig

        try:
            GeneratorConfig.preset(args.preset, args.resolution)
        except ValueError as e:
            raise SystemExit(f"rls train: error: --resolution/--preset: {e}") from None
    if not 0 < args.lr < float("inf"):
        raise SystemExit(f"rls train: error: --lr must be a finite number > 0, got {args.lr}")
    if args.fit_prior_samples > 0:  # now, not after hours of training
        try:
            check_prior_settings(args.fit_prior_samples, args.flow_blocks, args.flow_hidden, args.flow_epochs,
                                 args.flow_noise, samples_name="fit-prior-samples")
        except ValueError as e:
            raise SystemExit(f"rls train: error: --{e}") from None
    return TrainConfig(
        data_dir=args.data_dir or "", outdir=args.outdir, name=args.name, channels=args.channels,
        resolution=args.resolution, preset=args.preset, d_width=args.d_width,
        noise_min_res=args.noise_min_res, init_from=args.init_from, iters=args.iters,
        batch=args.batch, seed=args.seed, lr=args.lr, r1_gamma=args.r1_gamma, pl_weight=args.pl_weight,
        style_mixing=args.style_mixing, ema_kimg=args.ema_kimg, augment_p=args.augment_p, d_warmup=args.d_warmup,
        fakes=args.fakes,
        coverage_weight=args.coverage_weight, coverage_factor=args.coverage_factor,
        coverage_candidates=args.coverage_candidates,
        resume=args.resume, finish=args.finish, time_limit=args.time_limit,
        finish_at_limit=args.finish_at_limit, export=args.export, metrics_every=args.metrics_every,
        snapshot_every=args.snapshot_every, checkpoint_every=args.checkpoint_every, log_every=args.log_every,
        fit_prior_samples=args.fit_prior_samples, flow_blocks=args.flow_blocks, flow_hidden=args.flow_hidden,
        flow_epochs=args.flow_epochs, flow_noise=args.flow_noise, device=args.device, accel=args.accel, threads=args.threads,
        progress=not args.no_progress, data_seed=args.data_seed,
        command=" ".join(shlex.quote(a) for a in [_program_name()] + sys.argv[1:]),
    )


def _program_name() -> str:
    """How the command was called, for provenance: `rls`, also when reached through
    `python -m rls_core` or `python -c` (whose argv[0] says nothing a reader can rerun)."""
    name = Path(sys.argv[0]).name
    return "rls" if name in ("-c", "__main__.py", "") else name


def run(args: argparse.Namespace) -> int:
    """Run `rls train`; 0 when the bundle was written or the run stopped cleanly for a resume.
    Data, training and bundle errors (RLSError) reach the caller (errors.run_command)."""
    from .loop import train

    print(train(config_from_args(args)))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """`python -m rls_core.train.cli ...` (same as `rls train ...`)."""
    from ..errors import run_command

    parser = add_arguments(argparse.ArgumentParser(prog="rls train"))
    return run_command("train", run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

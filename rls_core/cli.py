"""`rls`: the batch command line, a thin layer over rls_core's Python API.

Each subcommand parses arguments and calls the library; heavy imports (torch) happen
inside the handlers so `rls --help` answers at once.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .accel import ACCEL_MODES, DEFAULT_ACCEL
from .errors import EXIT_OK, EXIT_SOME_FAILED, InputError, RLSError, run_command
from .prior_config import FLOW_BLOCKS, FLOW_EPOCHS, FLOW_NOISE, FLOW_NOISE_HELP, PRIOR_SAMPLES

EPILOG = """\
examples:
  rls models                                     # the models that ship with the package
  rls super-resolve lr/*_DNA.tif lr/*_NFkB.tif -o sr/ --factor 16
  rls super-resolve field.tif -o sr/ --method pulse --samples 5 --seed 1
  rls info translocation                         # a model's config and provenance
  rls simulate --assay golgi --fields 4 -o data/golgi
  rls train data/golgi -o runs/golgi --channels DNA,Golgi --name golgi
  rls fit-prior my_model.h5                      # latent statistics + flow prior

Run `rls COMMAND --help` for the details of each command.
"""

SR_EPILOG = """\
inputs:
  Multi-channel fields come as one file per channel whose names differ only by the
  model's channel name as a token (plate_A01_DNA.tif + plate_A01_NFkB.tif), or as one
  multi-page TIFF with the channels in the model's order.

intensities (as CellProfiler's NamesAndTypes with "Image bit-depth"; README has the table):
  unsigned integers are divided by their type's maximum (uint16: 65535); signed integers are
  shifted so 0 becomes 0.5 (a warning says so); floats must already be 0..1. Raw counts in
  another range: --intensity-range LO,HI (e.g. 0,4095 for 12-bit). NaN/Inf or values outside
  0..1 fail the field with the fix; saturated (> 1 % at the maximum) or constant channels
  run with status "warning" and the reason in summary.csv.

outputs (in OUTDIR):
  <stem>_sr.tif       HR field, one page per channel, float32, same intensity units; its
                      ImageJ "Info" property records the settings that made it
  <stem>_sr_std.tif   per-pixel standard deviation over --samples (only when K > 1)
  summary.csv         one row per field: status (ok / warning / skipped / failed / not run),
                      reason, warnings, method, factor, lr_psnr (dB), converged fraction,
                      seconds; rewritten after every field, so an interrupted run leaves a
                      true summary

resume: rerun the same command with --skip-existing: fields whose output records the same
settings are skipped; the others are redone (the summary says which setting changed).

methods:
{methods}

fidelity vs realism:
  --realism scales every prior weight: 0 = no prior (like plain), 1 = the paper's
  defaults, 2 = twice as strong (more realistic cells, looser fit to the LR input).
  That needs a well-trained model: the priors can only be as realistic as the model's
  own samples. With the shipped early models, 0 to 0.05 kept the differences between
  conditions best (docs/results/README.md).
  Individual weights: --weight lambda_cross=0.2 (repeatable; see `rls info MODEL`).

reproducibility:
  Every random draw of a tile comes from (--seed, the field's name, the tile's row and
  column, the sample), so a field's result does not depend on --batch-size or on which
  other fields run with it (docs/reproducibility.md).

speed: a search costs (tiles x samples x steps) generator passes; try a small crop and
--steps 100 first. docs/performance.md has measured figures; benchmarks/search_speed.py
prints them for your machine.

scale-out (docs/scale-out.md):
  job arrays: --print-commands N prints N commands, each with --shard I/N; the shards cover
  every field once. Dask: --cluster local or --scheduler ADDRESS runs one task per field
  (workers load the model once; outputs land in OUTDIR, which every worker must see). The
  same field gives the same result in-process, in any shard and on any worker.

exit codes: 0 every field done (with or without warnings), 1 some fields failed
(summary.csv says which), 2 nothing could run (usage, model, device), 130 interrupted
(Ctrl-C; finished fields are kept, --skip-existing resumes).
"""


def _methods_help() -> str:
    from .methods import METHODS

    return "\n".join(f"  {m.name:<15}{m.description}" for m in METHODS.values())


def _seed(text: str) -> int:
    """argparse type of --seed: refused at parse time, before any field is read."""
    from .seeding import check_seed

    try:
        return check_seed(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None


def _parse_weights(items: Optional[List[str]]) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"rls: --weight expects NAME=VALUE (e.g. lambda_cross=0.2), got {item!r}")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise SystemExit(f"rls: --weight {key}: {value!r} is not a number") from None
    return out


def cmd_super_resolve(args: argparse.Namespace) -> int:
    from .api import check_factor
    from .batch import (FAILED, NOT_RUN, OK, SKIPPED, WARNING, BatchOptions, parse_shard, prepare_output, run_batch,
                        shard, summary_name)
    from .intensity import parse_intensity_range
    from .io import is_sr_output, plan_fields
    from .model import load_model
    from .reconstruct import make_reconstructor
    from .tiling import check_overlap

    model = load_model(args.model, args.device, accel=args.accel)
    opts = BatchOptions(method=args.method, factor=args.factor, steps=args.steps, learning_rate=args.lr,
                        samples=args.samples, seed=args.seed, realism=args.realism,
                        weights=_parse_weights(args.weight), p_w=args.p_w, overlap=args.overlap,
                        operator=args.operator, refine_steps=args.refine_steps,
                        intensity_range=parse_intensity_range(args.intensity_range))
    # Settings that no field could run with stop here (exit 2), before any output is written.
    tile = check_factor(model, opts.factor)
    if opts.overlap is not None:
        try:
            check_overlap(opts.overlap, tile)
        except ValueError as e:
            raise InputError(f"--overlap: {e}", "leave --overlap out for the default (a quarter of a tile)") from None
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.scheduler and args.cluster:
        raise InputError("--scheduler and --cluster both say where to run", "give one of them")
    if args.workers is not None and not args.cluster:
        raise InputError("--workers sets the size of --cluster local", "add --cluster local, or leave --workers out")
    try:
        make_reconstructor(model, opts.method, opts.factor, opts.operator, opts.samples, realism=opts.realism,
                           weights=opts.weights, p_w=opts.p_w, steps=opts.steps, learning_rate=opts.learning_rate,
                           refine_steps=opts.refine_steps)
    except ValueError as e:
        raise InputError(str(e)) from None
    inputs = [Path(p) for p in args.inputs]
    own = [p for p in inputs if is_sr_output(p)]
    if own:  # a rerun over a folder that also holds this tool's outputs: never super-resolve those again
        print(f"ignoring {len(own)} file(s) that rls super-resolve wrote (e.g. {own[0]}); they are outputs, "
              "not LR inputs", file=sys.stderr)
        inputs = [p for p in inputs if p not in own]
    specs = plan_fields(inputs, model.channel_names)
    part = parse_shard(args.shard) if args.shard else None
    if args.print_commands is not None:
        return _print_array_commands(args, len(specs))
    if part is not None:
        specs = shard(specs, *part)
    out = prepare_output(Path(args.output))
    print(f"model {model.name} ({', '.join(model.channel_names)}) on {model.device}; "
          f"{len(specs)} field(s); method {opts.method} x{opts.factor}", file=sys.stderr)
    if args.cluster or args.scheduler:
        from .dask_engine import open_client, run_batch_dask

        with open_client(args.scheduler, args.cluster, args.workers) as client:
            print(f"Dask: {len(client.scheduler_info()['workers'])} worker(s) at {client.scheduler.address}",
                  file=sys.stderr)
            summary = run_batch_dask(specs, model, opts, out, client, batch_size=args.batch_size,
                                     skip_existing=args.skip_existing, summary_file=summary_name(part),
                                     progress=not args.quiet)
    else:
        summary = run_batch(specs, model, opts, out, batch_size=args.batch_size, skip_existing=args.skip_existing,
                            progress=not args.quiet, summary_file=summary_name(part))
    counts = {s: sum(r["status"] == s for r in summary.rows) for s in (OK, WARNING, SKIPPED, FAILED, NOT_RUN)}
    print(f"{counts[OK] + counts[WARNING]} done ({counts[WARNING]} with warnings), {counts[SKIPPED]} skipped "
          f"(already done), {counts[FAILED]} failed; see {summary.path}", file=sys.stderr)
    return EXIT_SOME_FAILED if counts[FAILED] else EXIT_OK


def _print_array_commands(args: argparse.Namespace, n_fields: int) -> int:
    """The N commands of a job array (one shard each), as CellProfiler's --get-batch-commands does."""
    import shlex

    n = int(args.print_commands)
    if n < 1:
        raise InputError(f"--print-commands needs N >= 1, got {n}")
    argv = [a for a in (args.argv or []) if a]
    base, skip = [], False
    for a in argv:  # drop --print-commands N / --shard I/N from the user's command line
        if skip:
            skip = False
            continue
        if a in ("--print-commands", "--shard"):
            skip = True
            continue
        if a.startswith(("--print-commands=", "--shard=")):
            continue
        base.append(a)
    for i in range(1, n + 1):
        print(" ".join(shlex.quote(a) for a in ["rls", *base, "--shard", f"{i}/{n}", "--skip-existing"]))
    print(f"# {n_fields} field(s) in {n} shard(s); afterwards, the same command with --skip-existing and no "
          "--shard writes the complete summary.csv (and redoes anything missing)", file=sys.stderr)
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    from .bundle import bundle_summary, load_bundle
    from .registry import resolve_model

    print(bundle_summary(load_bundle(resolve_model(args.model))))
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    from .bundle import BundleError, load_bundle
    from .registry import DEFAULT_MODEL, list_models

    models = list_models()
    if not models:
        print("no models are installed with the package (see docs/models.md to train one)")
        return 0
    broken = 0
    for name, path in models.items():
        try:
            b = load_bundle(path)
            res = b.generator_config["resolution"]
            desc = b.provenance.get("description", "")
            print(f"{name:<15} {'(default) ' if name == DEFAULT_MODEL else ''}channels {','.join(b.channel_names)}; "
                  f"{res}-px tiles; {path.stat().st_size / 1e6:.1f} MB  {desc}")
        except BundleError as e:
            broken += 1
            print(f"{name:<15} BROKEN: {e}")
    if broken:
        print(f"rls models: {broken} model(s) cannot be used (see BROKEN above); reinstall the package",
              file=sys.stderr)
        return EXIT_SOME_FAILED
    return EXIT_OK


def cmd_fit_prior(args: argparse.Namespace) -> int:
    import torch

    from .bundle import load_bundle, save_bundle
    from .model import resolve_device
    from .prior_config import check_prior_settings
    from .priors import fit_bundle_prior
    from .registry import list_models, resolve_model

    try:
        check_prior_settings(args.samples, args.flow_blocks, args.flow_hidden, args.flow_epochs, args.flow_noise)
    except ValueError as e:
        raise InputError(f"--{e}") from None
    path = resolve_model(args.model)
    dest = Path(args.output) if args.output else path
    if dest.resolve() in {p.resolve() for p in list_models().values()}:
        raise InputError(f"{dest} is a model shipped with the package; refitting it in place would change every "
                         "later run that uses it", f"write the refitted model elsewhere: rls fit-prior "
                         f"{args.model} -o my_{path.stem}.h5")
    if dest.is_dir():
        raise InputError(f"-o {dest} is a folder", "give the path of the .h5 file to write")
    bundle = load_bundle(path)
    dev = resolve_device(args.device)
    G = bundle.build_generator(dev)
    t0 = time.perf_counter()
    if not bool(G.mapping.w_avg.abs().sum() > 0):  # keep an imported model's own w_avg
        with torch.no_grad():
            G.estimate_w_avg(n=min(args.samples, 100_000), seed=args.seed)
    bundle.generator_state["mapping.w_avg"] = G.mapping.w_avg.detach().cpu().numpy()
    fit_bundle_prior(bundle, G, n_samples=args.samples, flow_blocks=args.flow_blocks, flow_hidden=args.flow_hidden,
                     flow_epochs=args.flow_epochs, seed=args.seed, device=dev, flow_noise=args.flow_noise)
    dest = save_bundle(bundle, dest)
    print(f"wrote latent prior into {dest} ({time.perf_counter() - t0:.0f} s)")
    return 0


def cmd_cellprofiler_files(args: argparse.Namespace) -> int:
    import shutil

    from .resources import shared_dir

    out = Path(args.output)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for kind in ("plugins", "pipelines"):
            (out / kind).mkdir(exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:  # a file where a folder must go
        raise RLSError(f"cannot make the folder {e.filename}: a file of that name is in the way",
                       "choose another output folder") from None
    written = []
    for kind, pattern in (("plugins", "superresolverls.py"), ("pipelines", "*.cppipe")):
        dest = out / kind
        for src in sorted(shared_dir(kind).glob(pattern)):
            target = dest / src.name
            if target.exists() and not args.force:
                raise RLSError(f"{target} exists", "pass --force to overwrite it, or choose another folder")
            shutil.copyfile(src, target)
            written.append(target)
    print("\n".join(str(p) for p in written))
    print(f"in CellProfiler: File > Preferences > CellProfiler plugins directory = {(out / 'plugins').resolve()}; "
          f"headless: cellprofiler -c -r -p {out / 'pipelines' / 'translocation.cppipe'} "
          f"--plugins-directory {out / 'plugins'} -i IN -o OUT", file=sys.stderr)
    return EXIT_OK


def _add_super_resolve(sub) -> None:
    from .methods import DEFAULT_METHOD, METHOD_NAMES, METHODS, P_W_CHOICES
    from .registry import DEFAULT_MODEL

    p = sub.add_parser("super-resolve", help="super-resolve LR fields (TIFF/PNG) with a generator prior",
                       description="Super-resolve low-resolution fields by searching a StyleGAN2 prior's "
                                   "latent space for HR images that downscale to the input.",
                       epilog=SR_EPILOG.format(methods=_methods_help()), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="LR images (see 'inputs' below)")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for results and summary.csv")
    p.add_argument("--model", default=DEFAULT_MODEL, help="shipped model name or .h5 bundle path (default: %(default)s)")
    p.add_argument("--factor", type=int, default=16, help="upscaling factor, e.g. 16 or 32 (default: %(default)s)")
    p.add_argument("--method", default=DEFAULT_METHOD, choices=METHOD_NAMES,
                   help="search method, see 'methods' below (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None, help="search steps per tile (default: the method's: "
                   + ", ".join(f"{m.name} {m.steps}" for m in METHODS.values() if m.search) + ")")
    p.add_argument("--lr", type=float, default=None, help="base learning rate (default: the method's)")
    p.add_argument("--samples", type=int, default=1, metavar="K",
                   help="K > 1: K searches per tile from random starts -> mean image + std map (default: 1)")
    p.add_argument("--seed", type=_seed, default=0,
                   help="random seed (>= 0); with the field's name it seeds each tile (default: 0)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="(default: %(default)s)")
    p.add_argument("--accel", default=DEFAULT_ACCEL, choices=ACCEL_MODES,
                   help="how the generator runs: none (float32, the reference), bf16 (autocast; for GPUs and "
                        "CPUs with native bf16), compile (torch.compile: a one-off warm-up per run, then faster "
                        "steps; worth it for many tiles), bf16+compile, auto (bf16 where native, else none); "
                        "results agree closely with none (docs/performance.md) (default: %(default)s)")
    p.add_argument("--realism", type=float, default=1.0,
                   help="fidelity-vs-realism knob: scales all prior weights (default: 1 = paper)")
    p.add_argument("--weight", action="append", metavar="NAME=VALUE",
                   help="override one loss weight, e.g. lambda_cross=0.2 (repeatable)")
    p.add_argument("--p-w", default="flow", choices=P_W_CHOICES,
                   help="RLS latent prior: the MAF flow (paper) or the cheaper full-covariance Gaussian")
    p.add_argument("--overlap", type=int, default=None,
                   help="tile overlap in LR pixels (default: a quarter of the LR tile)")
    p.add_argument("--batch-size", type=int, default=32, help="tiles searched together (default: %(default)s)")
    p.add_argument("--operator", default="bicubic", choices=["bicubic", "area"],
                   help="how HR maps to LR in the fidelity term (default: %(default)s)")
    p.add_argument("--refine-steps", type=int, default=0,
                   help="RLS+ stage: fine-tune generator weights per tile for N steps (default: off)")
    p.add_argument("--intensity-range", metavar="LO,HI", default=None,
                   help="raw values LO..HI map to 0..1, for any file type (default: by type, as CellProfiler)")
    p.add_argument("--shard", metavar="I/N", default=None,
                   help="process only shard I of N of the fields (sorted by name, round robin), e.g. in a job "
                        "array; each shard writes summary_shardIofN.csv")
    p.add_argument("--print-commands", type=int, metavar="N", default=None,
                   help="print the N commands of a job array covering these inputs (one --shard each), then stop")
    p.add_argument("--cluster", choices=["local"], default=None,
                   help="run the fields as Dask tasks on a LocalCluster of one-thread worker processes "
                        "(pip install '.[dask]'); see 'scale-out' below")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="run the fields as Dask tasks on an existing cluster, e.g. tcp://host:8786 "
                        "(dask-jobqueue for SLURM/PBS/SGE/LSF: docs/scale-out.md)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes of --cluster local (default: one per CPU core)")
    p.add_argument("--skip-existing", action="store_true",
                   help="resume: skip fields whose output records the same settings (model, inputs, method, "
                        "seed, ...); redo the others and say why")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_super_resolve)


def _add_lazy(sub, name: str, module: str, help_text: str) -> None:
    """Subcommands implemented in their own packages (simulate, train, import, evaluate)."""
    import importlib

    try:
        mod = importlib.import_module(f"rls_core.{module}")
    except ImportError as e:  # a subpackage that is not there yet must not break the rest
        p = sub.add_parser(name, help=f"{help_text} (unavailable: {e})")
        p.set_defaults(func=lambda a, e=e: print(f"rls {name}: unavailable: {e}", file=sys.stderr) or 2)
        return
    p = sub.add_parser(name, help=help_text, description=(mod.__doc__ or help_text).strip().splitlines()[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    mod.add_arguments(p)
    p.set_defaults(func=mod.run)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="rls", description="SuperResolveRLS: super-resolution of microscopy images by regularized latent "
                                "search in a StyleGAN2 prior, for CellProfiler and the command line.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_super_resolve(sub)
    p = sub.add_parser("info", help="print a model bundle's config, channels and provenance")
    p.add_argument("model", help="shipped model name or .h5 path")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("cellprofiler-files", help="copy the CellProfiler module and the shared pipelines to a folder",
                       description="Copy the SuperResolveRLS module (plugins/superresolverls.py) and the shared "
                                   "pipelines (pipelines/*.cppipe) out of the installed package, e.g. to point "
                                   "CellProfiler's plugins directory at them.")
    p.add_argument("output", metavar="OUTDIR", help="folder to write plugins/ and pipelines/ into")
    p.add_argument("--force", action="store_true", help="overwrite files that exist")
    p.set_defaults(func=cmd_cellprofiler_files)
    p = sub.add_parser("models", help="list the models shipped with the package")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("fit-prior", help="fit the latent statistics and the flow prior into a bundle",
                       description="Sample the mapping network, fit mean w, PULSE's and the full-covariance "
                                   "Gaussian statistics and the MAF flow prior, and store them in the bundle. "
                                   "A few minutes on one CPU thread with the defaults (measured in "
                                   "docs/performance.md); the authors' 1024-unit flow takes much longer on "
                                   "CPU.")
    p.add_argument("model", help="shipped model name or .h5 path (updated in place unless -o)")
    p.add_argument("-o", "--output", default=None, help="write to this path instead")
    p.add_argument("--samples", type=int, default=PRIOR_SAMPLES, help="mapped samples (default: %(default)s)")
    p.add_argument("--flow-blocks", type=int, default=FLOW_BLOCKS, help="MAF blocks (default: %(default)s)")
    p.add_argument("--flow-hidden", type=int, default=None, help="MADE hidden units (default: 2 x w_dim up to 128-d "
                   "latents, 128 for wider ones; the authors used 1024 at 512-d)")
    p.add_argument("--flow-epochs", type=int, default=FLOW_EPOCHS, help="flow training epochs (default: %(default)s)")
    p.add_argument("--flow-noise", type=float, default=FLOW_NOISE, metavar="S", help=FLOW_NOISE_HELP)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=cmd_fit_prior)
    _add_lazy(sub, "simulate", "simulate.cli", "simulate HCS fields (translocation / Golgi assays) with ground truth")
    _add_lazy(sub, "train", "train.cli", "train a StyleGAN2 prior on a folder of HR fields")
    _add_lazy(sub, "import", "importers.cli", "convert a rosinality .pt or NVlabs .pkl StyleGAN2 into a bundle")
    _add_lazy(sub, "evaluate", "evaluate.cli", "reproduce the paper's tables and figures on held-out data")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_OK
    return run_command(args.command, args.func, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""StyleGAN2 training loop: from a folder of HR fields to a model bundle for the searches.

One iteration = one generator step and one discriminator step on a batch, in the order of
NVlabs' stylegan2-ada-pytorch (G main, G path-length reg, D main, D R1 reg):
  * non-saturating logistic loss; D sees both real and fake through DiffAugment;
  * lazy regularisation: R1 on reals every `r1_interval` D steps, optional path-length
    every `pl_interval` G steps, each scaled by its interval, with Adam's lr and betas
    corrected so the regularised optimiser behaves like the unregularised one;
  * style mixing (two w's crossing over at a random layer) so layers stay independent,
    which is what lets the W+ search give each layer its own code;
  * an EMA copy of G (half-life `ema_kimg`, ramped up early) that becomes the model, unless
    `export` picks G itself or the best snapshot measured by `metrics_every` (monitor.py).
Everything that influences the numbers (weights, optimisers, iteration, RNG states, data
sampler) is checkpointed so a run split by `time_limit` resumes bit-identically on CPU.
"""
from __future__ import annotations

import copy
import datetime as _dt
import functools
import math
import os
import shlex
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..accel import autocast, resolve_accel
from ..cpu_alloc import reuse_freed_memory
from ..errors import RLSError
from ..generator import Generator, GeneratorConfig, fine_noise_min_res
from ..model import resolve_device
from ..prior_config import FLOW_BLOCKS, FLOW_EPOCHS, FLOW_NOISE, PRIOR_SAMPLES
from .augment import AugmentConfig, augment
from .coverage import coverage_loss
from .data import CropSampler, FieldSet, load_fields
from .discriminator import Discriminator, DiscriminatorConfig
from .monitor import (BEST_NAME, METRICS_NAME, METRICS_PLOT, Best, RealismMonitor, append_csv_row, append_metrics,
                      load_best, plot_metrics, save_best, update_best)
from . import EXPORTS, FAKES

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "rls-train-checkpoint"
CHECKPOINT_VERSION = 2  # 2: adds the slim resume checkpoint (RESUME_NAME)
RESUME_NAME = "resume.pt"
LOG_NAME = "train_log.csv"
GRID_SIZE = 16  # images in the sample grid (4 x 4)


@dataclass
class TrainConfig:
    """All settings of a run. Fields marked (run control) may change when resuming; the
    others are fixed by the checkpoint so that the resumed run is the same computation."""

    data_dir: str = ""                      # (run control) folder of training fields
    outdir: str = "runs/model"              # (run control) checkpoint, samples, bundle go here
    name: str = "model"                     # (run control) bundle file name: OUTDIR/<name>.h5
    channels: Optional[List[str]] = None    # channel names, e.g. ["DNA", "NFkB"]
    resolution: int = 128                   # HR crop / generator size (power of two)
    preset: str = "standard"                # generator size: one of rls_core.presets.PRESET_NAMES
    d_width: float = 1.0                    # discriminator widths = generator preset widths x this
    noise_min_res: Optional[int] = None     # layers below this take no noise; None: fine_noise_min_res(resolution)
    init_from: Optional[str] = None         # start from trained weights: a bundle (G) or a checkpoint .pt (G and D)
    iters: int = 3000                       # (run control) total iterations (G + D step each)
    batch: int = 16
    seed: int = 0
    lr: float = 0.002
    betas: Tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = 1.0                   # R1 weight; 0 disables
    r1_interval: int = 16
    pl_weight: float = 0.0                  # path-length reg weight (paper: 2); 0 disables
    pl_interval: int = 4
    pl_batch_shrink: int = 2
    pl_decay: float = 0.01
    style_mixing: float = 0.9
    ema_kimg: float = 10.0                  # EMA half-life in thousands of images
    ema_rampup: Optional[float] = 0.05      # from scratch: half-life <= this x images seen; None: off
    augment_p: float = 0.5                  # DiffAugment probability per op and image; 0: off
    fakes: Optional[str] = FAKES[0]         # D's step reuses the G step's fakes or draws "fresh" ones: one of FAKES (None: the first)
    d_warmup: int = 0                       # the first N iterations train D only (G and its EMA wait)
    coverage_weight: float = 0.0            # LR coverage loss weight (coverage.py); 0 disables
    coverage_factor: int = 16               # ... at this reduction factor (the searches' 16x)
    coverage_candidates: int = 64           # ... nearest of this many fresh samples per real crop
    coverage_interval: int = 4              # ... applied lazily, every this many G steps
    norm_low_pct: float = 0.1
    norm_high_pct: float = 99.9
    resume: bool = False                    # (run control) continue OUTDIR/checkpoint.pt
    finish: bool = False                    # (run control) only write the bundle from the checkpoint
    time_limit: Optional[float] = None      # (run control) minutes; checkpoint and stop when reached
    finish_at_limit: bool = False           # (run control) also write the bundle when the time limit stops it
    export: str = "ema"                     # (run control) the generator the bundle holds: one of EXPORTS
    metrics_every: int = 0                  # (run control) measure realism (SWD) every N iterations; 0: off
    snapshot_every: int = 250               # (run control) sample grid every N iterations
    checkpoint_every: int = 250             # (run control) checkpoint every N iterations
    log_every: int = 10                     # (run control) rows of train_log.csv
    fit_prior_samples: int = PRIOR_SAMPLES  # (run control) mapped samples for the prior; 0: skip
    flow_blocks: int = FLOW_BLOCKS          # (run control)
    flow_hidden: Optional[int] = None       # (run control) None: 2 x w_dim
    flow_epochs: int = FLOW_EPOCHS          # (run control)
    flow_noise: float = FLOW_NOISE          # (run control) noise the flow is fitted through
    device: str = "auto"                    # (run control) auto | cpu | cuda[:i]
    accel: str = "none"                     # (run control) none | bf16 (autocast of the main passes) | auto
    threads: Optional[int] = None           # (run control) torch CPU threads
    progress: bool = True                   # (run control)
    data_seed: Optional[int] = None         # (run control) seed that generated the data, recorded only
    command: Optional[str] = None           # (run control) recorded in provenance (default: sys.argv)


RUN_CONTROL = {"data_dir", "outdir", "name", "iters", "resume", "finish", "time_limit", "finish_at_limit",
               "snapshot_every",
               "checkpoint_every", "log_every", "fit_prior_samples", "flow_blocks", "flow_hidden",
               "flow_epochs", "flow_noise", "device", "accel", "threads", "progress", "data_seed", "command",
               "export", "metrics_every"}


#: settings whose None on the command line means "not asked" (not "asked for None") on resume
NOT_ASKED_IF_NONE = {"channels", "noise_min_res", "init_from", "fakes"}


class TrainError(RLSError, RuntimeError):
    """A run that cannot start or continue; the message says why and what to do."""


# ----------------------------------------------------------------------------- helpers

def _say(msg: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(msg, file=sys.stderr)


def _git_commit() -> Optional[str]:
    """HEAD commit of the source checkout, read from .git files (no git executable needed)."""
    for base in (Path(__file__).resolve().parents[2], Path.cwd()):
        git = base / ".git"
        try:
            if git.is_file():  # worktree: "gitdir: <path>"
                git = (base / git.read_text().split(":", 1)[1].strip()).resolve()
            if not (git / "HEAD").is_file():
                continue
            common = git
            if (git / "commondir").is_file():
                common = (git / (git / "commondir").read_text().strip()).resolve()
            head = (git / "HEAD").read_text().strip()
            if not head.startswith("ref:"):
                return head
            ref = head.split(":", 1)[1].strip()
            for root in (git, common):
                if (root / ref).is_file():
                    return (root / ref).read_text().strip()
            packed = common / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split()[0]
        except OSError:
            continue
    return None


def _to_json_safe(cfg: TrainConfig) -> Dict[str, Any]:
    d = asdict(cfg)
    d["betas"] = [float(b) for b in cfg.betas]
    return d


def _from_saved(d: Dict[str, Any]) -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)}
    d = {k: v for k, v in d.items() if k in known}
    d.setdefault("noise_min_res", 4)  # runs from before the setting had noise at every layer
    d.setdefault("fakes", "fresh")    # runs from before the setting drew fresh fakes for D
    if "betas" in d:
        d["betas"] = tuple(float(b) for b in d["betas"])
    return TrainConfig(**d)


def _make_opt(module: torch.nn.Module, cfg: TrainConfig, reg_interval: Optional[int]) -> torch.optim.Adam:
    """Adam; with lazy regularisation every k steps, lr and betas are rescaled by k/(k+1)
    because the regularised module takes k+1 optimiser steps per k minibatches."""
    ratio = reg_interval / (reg_interval + 1) if reg_interval else 1.0
    kw = dict(lr=cfg.lr * ratio, betas=(float(cfg.betas[0] ** ratio), float(cfg.betas[1] ** ratio)), eps=1e-8)
    try:  # one fused kernel per step: 3-4x faster than the per-tensor loop (CPU since torch 2.4, CUDA)
        return torch.optim.Adam(module.parameters(), fused=True, **kw)
    except (RuntimeError, ValueError, TypeError):  # older torch or an unsupported device
        return torch.optim.Adam(module.parameters(), **kw)


# ----------------------------------------------------------------------------- state

@dataclass
class _State:
    G: Generator
    D: Discriminator
    G_ema: Generator
    opt_G: torch.optim.Adam
    opt_D: torch.optim.Adam
    iteration: int = 0
    pl_mean: torch.Tensor = field(default_factory=lambda: torch.zeros([]))
    wall_time: float = 0.0
    commands: List[str] = field(default_factory=list)
    best: Optional[Best] = None             # the best realism measurement so far (--metrics-every)


def _configs(cfg: TrainConfig, n_channels: int) -> Tuple[GeneratorConfig, DiscriminatorConfig]:
    """The network shapes of a fresh run, from the preset (`noise_min_res` resolved by `_setup`)."""
    return (GeneratorConfig.preset(cfg.preset, cfg.resolution, n_channels, cfg.noise_min_res),
            DiscriminatorConfig.preset(cfg.preset, cfg.resolution, n_channels, cfg.d_width))


def _build(cfg: TrainConfig, gcfg: GeneratorConfig, dcfg: DiscriminatorConfig, device: torch.device) -> _State:
    torch.manual_seed(cfg.seed)
    G = Generator(gcfg).to(device).train()
    D = Discriminator(dcfg).to(device).train()
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt_G = _make_opt(G, cfg, cfg.pl_interval if cfg.pl_weight > 0 else None)
    opt_D = _make_opt(D, cfg, cfg.r1_interval if cfg.r1_gamma > 0 else None)
    return _State(G, D, G_ema, opt_G, opt_D, pl_mean=torch.zeros([], device=device))


def _initial_state(cfg: TrainConfig, n_channels: int, device: torch.device) -> _State:
    """A fresh run: random weights from the preset, or, with `init_from`, the weights of a trained
    model (a fine-tune; Adam, the iteration count and the EMA ramp start afresh)."""
    if not cfg.init_from:
        return _build(cfg, *_configs(cfg, n_channels), device)
    g_source, g_state, d_cfg, d_state = _init_source(cfg.init_from)
    gcfg = GeneratorConfig.from_dict({**g_source, "noise_min_res": cfg.noise_min_res})
    if gcfg.img_channels != n_channels or gcfg.resolution != cfg.resolution:
        raise TrainError(f"--init-from {cfg.init_from}: its generator draws {gcfg.img_channels} channel(s) at "
                         f"{gcfg.resolution} px; this run has {n_channels} channel(s) and --resolution "
                         f"{cfg.resolution}; match them, or train from scratch")
    # a fresh D mirrors the source generator's widths, as the presets pair them
    dcfg = DiscriminatorConfig(**d_cfg) if d_cfg else DiscriminatorConfig.mirror(gcfg, cfg.d_width)
    st = _build(cfg, gcfg, dcfg, device)
    st.G.load_state_dict(g_state)
    with torch.no_grad():  # a source with noise where this run has none: that noise is switched off
        for layer in st.G.synthesis.layers():
            if not layer.use_noise:
                layer.noise_strength.zero_()
    st.G_ema.load_state_dict(st.G.state_dict())
    if d_state is not None:
        st.D.load_state_dict(d_state)
    _say(f"initialised from {cfg.init_from}: G" + (" and D" if d_state is not None else " (D starts afresh)")
         + f"; noise at layers >= {gcfg.noise_min_res} px")
    return st


def _init_source(source: str) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor], Optional[Dict[str, Any]],
                                       Optional[Dict[str, torch.Tensor]]]:
    """(generator config, generator state, D config or None, D state or None) of a checkpoint
    .pt (full: its EMA generator; slim: its bundle's generator, lying beside it) or of a bundle
    / shipped name."""
    from ..bundle import BundleError, load_bundle
    from ..registry import resolve_model

    path = Path(source).expanduser()
    if path.suffix.lower() in (".pt", ".pth"):
        if not path.is_file():
            raise TrainError(f"--init-from {source}: no such checkpoint; give a checkpoint.pt or resume.pt of "
                             "`rls train`, a bundle .h5 or a shipped model name")
        ckpt = load_checkpoint(path)
        g_state = (_slim_generator_state(ckpt, path.parent) if ckpt.get("slim") else ckpt["G_ema"])
        return ckpt["generator_config"], g_state, ckpt["discriminator_config"], ckpt["D"]
    try:
        bundle = load_bundle(resolve_model(source))
    except BundleError as e:
        raise TrainError(f"--init-from: {e}") from None
    return dict(bundle.generator_config), bundle.generator_tensors(), None, None


def _run_state(st: _State, cfg: TrainConfig, rng: Dict[str, Any], data: Dict[str, Any]) -> Dict[str, Any]:
    """What every checkpoint holds besides weights: config, counters, data summary, RNG."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": _to_json_safe(cfg),
        "generator_config": st.G.cfg.to_dict(),
        "discriminator_config": st.D.cfg.to_dict(),
        "iteration": int(st.iteration),
        "pl_mean": st.pl_mean.detach().cpu(),
        "wall_time": float(st.wall_time),
        "commands": list(st.commands),
        "best": st.best.to_dict() if st.best is not None else None,
        "data": data,
        "rng": rng,
        "torch_version": str(torch.__version__),
    }


def _save_atomically(obj: Dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def save_checkpoint(path: Path, st: _State, cfg: TrainConfig, sampler: Optional[CropSampler],
                    data: Dict[str, Any]) -> Path:
    """One file, replaced atomically; only tensors and plain containers (weights_only-safe)."""
    rng = _rng_state(sampler)
    if torch.cuda.is_available() and st.pl_mean.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state_all()
    ckpt = _run_state(st, cfg, rng, data)
    ckpt.update({"G": st.G.state_dict(), "D": st.D.state_dict(), "G_ema": st.G_ema.state_dict(),
                 "opt_G": st.opt_G.state_dict(), "opt_D": st.opt_D.state_dict(),
                 "device": str(st.pl_mean.device)})
    return _save_atomically(ckpt, path)


def save_resume_checkpoint(path: Path, st: _State, cfg: TrainConfig, rng: Dict[str, Any],
                           data: Dict[str, Any], bundle_path: Path) -> Path:
    """The small checkpoint to keep in the repository beside the bundle it belongs to.

    The full checkpoint holds G, G_ema, D and both Adam states in float32 (~100 MB for the
    standard preset). This one keeps only D (float16) and the run state: the generator comes
    back from the bundle's generator (its EMA or, with --export raw, G; G = G_ema on resume) and the
    Adam moments start again. Resuming from it is therefore not bit-identical, but stable
    (tests/test_train.py compares the losses with an uninterrupted run's).
    """
    ckpt = _run_state(st, cfg, rng, data)
    ckpt.update({"slim": True, "bundle": bundle_path.name,
                 "D": {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu())
                       for k, v in st.D.state_dict().items()}})
    return _save_atomically(ckpt, path)


def _rng_state(sampler: Optional[CropSampler]) -> Dict[str, Any]:
    rng: Dict[str, Any] = {"torch": torch.get_rng_state()}
    if sampler is not None:
        rng["sampler"] = sampler.state_dict()
    return rng


def load_checkpoint(path: Path) -> Dict[str, Any]:
    if not path.is_file():
        raise TrainError(f"{path}: no checkpoint to resume from; start without --resume")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise TrainError(f"{path}: cannot be read as a training checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(f"{path}: not a checkpoint written by `rls train`")
    if int(ckpt.get("version", 0)) > CHECKPOINT_VERSION:
        raise TrainError(f"{path}: written by a newer SuperResolveRLS; upgrade to resume it")
    return ckpt


def _restore(ckpt: Dict[str, Any], cfg: TrainConfig, device: torch.device) -> _State:
    st = _build(cfg, GeneratorConfig.from_dict(ckpt["generator_config"]),
                DiscriminatorConfig(**ckpt["discriminator_config"]), device)
    if ckpt.get("slim"):
        return _restore_slim(st, ckpt, Path(cfg.outdir).expanduser())
    st.G.load_state_dict(ckpt["G"])
    st.D.load_state_dict(ckpt["D"])
    st.G_ema.load_state_dict(ckpt["G_ema"])
    st.opt_G.load_state_dict(ckpt["opt_G"])
    st.opt_D.load_state_dict(ckpt["opt_D"])
    st.iteration = int(ckpt["iteration"])
    st.pl_mean = ckpt["pl_mean"].to(device)
    st.wall_time = float(ckpt["wall_time"])
    st.commands = list(ckpt["commands"])
    st.best = Best(**ckpt["best"]) if ckpt.get("best") else None
    return st


def _slim_generator_state(ckpt: Dict[str, Any], folder: Path) -> Dict[str, torch.Tensor]:
    """The EMA generator of a slim checkpoint: the bundle written beside it in `folder`."""
    from ..bundle import BundleError, load_bundle

    path = folder / str(ckpt["bundle"])
    hint = (f"a slim checkpoint ({RESUME_NAME}) resumes with the bundle written beside it: copy that "
            f"bundle to {path}")
    try:
        bundle = load_bundle(path)
    except BundleError as e:
        raise TrainError(f"{e}; {hint}") from None
    if int(bundle.provenance.get("iterations", -1)) != int(ckpt["iteration"]):
        raise TrainError(f"{path} was written at iteration {bundle.provenance.get('iterations')}, the "
                         f"checkpoint at {ckpt['iteration']}; {hint}")
    return bundle.generator_tensors()


def _restore_slim(st: _State, ckpt: Dict[str, Any], folder: Path) -> _State:
    """G and G_ema from the bundle written with this checkpoint, D from the checkpoint."""
    state = _slim_generator_state(ckpt, folder)
    st.G.load_state_dict(state)
    st.G_ema.load_state_dict(state)
    st.D.load_state_dict(ckpt["D"])
    st.iteration = int(ckpt["iteration"])
    st.pl_mean = ckpt["pl_mean"].to(st.pl_mean.device)
    st.wall_time = float(ckpt["wall_time"])
    st.commands = list(ckpt["commands"])
    # best.pt stays with the full run; the measurements start again from the bundle's generator.
    st.best = None
    _say("resuming from a slim checkpoint: G = the bundle's generator, fresh Adam moments "
         "(not bit-identical to an uninterrupted run)")
    return st


def _restore_rng(ckpt: Dict[str, Any], sampler: Optional[CropSampler], device: torch.device) -> None:
    rng = ckpt["rng"]
    torch.set_rng_state(rng["torch"])
    if device.type == "cuda":
        if "cuda" in rng:
            torch.cuda.set_rng_state_all(rng["cuda"])
        else:
            _say("note: checkpoint was written on CPU; resuming on CUDA is not bit-identical")
    if sampler is not None and "sampler" in rng:
        sampler.load_state_dict(rng["sampler"])


def _merge_resumed(saved: TrainConfig, given: TrainConfig, quiet: bool = False) -> TrainConfig:
    """Checkpoint settings win, except run-control ones; say which given values are ignored."""
    ignored = [f"{f.name}={getattr(saved, f.name)!r} (asked {getattr(given, f.name)!r})"
               for f in fields(TrainConfig)
               if f.name not in RUN_CONTROL and getattr(saved, f.name) != getattr(given, f.name)
               and not (f.name in NOT_ASKED_IF_NONE and getattr(given, f.name) is None)]
    if ignored and not quiet:
        _say("resuming with the checkpoint's settings: " + "; ".join(ignored))
    return replace(saved, **{k: getattr(given, k) for k in RUN_CONTROL})


# ----------------------------------------------------------------------------- one iteration

def _mapping_mixed(G: Generator, z: torch.Tensor, prob: float) -> torch.Tensor:
    """W+ from z; with probability `prob` the layers from a random cutoff on take a second w."""
    ws = G.mapping(z)[:, None].repeat(1, G.num_ws, 1)
    if prob > 0:
        cutoff = int(torch.randint(1, G.num_ws, ()).item())
        if float(torch.rand(())) < prob:
            w2 = G.mapping(torch.randn_like(z))
            ws = torch.cat([ws[:, :cutoff], w2[:, None].expand(-1, G.num_ws - cutoff, -1)], dim=1)
    return ws


def ema_beta(cfg: TrainConfig, iteration: int, batch: int) -> float:
    """Per-step decay of the EMA generator (half-life `ema_kimg`).

    From scratch, the half-life ramps up with the images seen (at most `ema_rampup` x them), so
    early samples are not stale. A fine-tune (`init_from`) starts from a trained G and gets the
    full half-life at once, as NVlabs' stylegan2-ada does when it resumes from a network: with
    the ramp-up counted from the fine-tune's own first iteration, its EMA averaged only the last
    ~100 iterations of a G whose samples swing widely between checkpoints (SWD 72-203 within
    600 iterations; docs/models.md, chunk 5)."""
    ema_nimg = cfg.ema_kimg * 1000
    if cfg.ema_rampup and not cfg.init_from:
        ema_nimg = min(ema_nimg, iteration * batch * cfg.ema_rampup)
    return 0.5 ** (batch / max(ema_nimg, 1e-8))


def _step(opt: torch.optim.Adam, loss: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _iteration(st: _State, cfg: TrainConfig, real: torch.Tensor, aug: AugmentConfig) -> Dict[str, float]:
    G, D, dev = st.G, st.D, real.device
    b, z_dim = real.shape[0], G.cfg.z_dim
    it = st.iteration
    out: Dict[str, float] = {}

    # Main passes may run under bf16 autocast (cfg.accel); the losses, the regularisers (R1's
    # double backward, path length) and the optimisers stay float32.
    amp = functools.partial(autocast, cfg.accel, dev)

    # A D-only warm-up lets a fine-tune's D (fresh Adam moments, or fresh weights) catch up with
    # a good G before G follows its gradients (docs/models.md, session 16). It counts the run's
    # iterations, which an --init-from run starts at 0.
    train_g = it >= cfg.d_warmup

    # G main: make D call fakes real. With shared fakes, D's loss on these fakes comes from the
    # same forward pass (D has not changed yet), so the D step below needs no new G forward and
    # no second D forward on fakes. (One backward for both losses is not possible: the
    # minibatch-std layer mixes the samples, so their per-sample gradients are not proportional.)
    shared = train_g and cfg.fakes == "shared"
    D.requires_grad_(shared)
    if train_g:
        with amp():
            fake = G.synthesis(_mapping_mixed(G, torch.randn(b, z_dim, device=dev), cfg.style_mixing),
                               noise_mode="random")
            logits = D(augment(fake, aug)).float()
        loss_g = F.softplus(-logits).mean()
        st.opt_G.zero_grad(set_to_none=True)
        # inputs=G's parameters: D's weight gradients of the G loss are never computed
        loss_g.backward(inputs=list(G.parameters()), retain_graph=shared)
        if shared:  # D's fake half, from the same graph: only D's side of it is traversed
            st.opt_D.zero_grad(set_to_none=True)
            F.softplus(logits).mean().backward(inputs=list(D.parameters()))
            logits_fake = logits.detach()
        st.opt_G.step()
        out["G"] = loss_g.item()

    # G reg: path length (smooth, evenly-scaled W -> image map), lazily.
    if train_g and cfg.pl_weight > 0 and it % cfg.pl_interval == 0:
        pb = max(1, b // cfg.pl_batch_shrink)
        ws = _mapping_mixed(G, torch.randn(pb, z_dim, device=dev), cfg.style_mixing)
        img = G.synthesis(ws, noise_mode="random")
        noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
        grad, = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
        lengths = grad.square().sum(2).mean(1).sqrt()
        st.pl_mean = st.pl_mean.lerp(lengths.mean().detach(), cfg.pl_decay)
        pen = (lengths - st.pl_mean).square().mean()
        _step(st.opt_G, pen * cfg.pl_weight * cfg.pl_interval)
        out["pl"] = pen.item()

    # G reg: LR coverage (every real crop's LR image near some single-w sample's), lazily.
    if train_g and cfg.coverage_weight > 0 and it % cfg.coverage_interval == 0:
        cov = coverage_loss(G, real, cfg.coverage_factor, cfg.coverage_candidates, amp=amp)
        _step(st.opt_G, cov * cfg.coverage_weight * cfg.coverage_interval)
        out["coverage"] = cov.item()
    D.requires_grad_(True)

    # D main: fakes low, reals high.
    if shared:  # the fake half's gradient is already in D's .grad; add the real half's
        with amp():
            logits_real = D(augment(real, aug))
        loss_real = F.softplus(-logits_real.float()).mean()
        loss_real.backward()
        st.opt_D.step()
        loss_d = F.softplus(logits_fake.float()).mean() + loss_real.detach()
    else:  # fresh fakes from the updated G (NVlabs' phases; runs from before `fakes` existed)
        with torch.no_grad(), amp():
            fake = G.synthesis(_mapping_mixed(G, torch.randn(b, z_dim, device=dev), cfg.style_mixing),
                               noise_mode="random")
        with amp():
            logits_fake, logits_real = D(augment(fake, aug)), D(augment(real, aug))
        loss_d = F.softplus(logits_fake.float()).mean() + F.softplus(-logits_real.float()).mean()
        _step(st.opt_D, loss_d)
    out["D"] = loss_d.item()
    if not train_g:  # G's loss as D saw these fakes: the log keeps its column during warm-up
        out["G"] = F.softplus(-logits_fake.detach().float()).mean().item()

    # D reg: R1, the gradient penalty on reals, lazily.
    if cfg.r1_gamma > 0 and it % cfg.r1_interval == 0:
        x = real.detach().requires_grad_(True)
        grad, = torch.autograd.grad(D(augment(x, aug)).sum(), x, create_graph=True)
        r1 = grad.square().sum(dim=(1, 2, 3)).mean()
        _step(st.opt_D, r1 * (cfg.r1_gamma / 2) * cfg.r1_interval)
        out["R1"] = r1.item()

    if train_g:
        beta = ema_beta(cfg, it, b)
        with torch.no_grad():
            ema, raw = list(st.G_ema.parameters()), [p.detach() for p in G.parameters()]
            if hasattr(torch, "_foreach_lerp_"):  # one call for all tensors (torch >= 2.0)
                torch._foreach_lerp_(ema, raw, 1.0 - beta)
            else:
                for p_ema, p in zip(ema, raw):
                    p_ema.lerp_(p, 1.0 - beta)
            for b_ema, b_ in zip(st.G_ema.buffers(), G.buffers()):
                b_ema.copy_(b_)
    st.iteration += 1
    return out


# ----------------------------------------------------------------------------- outputs

def composite_rgb(img: np.ndarray) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> (N, H, W, 3): 1 channel gray; else ch0 blue, ch1 green,
    ch2 red, ch3 magenta (the usual DNA-blue convention)."""
    n, c = img.shape[:2]
    if c == 1:
        return np.repeat(img[:, 0, :, :, None], 3, axis=-1)
    colors = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0], [1, 0, 1]], np.float32)[:c]
    return np.clip(np.einsum("nchw,ck->nhwk", img, colors), 0, 1)


def save_grid(images: torch.Tensor, path: Path, pad: int = 2) -> Path:
    """Tile (N, C, H, W) images in [-1, 1] into one PNG."""
    from PIL import Image

    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) / 2).numpy()
    rgb = composite_rgb(x)
    n, h, w, _ = rgb.shape
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    canvas = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), np.float32)
    for i in range(n):
        r, c = divmod(i, cols)
        canvas[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = rgb[i]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    Image.fromarray((canvas * 255 + 0.5).astype(np.uint8)).save(tmp)
    os.replace(tmp, path)
    return path


@torch.no_grad()
def _snapshot(G: Generator, z: torch.Tensor, outdir: Path, tag: str) -> Path:
    """Samples of G (the EMA during training) from fixed z with the constant noise maps (no
    global RNG is used), keeping only the newest numbered grid so OUTDIR stays small."""
    ws = G.mapping(z.to(G.w_avg.device))[:, None].repeat(1, G.num_ws, 1)
    path = save_grid(G.synthesis(ws, noise_mode="const"), outdir / f"samples_{tag}.png")
    if tag != "final":
        for old in outdir.glob("samples_[0-9]*.png"):
            if old != path:
                old.unlink(missing_ok=True)
    return path


def _append_log(path: Path, row: Dict[str, Any]) -> None:
    append_csv_row(path, ["iteration", "kimg", "D", "G", "R1", "pl", "s_per_iter", "wall_s", "coverage"], row)


def _human(seconds: float) -> str:
    h, rem = divmod(int(seconds), 3600)
    return f"{h}h{rem // 60:02d}m{rem % 60:02d}s"


def _exported_generator(st: _State, cfg: TrainConfig) -> Generator:
    """The generator `cfg.export` names: the EMA, a copy of G, or the best measured snapshot
    (best.pt, whose record replaces `st.best` so the provenance says what was exported)."""
    if cfg.export == "ema":
        return st.G_ema
    G = copy.deepcopy(st.G)
    if cfg.export == "best":
        path = Path(cfg.outdir).expanduser() / BEST_NAME
        if not path.is_file():
            raise TrainError(f"--export best: no {path}; it is written by runs with --metrics-every N "
                             "(resume this one with it, or export ema or raw)")
        saved = load_best(path)
        G.load_state_dict(saved["G"])
        st.best = Best(**saved["best"])
        _say(f"exporting the best measured generator: {st.best.generator} at iteration {st.best.iteration} "
             f"(SWD {st.best.swd:.1f} vs training crops)")
    return G


def _finish(st: _State, cfg: TrainConfig, data: Dict[str, Any], device: torch.device,
            rng: Dict[str, Any], G: Optional[Generator] = None) -> Path:
    """Mean w, latent prior (stats + flow) on the exported generator (`cfg.export`: the EMA
    average, or the raw G), then the bundle (float16 weights) and the slim resume checkpoint
    that goes with it. A slim resume restarts G and its EMA from the bundle's generator."""
    from ..bundle import ModelBundle, save_bundle

    G = (G if G is not None else _exported_generator(st, cfg)).eval()
    n_avg = max(10_000, int(cfg.fit_prior_samples))
    _say(f"estimating w_avg from {n_avg} mapped samples")
    G.estimate_w_avg(n=n_avg, seed=cfg.seed)
    b = cfg.batch
    provenance = {
        "name": cfg.name,
        "trained_by": "rls train (rls_core.train)",
        "command": st.commands[-1] if st.commands else "",
        "commands": st.commands,
        "data": data,
        "iterations": st.iteration,
        "kimg": round(st.iteration * b / 1000, 3),
        "batch": b,
        "wall_time_s": round(st.wall_time, 1),
        "wall_time": _human(st.wall_time),
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "torch": str(torch.__version__),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit() or "unknown",
        "train_config": {k: v for k, v in _to_json_safe(cfg).items()
                         if k not in RUN_CONTROL or k in ("fit_prior_samples", "flow_epochs")},
        "discriminator": st.D.cfg.to_dict(),
        "w_avg_samples": n_avg,
        "exported_generator": cfg.export,
        **({"best": st.best.to_dict()} if cfg.export == "best" and st.best is not None else {}),
        "prior": {"fitted": False},
    }
    bundle = ModelBundle.from_generator(G, data["channels"], data["normalization"], provenance)
    if cfg.fit_prior_samples > 0:
        from ..priors import fit_bundle_prior

        fit_bundle_prior(bundle, G, n_samples=int(cfg.fit_prior_samples), flow_blocks=cfg.flow_blocks,
                         flow_hidden=cfg.flow_hidden, flow_epochs=cfg.flow_epochs, seed=cfg.seed, device=device,
                         progress=cfg.progress, flow_noise=cfg.flow_noise)
    path = save_bundle(bundle, Path(cfg.outdir) / f"{cfg.name}.h5", half=True)
    resume = save_resume_checkpoint(Path(cfg.outdir) / RESUME_NAME, st, cfg, rng, data, path)
    _say(f"wrote {path} and {resume} (keep the two together to resume)")
    return path


# ----------------------------------------------------------------------------- main entry

class _StopFlag:
    """First Ctrl-C asks the loop to checkpoint and stop after the current iteration."""

    def __init__(self) -> None:
        self.stop, self._old = False, None

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame) -> None:
        if self.stop:
            raise KeyboardInterrupt
        self.stop = True
        _say("interrupt: checkpointing after this iteration (Ctrl-C again to abort)")

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _validate(cfg: TrainConfig) -> None:
    if cfg.iters < 0 or cfg.batch < 1:
        raise TrainError(f"need iters >= 0 and batch >= 1, got {cfg.iters}, {cfg.batch}")
    for k in ("snapshot_every", "checkpoint_every", "log_every", "r1_interval", "pl_interval", "coverage_interval",
              "coverage_candidates"):
        if getattr(cfg, k) < 1:
            raise TrainError(f"{k} must be >= 1")
    if not 0 <= cfg.augment_p <= 1 or not 0 <= cfg.style_mixing <= 1:
        raise TrainError("augment_p and style_mixing are probabilities in [0, 1]")
    if cfg.coverage_weight < 0 or not math.isfinite(cfg.coverage_weight):
        raise TrainError(f"--coverage-weight must be a finite number >= 0 (0: off), got {cfg.coverage_weight}")
    if cfg.coverage_weight > 0 and (cfg.coverage_factor < 2 or cfg.resolution % cfg.coverage_factor):
        raise TrainError(f"--coverage-factor must divide the resolution {cfg.resolution} (e.g. 16), "
                         f"got {cfg.coverage_factor}")
    if cfg.d_warmup < 0:
        raise TrainError(f"--d-warmup must be >= 0 (0: off), got {cfg.d_warmup}")
    if cfg.resume and cfg.finish:
        raise TrainError("--finish already continues from the checkpoint; drop --resume")
    if cfg.noise_min_res is not None and cfg.noise_min_res < 4:
        raise TrainError(f"--noise-min-res must be >= 4 (4: noise at every layer), got {cfg.noise_min_res}")
    if cfg.fakes is not None and cfg.fakes not in FAKES:
        raise TrainError(f"--fakes must be one of {', '.join(FAKES)}, got {cfg.fakes!r}")
    if cfg.export not in EXPORTS:
        raise TrainError(f"--export must be one of {', '.join(EXPORTS)}, got {cfg.export!r}")
    if cfg.metrics_every < 0:
        raise TrainError(f"--metrics-every must be >= 0 (0: off), got {cfg.metrics_every}")
    if cfg.export == "best" and not cfg.metrics_every and not cfg.finish:
        raise TrainError("--export best picks the best measured snapshot: add --metrics-every N "
                         "(e.g. 100) so that snapshots are measured")


def train(cfg: TrainConfig) -> Path:
    """Train (or resume, or only finish) a model. Returns the bundle path, or the checkpoint
    path when the run stopped early (time limit or Ctrl-C) and must be resumed."""
    _validate(cfg)
    if resolve_device(cfg.device).type == "cpu":
        reuse_freed_memory()  # every iteration re-allocates the same large tensors (rls_core.cpu_alloc)
    threads = torch.get_num_threads()
    try:
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        return _train(cfg, time.time())
    finally:
        torch.set_num_threads(threads)


@dataclass
class _Run:
    """Everything the loop needs, made by `_setup`."""

    cfg: TrainConfig
    st: _State
    sampler: CropSampler
    data: Dict[str, Any]
    outdir: Path
    ckpt_path: Path
    device: torch.device
    z_grid: torch.Tensor
    monitor: Optional[RealismMonitor] = None


def _train(cfg: TrainConfig, t0: float) -> Path:
    """setup -> loop -> finish (or only finish, with --finish)."""
    outdir = Path(cfg.outdir).expanduser()
    ckpt_path = outdir / CHECKPOINT_NAME
    device = resolve_device(cfg.device)
    command = cfg.command or " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name] + sys.argv[1:])

    ckpt = None
    if cfg.resume or cfg.finish:
        ckpt = load_checkpoint(ckpt_path)
        cfg = _merge_resumed(_from_saved(ckpt["config"]), cfg, quiet=cfg.finish)
    elif ckpt_path.exists():
        raise TrainError(f"{ckpt_path} already exists; pass --resume to continue that run "
                         "(or --finish to only write its bundle), or choose another -o OUTDIR")
    if cfg.fakes is None:  # not asked (a resumed run keeps its own, above)
        cfg = replace(cfg, fakes=FAKES[0])

    if cfg.finish:
        st = _restore(ckpt, cfg, device)
        st.commands.append(command)
        return _finish(st, cfg, ckpt["data"], device, ckpt["rng"])
    run = _setup(cfg, ckpt, outdir, ckpt_path, device)
    run.st.commands.append(command)
    stopped = _loop(run, t0)
    if stopped:
        _say(f"stopped by {stopped} at iteration {run.st.iteration}/{run.cfg.iters}; checkpoint {ckpt_path}. "
             f"Continue with the same command plus --resume.")
        if not (stopped == "time limit" and run.cfg.finish_at_limit):
            return ckpt_path
        _say("--finish-at-limit: writing the bundle from the current state")
    if run.monitor is not None and run.st.iteration % run.cfg.metrics_every:
        # The last state is a candidate too (and, in a run shorter than --metrics-every, the
        # only one): without this, --export best of such a run had nothing to export.
        _measure(run)
        save_checkpoint(ckpt_path, run.st, run.cfg, run.sampler, run.data)
    if run.st.iteration > 0 and not ckpt_path.exists():
        save_checkpoint(ckpt_path, run.st, run.cfg, run.sampler, run.data)
    G = _exported_generator(run.st, run.cfg)
    _snapshot(G, run.z_grid, outdir, "final")
    return _finish(run.st, run.cfg, run.data, device, _rng_state(run.sampler), G)


def _setup(cfg: TrainConfig, ckpt: Optional[Dict[str, Any]], outdir: Path, ckpt_path: Path,
           device: torch.device) -> _Run:
    """Precision, data, networks and optimisers: fresh, or restored from `ckpt` exactly."""
    try:
        accel = resolve_accel(cfg.accel, device)
    except ValueError as e:
        raise TrainError(str(e)) from None
    if "compile" in accel:
        raise TrainError(f"--accel {cfg.accel}: training supports none, bf16 and auto (torch.compile cannot run "
                         "R1's double backward); use compile for searches")
    cfg = replace(cfg, accel=accel)

    fs: FieldSet = load_fields(cfg.data_dir, cfg.channels, cfg.resolution,
                               normalization=ckpt["data"]["normalization"] if ckpt else None,
                               low_pct=cfg.norm_low_pct, high_pct=cfg.norm_high_pct)
    data = fs.summary()
    data["data_seed"] = cfg.data_seed if cfg.data_seed is not None else data.get("simulation", {}).get("seed")
    if ckpt is not None:
        old = ckpt["data"]
        if old.get("n_fields") != data["n_fields"] or old.get("channels") != data["channels"]:
            _say(f"warning: the data changed since the checkpoint ({old.get('n_fields')} fields "
                 f"{old.get('channels')} -> {data['n_fields']} {data['channels']}); not an exact resume")
        if data["data_seed"] is None:
            data["data_seed"] = old.get("data_seed")
    cfg = replace(cfg, channels=list(fs.channel_names))
    sampler = CropSampler(fs, cfg.resolution, seed=cfg.seed)
    if ckpt is not None:
        st = _restore(ckpt, cfg, device)
        _restore_rng(ckpt, sampler, device)
        _say(f"resumed {ckpt_path} at iteration {st.iteration} ({st.iteration * cfg.batch / 1000:.1f} kimg)")
    else:
        if cfg.noise_min_res is None:  # record the resolved default, so a resume rebuilds the same network
            cfg = replace(cfg, noise_min_res=fine_noise_min_res(cfg.resolution))
        st = _initial_state(cfg, len(fs.channel_names), device)
        outdir.mkdir(parents=True, exist_ok=True)
        save_grid(CropSampler(fs, cfg.resolution, seed=cfg.seed + 1).sample(GRID_SIZE), outdir / "reals.png")
        _say(f"{len(fs.fields)} fields, channels {fs.channel_names}, normalisation "
             + "; ".join(f"{c}: [{n['low']:.4g}, {n['high']:.4g}]" for c, n in zip(fs.channel_names, fs.normalization))
             + f"; G {st.G.num_params() / 1e6:.2f} M, D {st.D.num_params() / 1e6:.2f} M parameters on {device}")
    z_grid = torch.randn(GRID_SIZE, st.G.cfg.z_dim, generator=torch.Generator().manual_seed(cfg.seed + 12345))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    monitor = None
    if cfg.metrics_every:
        monitor = RealismMonitor(fs, cfg.resolution, seed=cfg.seed + 777)
        if st.best is not None and not (outdir / BEST_NAME).is_file():
            _say(f"note: {outdir / BEST_NAME} is missing; the best snapshot is measured afresh from here")
            st.best = None
    return _Run(cfg, st, sampler, data, outdir, ckpt_path, device, z_grid, monitor)


def _measure(run: _Run) -> None:
    """SWD of G and its EMA vs the monitor's training crops; a new best goes to best.pt."""
    st, t = run.st, time.time()
    scores = {"raw": run.monitor.measure(st.G), "ema": run.monitor.measure(st.G_ema)}
    new = update_best(st.best, st.iteration, scores)
    if new is not None:
        save_best(run.outdir / BEST_NAME, st.G if new.generator == "raw" else st.G_ema, new)
        st.best = new
    append_metrics(run.outdir / METRICS_NAME, {
        "iteration": st.iteration, "kimg": st.iteration * run.cfg.batch / 1000, "swd_G": scores["raw"],
        "swd_G_ema": scores["ema"], "best_iteration": st.best.iteration, "best_generator": st.best.generator,
        "best_swd": st.best.swd, "seconds": time.time() - t})
    plot_metrics(run.outdir / METRICS_NAME, run.outdir / METRICS_PLOT)
    _say(f"iteration {st.iteration}: SWD vs training crops G {scores['raw']:.1f}, G_ema {scores['ema']:.1f}; "
         f"best {st.best.swd:.1f} ({st.best.generator}, iteration {st.best.iteration})")


def _loop(run: _Run, t0: float) -> Optional[str]:
    """Iterate until cfg.iters, the time limit or Ctrl-C, logging, snapshotting and
    checkpointing on the way. Returns why it stopped early ("time limit", "interrupt") or None."""
    from tqdm.auto import tqdm

    cfg, st, outdir = run.cfg, run.st, run.outdir
    aug = AugmentConfig(p=cfg.augment_p)
    stopped = None
    np.finfo(np.float32), np.finfo(np.float64)  # cache numpy's limits before flushing denormals
    flush_denormal = run.device.type == "cpu" and torch.set_flush_denormal(True)  # denormals crawl on CPU
    bar = tqdm(total=cfg.iters, initial=min(st.iteration, cfg.iters), desc=f"train {cfg.name}",
               disable=not cfg.progress, dynamic_ncols=True)
    window: Dict[str, List[float]] = {}
    iter_s, last_r1 = 0.0, float("nan")
    try:
        with _StopFlag() as flag:
            while st.iteration < cfg.iters:
                t_iter = time.time()
                real = run.sampler.sample(cfg.batch).to(run.device)
                losses = _iteration(st, cfg, real, aug)
                dt = time.time() - t_iter
                iter_s = dt if iter_s == 0 else 0.9 * iter_s + 0.1 * dt
                for k, v in losses.items():
                    window.setdefault(k, []).append(v)
                if not math.isfinite(losses["D"]) or not math.isfinite(losses["G"]):
                    raise TrainError(f"training diverged at iteration {st.iteration} (D {losses['D']}, "
                                     f"G {losses['G']}); the last checkpoint is from before; start a new run "
                                     "(another -o) with a larger --r1-gamma or a smaller --lr")
                bar.update(1)
                it = st.iteration
                if run.monitor is not None and it % cfg.metrics_every == 0:
                    _measure(run)
                out_of_time = cfg.time_limit is not None and \
                    time.time() + 2 * iter_s > t0 + cfg.time_limit * 60
                if it % cfg.log_every == 0 or it == cfg.iters or out_of_time or flag.stop:
                    mean = {k: float(np.mean(v)) for k, v in window.items()}
                    window = {}
                    # R1 runs lazily, so a log window may hold none: show the last one measured.
                    last_r1 = mean.get("R1", last_r1)
                    bar.set_postfix(D=f"{mean.get('D', 0):.3f}", G=f"{mean.get('G', 0):.3f}",
                                    R1=f"{last_r1:.3g}", kimg=f"{it * cfg.batch / 1000:.1f}",
                                    s_it=f"{iter_s:.2f}", refresh=False)
                    _append_log(outdir / LOG_NAME, {**mean, "iteration": it, "kimg": it * cfg.batch / 1000,
                                                    "s_per_iter": iter_s,
                                                    "wall_s": st.wall_time + time.time() - t_iter})
                if it % cfg.snapshot_every == 0:
                    _snapshot(st.G_ema, run.z_grid, outdir, f"{it:06d}")
                st.wall_time += time.time() - t_iter
                if it % cfg.checkpoint_every == 0 or it == cfg.iters or out_of_time or flag.stop:
                    save_checkpoint(run.ckpt_path, st, cfg, run.sampler, run.data)
                if (out_of_time or flag.stop) and it < cfg.iters:
                    stopped = "time limit" if out_of_time else "interrupt"
                    break
    finally:
        bar.close()
        if flush_denormal:
            torch.set_flush_denormal(False)
    return stopped

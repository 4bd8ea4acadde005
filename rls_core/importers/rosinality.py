"""rosinality/stylegan2-pytorch checkpoints (``torch.save`` .pt) -> our Generator.

Loading: torch's weights-only unpickler, with exactly one extra allowed global,
``argparse.Namespace`` (train.py stores its command-line ``args`` in the checkpoint), and only
for the duration of our call. Anything else the file references is refused and reported by name.

Architecture: not stored explicitly in the weights file, so it is read from tensor shapes:
resolution from the number of ``to_rgbs``, the channel table from the conv weights, latent size
and mapping depth from ``style.N``, image channels from ``to_rgb1``. rosinality and NVlabs
compute the same StyleGAN2, so the mapping is a renaming plus squeezing of singleton dims.
"""
from __future__ import annotations

import argparse
import pickle
import re
import warnings as _warnings
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch

from . import (FORMAT_ROSINALITY, ImportedGenerator, ImportErrorRLS, UnsafeCheckpointError, check_fir_kernel,
               json_safe, load_state_into_generator)

_GLOBAL_IN_MSG = re.compile(r"GLOBAL\s+([A-Za-z_][\w.]*)")
_STYLE_KEY = re.compile(r"^style\.(\d+)\.weight$")


def _torch_load(path: Path) -> Any:
    """torch.load in weights-only mode + argparse.Namespace; refusals become UnsafeCheckpointError."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]), _warnings.catch_warnings():
            _warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        m = _GLOBAL_IN_MSG.search(str(e))
        if m:
            raise UnsafeCheckpointError(
                f"refused global '{m.group(1)}': the checkpoint references Python code outside the data-only "
                "allow-list (tensors, containers, argparse.Namespace); loading it could run code from the file"
            ) from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsafeCheckpointError(f"torch's weights-only loader refused the file ({first[:300]})") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise ImportErrorRLS(f"cannot be read as a torch checkpoint ({type(e).__name__}: {str(e)[:300]}); "
                             "the file may be truncated or damaged") from None


def _pick_state(ckpt: Any) -> Tuple[Dict[str, torch.Tensor], str, List[str]]:
    warnings: List[str] = []
    if not isinstance(ckpt, dict):
        raise ImportErrorRLS(f"the torch file holds a {type(ckpt).__name__}, expected a rosinality checkpoint dict "
                             "with 'g_ema'")
    if isinstance(ckpt.get("g_ema"), dict):
        sd, name = ckpt["g_ema"], "g_ema"
    elif isinstance(ckpt.get("g"), dict):
        sd, name = ckpt["g"], "g"
        warnings.append("the checkpoint has no g_ema; imported the training generator g, whose images are usually "
                        "worse than the moving-average g_ema used for inference")
    elif "style.1.weight" in ckpt:
        sd, name = ckpt, "<bare state dict>"
        warnings.append("the file is a bare generator state dict; assumed it is the EMA generator")
    else:
        raise ImportErrorRLS(f"no generator found: expected a rosinality checkpoint with key 'g_ema' (or 'g'), "
                             f"found keys {sorted(map(str, ckpt))[:12]}")
    sd = {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items()}
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ImportErrorRLS(f"generator entries {bad[:5]} are not tensors")
    return sd, name, warnings


def _refuse_variants(sd: Dict[str, torch.Tensor], args: Any) -> None:
    arch = getattr(args, "arch", None)
    if arch == "swagan" or any(re.search(r"(^|\.)(iwt|dwt)\.", k) for k in sd):
        raise ImportErrorRLS("this is a SWAGAN generator (wavelet iwt/dwt layers, arch='swagan'); only the "
                             "StyleGAN2 architecture (arch='stylegan2') is supported")
    if arch is not None and arch != "stylegan2":
        raise ImportErrorRLS(f"architecture {arch!r} is not supported; only arch='stylegan2' is")
    if "input.input" not in sd or "to_rgb1.conv.weight" not in sd:
        raise ImportErrorRLS("not a rosinality StyleGAN2 generator state dict (no input.input / to_rgb1)")


def convert_state_dict(sd: Dict[str, torch.Tensor], latent_avg: Any = None, args: Any = None,
                       source: str = "<state dict>") -> Tuple[Any, Dict[str, Any], List[str]]:
    """rosinality generator state dict -> (our Generator, architecture facts, warnings)."""
    try:
        return _convert(sd, latent_avg, args, source)
    except ImportErrorRLS:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as e:
        raise ImportErrorRLS(f"the generator does not have the rosinality StyleGAN2 layout we convert "
                             f"({type(e).__name__}: {e})") from None


def _convert(sd: Dict[str, torch.Tensor], latent_avg: Any, args: Any,
             source: str) -> Tuple[Any, Dict[str, Any], List[str]]:
    from ..generator import GeneratorConfig

    _refuse_variants(sd, args)
    warnings: List[str] = []
    used = set()

    def take(key: str) -> torch.Tensor:
        if key not in sd:
            raise ImportErrorRLS(f"missing tensor {key!r} in the generator")
        used.add(key)
        return sd[key]

    style_idx = sorted(int(m.group(1)) for k in sd for m in [_STYLE_KEY.match(k)] if m)
    if not style_idx or style_idx != list(range(1, len(style_idx) + 1)):
        raise ImportErrorRLS(f"mapping layers style.N.weight must be numbered 1..n, found {style_idx}")
    n_mlp = len(style_idx)
    n_rgbs = len({k.split(".")[1] for k in sd if k.startswith("to_rgbs.")})
    n_convs = len({k.split(".")[1] for k in sd if k.startswith("convs.")})
    if n_convs != 2 * n_rgbs:
        raise ImportErrorRLS(f"{n_convs} convs for {n_rgbs} to_rgbs; expected two convs per resolution")
    res = 4 * 2 ** n_rgbs
    resolutions = [4 * 2 ** i for i in range(n_rgbs + 1)]
    z_dim = int(sd["style.1.weight"].shape[1])
    w_dim = int(sd[f"style.{n_mlp}.weight"].shape[0])
    channels = [int(sd["conv1.conv.weight"].shape[1])] + \
               [int(take(f"convs.{2 * i}.conv.weight").shape[1]) for i in range(n_rgbs)]
    img_channels = int(sd["to_rgb1.conv.weight"].shape[1])
    facts = {"size": res, "latent": w_dim, "n_mlp": n_mlp}
    for field, value in facts.items():
        stated = getattr(args, field, None)
        if stated is not None and int(stated) != value:
            raise ImportErrorRLS(f"checkpoint args say {field}={stated} but the weights have {field}={value}")
    if not 32 <= res <= 1024:
        raise ImportErrorRLS(f"resolution {res} is not supported; SuperResolveRLS needs 32..1024 px generators")

    st: Dict[str, torch.Tensor] = {}
    for i in range(n_mlp):
        st[f"mapping.fc{i}.weight"] = take(f"style.{i + 1}.weight")
        st[f"mapping.fc{i}.bias"] = take(f"style.{i + 1}.bias")
    st["synthesis.const"] = take("input.input").reshape(take("input.input").shape[1:])

    def styled_conv(src: str, dst: str) -> None:
        w = take(f"{src}.conv.weight")
        if w.ndim != 5 or w.shape[0] != 1 or tuple(w.shape[3:]) != (3, 3):
            raise ImportErrorRLS(f"{src}.conv.weight has shape {tuple(w.shape)}, expected (1, out, in, 3, 3)")
        st[f"{dst}.weight"] = w[0]
        st[f"{dst}.affine.weight"] = take(f"{src}.conv.modulation.weight")
        st[f"{dst}.affine.bias"] = take(f"{src}.conv.modulation.bias")
        st[f"{dst}.noise_strength"] = take(f"{src}.noise.weight").reshape(())
        st[f"{dst}.bias"] = take(f"{src}.activate.bias").reshape(-1)
        if f"{src}.conv.blur.kernel" in sd:
            check_fir_kernel(take(f"{src}.conv.blur.kernel"), 4.0, f"{src}.conv.blur.kernel")

    def to_rgb(src: str, dst: str) -> None:
        st[f"{dst}.weight"] = take(f"{src}.conv.weight")[0]
        st[f"{dst}.affine.weight"] = take(f"{src}.conv.modulation.weight")
        st[f"{dst}.affine.bias"] = take(f"{src}.conv.modulation.bias")
        st[f"{dst}.bias"] = take(f"{src}.bias").reshape(-1)
        if f"{src}.upsample.kernel" in sd:
            check_fir_kernel(take(f"{src}.upsample.kernel"), 4.0, f"{src}.upsample.kernel")

    styled_conv("conv1", "synthesis.b4.conv1")
    to_rgb("to_rgb1", "synthesis.b4.torgb")
    for i, r in enumerate(resolutions[1:]):
        styled_conv(f"convs.{2 * i}", f"synthesis.b{r}.conv0")
        styled_conv(f"convs.{2 * i + 1}", f"synthesis.b{r}.conv1")
        to_rgb(f"to_rgbs.{i}", f"synthesis.b{r}.torgb")

    layer_names = [f"synthesis.b{r}.{c}" for r in resolutions for c in (("conv1",) if r == 4 else ("conv0", "conv1"))]
    noise_res = [r for r in resolutions for _ in ((0,) if r == 4 else (0, 1))]
    have_noise = all(f"noises.noise_{i}" in sd for i in range(len(layer_names)))
    gen = torch.Generator().manual_seed(0)
    for i, (name, r) in enumerate(zip(layer_names, noise_res)):
        if have_noise:
            st[f"{name}.noise_const"] = take(f"noises.noise_{i}").reshape(r, r)
        else:
            st[f"{name}.noise_const"] = torch.randn(r, r, generator=gen)
    if not have_noise:
        warnings.append("the checkpoint has no noises.noise_i buffers; drew fixed noise from seed 0")

    leftover = sorted(set(sd) - used)
    if leftover:
        raise ImportErrorRLS(f"unexpected tensors in the generator (not part of the StyleGAN2 layout we "
                             f"convert): {leftover[:8]}{'...' if len(leftover) > 8 else ''}")

    cfg = GeneratorConfig(resolution=res, img_channels=img_channels, z_dim=z_dim, w_dim=w_dim,
                          mapping_layers=n_mlp, channels=tuple(channels), mapping_lr_mul=0.01, conv_clamp=None)
    if latent_avg is not None:
        la = torch.as_tensor(latent_avg).reshape(-1)
        if la.numel() != w_dim:
            raise ImportErrorRLS(f"latent_avg has {la.numel()} values, expected w_dim={w_dim}")
        st["mapping.w_avg"] = la
        G = load_state_into_generator(cfg, st, source)
    else:
        st["mapping.w_avg"] = torch.zeros(w_dim)
        G = load_state_into_generator(cfg, st, source)
        G.estimate_w_avg(10000, seed=0)
        warnings.append("the checkpoint has no latent_avg; estimated it as the mean of 10000 mapped samples (seed 0)")
    arch = {"size": res, "latent": w_dim, "n_mlp": n_mlp, "channels": dict(zip(resolutions, channels)),
            "img_channels": img_channels, "lr_mlp (assumed)": 0.01}
    return G, arch, warnings


def load_rosinality(path: Path) -> ImportedGenerator:
    """Read a rosinality checkpoint safely and convert its g_ema."""
    path = Path(path)
    ckpt = _torch_load(path)
    sd, name, warnings = _pick_state(ckpt)
    args = ckpt.get("args") if isinstance(ckpt, dict) else None
    if args is not None and not isinstance(args, argparse.Namespace):
        args = None
    latent_avg = ckpt.get("latent_avg") if isinstance(ckpt, dict) and name != "<bare state dict>" else None
    G, arch, more = convert_state_dict(sd, latent_avg, args, source=str(path))
    upstream: Dict[str, Any] = {"architecture": json_safe(arch)}
    if args is not None:
        upstream["args"] = json_safe(vars(args))
    return ImportedGenerator(generator=G, format=FORMAT_ROSINALITY, network=name, upstream_kwargs=upstream,
                             warnings=warnings + more, extra={"conv_clamp": None})

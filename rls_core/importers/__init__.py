"""Import existing StyleGAN2 generators into SuperResolveRLS model bundles, without running
code from the checkpoint.

Two public formats are understood, recognised by content rather than file extension:

* rosinality/stylegan2-pytorch ``.pt`` (a ``torch.save`` file, zip or legacy format):
  read with torch's weights-only loader, only ``argparse.Namespace`` added (see rosinality.py).
* NVlabs/stylegan2-ada-pytorch network pickles (``network-snapshot-*.pkl``, a plain pickle
  holding ``G_ema``): read with our allow-list unpickler, the embedded source is never executed
  (see safe_pickle.py and nvlabs.py).

The result is the EMA generator in our layout (rls_core.generator), evaluated in float32.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from ..errors import RLSError

PathLike = Union[str, Path]

ZIP_MAGIC = b"PK\x03\x04"
# torch.save legacy format: pickle protocol 2, then LONG1 of torch's magic number 0x1950a86a20f9469cfc6c.
TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"

FORMAT_ROSINALITY = "rosinality/stylegan2-pytorch"
FORMAT_NVLABS = "NVlabs/stylegan2-ada-pytorch"


class ImportErrorRLS(RLSError, ValueError):
    """A checkpoint we cannot (or will not) import; the message says which file and why."""


class UnsafeCheckpointError(ImportErrorRLS, pickle.UnpicklingError):
    """The checkpoint asks to load a Python global that is not on our allow-list (it could run
    code). The message names the refused ``module.name``."""


@dataclass
class ImportedGenerator:
    """A converted generator plus what we learned about where it came from."""

    generator: Any  # rls_core.generator.Generator
    format: str
    network: str  # which network of the file was used, e.g. 'g_ema' or 'G_ema'
    upstream_kwargs: Dict[str, Any]
    warnings: List[str] = field(default_factory=list)
    extra: Dict[str, Any] = field(default_factory=dict)


def check_fir_kernel(kernel: Any, gain: float, where: str) -> None:
    """Our generator hard-wires the standard [1,3,3,1] resampling filter (it does not store
    it), so a checkpoint must carry exactly that filter, normalised to sum `gain`."""
    import torch
    from ..generator import _fir_kernel

    k = torch.as_tensor(kernel, dtype=torch.float32)
    ref = _fir_kernel((1.0, 3.0, 3.0, 1.0)) * gain
    if k.shape != ref.shape or not torch.allclose(k, ref, rtol=1e-5, atol=1e-6):
        raise ImportErrorRLS(f"{where} is not the standard [1,3,3,1] resampling filter (shape "
                             f"{tuple(k.shape)}, sum {float(k.sum()):.4g}); generators with other blur "
                             "kernels are not supported")


def load_state_into_generator(cfg: Any, state: Dict[str, Any], source: str):
    """Build our Generator from `cfg` and load a fully mapped state dict, strictly: every one
    of our tensors must be provided with the right shape, nothing may be left over."""
    import torch
    from ..generator import Generator

    G = Generator(cfg)
    ours = G.state_dict()
    missing = sorted(set(ours) - set(state))
    extra = sorted(set(state) - set(ours))
    if missing or extra:
        raise ImportErrorRLS(f"{source}: converted weights do not match the inferred architecture "
                             f"(missing: {missing[:8]}{'...' if len(missing) > 8 else ''}; "
                             f"unexpected: {extra[:8]}{'...' if len(extra) > 8 else ''})")
    clean = {}
    for k, v in state.items():
        t = torch.as_tensor(v).detach().to(torch.float32).cpu()
        if tuple(t.shape) != tuple(ours[k].shape):
            raise ImportErrorRLS(f"{source}: tensor for {k} has shape {tuple(t.shape)}, expected "
                                 f"{tuple(ours[k].shape)} for the inferred architecture")
        if not torch.isfinite(t).all():
            raise ImportErrorRLS(f"{source}: tensor for {k} contains NaN or infinite values")
        clean[k] = t.contiguous()
    G.load_state_dict(clean, strict=True)
    return G.eval().requires_grad_(False)


def json_safe(obj: Any, depth: int = 0) -> Any:
    """Upstream kwargs/args as plain JSON types (tensors and objects become short strings)."""
    if depth > 6:
        return repr(obj)[:200]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy / torch scalars
        try:
            return obj.item()
        except Exception:  # pragma: no cover - exotic scalar
            return repr(obj)[:200]
    if isinstance(obj, dict):
        return {str(k): json_safe(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v, depth + 1) for v in obj]
    if hasattr(obj, "shape"):
        return f"<array {tuple(obj.shape)}>"
    return repr(obj)[:200]


def sniff_format(path: PathLike) -> str:
    """'rosinality' or 'nvlabs' from the first bytes of the file; ImportErrorRLS otherwise."""
    path = Path(path)
    if not path.exists():
        raise ImportErrorRLS(f"{path}: file not found")
    if path.is_dir():
        raise ImportErrorRLS(f"{path}: is a folder; expected a StyleGAN2 checkpoint file (.pt or .pkl)")
    with open(path, "rb") as fh:
        head = fh.read(len(TORCH_LEGACY_MAGIC))
    if head.startswith(ZIP_MAGIC) or head.startswith(TORCH_LEGACY_MAGIC):
        return "rosinality"
    if head.startswith(HDF5_MAGIC):
        raise ImportErrorRLS(f"{path}: is an HDF5 file (already a model bundle?); expected a StyleGAN2 "
                             "checkpoint: a rosinality .pt (torch.save) or an NVlabs stylegan2-ada .pkl")
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "nvlabs"
    raise ImportErrorRLS(f"{path}: unrecognised file format; expected a rosinality/stylegan2-pytorch "
                         "checkpoint (torch.save .pt, zip or legacy) or an NVlabs/stylegan2-ada-pytorch "
                         "network pickle (.pkl containing G_ema)")


def load_generator(path: PathLike) -> ImportedGenerator:
    """Read a checkpoint of either format into our Generator (eval mode, CPU, float32)."""
    path = Path(path)
    kind = sniff_format(path)
    if kind == "rosinality":
        from .rosinality import load_rosinality
        return load_rosinality(path)
    from .nvlabs import load_nvlabs
    return load_nvlabs(path)


def sha256_of(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_channel_names(n: int) -> List[str]:
    """'R,G,B' for 3 channels (the usual case of pictures), else ch0, ch1, ..."""
    return ["R", "G", "B"] if n == 3 else [f"ch{i}" for i in range(n)]


def build_provenance(path: Path, imp: ImportedGenerator) -> Dict[str, Any]:
    """JSON-able record of where the weights came from (stored in the bundle, shown by `rls info`)."""
    from .. import __version__

    prov: Dict[str, Any] = {
        "name": path.stem,
        "source_file": path.name,
        "source_sha256": sha256_of(path),
        "source_format": imp.format,
        "source_network": imp.network,
        "upstream_kwargs": imp.upstream_kwargs,
        "imported": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "importer": f"rls import (superresolve-rls {__version__})",
        "precision": "float32 (upstream fp16 blocks, if any, are evaluated in float32)",
    }
    prov.update(imp.extra)
    if imp.warnings:
        prov["warnings"] = list(imp.warnings)
    return prov


def import_checkpoint(path: PathLike, channels: Optional[List[str]] = None, *,
                      normalization: Optional[Sequence[Dict[str, float]]] = None):
    """Convert a rosinality ``.pt`` or NVlabs ``.pkl`` StyleGAN2 checkpoint into a ModelBundle.

    `channels` names the image channels in generator order (default R,G,B or ch0..); the
    count must equal the generator's image channels. `normalization` defaults to full scale
    (low 0, high 1) per channel. The bundle is returned in memory; `save_bundle` writes it.
    """
    from ..bundle import ModelBundle

    path = Path(path)
    try:
        imp = load_generator(path)
    except UnsafeCheckpointError as e:
        msg = str(e)
        raise UnsafeCheckpointError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    except ImportErrorRLS as e:
        msg = str(e)
        raise ImportErrorRLS(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    G = imp.generator
    n = G.cfg.img_channels
    names = list(channels) if channels is not None else default_channel_names(n)
    if len(names) != n:
        raise ImportErrorRLS(f"{path}: {len(names)} channel name(s) given ({', '.join(names)}) but the "
                             f"generator makes {n}-channel images; give exactly {n} names in generator order")
    if len(set(names)) != len(names) or any(not s.strip() for s in names):
        raise ImportErrorRLS(f"{path}: channel names must be distinct and non-empty, got {names}")
    norm = [dict(d) for d in normalization] if normalization is not None else None
    if norm is not None and (len(norm) != n or not all(float(d["high"]) > float(d["low"]) for d in norm)):
        raise ImportErrorRLS(f"{path}: need one intensity range (low < high) per channel ({n}), got {norm}")
    return ModelBundle.from_generator(G, names, normalization=norm, provenance=build_provenance(path, imp))


__all__ = [
    "ImportErrorRLS", "UnsafeCheckpointError", "ImportedGenerator", "import_checkpoint", "load_generator",
    "sniff_format", "default_channel_names", "FORMAT_ROSINALITY", "FORMAT_NVLABS",
]

"""NVlabs/stylegan2-ada-pytorch network pickles -> our Generator, without executing the file.

The pickle is read by safe_pickle's allow-list unpickler, so each network arrives as an inert
record (class name + instance state: ``_parameters``, ``_buffers``, ``_modules``,
``_init_kwargs`` and plain attributes). We walk that tree like ``state_dict()`` would, check
that it is the plain unconditional StyleGAN2 'skip' generator our code implements, and map the
tensors (whose names already match our layout) into rls_core.generator.Generator.

Precision: upstream can run its highest-resolution blocks in float16 (``num_fp16_res``); we
always compute in float32, which equals upstream's ``force_fp32=True`` output. The setting is
recorded in the provenance.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from . import (FORMAT_NVLABS, ImportedGenerator, ImportErrorRLS, UnsafeCheckpointError, check_fir_kernel,
               json_safe, load_state_into_generator)
from .safe_pickle import InertPersistentObject, iter_inert, safe_loads

# Classes of the StyleGAN2 generator in training/networks.py that we know how to convert.
KNOWN_CLASSES = {"Generator", "MappingNetwork", "SynthesisNetwork", "SynthesisBlock", "SynthesisLayer",
                 "ToRGBLayer", "FullyConnectedLayer"}
# Signs of StyleGAN3 (training/networks_stylegan3.py): a Fourier-feature input, L{i}_{size}_{ch} layers.
STYLEGAN3_CLASSES = {"SynthesisInput"}
_SG3_LAYER = re.compile(r"^L\d+_\d+_\d+$")


def _flat_tensors(root: InertPersistentObject) -> Dict[str, torch.Tensor]:
    """state_dict()-style flat dict: parameters, then persistent buffers, recursively."""
    out: Dict[str, torch.Tensor] = {}
    for prefix, mod in iter_inert(root):
        skip = set(mod.state.get("_non_persistent_buffers_set") or ())
        items = list(mod.parameters.items()) + [(k, v) for k, v in mod.buffers.items() if k not in skip]
        for name, t in items:
            if t is None:
                continue
            if not isinstance(t, torch.Tensor):
                raise ImportErrorRLS(f"{prefix or 'G'}.{name} is a {type(t).__name__}, expected a tensor")
            out[f"{prefix}.{name}" if prefix else name] = t
    return out


def _pick_network(data: Any) -> Tuple[InertPersistentObject, str, List[str]]:
    if not isinstance(data, dict):
        raise ImportErrorRLS(f"the pickle holds a {type(data).__name__}, expected an NVlabs network snapshot "
                             "(a dict with G_ema)")
    warnings: List[str] = []
    if isinstance(data.get("G_ema"), InertPersistentObject):
        return data["G_ema"], "G_ema", warnings
    if isinstance(data.get("G"), InertPersistentObject):
        warnings.append("the pickle has no G_ema; imported the training generator G, whose images are usually "
                        "worse than the moving-average G_ema used for inference")
        return data["G"], "G", warnings
    raise ImportErrorRLS(f"the pickle has no generator network: expected an NVlabs snapshot dict with key "
                         f"'G_ema' (or 'G'), found keys {sorted(map(str, data))}")


def _check_supported(G: InertPersistentObject) -> None:
    """Refuse, by name, every variant our generator would not reproduce exactly."""
    tree = iter_inert(G)
    names = {m.class_name for _, m in tree}
    syn = G.modules.get("synthesis")
    syn_children = list(syn.modules) if isinstance(syn, InertPersistentObject) else []
    if names & STYLEGAN3_CLASSES or any(_SG3_LAYER.match(c) for c in syn_children):
        raise ImportErrorRLS("this is a StyleGAN3 generator (it has a SynthesisInput / L*_ layers); only "
                             "StyleGAN2 generators are supported")
    if G.class_name != "Generator":
        raise ImportErrorRLS(f"the network is a '{G.class_name}', expected a StyleGAN2 'Generator'")
    kw = G.init_kwargs
    c_dim = int(kw.get("c_dim", G.state.get("c_dim", 0)) or 0)
    if c_dim > 0:
        raise ImportErrorRLS(f"conditional generators are not supported (c_dim={c_dim}: it needs a class label "
                             "for every image); retrain or export an unconditional model (c_dim=0)")
    archs = {str((kw.get("synthesis_kwargs") or {}).get("architecture", "skip"))}
    archs |= {str(m.state.get("architecture")) for _, m in tree
              if m.class_name == "SynthesisBlock" and "architecture" in m.state}
    if archs != {"skip"}:
        other = sorted(archs - {"skip"})
        raise ImportErrorRLS(f"synthesis architecture {', '.join(repr(a) for a in other)} is not supported; "
                             "only the default StyleGAN2 'skip' architecture is")
    unknown = sorted(names - KNOWN_CLASSES)
    if unknown:
        raise ImportErrorRLS(f"unknown network class(es) {unknown} in the generator; only the StyleGAN2 classes "
                             f"{sorted(KNOWN_CLASSES)} of stylegan2-ada-pytorch are supported")
    for prefix, m in tree:
        act = m.state.get("activation")
        want = {"SynthesisLayer": "lrelu", "FullyConnectedLayer": "lrelu" if prefix.startswith("mapping.") else
                "linear"}.get(m.class_name)
        if want is not None and act is not None and act != want:
            raise ImportErrorRLS(f"{prefix} uses activation {act!r}; only the standard {want!r} is supported")


def _attr(m: Optional[InertPersistentObject], key: str, default: Any = None) -> Any:
    return m.state.get(key, default) if m is not None else default


def convert_snapshot(data: Any, source: str = "<pickle>") -> ImportedGenerator:
    """Inert snapshot dict (from safe_pickle) -> ImportedGenerator. Separate from file reading
    so tests can feed edited states."""
    try:
        return _convert(data, source)
    except ImportErrorRLS:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise ImportErrorRLS(f"the network does not have the stylegan2-ada-pytorch layout we convert "
                             f"({type(e).__name__}: {e})") from None


def _convert(data: Any, source: str) -> ImportedGenerator:
    from ..generator import GeneratorConfig

    net, net_name, warnings = _pick_network(data)
    _check_supported(net)
    kw = net.init_kwargs
    syn_kw = dict(kw.get("synthesis_kwargs") or {})
    map_kw = dict(kw.get("mapping_kwargs") or {})
    flat = _flat_tensors(net)
    tree = dict(iter_inert(net))

    res = int(kw.get("img_resolution", _attr(net, "img_resolution", 0)))
    block_res = [2 ** i for i in range(2, int(math.log2(res)) + 1)] if res >= 4 else []
    if f"synthesis.b{res}.torgb.weight" not in flat or "synthesis.b4.const" not in flat:
        raise ImportErrorRLS(f"synthesis blocks do not match img_resolution={res} (no synthesis.b{res}.torgb "
                             "or synthesis.b4.const)")
    if not 32 <= res <= 1024:
        raise ImportErrorRLS(f"img_resolution {res} is not supported; SuperResolveRLS needs 32..1024 px generators")
    channels = [int(flat[f"synthesis.b{r}.conv1.weight"].shape[0]) for r in block_res]
    img_channels = int(flat[f"synthesis.b{res}.torgb.weight"].shape[0])
    z_dim = int(kw.get("z_dim", _attr(net, "z_dim", 0)))
    w_dim = int(kw.get("w_dim", _attr(net, "w_dim", 0)))
    n_map = 0
    while f"mapping.fc{n_map}.weight" in flat:
        n_map += 1
    if n_map == 0:
        raise ImportErrorRLS("the mapping network has no fc layers")
    for i in range(n_map):
        shp = tuple(flat[f"mapping.fc{i}.weight"].shape)
        if shp != (w_dim, z_dim if i == 0 else w_dim):
            raise ImportErrorRLS(f"mapping.fc{i}.weight has shape {shp}; only mapping layers of width w_dim="
                                 f"{w_dim} (no custom layer_features, no label embedding) are supported")
    lr_muls = {float(_attr(tree.get(f"mapping.fc{i}"), "bias_gain", map_kw.get("lr_multiplier", 0.01)))
               for i in range(n_map)}
    if len(lr_muls) != 1:
        raise ImportErrorRLS(f"mapping layers use different learning-rate multipliers {sorted(lr_muls)}")
    lr_mul = lr_muls.pop()

    # Clamp: the layers' own attribute is authoritative (kwargs may be absent in old pickles).
    clamps = {_attr(m, "conv_clamp") for p, m in tree.items() if m.class_name in ("SynthesisLayer", "ToRGBLayer")}
    if len(clamps) != 1:
        raise ImportErrorRLS(f"layers use different conv_clamp values {sorted(map(str, clamps))}")
    conv_clamp = clamps.pop()
    conv_clamp = None if conv_clamp is None else float(conv_clamp)

    # Filters: verify and drop (we hard-wire [1,3,3,1]).
    state: Dict[str, torch.Tensor] = {}
    for key, t in flat.items():
        if key.endswith("resample_filter"):
            check_fir_kernel(t, 1.0, key)
            continue
        if key == "synthesis.b4.const":
            state["synthesis.const"] = t
            continue
        state[key] = t
    # Layers built with use_noise=False have no noise: equivalent to zero strength.
    for r in block_res:
        for conv in ("conv0", "conv1") if r > 4 else ("conv1",):
            p = f"synthesis.b{r}.{conv}"
            if p + ".noise_strength" not in state:
                warnings.append(f"{p} has no noise input (use_noise=False); imported with noise strength 0")
                state[p + ".noise_strength"] = torch.zeros([])
                state[p + ".noise_const"] = torch.zeros(r, r)
    extra: Dict[str, Any] = {}
    if "mapping.w_avg" not in state:
        warnings.append("the mapping network has no w_avg; estimated it from 10000 mapped samples (seed 0)")
    fp16_blocks = [r for r in block_res if _attr(tree.get(f"synthesis.b{r}"), "use_fp16", False)]
    extra["num_fp16_res"] = int(syn_kw.get("num_fp16_res", len(fp16_blocks)))
    if fp16_blocks:
        extra["fp16_blocks_upstream"] = fp16_blocks
    extra["conv_clamp"] = conv_clamp

    cfg = GeneratorConfig(resolution=res, img_channels=img_channels, z_dim=z_dim, w_dim=w_dim,
                          mapping_layers=n_map, channels=tuple(channels), mapping_lr_mul=lr_mul,
                          conv_clamp=conv_clamp)
    if "mapping.w_avg" not in state:
        state["mapping.w_avg"] = torch.zeros(w_dim)
        G = load_state_into_generator(cfg, state, source)
        G.estimate_w_avg(10000, seed=0)
    else:
        G = load_state_into_generator(cfg, state, source)
    return ImportedGenerator(generator=G, format=FORMAT_NVLABS, network=net_name,
                             upstream_kwargs=json_safe(kw), warnings=warnings, extra=extra)


def load_nvlabs(path: Path) -> ImportedGenerator:
    """Read an NVlabs snapshot pickle safely and convert its G_ema."""
    path = Path(path)
    try:
        data = safe_loads(path.read_bytes())
    except UnsafeCheckpointError:
        raise
    except ImportErrorRLS:
        raise
    except Exception as e:  # truncated or corrupt pickle: the unpickler's own exception types vary
        raise ImportErrorRLS(f"{path}: cannot be read as an NVlabs network pickle "
                             f"({type(e).__name__}: {e}); the file may be truncated or damaged") from None
    return convert_snapshot(data, source=str(path))

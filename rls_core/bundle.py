"""The model bundle: one HDF5 file per model, read without unpickling anything.

Layout (format version 2; version 1 also stored the flow's MADE masks and only float32):
  /                attrs: format="superresolve-rls-model", format_version, rls_version, created
  /meta            attrs (JSON strings): generator (GeneratorConfig), channels (names),
                   normalization (per channel {"low", "high"}), provenance
  /generator/...   EMA generator weights and buffers, one dataset per state-dict key
                   (float32, or float16 for models trained here: `save_bundle(half=True)`)
  /latent/...      latent statistics (LatentStats fields), written by `rls fit-prior`
  /flow/...        MAF prior weights; attrs: config (JSON)

Intensities: `normalization[c]` maps an image in full-scale units (raw / dtype max, the
0..1 values CellProfiler hands to modules) to the generator's [0, 1] range by
`(I - low) / (high - low)`; the generator's native [-1, 1] output is `2 * x - 1`.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np

from .errors import RLSError

FORMAT_NAME = "superresolve-rls-model"
FORMAT_VERSION = 2
PathLike = Union[str, Path]


class BundleError(RLSError):
    """A model file that cannot be used; the message names the file, the problem and the fix."""

    def __init__(self, path: PathLike, problem: str, fix: str = "") -> None:
        self.path = str(path)
        Exception.__init__(self, f"{path}: {problem}" + (f". {fix}" if fix else ""))
        self.problem, self.fix = problem, fix


@dataclass
class ModelBundle:
    """Everything a search needs about one trained prior (plain arrays, no torch objects)."""

    generator_config: Dict[str, Any]
    generator_state: Dict[str, np.ndarray]
    channel_names: List[str]
    normalization: List[Dict[str, float]]
    latent: Optional[Dict[str, np.ndarray]] = None
    flow_config: Optional[Dict[str, int]] = None
    flow_state: Optional[Dict[str, np.ndarray]] = None
    provenance: Dict[str, Any] = field(default_factory=dict)
    path: Optional[Path] = None

    @property
    def name(self) -> str:
        return self.path.stem if self.path is not None else self.provenance.get("name", "unsaved-model")

    @property
    def has_prior(self) -> bool:
        return self.latent is not None and self.flow_state is not None

    # --- torch-side constructors (torch imported lazily so `rls info` stays light) ---
    def generator_tensors(self) -> Dict[str, Any]:
        """The generator's state dict as torch tensors (as stored: float16 bundles stay float16)."""
        import torch

        return {k: torch.from_numpy(np.asarray(v)) for k, v in self.generator_state.items()}

    def build_generator(self, device: Any = "cpu"):
        from .generator import Generator, GeneratorConfig

        G = Generator(GeneratorConfig.from_dict(self.generator_config))
        state = self.generator_tensors()
        try:
            G.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise BundleError(self.path or "<bundle>", f"generator weights do not match its config ({e})",
                              "the file is damaged or was written by an incompatible tool") from None
        return G.eval().requires_grad_(False).to(device)

    def latent_stats(self):
        from .priors import LatentStats

        if self.latent is None:
            raise BundleError(self.path or "<bundle>", "the model has no latent prior statistics",
                              f"run `rls fit-prior {self.path}` first")
        d = dict(self.latent)
        n = int(d.pop("n_samples", np.array(0)))
        return LatentStats(n_samples=n, **{k: np.asarray(v, dtype=np.float32) for k, v in d.items()})

    def build_flow(self, device: Any = "cpu"):
        import torch
        from .flow import MAF

        if self.flow_state is None or self.flow_config is None:
            raise BundleError(self.path or "<bundle>", "the model has no flow prior",
                              f"run `rls fit-prior {self.path}` first")
        flow = MAF(**self.flow_config)
        # Format-1 bundles stored the MADE masks; they follow from the config.
        flow.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in self.flow_state.items()
                              if not k.endswith(".mask")})
        return flow.eval().requires_grad_(False).to(device)

    @classmethod
    def from_generator(cls, G, channel_names: List[str], normalization: Optional[List[Dict[str, float]]] = None,
                       provenance: Optional[Dict[str, Any]] = None) -> "ModelBundle":
        if len(channel_names) != G.cfg.img_channels:
            raise ValueError(f"{len(channel_names)} channel names for a {G.cfg.img_channels}-channel generator")
        norm = normalization or [{"low": 0.0, "high": 1.0} for _ in channel_names]
        state = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in G.state_dict().items()}
        return cls(G.cfg.to_dict(), state, list(channel_names), norm, provenance=dict(provenance or {}))


def _json_attr(group, key: str, path: PathLike) -> Any:
    if key not in group.attrs:
        raise BundleError(path, f"missing metadata '{key}'", "the file is incomplete; re-create or re-import it")
    try:
        return json.loads(group.attrs[key])
    except (TypeError, ValueError):
        raise BundleError(path, f"metadata '{key}' is not valid JSON", "the file is damaged") from None


def _read_group(group) -> Dict[str, np.ndarray]:
    out: Dict[str, np.ndarray] = {}

    def visit(name, obj):
        if hasattr(obj, "shape"):
            out[name.replace("/", ".")] = np.asarray(obj[()])

    group.visititems(visit)
    return out


def _write_group(h5, name: str, arrays: Dict[str, np.ndarray]) -> Any:
    g = h5.create_group(name)
    for key, value in arrays.items():
        value = np.asarray(value)
        # Byte-shuffled gzip: lossless, read transparently by any HDF5 reader; saves ~6 % on
        # float16 weights, which keeps a standard-preset bundle under 12 MiB with room to spare.
        packed = {"compression": "gzip", "compression_opts": 4, "shuffle": True} if value.size > 64 else {}
        g.create_dataset(key.replace(".", "/"), data=value, **packed)
    return g


def content_sha256(groups: Dict[str, Optional[Dict[str, np.ndarray]]], meta: Dict[str, str]) -> str:
    """A checksum of everything a bundle holds (every array as stored, and the metadata), so
    damage anywhere, flow weights included, is caught on load."""
    h = hashlib.sha256()
    for key in sorted(meta):
        h.update(f"meta/{key}={meta[key]}\n".encode())
    for gname in sorted(groups):
        arrays = groups[gname]
        for key in sorted(arrays or {}):
            a = np.ascontiguousarray(arrays[key])
            h.update(f"{gname}/{key}:{a.dtype.str}:{a.shape}\n".encode())
            h.update(a.tobytes())
    return h.hexdigest()


def _halved(arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    out = {}
    for k, v in arrays.items():
        v = np.asarray(v)
        if v.dtype == np.float32 or v.dtype == np.float64:
            if np.abs(v).max(initial=0.0) >= np.finfo(np.float16).max:
                raise ValueError(f"weight {k!r} exceeds the float16 range; save with half=False")
            v = v.astype(np.float16)
        out[k] = v
    return out


def save_bundle(bundle: ModelBundle, path: PathLike, half: bool = False) -> Path:
    """Write atomically (temp file + rename) so a crash never leaves half a model behind.

    `half` stores the generator and flow weights as float16 (half the file; they are read back
    as float32). Use it for models trained here, where a 1e-3 relative rounding of the weights
    is far below what training changes; keep float32 (the default) for imported models, whose
    outputs must match upstream exactly. Latent statistics always stay float32.
    """
    path = Path(path)
    if path.is_dir():
        raise BundleError(path, "cannot write the model here: this is a folder", "give the path of a .h5 file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # e.g. a file where a folder should be
        raise BundleError(path, f"cannot write the model: {e.strerror or e} ({path.parent})",
                          "give a path in a folder that exists or can be made") from None
    tmp = path.with_name(path.name + ".tmp")
    try:
        _write_bundle_file(bundle, tmp, half)
    except BaseException:  # a failed write leaves no .tmp behind
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
    bundle.path = path
    return path


def _write_bundle_file(bundle: ModelBundle, tmp: Path, half: bool) -> None:
    import h5py
    from . import __version__

    with h5py.File(tmp, "w") as h5:
        h5.attrs["format"] = FORMAT_NAME
        h5.attrs["format_version"] = FORMAT_VERSION
        h5.attrs["rls_version"] = __version__
        h5.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        meta = h5.create_group("meta")
        texts = {"generator": json.dumps(bundle.generator_config), "channels": json.dumps(list(bundle.channel_names)),
                 "normalization": json.dumps(bundle.normalization),
                 "provenance": json.dumps(bundle.provenance, default=str)}
        for k, v in texts.items():
            meta.attrs[k] = v
        groups: Dict[str, Optional[Dict[str, np.ndarray]]] = {
            "generator": _halved(bundle.generator_state) if half else dict(bundle.generator_state),
            "latent": bundle.latent,
            "flow": (_halved(bundle.flow_state) if half else dict(bundle.flow_state))
            if bundle.flow_state is not None else None}
        for name, arrays in groups.items():
            if arrays is not None:
                g = _write_group(h5, name, arrays)
                if name == "flow":
                    g.attrs["config"] = json.dumps(bundle.flow_config)
                    texts["flow_config"] = g.attrs["config"]
        h5.attrs["content_sha256"] = content_sha256(groups, texts)


def load_bundle(path: PathLike) -> ModelBundle:
    """Read and validate a bundle; every problem becomes a BundleError naming the file."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise BundleError(path, "file not found", "give a path to a .h5 model bundle or a shipped model name (`rls models`)")
    if path.is_dir():
        raise BundleError(path, "is a folder, not a model file")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head != b"\x89HDF\r\n\x1a\n":
        hint = "use `rls import` to convert a StyleGAN2 checkpoint" if path.suffix in (".pt", ".pth", ".pkl") else \
            "expected an HDF5 model bundle written by SuperResolveRLS"
        raise BundleError(path, "not an HDF5 file", hint)
    try:
        h5 = h5py.File(path, "r")
    except OSError as e:
        raise BundleError(path, f"cannot be read as HDF5 (truncated or damaged: {e})",
                          "copy or download the file again") from None
    try:
        with h5:
            if h5.attrs.get("format") != FORMAT_NAME:
                raise BundleError(path, "is an HDF5 file but not a SuperResolveRLS model bundle",
                                  "expected the attribute format='superresolve-rls-model'")
            version = int(h5.attrs.get("format_version", -1))
            if version > FORMAT_VERSION:
                raise BundleError(path, f"was written by a newer SuperResolveRLS (bundle format {version}, "
                                  f"this version reads up to {FORMAT_VERSION})", "upgrade superresolve-rls")
            if version < 1:
                raise BundleError(path, f"has an invalid format version {version}")
            if "meta" not in h5 or "generator" not in h5:
                raise BundleError(path, "is missing its 'meta' or 'generator' group", "the file is incomplete")
            meta = h5["meta"]
            stored_sha = h5.attrs.get("content_sha256")
            texts = {k: str(meta.attrs[k]) for k in ("generator", "channels", "normalization", "provenance")
                     if k in meta.attrs}
            bundle = ModelBundle(
                generator_config=_json_attr(meta, "generator", path),
                generator_state=_read_group(h5["generator"]),
                channel_names=_json_attr(meta, "channels", path),
                normalization=_json_attr(meta, "normalization", path),
                provenance=_json_attr(meta, "provenance", path),
                path=path,
            )
            if "latent" in h5:
                bundle.latent = _read_group(h5["latent"])
            if "flow" in h5:
                bundle.flow_state = _read_group(h5["flow"])
                texts["flow_config"] = str(h5["flow"].attrs["config"])
                bundle.flow_config = json.loads(texts["flow_config"])
    except BundleError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise BundleError(path, f"is damaged or truncated ({type(e).__name__}: {e})",
                          "copy or download the file again") from None
    groups = {"generator": bundle.generator_state, "latent": bundle.latent, "flow": bundle.flow_state}
    if stored_sha is None:
        _check_against_manifest(path)
    elif content_sha256(groups, texts) != str(stored_sha):
        raise BundleError(path, "is damaged: its contents do not match the checksum written with it",
                          "copy or download the file again, or retrain it")
    _validate(bundle, path)
    return bundle


_NOTICED: set = set()
#: SHA-256 of every model file shipped so far (current and retired), for bundles written
#: before bundles carried their own checksum; `sha256sum -c` reads the same file
MANIFEST = Path(__file__).resolve().parent / "models" / "SHA256SUMS"


def shipped_checksums() -> Dict[str, List[str]]:
    """File name -> the SHA-256 digests it has been shipped with."""
    out: Dict[str, List[str]] = {}
    if MANIFEST.is_file():
        for line in MANIFEST.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and not line.startswith("#"):
                out.setdefault(parts[1].lstrip("*"), []).append(parts[0])
    return out


def file_sha256(path: PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, as `sha256sum` prints it."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _check_against_manifest(path: Path) -> None:
    """A bundle without its own checksum: a shipped file must match its published digest
    (else it is damaged); any other loads with a one-line notice."""
    known = shipped_checksums()
    if known and any(file_sha256(path) in digests for digests in known.values()):
        return
    if path.resolve().parent == MANIFEST.parent and path.name in known:
        raise BundleError(path, "is damaged: it does not match the checksum it was shipped with "
                          f"({MANIFEST.name})", "reinstall the package")
    _notice_once(path, "written before bundles carried a checksum; loaded without one "
                       "(`rls fit-prior` or a retrain writes it)")


def _notice_once(path: Path, text: str) -> None:
    key = str(Path(path).resolve())
    if key not in _NOTICED:
        _NOTICED.add(key)
        logging.getLogger(__name__).warning("%s: %s", path, text)


def _validate(bundle: ModelBundle, path: Path) -> None:
    from .generator import GeneratorConfig

    try:
        cfg = GeneratorConfig.from_dict(bundle.generator_config)
    except (TypeError, ValueError) as e:
        raise BundleError(path, f"has an invalid generator config ({e})") from None
    if len(bundle.channel_names) != cfg.img_channels:
        raise BundleError(path, f"lists {len(bundle.channel_names)} channel names for a "
                          f"{cfg.img_channels}-channel generator")
    if len(bundle.normalization) != cfg.img_channels or not all(
            {"low", "high"} <= set(n) and n["high"] > n["low"] for n in bundle.normalization):
        raise BundleError(path, "has an invalid intensity normalization (need low < high per channel)")
    for group, arrays in (("generator", bundle.generator_state), ("latent", bundle.latent),
                          ("flow", bundle.flow_state)):
        for k, v in (arrays or {}).items():
            if v.dtype.kind == "f" and not np.all(np.isfinite(v)):
                raise BundleError(path, f"{group} array '{k}' contains NaN or infinite values",
                                  "the model is damaged or diverged during training; use an earlier checkpoint "
                                  "or refit its prior (`rls fit-prior`)")
    if bundle.flow_state is not None:
        _check_flow_shapes(bundle, path)


def _check_flow_shapes(bundle: ModelBundle, path: Path) -> None:
    """Every flow array has the shape its config implies (a damaged config or array would
    otherwise surface as a PyTorch error deep inside a search)."""
    cfg = bundle.flow_config or {}
    try:
        d, h, n = int(cfg["dim"]), int(cfg["hidden"]), int(cfg["n_blocks"])
    except (KeyError, TypeError, ValueError):
        raise BundleError(path, f"has an invalid flow config {cfg!r}", "refit its prior (`rls fit-prior`)") from None
    expected = {"l1.weight": (h, d), "l1.bias": (h,), "l2.weight": (h, h), "l2.bias": (h,),
                "l3.weight": (2 * d, h), "l3.bias": (2 * d,), "log_gamma": (d,), "beta": (d,),
                "running_mean": (d,), "running_var": (d,)}
    for k, v in bundle.flow_state.items():
        if k.endswith(".mask"):
            continue
        parts = k.split(".")
        if not (len(parts) >= 3 and parts[1].isdigit() and int(parts[1]) < n):
            raise BundleError(path, f"has an unexpected flow array '{k}' for {n} blocks", "refit its prior")
        want = expected.get(".".join(parts[2:]))
        if want is not None and tuple(v.shape) != want:
            raise BundleError(path, f"flow array '{k}' has shape {tuple(v.shape)}, expected {want}",
                              "refit its prior (`rls fit-prior`)")


def bundle_summary(bundle: ModelBundle) -> str:
    """Human-readable description for `rls info`."""
    from .generator import GeneratorConfig

    cfg = GeneratorConfig.from_dict(bundle.generator_config)
    n_params = sum(int(np.asarray(v).size) for k, v in bundle.generator_state.items()
                   if not k.endswith(("noise_const", "w_avg")))
    lines = [
        f"model        {bundle.name}  ({bundle.path})",
        f"channels     {', '.join(bundle.channel_names)}",
        f"resolution   {cfg.resolution} px HR tiles; LR tile {cfg.resolution // 16} px at 16x, {cfg.resolution // 32} px at 32x",
        f"generator    z {cfg.z_dim}, w {cfg.w_dim}, mapping {cfg.mapping_layers} layers, "
        f"channels {list(cfg.channels)}, {cfg.num_ws} W+ rows, {n_params / 1e6:.2f} M parameters",
        "noise        " + ("at every layer" if cfg.noise_min_res <= 4 else f"at layers of {cfg.noise_min_res} px and up")
        + " (benchmarks/noise_dependence.py: how much the LR image depends on it)",
        "normalization " + "; ".join(f"{c}: [{n['low']:.4g}, {n['high']:.4g}]"
                                      for c, n in zip(bundle.channel_names, bundle.normalization)),
        f"latent prior {'fitted' if bundle.has_prior else 'MISSING (run `rls fit-prior`)'}"
        + (f" (flow {bundle.flow_config}, {int(bundle.latent.get('n_samples', 0))} samples)" if bundle.has_prior else ""),
    ]
    if bundle.provenance:
        lines.append("provenance")
        for k, v in bundle.provenance.items():
            lines.append(f"  {k}: {v}")
    return "\n".join(lines)


def set_prior(bundle: ModelBundle, stats, flow) -> ModelBundle:
    """Store fitted LatentStats and a MAF in the bundle (in memory; `save_bundle` to persist)."""
    from dataclasses import asdict

    latent = {k: np.asarray(v, dtype=np.float32) for k, v in asdict(stats).items() if k != "n_samples"}
    latent["n_samples"] = np.asarray(int(stats.n_samples))
    bundle.latent = latent
    bundle.flow_config = dict(flow.config())
    bundle.flow_state = {k: v.detach().cpu().numpy() for k, v in flow.state_dict().items()}
    return bundle

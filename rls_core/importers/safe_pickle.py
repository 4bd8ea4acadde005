"""A restricted unpickler for NVlabs StyleGAN2-ADA network pickles that never runs file code.

Why this exists: an NVlabs snapshot stores every network as a call to
``torch_utils.persistence._reconstruct_persistent_obj(meta)``, and the upstream loader
*executes* ``meta['module_src']`` (the full text of training/networks.py) to rebuild the
classes. Loading a pickle with the normal ``pickle.load`` therefore runs whatever Python the
file carries. Here every global the pickle asks for is looked up in an explicit allow-list and
replaced by a stand-in of ours; the stand-ins only build data (dicts, tensors, NumPy scalars)
and an inert record of each persistent object (class name + instance state). The embedded
source is kept as text for inspection and is never compiled or executed. Anything else makes
loading stop with `UnsafeCheckpointError` naming the refused ``module.name``.

Besides ``find_class`` (GLOBAL, STACK_GLOBAL, INST), pickle can reach callables through
persistent ids (PERSID/BINPERSID) and the copyreg extension registry (EXT1/2/4, which may be
served from a cache without consulting ``find_class``); those opcodes are refused by a
pre-scan of the opcode stream and ``persistent_load`` refuses as well.
"""
from __future__ import annotations

import collections
import io
import pickle
import pickletools
import warnings
from typing import Any, BinaryIO, Callable, Dict, List, Tuple

import numpy as np
import torch
import torch._utils

from . import UnsafeCheckpointError


class InertPersistentObject:
    """What a persistent NVlabs object becomes here: its class name and instance state.

    ``state`` is the module's ``__dict__`` as pickled (``_parameters``, ``_buffers``,
    ``_modules``, ``_init_args``, ``_init_kwargs`` and plain attributes). ``module_src`` is the
    embedded source *text*, kept only so callers can inspect it; nothing here executes it.
    """

    __slots__ = ("class_name", "state", "module_src", "version")

    def __init__(self, class_name: str, state: Dict[str, Any], module_src: str, version: Any) -> None:
        self.class_name = class_name
        self.state = state
        self.module_src = module_src
        self.version = version

    # Convenience accessors (missing entries read as empty, never raise).
    @property
    def parameters(self) -> Dict[str, Any]:
        return dict(self.state.get("_parameters") or {})

    @property
    def buffers(self) -> Dict[str, Any]:
        return dict(self.state.get("_buffers") or {})

    @property
    def modules(self) -> Dict[str, Any]:
        return dict(self.state.get("_modules") or {})

    @property
    def init_kwargs(self) -> Dict[str, Any]:
        return dict(self.state.get("_init_kwargs") or {})

    def __repr__(self) -> str:
        return f"<inert {self.class_name} ({len(self.modules)} submodules)>"


# ----------------------------------------------------------------------------- stand-ins

def _reconstruct_persistent_obj(meta: Any) -> InertPersistentObject:
    """Stand-in for torch_utils.persistence._reconstruct_persistent_obj: record, don't exec."""
    if not isinstance(meta, dict):
        raise UnsafeCheckpointError(f"persistent object metadata is a {type(meta).__name__}, expected a dict")
    if meta.get("type") != "class":
        raise UnsafeCheckpointError(f"unsupported persistent object type {meta.get('type')!r} (expected 'class')")
    class_name, state, src = meta.get("class_name"), meta.get("state"), meta.get("module_src", "")
    if not isinstance(class_name, str) or not isinstance(state, dict):
        raise UnsafeCheckpointError("persistent object metadata lacks class_name/state")
    return InertPersistentObject(class_name, state, src if isinstance(src, str) else "", meta.get("version"))


def _load_from_bytes(blob: Any) -> Any:
    """Stand-in for torch.storage._load_from_bytes: each tensor storage is a small legacy-format
    torch.save blob; torch's own weights-only loader reads it without any custom globals."""
    if not isinstance(blob, (bytes, bytearray)):
        raise UnsafeCheckpointError(f"embedded storage is a {type(blob).__name__}, expected bytes")
    try:
        with warnings.catch_warnings():  # "TypedStorage is deprecated": not actionable here
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(io.BytesIO(bytes(blob)), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(f"an embedded tensor storage was refused by torch's weights-only loader: {e}") \
            from None


def _is_storage(obj: Any) -> bool:
    return isinstance(obj, (torch.UntypedStorage, torch.storage.TypedStorage))


def _no_hooks(hooks: Any) -> None:
    # Hooks would be callables run on backward; a checkpoint has no business carrying them.
    if hooks not in (None,) and (not isinstance(hooks, dict) or len(hooks) > 0):
        raise UnsafeCheckpointError("a tensor in the file carries backward hooks; refusing")


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any,
                       backward_hooks: Any, metadata: Any = None) -> torch.Tensor:
    """torch's own tensor rebuild, after checking that it really gets a storage and no hooks."""
    if not _is_storage(storage):
        raise UnsafeCheckpointError(f"tensor rebuild got a {type(storage).__name__} instead of a storage")
    _no_hooks(backward_hooks)
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, bool(requires_grad),
                                           collections.OrderedDict(), metadata)


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise UnsafeCheckpointError(f"parameter rebuild got a {type(data).__name__} instead of a tensor")
    _no_hooks(backward_hooks)
    return torch._utils._rebuild_parameter(data, bool(requires_grad), collections.OrderedDict())


def _numpy_scalar_fn() -> Callable:
    try:  # NumPy 2 path first (the 1.x alias warns under NumPy 2)
        from numpy._core.multiarray import scalar  # type: ignore
    except ImportError:  # NumPy 1.x
        from numpy.core.multiarray import scalar  # type: ignore
    return scalar


_np_scalar = _numpy_scalar_fn()


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    """numpy scalar from raw bytes (e.g. float64 weight gains); object dtypes are refused
    because their payload would be an arbitrary pickled object."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, (bytes, bytearray)):
        raise UnsafeCheckpointError("numpy scalar with an object dtype or non-byte payload; refusing")
    return _np_scalar(dtype, bytes(data))


def _numpy_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    """numpy.dtype from a type string such as 'f8' (how NumPy pickles a dtype); no objects."""
    if not isinstance(spec, str):
        raise UnsafeCheckpointError(f"numpy dtype from a {type(spec).__name__}; only type strings are allowed")
    dt = np.dtype(spec, align=bool(align), copy=bool(copy))
    if dt.hasobject:
        raise UnsafeCheckpointError(f"numpy object dtype {spec!r}; refusing")
    return dt


class _StandIn:
    """Callable wrapper for a stand-in function. Why: pickle's BUILD opcode can set attributes
    on any object on its stack, including the globals it fetched; a plain function would let a
    file rewrite e.g. its ``__defaults__`` for the rest of the process. This has no
    ``__dict__`` and refuses attribute writes."""

    __slots__ = ("_fn", "_what")

    def __init__(self, fn: Callable, what: str) -> None:
        object.__setattr__(self, "_fn", fn)
        object.__setattr__(self, "_what", what)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)

    def __setattr__(self, key: str, value: Any) -> None:
        raise UnsafeCheckpointError(f"the file tries to modify the loader's stand-in for {self._what} ({key})")

    def __repr__(self) -> str:
        return f"<safe stand-in for {self._what}>"


def _wrap(table: Dict[Tuple[str, str], Any]) -> Dict[Tuple[str, str], Any]:
    # Built-in classes (dict, OrderedDict) are immutable already and must stay classes for NEWOBJ.
    return {k: v if isinstance(v, type) else _StandIn(v, ".".join(k)) for k, v in table.items()}


# The allow-list: (module, name) -> safe stand-in. Nothing outside this table is ever imported.
ALLOWED_GLOBALS: Dict[Tuple[str, str], Any] = _wrap({
    # Every NVlabs network object; replaced by an inert record, module_src is NOT executed.
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    # init kwargs containers (a dict subclass upstream); a plain dict carries the same data.
    ("dnnlib.util", "EasyDict"): dict,
    # _parameters/_buffers/_modules containers of torch modules; a pure data structure.
    ("collections", "OrderedDict"): collections.OrderedDict,
    # nn.Parameter rebuild (wrapped: data must be a tensor, hooks must be empty).
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    # Tensor rebuild from a storage (wrapped: storage type checked, hooks must be empty).
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    # Each storage is an embedded legacy torch.save blob; read with torch's weights-only loader.
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    # float64 attributes such as weight_gain (NumPy 1.x and 2.x module paths); no object dtypes.
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    # dtype of those scalars, from a type string; no object dtypes.
    ("numpy", "dtype"): _numpy_dtype,
})

# Opcodes that reach callables without going through find_class.
_REFUSED_OPCODES = {
    "PERSID": "persistent id (calls an application hook)",
    "BINPERSID": "persistent id (calls an application hook)",
    "EXT1": "copyreg extension (may resolve a global without find_class)",
    "EXT2": "copyreg extension (may resolve a global without find_class)",
    "EXT4": "copyreg extension (may resolve a global without find_class)",
}

_HINTS = {
    "dnnlib.tflib": "this looks like a TensorFlow StyleGAN2 pickle; convert it to a PyTorch pickle with "
                    "NVlabs/stylegan2-ada-pytorch legacy.py first",
}


def _refusal(module: str, name: str) -> UnsafeCheckpointError:
    msg = (f"refused global '{module}.{name}': it is not on the allow-list of data-only globals for "
           f"StyleGAN2 checkpoints, and loading it could run code from the file")
    for prefix, hint in _HINTS.items():
        if module.startswith(prefix):
            msg += f" ({hint})"
    return UnsafeCheckpointError(msg)


class RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler whose globals come only from ALLOWED_GLOBALS (exact matches)."""

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise _refusal(str(module), str(name)) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeCheckpointError(f"refused persistent id {pid!r}: plain StyleGAN2 pickles do not use them")


def scan_opcodes(data: bytes) -> None:
    """Refuse the opcodes in _REFUSED_OPCODES before anything is unpickled (defence in depth).

    Only the first pickle in `data` is scanned, which is the one `load` reads.
    """
    try:
        for op, _arg, pos in pickletools.genops(io.BytesIO(data)):
            if op.name in _REFUSED_OPCODES:
                raise UnsafeCheckpointError(f"refused pickle opcode {op.name} at byte {pos}: {_REFUSED_OPCODES[op.name]}")
    except UnsafeCheckpointError:
        raise
    except Exception as e:  # malformed stream: let the unpickler report it the usual way
        raise pickle.UnpicklingError(f"not a valid pickle stream ({type(e).__name__}: {e})") from None


def safe_loads(data: bytes) -> Any:
    """Unpickle bytes with the allow-list; raises UnsafeCheckpointError on anything else."""
    scan_opcodes(data)
    return RestrictedUnpickler(io.BytesIO(data)).load()


def safe_load(fh: BinaryIO) -> Any:
    return safe_loads(fh.read())


def iter_inert(obj: Any, prefix: str = "") -> List[Tuple[str, InertPersistentObject]]:
    """All persistent objects in a module tree, depth first, with dotted names ('' = root)."""
    out = []
    if isinstance(obj, InertPersistentObject):
        out.append((prefix, obj))
        for name, sub in obj.modules.items():
            if sub is not None:
                out.extend(iter_inert(sub, f"{prefix}.{name}" if prefix else name))
    return out

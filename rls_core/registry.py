"""Shipped models (package data in rls_core/models/) addressable by name or by path."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Union

from .bundle import BundleError

MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_MODEL = "translocation"


def list_models() -> Dict[str, Path]:
    """Name -> path of every bundle shipped with the package."""
    if not MODELS_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(MODELS_DIR.glob("*.h5"))}


def resolve_model(name_or_path: Union[str, Path]) -> Path:
    """A shipped model name (e.g. 'translocation') or a path to a .h5 bundle -> path."""
    p = Path(name_or_path).expanduser()
    if p.exists() or p.suffix.lower() in (".h5", ".hdf5", ".pt", ".pth", ".pkl") or p.parent != Path("."):
        return p
    shipped = list_models()
    if str(name_or_path) in shipped:
        return shipped[str(name_or_path)]
    names = ", ".join(shipped) or "none installed"
    raise BundleError(name_or_path, "is neither a model file nor a shipped model name",
                      f"shipped models: {names}; or give the path to a .h5 bundle")

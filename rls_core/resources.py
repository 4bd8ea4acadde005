"""Where the shared CellProfiler files are: the module (plugin) and the `.cppipe` pipelines.

In a clone (or an editable install) they are the repository's `plugins/` and `pipelines/`
folders. A regular `pip install` puts copies under `<prefix>/share/superresolve-rls/`
(setup.cfg, data_files), so a non-editable install finds them too; `rls cellprofiler-files`
copies them wherever a user wants them.
"""
from __future__ import annotations

import site
import sys
import sysconfig
from pathlib import Path
from typing import List

from .errors import RLSError

SHARE_NAME = "superresolve-rls"
KINDS = ("pipelines", "plugins")
_REPO = Path(__file__).resolve().parents[1]


def candidates(kind: str) -> List[Path]:
    """Folders that may hold `kind`, in the order they are tried."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    prefixes = [sys.prefix, sysconfig.get_paths().get("data", sys.prefix), getattr(site, "USER_BASE", None) or ""]
    out = [_REPO / kind]
    for p in prefixes:
        if p:
            d = Path(p) / "share" / SHARE_NAME / kind
            if d not in out:
                out.append(d)
    return out


def shared_dir(kind: str) -> Path:
    """The folder holding the shared `pipelines` or `plugins`."""
    marker = "*.cppipe" if kind == "pipelines" else "superresolverls.py"
    for d in candidates(kind):
        if d.is_dir() and any(d.glob(marker)):
            return d
    raise RLSError(f"the shared CellProfiler {kind} are not installed (looked in "
                   f"{', '.join(str(d) for d in candidates(kind))})",
                   "reinstall the package (`pip install superresolve-rls` or `pip install -e .` in a clone)")

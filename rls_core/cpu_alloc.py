"""Keep freed CPU memory for reuse instead of handing it back to the OS (Linux glibc only).

Why: a search or training step allocates and frees the same large activation tensors every
step (a 128-px layer of 8 channels at batch 32 is 16 MiB). glibc serves blocks that large with
mmap and returns them with munmap when freed, so every step the kernel hands out and zero-fills
the same memory again, 4 KiB page by page. On the shipped default model about half of a search
step went to those page faults (docs/performance.md; tests/test_cpu_alloc.py counts them).

`reuse_freed_memory()` tells glibc to serve every block from its heap (`M_MMAP_MAX = 0`) and
to keep up to `TRIM_THRESHOLD` of freed memory at the heap's top instead of trimming it, so
the next step reuses pages that are already mapped. The cost: memory freed anywhere in the
process stays with it until reused. So `release_free_memory()` (malloc_trim) hands it back
after each field (`api.super_resolve`): a host such as CellProfiler gets it back between image
sets, and the search pays one step's page faults per field instead of every step's. The tuning is
process-wide, done once, and a no-op elsewhere (macOS, Windows, musl). `RLS_MALLOC_TUNING=0` in
the environment switches it off.
"""
from __future__ import annotations

import ctypes
import functools
import os
import platform
import threading

ENV_SWITCH = "RLS_MALLOC_TUNING"
TRIM_THRESHOLD = 1 << 30  # freed bytes kept at the heap's top (1 GiB)
# mallopt parameter numbers, from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

_lock = threading.Lock()
_state = {"done": False, "active": False}


def enabled_by_env() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def reuse_freed_memory() -> bool:
    """Apply the tuning once per process; True if it is in effect."""
    with _lock:
        if not _state["done"]:
            _state["done"] = True
            _state["active"] = enabled_by_env() and _apply()
        return _state["active"]


def release_free_memory() -> None:
    """Return the heap's free memory to the OS (glibc malloc_trim), where the tuning is active."""
    if _state["active"]:  # active implies _libc() found glibc
        _libc().malloc_trim(0)


@functools.lru_cache(maxsize=1)
def _libc():
    """glibc with the two functions used here typed; None elsewhere."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


def _apply() -> bool:
    libc = _libc()
    if libc is None:
        return False
    # glibc falls back to mmap by itself where the heap cannot grow, so nothing can fail here
    # that would not have failed anyway.
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))

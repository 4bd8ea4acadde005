"""rls_core.cpu_alloc: freed activation-sized blocks are reused, not faulted in again.

Each case runs in a fresh interpreter: the tuning is process-wide and cannot be undone.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the tuning is for Linux glibc (a no-op elsewhere)")

# The shipped default model's RLS search (a real workload): minor page faults per step.
_PROBE = r"""
import json, resource, torch
torch.set_num_threads(1)
from rls_core import cpu_alloc
from rls_core.model import load_model
from rls_core.operators import make_operator
from rls_core.search import make_search
search = make_search("rls", load_model("translocation", "cpu"), make_operator("bicubic", 16))
y = torch.rand(16, 2, 8, 8) * 0.5
search.run(y, list(range(16)), steps=2)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
search.run(y, list(range(16)), steps=10)
print(json.dumps({"active": cpu_alloc._state["active"],
                  "faults": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10}))
"""


def _probe(env_switch=None) -> dict:
    env = dict(os.environ)
    env.pop("RLS_MALLOC_TUNING", None)
    if env_switch is not None:
        env["RLS_MALLOC_TUNING"] = env_switch
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env,
                         capture_output=True, text=True, timeout=300, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_search_steps_reuse_freed_memory_instead_of_faulting_it_in():
    """Loading a model on the CPU applies the tuning; with it, a search step page-faults a
    small fraction of what glibc's defaults cost (RLS_MALLOC_TUNING=0)."""
    default = _probe("0")
    tuned = _probe()
    assert default["active"] is False and tuned["active"] is True
    if default["faults"] < 2000:  # e.g. transparent huge pages 'always', or jemalloc preloaded
        pytest.skip(f"this host's defaults already avoid the faults ({default['faults']:.0f} per step)")
    # here (THP 'madvise', glibc): ~19000 per step, the 128-px layers' tensors faulted in again
    assert tuned["faults"] < default["faults"] / 10


def test_loading_a_model_on_cpu_applies_it():
    code = ("from rls_core import cpu_alloc\nfrom rls_core.model import load_model\n"
            "assert not cpu_alloc._state['done']\nload_model('translocation', 'cpu')\n"
            "print(cpu_alloc._state['active'])")
    env = dict(os.environ)
    env.pop("RLS_MALLOC_TUNING", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.strip().splitlines()[-1] == "True"


def test_freed_memory_goes_back_after_a_field():
    """With the tuning, freed memory stays with the process until `release_free_memory`, which
    `super_resolve` calls after each field (a CellProfiler process gets it back between image sets)."""
    code = r"""
import numpy as np
from rls_core import cpu_alloc
assert cpu_alloc.reuse_freed_memory()
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2 ** 20
small = [np.ones(1000) for _ in range(10)]
big = [np.ones(32 * 2 ** 20 // 8) for _ in range(8)]  # 8 x 32 MiB
peak = rss()
del big
kept = rss()
cpu_alloc.release_free_memory()
print(peak, kept, rss())
"""
    env = dict(os.environ)
    env.pop("RLS_MALLOC_TUNING", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    peak, kept, after = map(float, out.split())
    assert kept > peak - 64  # freed but kept for reuse (this is the tuning)
    assert after < peak - 200  # handed back

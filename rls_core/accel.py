"""How the generator runs during a search: one switch, `accel`, with a safe default.

  none          float32, eager (default; the reference numerics)
  bf16          bfloat16 autocast of the synthesis network; warns where the device has no
                native bf16 (CPUs without AVX-512-BF16/AMX run it several times slower)
  compile       torch.compile of the synthesis network, float32 (a one-off warm-up per
                process, then faster steps)
Measured speeds of each mode: docs/performance.md (benchmarks/generator_speed.py).
  bf16+compile  both
  auto          bf16 where the device has native bf16 (CUDA GPUs, AMX/AVX-512-BF16 CPUs),
                else none; never compile (the warm-up is not always worth it)
Equivalence is tested on the recovery test (tests/test_accel.py): LR-PSNR within 0.2 dB of
`none` where bf16 is native; emulated bf16 within float32's own seed-to-seed spread.
Everything outside the synthesis network (priors, operator, optimiser) stays float32.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Callable, ContextManager

ACCEL_MODES = ("none", "bf16", "compile", "bf16+compile", "auto")
DEFAULT_ACCEL = "none"


def native_bf16(device) -> bool:
    """True where bfloat16 matmuls/convolutions run natively (faster than float32)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        # oneDNN runs bf16 on every AVX-512 CPU, but without the BF16 instructions it emulates
        # them: on an AVX-512 Xeon without avx512_bf16, a bf16 matmul ran 6x slower than float32.
        if not _cpu_flags() & {"avx512_bf16", "amx_bf16"}:
            return False
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def _cpu_flags() -> frozenset:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where unknown, which keeps float32."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def resolve_accel(mode: str, device) -> str:
    """Validate `mode` and turn 'auto' into a concrete mode for `device`."""
    mode = (mode or DEFAULT_ACCEL).lower()
    if mode not in ACCEL_MODES:
        raise ValueError(f"unknown accel {mode!r}; choose one of {', '.join(ACCEL_MODES)}")
    if mode == "auto":
        return "bf16" if native_bf16(device) else "none"
    if "bf16" in mode and not native_bf16(device):
        warnings.warn(f"accel {mode!r}: this device ({device}) has no native bfloat16 and runs it several "
                      "times slower than float32; accel 'none' or 'compile' is faster here", stacklevel=2)
    return mode


def autocast(mode: str, device) -> ContextManager:
    """The autocast context of a resolved mode (a no-op unless it uses bf16)."""
    import torch

    if "bf16" not in mode:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def compiled(fn: Callable, mode: str) -> Callable:
    """`fn` compiled when the resolved mode asks for it, else `fn` itself."""
    if "compile" not in mode:
        return fn
    import torch

    return torch.compile(fn)

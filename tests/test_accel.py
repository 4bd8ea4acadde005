"""The `accel` switch (bf16 autocast, torch.compile) against float32 eager on the recovery test.

The recovery test (tests/test_search.py: the tiny model's own images, 8x, 200 steps) reaches a
high LR-PSNR with a faithful search; a bf16 search must not land more than 0.2 dB below the
float32 one where bf16 is native (the bound the issue set). Where a CPU emulates bf16, the
bound is float32's own spread over seeds (see the test).
Compiled searches are float32: one step must match eager's image and gradient, and the whole
search must recover the field as well (see the bound's comment).
Parametrised over devices: CUDA runs where a GPU is present.
"""
import numpy as np
import pytest
import torch

from rls_core.accel import ACCEL_MODES, native_bf16, resolve_accel
from rls_core.api import super_resolve
from rls_core.model import load_model

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def reference(tiny_model_path, generated_field):
    _, lr = generated_field
    return {dev: super_resolve(lr, load_model(tiny_model_path, dev), 8, "rls", steps=200, overlap=0, seed=0)
            for dev in DEVICES}


@pytest.mark.filterwarnings("ignore:accel 'bf16'")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("accel", ["bf16", "compile"])
def test_accelerated_search_matches_float32(tiny_model_path, generated_field, reference, device, accel):
    _, lr = generated_field
    m = load_model(tiny_model_path, device, accel=accel)
    assert m.accel == accel
    fast = super_resolve(lr, m, 8, "rls", steps=200, overlap=0, seed=0)
    ref = reference[device]
    assert ref.lr_psnr > 30, "the float32 reference itself must recover the field"
    assert fast.image.dtype == ref.image.dtype and fast.image.shape == ref.image.shape
    if accel == "bf16":
        assert not np.array_equal(fast.image, ref.image)  # the mode took effect: other rounding
        if native_bf16(device):
            # not worse than float32 by more than the 0.2 dB. The path may end better:
            # on an H200 (session 15) bf16 ended at 35.13 dB against float32's 34.18, so there
            # is no upper bound (a broken path falls far below, never above)
            assert fast.lr_psnr - ref.lr_psnr >= -0.2, (accel, fast.lr_psnr, ref.lr_psnr)
            return
        # Emulated bf16 (a CPU without BF16 instructions; `auto` never picks it there) rounds
        # differently enough for the search to settle in another of its optima. Measured on an
        # AVX-512 Xeon without avx512_bf16, seeds 0-3: bf16 minus float32 -0.48 (at 400 steps:
        # +0.98), -0.04, -1.84, +0.56 dB, while float32 itself spread 1.4 dB over those seeds
        # and did not move at all for 1e-6 changes of the input. (On an AVX2 EPYC, seed 0 ended
        # +0.22 dB.) So here the bound is float32's own spread over seeds: no worse than the
        # worst of three float32 seeds, less the 0.2 dB. A broken bf16 path (NaN,
        # blurred or saturated output) falls far below it.
        others = [super_resolve(lr, load_model(tiny_model_path, device), 8, "rls", steps=200, overlap=0,
                                seed=seed).lr_psnr for seed in (1, 2)]
        worst = min([ref.lr_psnr] + others)
        assert fast.lr_psnr >= worst - 0.2, (accel, fast.lr_psnr, ref.lr_psnr, others)
        return
    # compile is float32 too: one step must be the same computation (image and W+ gradient
    # within float32 reordering) ...
    assert type(m._synthesis).__name__ == "OptimizedModule", type(m._synthesis)
    eager = load_model(tiny_model_path, device)
    w_plus = eager.w_mean.detach()[None, None].repeat(2, eager.num_ws, 1)
    w_plus = w_plus + 0.3 * torch.randn(w_plus.shape, generator=torch.Generator().manual_seed(1)).to(w_plus)
    outs = []
    for model in (eager, m):
        w = w_plus.clone().requires_grad_(True)
        img = model.render(w)
        (img * torch.linspace(-1, 1, img.numel(), device=img.device).view_as(img)).sum().backward()
        outs.append((img.detach(), w.grad))
    (img_e, grad_e), (img_c, grad_c) = outs
    assert torch.allclose(img_c, img_e, rtol=1e-4, atol=1e-5)
    assert torch.allclose(grad_c, grad_e, rtol=1e-3, atol=1e-3 * float(grad_e.abs().max()))
    # ... and the whole search recovers the field as well. 200 chaotic steps amplify those 1e-7
    # reorderings: at 2 threads compile ended 0.27 dB below eager (eager itself is the same at
    # 1 and 2 threads; at 1 thread compile matched it; on an H200 it ended 0.65 dB above), so
    # the bound is 0.5 dB below eager: a broken compiled path falls far below, never above.
    assert fast.lr_psnr - ref.lr_psnr >= -0.5, (accel, fast.lr_psnr, ref.lr_psnr)


def test_modes_resolve_and_bad_modes_are_refused():
    assert resolve_accel("none", "cpu") == "none"
    assert resolve_accel("auto", "cpu") == ("bf16" if native_bf16("cpu") else "none")
    assert set(ACCEL_MODES) >= {"none", "bf16", "compile", "auto"}
    with pytest.raises(ValueError, match="unknown accel 'fp8'"):
        resolve_accel("fp8", "cpu")
    if not native_bf16("cpu"):
        with pytest.warns(UserWarning, match="no native bfloat16"):
            resolve_accel("bf16", "cpu")

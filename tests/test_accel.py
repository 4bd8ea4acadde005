"""The `accel` switch (bf16 autocast, torch.compile) against float32 eager on the recovery test.

The recovery test (tests/test_search.py: the tiny model's own images, 8x, 200 steps) reaches a
high LR-PSNR with a faithful search; a bf16 search must not land more than 0.2 dB below the
float32 one (the bound the issue set: bf16 rounding may move the path of the search a little,
not where it ends; at 120 steps, mid-schedule, the two still differ by ~0.4 dB on CPU).
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
        # not worse than float32 by more than the 0.2 dB; the path may differ either way
        # (with the test model's noise inputs live, bf16 ended 0.22 dB *higher* here), so +0.5 dB
        # is allowed above
        assert -0.2 <= fast.lr_psnr - ref.lr_psnr <= 0.5, (accel, fast.lr_psnr, ref.lr_psnr)
        assert not np.array_equal(fast.image, ref.image)  # the mode took effect: other rounding
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
    # 1 and 2 threads; at 1 thread compile matched it), so the bound here is 0.5 dB either way.
    assert abs(fast.lr_psnr - ref.lr_psnr) <= 0.5, (accel, fast.lr_psnr, ref.lr_psnr)


def test_modes_resolve_and_bad_modes_are_refused():
    assert resolve_accel("none", "cpu") == "none"
    assert resolve_accel("auto", "cpu") == ("bf16" if native_bf16("cpu") else "none")
    assert set(ACCEL_MODES) >= {"none", "bf16", "compile", "auto"}
    with pytest.raises(ValueError, match="unknown accel 'fp8'"):
        resolve_accel("fp8", "cpu")
    if not native_bf16("cpu"):
        with pytest.warns(UserWarning, match="no native bfloat16"):
            resolve_accel("bf16", "cpu")

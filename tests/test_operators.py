"""Forward operators and degradations against PIL / scikit-image / scipy references."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from skimage.measure import block_reduce

from rls_core.operators import (OPERATORS, AreaDown, BicubicDown, gaussian_blur, gaussian_noise,
                                make_operator, parse_degradation, salt_and_pepper, upsample_bicubic)


def _rand(shape, seed=0, dtype=torch.float64):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _pil_resize(a: np.ndarray, size) -> np.ndarray:
    img = Image.fromarray(a.astype(np.float32))  # float32 -> mode "F"
    return np.asarray(img.resize(size, Image.BICUBIC), dtype=np.float64)


@pytest.mark.parametrize("factor,hw", [(2, (32, 48)), (3, (36, 30)), (4, (64, 64)), (16, (128, 128))])
def test_bicubic_matches_pil_interior(factor, hw):
    x = _rand((1, 1) + hw, seed=factor)
    y = BicubicDown(factor)(x)[0, 0].numpy()
    ref = _pil_resize(x[0, 0].numpy(), (hw[1] // factor, hw[0] // factor))
    assert y.shape == ref.shape
    # Outputs whose support (2*factor either side of the centre) stays inside the image.
    m = 2
    np.testing.assert_allclose(y[m:-m, m:-m], ref[m:-m, m:-m], atol=1e-4)


def test_bicubic_factor_one_is_identity_and_taps():
    x = _rand((2, 3, 8, 8))
    assert torch.equal(BicubicDown(1)(x), x)
    op = BicubicDown(16)
    assert op.taps.numel() == 64 and abs(op.taps.sum().item() - 1) < 1e-12
    assert torch.allclose(op.taps, op.taps.flip(0))  # symmetric about the output centre


@pytest.mark.parametrize("factor,hw", [(2, (6, 10)), (3, (9, 12)), (16, (128, 64)), (16, (16, 32)), (32, (64, 32))])
def test_bicubic_matrices_equal_the_padded_strided_convolution(factor, hw):
    """The operator's axis matrices are the reflect-padded, strided 1-D convolution by the
    taps (the textbook form, kept for the blur degradation), values and gradients."""
    from rls_core.operators import _conv_axis

    op = BicubicDown(factor)
    lo, hi = op.pad
    x = _rand((2, 3) + hw, seed=factor).requires_grad_()
    ref = _conv_axis(_conv_axis(x, op.taps, 3, factor, lo, hi), op.taps, 2, factor, lo, hi)
    y = op(x)
    assert y.shape == ref.shape
    assert torch.allclose(y, ref, atol=1e-13)
    g = _rand(y.shape, seed=99)
    (gx,) = torch.autograd.grad((y * g).sum(), x)
    (gref,) = torch.autograd.grad((ref * g).sum(), x)
    assert torch.allclose(gx, gref, atol=1e-13)
    assert torch.allclose(op.axis_matrix(hw[0]).sum(1), torch.ones(hw[0] // factor, dtype=torch.float64))


def test_bicubic_matrices_survive_dtype_casts_inference_mode_and_long_axes(monkeypatch):
    import rls_core.operators as ops

    x = _rand((1, 2, 32, 48))
    ref = BicubicDown(4)(x)
    # float32 taps after .float() (the matrices are still built in float64)
    assert torch.allclose(BicubicDown(4).float()(x.float()), ref.float(), atol=1e-6)
    # a matrix first built under inference_mode can still be saved for backward later
    op = BicubicDown(4)
    with torch.inference_mode():
        op(x)
    xg = x.clone().requires_grad_()
    op(xg).sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()
    # past MATRIX_MAX_N pixels an axis takes the strided convolution: the same values
    monkeypatch.setattr(ops, "MATRIX_MAX_N", 40)  # H = 32 by matrix, W = 48 by convolution
    assert torch.allclose(BicubicDown(4)(x), ref, atol=1e-13)
    monkeypatch.setattr(ops, "MATRIX_MAX_N", 8)  # both by convolution
    assert torch.allclose(BicubicDown(4)(x), ref, atol=1e-13)


def test_bicubic_small_image_reflect_pads_beyond_size():
    # Pad (24) exceeds the image (16): reflection must still work.
    y = BicubicDown(16)(torch.full((1, 1, 16, 32), 0.3))
    assert y.shape == (1, 1, 1, 2) and torch.allclose(y, torch.full_like(y, 0.3))


@pytest.mark.parametrize("name", OPERATORS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_constant_stays_constant_and_shape(name, dtype):
    op = make_operator(name, 4)
    x = torch.full((2, 3, 32, 16), 0.7, dtype=dtype)
    y = op(x)
    assert y.shape == (2, 3, 8, 4) and y.dtype == dtype
    assert torch.allclose(y, torch.full_like(y, 0.7), atol=1e-6)


def test_area_matches_block_reduce():
    x = _rand((2, 2, 24, 36))
    y = AreaDown(4)(x).numpy()
    ref = block_reduce(x.numpy(), (1, 1, 4, 4), np.mean)
    np.testing.assert_allclose(y, ref, atol=1e-12)


@pytest.mark.parametrize("name", OPERATORS)
def test_gradients_flow(name):
    x = _rand((1, 2, 16, 16)).requires_grad_()
    make_operator(name, 4)(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_bad_shape_and_name():
    with pytest.raises(ValueError, match=r"\(1, 1, 30, 32\).*16"):
        BicubicDown(16)(torch.zeros(1, 1, 30, 32))
    with pytest.raises(ValueError, match="bicubic, area"):
        make_operator("lanczos", 2)
    with pytest.raises(ValueError):
        AreaDown(0)


def test_describe():
    assert make_operator("bicubic", 16).describe() == "bicubic x16 (Keys a=-0.5, antialiased)"
    assert "area x8" in make_operator("area", 8).describe()


def test_upsample_bicubic_matches_pil_interior_and_clips():
    y = _rand((1, 1, 8, 10), seed=3)
    x = upsample_bicubic(y, 4)
    assert x.shape == (1, 1, 32, 40)
    ref = _pil_resize(y[0, 0].numpy(), (40, 32))
    # PIL renormalises truncated taps at the border where we clamp; compare the interior.
    np.testing.assert_allclose(x[0, 0, 8:-8, 8:-8].numpy(), np.clip(ref, 0, 1)[8:-8, 8:-8], atol=1e-5)
    assert x.min() >= 0 and x.max() <= 1
    c = upsample_bicubic(torch.full((2, 1, 4, 4), 0.25), 16)
    assert torch.allclose(c, torch.full_like(c, 0.25))
    assert torch.equal(upsample_bicubic(y, 1), y)


@pytest.mark.parametrize("sigma", [0.7, 1.0, 2.5])
def test_gaussian_blur_matches_scipy(sigma):
    y = _rand((1, 2, 12, 9), seed=5)
    out = gaussian_blur(y, sigma).numpy()
    ref = np.stack([ndimage.gaussian_filter(c, sigma, mode="mirror", truncate=4.0) for c in y[0].numpy()])
    np.testing.assert_allclose(out[0], ref, atol=1e-10)


def test_degradations_deterministic_and_clipped():
    y = _rand((2, 1, 8, 8), seed=7)
    a, b, c = gaussian_noise(y, 0.1, seed=1), gaussian_noise(y, 0.1, seed=1), gaussian_noise(y, 0.1, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    s1, s2 = salt_and_pepper(y, 0.2, seed=1), salt_and_pepper(y, 0.2, seed=1)
    assert torch.equal(s1, s2)
    changed = (s1 != y)
    assert torch.all((s1[changed] == 0) | (s1[changed] == 1))
    big = salt_and_pepper(torch.full((1, 1, 200, 200), 0.5), 0.1, seed=0)
    frac = (big != 0.5).double().mean().item()
    assert abs(frac - 0.1) < 0.01
    assert torch.equal(gaussian_noise(y, 0.0), y)


def test_parse_degradation():
    y = _rand((1, 1, 8, 8), seed=9)
    assert torch.equal(parse_degradation("none")(y), y)
    assert torch.equal(parse_degradation("noise:0.1")(y), gaussian_noise(y, 0.1, 0))
    assert torch.equal(parse_degradation("saltpepper:0.05", seed=3)(y), salt_and_pepper(y, 0.05, 3))
    assert torch.equal(parse_degradation("blur:1.0")(y), gaussian_blur(y, 1.0))
    chained = parse_degradation("blur:1.0+noise:0.05")(y)
    assert torch.equal(chained, gaussian_noise(gaussian_blur(y, 1.0), 0.05, 0))
    for bad in ["", "noise", "noise:abc", "jpeg:10", "saltpepper:2", "blur:-1", "none:1", "noise:0.1+"]:
        with pytest.raises(ValueError, match="accepted forms"):
            parse_degradation(bad)

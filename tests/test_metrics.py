"""rls_core.metrics: Laplacian-pyramid sliced Wasserstein distance (small, fast sets)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from rls_core.metrics import (blur, laplacian_pyramid, patch_descriptors, sliced_wasserstein, swd,
                              swd_mean)


def _crops(seed: int, n: int = 12, size: int = 32, channels: int = 2) -> np.ndarray:
    """Blobby textured images in [0, 1], a stand-in for cell crops."""
    rng = np.random.default_rng(seed)
    x = ndi.gaussian_filter(rng.standard_normal((n, channels, size, size)), (0, 0, 1.5, 1.5))
    x = np.clip(0.5 + 2.0 * x, 0, 1) + 0.05 * rng.standard_normal(x.shape)
    return x.astype(np.float32)


def test_pyramid_levels_and_reconstruction():
    from rls_core.metrics import _up

    x = _crops(0, n=3, size=64)
    pyr = laplacian_pyramid(x, min_res=16)
    assert list(pyr) == [64, 32, 16]
    assert pyr[16].shape == (3, 2, 16, 16)
    rec = pyr[16]
    for res in (32, 64):  # band-pass levels plus the residual give back the image exactly
        rec = _up(rec) + pyr[res]
    np.testing.assert_allclose(rec, x, atol=1e-4)


def test_patch_descriptors_shape_and_content():
    band = np.arange(2 * 1 * 10 * 10, dtype=np.float32).reshape(2, 1, 10, 10)
    d = patch_descriptors(band, 5, np.random.default_rng(0), size=7)
    assert d.shape == (10, 1, 7, 7)
    # every patch is a contiguous window of its image
    assert np.all(np.diff(d[:, 0, 0, :], axis=1) == 1) and np.all(np.diff(d[:, 0, :, 0], axis=1) == 10)
    assert np.all(d[:5] < 100) and np.all(d[5:] >= 100)


def test_sliced_wasserstein_is_linear_in_a_shift():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((500, 6)).astype(np.float32)
    shift = np.array([1.0, 0, 0, 0, 0, 0], np.float32)
    d1 = sliced_wasserstein(a, a + shift, np.random.default_rng(1), n_dirs=64, repeats=2)
    d2 = sliced_wasserstein(a, a + 2 * shift, np.random.default_rng(1), n_dirs=64, repeats=2)
    assert d1 > 0.1 and d2 == pytest.approx(2 * d1, rel=1e-4)
    # unequal set sizes are compared through quantiles
    assert sliced_wasserstein(a, a[::2], np.random.default_rng(1), n_dirs=32, repeats=1) < 0.2 * d1


def test_identical_sets_give_zero():
    x = _crops(1)
    d = swd(x, x.copy(), seed=3, n_per_image=16)
    assert list(d) == [32, 16]
    assert all(v == pytest.approx(0.0, abs=1e-7) for v in d.values())


def test_distance_grows_with_blur():
    x, other = _crops(2), _crops(3)
    floor = swd_mean(swd(x, other, seed=0, n_per_image=32))
    d = [swd_mean(swd(x, blur(other, s), seed=0, n_per_image=32)) for s in (0.7, 1.5, 3.0)]
    assert floor < d[0] < d[1] < d[2]


def test_deterministic_per_seed():
    x, y = _crops(4), _crops(5)
    a = swd(x, y, seed=7, n_per_image=16)
    assert swd(x, y, seed=7, n_per_image=16) == a
    assert swd(x, y, seed=8, n_per_image=16) != a


def test_norm_options_and_errors():
    x, y = _crops(6), _crops(7)
    bright = y * 1.5 + 0.3  # a pure intensity error: only 'separate' standardisation ignores it
    real = swd_mean(swd(x, bright, seed=0, n_per_image=16, norm="real"))
    sep = swd_mean(swd(x, bright, seed=0, n_per_image=16, norm="separate"))
    assert sep < real
    with pytest.raises(ValueError, match="norm"):
        swd(x, y, norm="bogus")
    with pytest.raises(ValueError, match="shapes differ"):
        swd(x, _crops(8, channels=1))

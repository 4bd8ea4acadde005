"""Latent priors against direct loop computations; statistics and prior fitting on a tiny generator."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rls_core.flow import MAF
from rls_core.generator import Generator, GeneratorConfig
from rls_core.priors import (FlowPrior, GaussianPrior, LatentStats, cross_cosine, cross_euclidean,
                             cross_geodesic, fit_latent_stats, fit_prior, pulse_to_w)


def _w(b=2, l=4, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, l, d, generator=g, dtype=torch.float64)


def _loop_euclid(w):
    out = []
    for x in w:
        ds = [torch.sqrt(((x[i] - x[j]) ** 2).sum()) for i in range(len(x)) for j in range(i + 1, len(x))]
        out.append(sum(ds) / len(ds))
    return torch.stack(out)


def _loop_geo(w):
    out = []
    for x in w:
        ds = []
        for i in range(len(x)):
            for j in range(i + 1, len(x)):
                a, b = x[i] / x[i].norm(), x[j] / x[j].norm()
                ds.append((2 * torch.asin((a - b).norm() / 2)) ** 2)
        out.append(sum(ds) / len(ds))
    return torch.stack(out)


def _loop_cos(w):
    out = []
    for x in w:
        s = 0
        for i in range(len(x)):
            for j in range(i + 1, len(x)):
                s = s + (1 - (x[i] @ x[j]) / (x[i].norm() * x[j].norm())).abs()
        out.append(s)
    return torch.stack(out)


@pytest.mark.parametrize("fn,ref", [(cross_euclidean, _loop_euclid), (cross_geodesic, _loop_geo),
                                    (cross_cosine, _loop_cos)])
def test_cross_terms_value_and_grad(fn, ref):
    w1 = _w().requires_grad_()
    w2 = w1.detach().clone().requires_grad_()
    v1, v2 = fn(w1), ref(w2)
    assert v1.shape == (2,) and v1.dtype == torch.float64
    assert torch.allclose(v1, v2, atol=1e-12)
    g = torch.tensor([0.7, -1.3], dtype=torch.float64)
    (v1 * g).sum().backward()
    (v2 * g).sum().backward()
    assert torch.allclose(w1.grad, w2.grad, atol=1e-10)


@pytest.mark.parametrize("fn", [cross_euclidean, cross_geodesic, cross_cosine])
def test_cross_terms_safe_at_identical_rows(fn):
    # RLS starts every W+ row at the mean w: the penalty is 0 with a finite gradient.
    g = torch.Generator().manual_seed(0)
    w = torch.randn(1, 1, 6, generator=g).expand(3, 5, 6).clone().requires_grad_()
    v = fn(w)
    v.sum().backward()
    # float32 rounding of cos(a, a) is ~1e-7 per pair; cross_cosine sums 10 pairs
    assert torch.allclose(v, torch.zeros(3), atol=1e-5) and torch.isfinite(w.grad).all()
    assert torch.equal(fn(torch.randn(2, 1, 6)), torch.zeros(2))  # single layer


def test_cross_geodesic_antipodal_and_scale_invariant():
    a = torch.randn(6, dtype=torch.float64)
    x = torch.stack([a, -3 * a])[None].requires_grad_()
    v = cross_geodesic(x)
    v.backward()
    assert torch.allclose(v, torch.tensor([math.pi ** 2], dtype=torch.float64))
    assert torch.isfinite(x.grad).all()


def _gauss_loop(w, mean, cov, eps_abs):
    lam, vec = np.linalg.eigh(cov)
    inv_sqrt = vec @ np.diag(1 / np.sqrt(lam + eps_abs)) @ vec.T
    out = []
    for x in w.numpy():
        vals = []
        for row in x:
            v = np.where(row > 0, row, 5 * row)
            z = inv_sqrt @ (v - mean)
            vals.append((z ** 2).sum() / len(z))
        out.append(np.mean(vals))
    return np.array(out)


def test_gaussian_prior_value_and_grad():
    d = 5
    g = np.random.default_rng(0)
    a = g.normal(size=(d, d))
    cov, mean = a @ a.T + 0.5 * np.eye(d), g.normal(size=d)
    prior = GaussianPrior(mean, cov, eps=1e-5).double()
    w = _w(d=d).requires_grad_()
    v = prior(w)
    eps_abs = 1e-5 * np.linalg.eigvalsh(cov).mean()
    np.testing.assert_allclose(v.detach().numpy(), _gauss_loop(w.detach(), mean, cov, eps_abs), rtol=1e-6)
    v.sum().backward()
    # Gradient by central differences on one coordinate.
    h = 1e-6
    for idx in [(0, 1, 2), (1, 3, 0)]:
        wp, wm = w.detach().clone(), w.detach().clone()
        wp[idx] += h
        wm[idx] -= h
        fd = (prior(wp).sum() - prior(wm).sum()) / (2 * h)
        assert abs(fd.item() - w.grad[idx].item()) < 1e-4 * max(1, abs(fd.item()))


def test_gaussian_prior_about_one_on_its_samples():
    d = 16
    g = torch.Generator().manual_seed(3)
    a = torch.randn(d, d, generator=g)
    cov = a @ a.T / d + 0.05 * torch.eye(d)
    mean = torch.randn(d, generator=g)
    v = mean + torch.randn(4000, 2, d, generator=g) @ torch.linalg.cholesky(cov).T
    w = torch.where(v > 0, v, v / 5)  # LeakyReLU(0.2) is the inverse of LeakyReLU(5)
    val = GaussianPrior(mean.numpy(), cov.numpy())(w)
    assert val.shape == (4000,)
    assert abs(val.mean().item() - 1.0) < 0.03


def test_pulse_to_w():
    x = torch.randn(2, 3, 4)
    mean, std = np.arange(4, dtype=np.float32) - 2, np.full(4, 2.0, dtype=np.float32)
    y = pulse_to_w(x, mean, std)
    lin = x * 2 + torch.from_numpy(mean)
    assert torch.allclose(y, torch.where(lin > 0, lin, 0.2 * lin))
    assert pulse_to_w(x.double(), torch.from_numpy(mean), torch.from_numpy(std)).dtype == torch.float64


@pytest.fixture(scope="module")
def tiny_mapping():
    torch.manual_seed(0)
    g = Generator(GeneratorConfig.preset("tiny", 32, 1)).eval()
    return g.mapping, g.cfg.z_dim, g.cfg.w_dim


def test_fit_latent_stats(tiny_mapping):
    mapping, z_dim, d = tiny_mapping
    stats, w = fit_latent_stats(mapping, z_dim, n_samples=3000, batch_size=1024, seed=1, progress=False)
    assert isinstance(stats, LatentStats) and stats.n_samples == 3000
    for name in ("w_mean", "w_std", "pulse_mean", "pulse_std", "gauss_mean"):
        arr = getattr(stats, name)
        assert arr.shape == (d,) and arr.dtype == np.float32 and np.isfinite(arr).all()
    cov = stats.gauss_cov
    assert cov.shape == (d, d) and cov.dtype == np.float32
    np.testing.assert_allclose(cov, cov.T, atol=1e-6)
    assert np.linalg.eigvalsh(cov.astype(np.float64)).min() > -1e-6 * np.trace(cov)
    # The moments match those of the returned samples.
    assert w.shape == (3000, d) and w.dtype == torch.float32
    np.testing.assert_allclose(stats.w_mean, w.double().mean(0).numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats.w_std, w.double().std(0).numpy(), rtol=1e-4)
    v = torch.nn.functional.leaky_relu(w.double(), 5.0)
    np.testing.assert_allclose(cov, torch.cov(v.T).numpy(), rtol=1e-4, atol=1e-6 * np.abs(cov).max())
    np.testing.assert_allclose(stats.pulse_std, v.std(0).numpy(), rtol=1e-4)
    again, _ = fit_latent_stats(mapping, z_dim, n_samples=3000, batch_size=512, seed=1, progress=False)
    np.testing.assert_allclose(again.w_mean, stats.w_mean, rtol=1e-5, atol=1e-7)


def test_flow_prior_terms():
    d, layers = 6, 3
    torch.manual_seed(0)
    flow = MAF(d, n_blocks=2, hidden=12)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.2 * torch.randn_like(p))
    mean, std = torch.randn(d), torch.rand(d) + 0.5
    prior = FlowPrior(flow, mean, std.numpy()).train()
    assert not prior.flow.training and not any(p.requires_grad for p in prior.flow.parameters())
    w = torch.randn(4, layers, d, requires_grad=True)
    t = prior.terms(w)
    assert set(t) == {"logp", "pnorm"}
    for v in t.values():
        assert v.shape == (4,) and torch.isfinite(v).all()
    (t["logp"] + t["pnorm"]).sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    # Direct per-row computation.
    with torch.no_grad():
        rows = (w.reshape(-1, d) - mean) / std
        u, _ = flow(rows)
        ref_logp = -flow.log_prob(rows).view(4, layers).mean(1)
        ref_pnorm = ((u.norm(dim=1) - math.sqrt(d)) ** 2).view(4, layers).mean(1)
    assert torch.allclose(t["logp"], ref_logp, atol=1e-5)
    assert torch.allclose(t["pnorm"], ref_pnorm, atol=1e-5)
    # A batch element's value does not depend on the others (no batch statistics).
    assert torch.allclose(prior.terms(w[:1])["logp"], t["logp"][:1], atol=1e-5)


def test_fit_prior_tiny(tiny_mapping):
    mapping, z_dim, d = tiny_mapping
    stats, flow = fit_prior(mapping, z_dim, n_samples=5000, flow_blocks=2, flow_hidden=64,
                            flow_epochs=2, seed=0, progress=False)  # its speed: docs/performance.md
    assert flow.config() == {"dim": d, "n_blocks": 2, "hidden": 64} and not flow.training
    prior = FlowPrior(flow, stats.w_mean, stats.w_std)
    w = mapping(torch.randn(8, z_dim))[:, None].expand(8, 4, d)
    t = prior.terms(w.detach())
    assert torch.isfinite(t["logp"]).all() and torch.isfinite(t["pnorm"]).all()
    assert stats.gauss_cov.shape == (d, d)
    # Default hidden width is 2 * D.
    _, flow2 = fit_prior(mapping, z_dim, n_samples=500, flow_blocks=1, flow_epochs=1, progress=False)
    assert flow2.config()["hidden"] == 2 * d

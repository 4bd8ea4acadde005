"""MAF: exact change of variables, determinism, fitting a known Gaussian, rebuild from config."""
from __future__ import annotations

import math

import pytest
import torch

from rls_core.flow import MAF, fit_flow


def _perturbed_maf(dim: int, seed: int = 0, hidden: int = 16, n_blocks: int = 3) -> MAF:
    """A MAF with non-trivial weights and running stats (a fresh one is the identity)."""
    torch.manual_seed(seed)
    m = MAF(dim, n_blocks=n_blocks, hidden=hidden)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
        for norm in m.norms:
            norm.running_mean.normal_()
            norm.running_var.uniform_(0.5, 2.0)
    return m.eval()


def test_log_prob_matches_dense_jacobian():
    m = _perturbed_maf(4).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    lp = m.log_prob(x)
    for i in range(x.shape[0]):
        f = lambda v: m(v[None])[0][0]  # noqa: E731
        jac = torch.autograd.functional.jacobian(f, x[i])
        u = f(x[i])
        ref = -0.5 * (u @ u) - 2 * math.log(2 * math.pi) + torch.linalg.slogdet(jac)[1]
        assert torch.allclose(lp[i], ref, atol=1e-10)


def test_single_block_is_autoregressive():
    # One block: u_i depends on x_{<=i} only, so the Jacobian (before the final
    # reversal) is lower triangular.
    m = _perturbed_maf(4, n_blocks=1).double()
    x = torch.randn(4, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: m(v[None])[0][0].flip(-1), x)
    assert torch.equal(jac.triu(1), torch.zeros_like(jac))
    assert (jac.diagonal().abs() > 0).all()


def test_eval_determinism_and_no_running_update():
    m = _perturbed_maf(6)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x = torch.randn(7, 6)
    a, b = m.log_prob(x), m.log_prob(x)
    assert torch.equal(a, b)
    # Eval results of one sample do not depend on the rest of the batch.
    assert torch.allclose(m.log_prob(x[:1]), a[:1], atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_training_mode_updates_running_stats():
    m = MAF(3, n_blocks=1, hidden=8).train()
    m(torch.randn(64, 3) * 3 + 5)
    assert not torch.allclose(m.norms[0].running_mean, torch.zeros(3))


@pytest.mark.parametrize("batch_size", [7, 64, 1000])
def test_calibrate_sets_exact_statistics_whatever_the_batching(batch_size):
    # calibrate_ merges per-batch moments; each norm layer must end up with the mean and
    # (biased) variance of the whole set as it reaches that layer, as a one-shot float64
    # pass computes them. A wrong merge formula is off by O(1/batch) or worse.
    m = _perturbed_maf(5)
    x = torch.randn(300, 5) * 2 + 1
    m.calibrate_(x, batch_size=batch_size)
    z = x.double()
    md = _perturbed_maf(5).double()  # same seed: the same weights, in float64
    for made, norm, norm_ref in zip(md.mades, m.norms, md.norms):
        mu, alpha = made(z)
        z = (z - mu) * torch.exp(-alpha)
        mean, var = z.mean(0), z.var(0, unbiased=False)
        assert torch.allclose(norm.running_mean.double(), mean, rtol=1e-5, atol=1e-5)
        assert torch.allclose(norm.running_var.double(), var, rtol=1e-5, atol=1e-5)
        norm_ref.running_mean.copy_(mean)
        norm_ref.running_var.copy_(var)
        z = norm_ref(z)[0].flip(-1)


def test_config_roundtrip():
    m = _perturbed_maf(5, hidden=12, n_blocks=2)
    state = m.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    # Masks follow from the config, so they are rebuilt rather than saved (bundle size).
    assert any("running_var" in k for k in state) and not any("mask" in k for k in state)
    m2 = MAF(**m.config())
    m2.load_state_dict(state)
    m2.eval()
    x = torch.randn(9, 5)
    assert m.config() == {"dim": 5, "n_blocks": 2, "hidden": 12}
    u1, l1 = m(x)
    u2, l2 = m2(x)
    assert torch.equal(u1, u2) and torch.equal(l1, l2)


def test_fit_correlated_gaussian():
    dim, n = 8, 20000
    g = torch.Generator().manual_seed(1)
    a = torch.randn(dim, dim, generator=g, dtype=torch.float64) / math.sqrt(dim)
    cov = a @ a.T + 0.1 * torch.eye(dim, dtype=torch.float64)
    mean = torch.linspace(-1, 1, dim, dtype=torch.float64)
    dist = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)
    x = (mean + torch.randn(n, dim, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T)
    x_test = (mean + torch.randn(4000, dim, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T)

    rng_before = torch.random.get_rng_state()
    flow = fit_flow(x.float(), n_blocks=3, hidden=64, epochs=6, batch_size=256, lr=3e-3,
                    seed=0, progress=False)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # global RNG untouched
    assert not flow.training and flow.config() == {"dim": 8, "n_blocks": 3, "hidden": 64}

    with torch.no_grad():
        ll = flow.log_prob(x_test.float()).double().mean().item() / dim
        ll_true = dist.log_prob(x_test).mean().item() / dim
        u, _ = flow(x_test.float())
    assert abs(ll - ll_true) < 0.1, (ll, ll_true)
    u = u.double()
    assert u.mean(0).abs().max() < 0.1
    assert (torch.cov(u.T) - torch.eye(dim, dtype=torch.float64)).abs().max() < 0.15


def test_fit_flow_is_seeded():
    x = torch.randn(600, 3)
    f1 = fit_flow(x, n_blocks=1, hidden=8, epochs=2, batch_size=128, seed=4, progress=False)
    f2 = fit_flow(x, n_blocks=1, hidden=8, epochs=2, batch_size=128, seed=4, progress=False)
    assert torch.equal(f1.log_prob(x), f2.log_prob(x))


def test_fit_flow_noise_fits_the_noise_widened_density():
    """noise_std s: the flow models samples + N(0, s^2), calibration included, so clean data of
    variance v lands at variance v / (v + s^2) after the flow (1 without noise)."""
    x = 0.5 * torch.randn(8000, 4, generator=torch.Generator().manual_seed(2))
    for s, expected in ((0.0, 1.0), (0.5, 0.5)):
        flow = fit_flow(x, n_blocks=1, hidden=16, epochs=3, batch_size=256, seed=0, progress=False, noise_std=s)
        with torch.no_grad():
            u, _ = flow(x)
        assert abs(u.var(0).mean().item() - expected) < 0.1, (s, u.var(0))


def test_fit_flow_rejects_bad_input():
    with pytest.raises(ValueError):
        fit_flow(torch.randn(10), progress=False)


def test_made_with_fewer_hidden_units_than_inputs_stays_autoregressive_and_uses_all_inputs():
    """hidden < dim - 1 (the 512-d flow of the standard preset): degrees are spread over the
    inputs, so the Jacobian is strictly lower triangular and inputs far past `hidden` still
    condition later outputs (with cycling degrees, inputs >= hidden would feed nothing)."""
    from rls_core.flow import MADE

    torch.manual_seed(0)
    dim, hidden = 40, 8
    made = MADE(dim, hidden)
    torch.nn.init.normal_(made.l3.weight)
    x = torch.randn(dim, requires_grad=True)
    jac = torch.autograd.functional.jacobian(lambda v: made(v[None])[0][0], x)  # d mu / d x
    assert torch.all(jac.triu() == 0), "mu_i must not depend on x_j for j >= i"
    used = (jac.abs().sum(0) > 0).nonzero().flatten()
    assert used.max() >= dim - 1 - dim // hidden, f"inputs used only up to {used.max()}"

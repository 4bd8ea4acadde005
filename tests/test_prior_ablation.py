"""benchmarks/prior_ablation.py: the diagnosis that tells a wrong objective from a short search."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "prior_ablation.py"


@pytest.fixture(scope="module")
def ablation():
    return load_script(SCRIPT, "prior_ablation")


def test_generated_crops_are_the_models_single_w_samples(ablation, tiny_model):
    hr, w = ablation.generated_crops(tiny_model, 3)
    assert hr.shape == (3, 2, 32, 32) and w.shape == (3, tiny_model.w_dim)
    again, _ = ablation.generated_crops(tiny_model, 3)
    assert np.array_equal(hr, again)
    # the image is w repeated over every layer, rendered with that sample's own noise
    gens = [torch.Generator().manual_seed(12345 + i) for i in range(3)]
    assert torch.equal(tiny_model.sample_w(gens), w)  # z first, then the noise, from each stream
    with torch.no_grad():
        img = tiny_model.render(w[:, None].repeat(1, tiny_model.num_ws, 1), tiny_model.random_noise(gens))
    np.testing.assert_allclose(hr, img.clamp(0, 1).numpy(), atol=1e-6)


def test_objective_check_scores_both_codes_with_the_searchs_noise(ablation, tiny_model):
    from rls_core.operators import make_operator
    from rls_core.reconstruct import make_reconstructor

    hr, w = ablation.generated_crops(tiny_model, 2)
    y = make_operator("bicubic", 4)(torch.from_numpy(hr)).clamp(0, 1)
    search = make_reconstructor(tiny_model, "rls", 4, "bicubic", 1).search
    # One step keeps the start (the mean w on every layer) as the best iterate, so scoring the
    # mean w as "the truth" must give exactly zero difference in every term.
    mean = tiny_model.w_mean.expand(2, -1)
    _, gap, _ = ablation.objective_check(search, mean, y, 1, [1, 2])
    assert set(gap) == {"fidelity", "p_w_logp", "p_w_norm", "p_cross", "total"}
    for k, v in gap.items():
        np.testing.assert_allclose(v, 0.0, atol=1e-6, err_msg=k)
    # Against the real codes: the start is off-manifold for p_w less than the truth is for
    # fidelity, and the total is the sum of the terms.
    psnr, gap, res = ablation.objective_check(search, w, y, 1, [1, 2])
    assert psnr.shape == (2,) and res.w_plus.shape == (2, tiny_model.num_ws, tiny_model.w_dim)
    assert (gap["fidelity"] > 0).all()  # the truth reproduces its own LR image better than the mean w
    np.testing.assert_allclose(gap["total"], sum(v for k, v in gap.items() if k != "total"), rtol=1e-5)


def test_main_generated_reports_the_objective_columns(ablation, tiny_model_path, capsys):
    assert ablation.main([str(tiny_model_path), "--source", "generated", "--crops", "2", "--steps", "2",
                          "--factor", "4", "--variants", "plain,rls"]) == 0
    out = capsys.readouterr().out
    assert "objective wrong" in out and "p_w_logp" in out
    table = [line for line in out.splitlines() if line.startswith(("plain ", "rls "))]
    assert len(table) == 2 and all(" of 2 " in line for line in table)  # one verdict per variant
    assert "mapped samples: min" in out and out.count("beyond every mapped sample") == 2

"""The tile driver and per-tile random streams: a tile's result does not depend on batching.

"Same result" (docs/reproducibility.md): the same bytes for the same inputs, seed, field name,
device, threads and precision; across batch sizes the random draws are identical and the
outputs agree to rounding. In float64 the batch-dependent sums (convolutions, matrix
products) round at ~1e-16, so only the float32 casts around them remain (< 1e-6). In float32
they round at ~1e-7 per sum, and a few Adam steps amplify that: measured up to 8e-7 after 5
steps on images in [0, 1] (all four searches), so the float32 tests allow 2e-5 (25x), far below
the > 1e-2 that a tile given another tile's draws shows.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from rls_core.api import super_resolve
from rls_core.errors import InputError
from rls_core.methods import METHOD_NAMES, METHODS
from rls_core.model import LoadedModel
from rls_core.reconstruct import make_reconstructor, reconstruct_tiles
from rls_core.search import make_search
from rls_core.operators import make_operator
from rls_core.seeding import TileKey, check_seed, name_hash, tile_seed, tile_seeds

SEARCH_METHODS = [m.name for m in METHODS.values() if m.search is not None]
FACTOR = 8  # the tiny 32-px test model: 4-px LR tiles


def _lr_tiles(n: int, channels: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.05, 0.6, (n, channels, 4, 4)).astype(np.float32)


# ----------------------------------------------------------------------------- seeds

def test_tile_seeds_separate_every_part_of_the_key():
    base = tile_seed(0, TileKey("plate_A01", 2, 3), 0)
    others = [tile_seed(1, TileKey("plate_A01", 2, 3), 0), tile_seed(0, TileKey("plate_A02", 2, 3), 0),
              tile_seed(0, TileKey("plate_A01", 3, 3), 0), tile_seed(0, TileKey("plate_A01", 2, 4), 0),
              tile_seed(0, TileKey("plate_A01", 2, 3), 1), tile_seed(0, TileKey("plate_A01", 3, 2), 0)]
    assert base not in others and len(set(others)) == len(others)
    assert tile_seed(0, TileKey("plate_A01", 2, 3), 0) == base
    assert 0 <= base < 2 ** 63  # torch.Generator.manual_seed takes it
    assert tile_seeds(0, [TileKey("a"), TileKey("b")], 2) == [
        tile_seed(0, TileKey("a"), 0), tile_seed(0, TileKey("a"), 1),
        tile_seed(0, TileKey("b"), 0), tile_seed(0, TileKey("b"), 1)]


def test_name_hash_is_the_same_in_every_process():
    # Python's own hash() of a str changes with PYTHONHASHSEED; ours must not (sharded runs).
    code = "from rls_core.seeding import name_hash; print(name_hash('plate_A01_s1'))"
    env = dict(os.environ, PYTHONHASHSEED="123")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout) == name_hash("plate_A01_s1")


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True, None])
def test_bad_seeds_are_refused(bad):
    with pytest.raises(ValueError, match="seed"):
        check_seed(bad)


def test_super_resolve_refuses_a_negative_seed(tiny_model):
    with pytest.raises(InputError, match="seed"):
        super_resolve(np.zeros((2, 8, 8), np.float32), tiny_model, FACTOR, "plain", steps=1, seed=-3)


# ----------------------------------------------------------------------------- draws

def _split(params, i0: int, i1: int):
    """Tiles i0..i1 of a batch's search variables (tensors and lists of noise maps)."""
    out = {}
    for k, v in params.items():
        if isinstance(v, (list, tuple)):
            out[k] = [t[i0:i1] for t in v]
        else:
            out[k] = v[i0:i1]
    return out


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))
    return torch.equal(a, b)


@pytest.mark.parametrize("method", SEARCH_METHODS)
def test_draws_are_identical_at_batch_sizes_1_7_32(tiny_model, method):
    """Start codes and noise maps of a tile come from its own stream, whatever the batch."""
    op = make_operator("bicubic", FACTOR)
    search = make_search(method, tiny_model, op, start_spread=0.3)  # spread: z is drawn too
    keys = [TileKey("field", r, c) for r in range(4) for c in range(8)]
    seeds = tile_seeds(7, keys)
    full = search.init_params([torch.Generator().manual_seed(s) for s in seeds])
    for batch in (1, 7):
        for i0 in range(0, 32, batch):
            part = search.init_params([torch.Generator().manual_seed(s) for s in seeds[i0:i0 + batch]])
            ref = _split(full, i0, i0 + batch)
            assert all(_same(part[k], ref[k]) for k in part), (method, batch, i0)


# ----------------------------------------------------------------------------- whole searches

class _Float64(nn.Module):
    """Runs a float32 module in float64 and hands float32 back: the batch-dependent sums
    (convolutions, matrix products) then round at 1e-16 instead of 1e-7."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module.double()

    def forward(self, x, **kw):
        if "noise" in kw and kw["noise"] is not None:
            kw["noise"] = [t.double() for t in kw["noise"]]
        out = self.module(x.double(), **kw)
        return tuple(t.float() for t in out) if isinstance(out, tuple) else out.float()


@pytest.fixture(scope="module")
def float64_model(tiny_model):
    m = LoadedModel(tiny_model.bundle, "cpu")
    m._synthesis = _Float64(m.G.synthesis)
    m._flow = _Float64(m.flow())
    return m


def _run(model, method, tiles, keys, batch, steps=5, samples=1):
    recon = make_reconstructor(model, method, FACTOR, samples=samples, steps=steps)
    return reconstruct_tiles(recon, tiles, keys, seed=3, batch_size=batch)


@pytest.mark.parametrize("method", SEARCH_METHODS)
def test_float64_searches_do_not_depend_on_the_batch(float64_model, method):
    tiles = _lr_tiles(9, len(float64_model.channel_names))
    keys = [TileKey("f", i // 3, i % 3) for i in range(9)]
    ref = _run(float64_model, method, tiles, keys, batch=32)
    for batch in (1, 7):
        out = _run(float64_model, method, tiles, keys, batch=batch)
        np.testing.assert_allclose(out.images, ref.images, atol=1e-6, rtol=0)


def test_float32_searches_agree_to_rounding_across_batches(tiny_model):
    tiles = _lr_tiles(9, len(tiny_model.channel_names))
    keys = [TileKey("f", i // 3, i % 3) for i in range(9)]
    ref = _run(tiny_model, "rls", tiles, keys, batch=32, samples=2)
    for batch in (1, 7):
        out = _run(tiny_model, "rls", tiles, keys, batch=batch, samples=2)
        np.testing.assert_allclose(out.images, ref.images, atol=2e-5, rtol=0)
    # Without per-tile streams a tile would get another tile's draws: a real difference.
    shuffled = _run(tiny_model, "rls", tiles, keys[::-1], batch=32, samples=2)
    assert np.abs(shuffled.images - ref.images).max() > 1e-2


def test_a_fields_result_does_not_depend_on_batch_size(tiny_model, generated_field):
    _, lr = generated_field
    a = super_resolve(lr, tiny_model, FACTOR, "rls", steps=8, samples=2, batch_size=32, name="plate_A01")
    b = super_resolve(lr, tiny_model, FACTOR, "rls", steps=8, samples=2, batch_size=3, name="plate_A01")
    np.testing.assert_allclose(a.image, b.image, atol=2e-5 * float(np.ptp(a.image)), rtol=0)
    c = super_resolve(lr, tiny_model, FACTOR, "rls", steps=8, samples=2, batch_size=32, name="plate_A02")
    assert not np.allclose(a.image, c.image, atol=5e-4 * float(np.ptp(a.image)))


# ----------------------------------------------------------------------------- the contract

@pytest.mark.parametrize("method", METHOD_NAMES)
def test_every_method_reconstructs_through_the_one_contract(tiny_model, method):
    tiles = _lr_tiles(3, len(tiny_model.channel_names))
    out = _run(tiny_model, method, tiles, [TileKey(f"c{i}") for i in range(3)], batch=2, steps=3)
    R = tiny_model.resolution
    assert out.images.shape == (3, 1, len(tiny_model.channel_names), R, R)
    assert np.isfinite(out.images).all() and out.images.min() >= 0 and out.images.max() <= 1
    assert out.lr_psnr.shape == (3, 1) and np.isfinite(out.lr_psnr).all()
    assert out.steps == (0 if METHODS[method].search is None else 3)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_evaluate_crops_equal_super_resolve_on_each_crop(tiny_model, method):
    """`rls evaluate` runs crops through the users' driver: a crop's result is what
    super_resolve gives for that crop as a field of the same name."""
    from rls_core.evaluate.run_methods import Variant, run_variant

    tiles = _lr_tiles(2, len(tiny_model.channel_names), seed=1)
    names = ["seed9000/DMSO/site0/y0x0", "seed9000/TNFa/site3/y40x8"]
    res = run_variant(tiny_model, tiles, Variant(method, FACTOR), steps=4, seed=5, batch_size=8,
                      progress=False, names=names)
    for i, name in enumerate(names):
        field = tiny_model.from_unit(tiles[i])  # super_resolve takes full-scale units
        one = super_resolve(field, tiny_model, FACTOR, method, steps=4, seed=5, name=name, overlap=0)
        np.testing.assert_allclose(tiny_model.to_unit(one.image), res.sr[i], atol=2e-5, rtol=0)


@pytest.mark.parametrize("method", SEARCH_METHODS)
def test_unknown_weights_and_bad_knob_are_refused(tiny_model, method):
    with pytest.raises(InputError, match="has no weight"):
        super_resolve(np.zeros((2, 8, 8), np.float32), tiny_model, FACTOR, method, steps=1,
                      weights={"lambda_typo": 1.0})
    with pytest.raises(InputError, match="realism"):
        super_resolve(np.zeros((2, 8, 8), np.float32), tiny_model, FACTOR, method, steps=1, realism=float("nan"))
    for bad in (dict(steps=0), dict(learning_rate=-1.0), dict(learning_rate=float("inf")), dict(refine_steps=-1)):
        with pytest.raises(InputError, match="must be"):
            super_resolve(np.zeros((2, 8, 8), np.float32), tiny_model, FACTOR, method, **{"steps": 1, **bad})


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", METHOD_NAMES)
def test_every_method_is_deterministic(tiny_model_path, method, device):
    from rls_core.model import load_model

    m = load_model(tiny_model_path, device)
    tiles = _lr_tiles(3, len(m.channel_names), seed=2)
    keys = [TileKey("f", 0, i) for i in range(3)]
    a, b = (_run(m, method, tiles, keys, batch=3, steps=3) for _ in range(2))
    assert np.array_equal(a.images, b.images)


@pytest.mark.parametrize("method", [m.name for m in METHODS.values() if m.prior_weights])
def test_the_knob_at_zero_switches_every_prior_off(tiny_model, method):
    spec = METHODS[method]
    assert all(spec.weights_at(0.0)[k] == 0 for k in spec.prior_weights)
    assert spec.weights_at(2.0) == {k: v * (2.0 if k in spec.prior_weights else 1.0)
                                    for k, v in spec.weights_at(1.0).items()}
    tiles = _lr_tiles(2, len(tiny_model.channel_names), seed=4)
    keys = [TileKey("f", 0, i) for i in range(2)]
    knob0 = reconstruct_tiles(make_reconstructor(tiny_model, method, FACTOR, realism=0.0, steps=4), tiles, keys)
    zeroed = reconstruct_tiles(make_reconstructor(tiny_model, method, FACTOR, steps=4,
                                                  weights={k: 0.0 for k in spec.prior_weights}), tiles, keys)
    assert np.array_equal(knob0.images, zeroed.images)


def test_saved_pipelines_choose_methods_the_table_offers():
    """Shared .cppipe files store the module's method label; the table must keep offering it."""
    from pathlib import Path

    from rls_core.methods import MODULE_CHOICES

    root = Path(__file__).resolve().parents[1] / "pipelines"
    labels = [line.split(":", 1)[1].strip() for p in sorted(root.glob("*.cppipe"))
              for line in p.read_text().splitlines() if line.strip().startswith("Method:")]
    assert labels and set(labels) <= set(MODULE_CHOICES), labels


class _NaNFlow(nn.Module):
    """A flow whose density is NaN, as a damaged prior gives."""

    def forward(self, x):
        return x * float("nan"), x.new_full((x.shape[0],), float("nan"))


def test_a_search_whose_loss_turns_nan_is_a_failure_not_a_result(tiny_model):
    from rls_core.errors import SearchError

    m = LoadedModel(tiny_model.bundle, "cpu")
    m._flow = _NaNFlow()
    recon = make_reconstructor(m, "rls", FACTOR, steps=3)
    out = reconstruct_tiles(recon, _lr_tiles(2, len(m.channel_names)), [TileKey("f", 0, i) for i in range(2)])
    assert out.failed.all() and not out.converged.any()
    with pytest.raises(SearchError, match="broke down"):
        super_resolve(np.full((2, 8, 8), 0.02, np.float32), m, FACTOR, "rls", steps=3)
    plain = make_reconstructor(m, "plain", FACTOR, steps=3)  # no flow term: unaffected
    assert not reconstruct_tiles(plain, _lr_tiles(1, 2), [TileKey("f")]).failed.any()


# ----------------------------------------------------------------------------- run to run

@pytest.mark.parametrize("term", ["cross_euclidean", "cross_geodesic", "cross_cosine"])
def test_cross_terms_backward_has_no_order_dependent_accumulation(term):
    """The backward of `w[:, i]` over the row pairs accumulated with index_put(accumulate=True),
    whose multi-threaded CPU kernel adds duplicate rows in a varying order: the same search gave
    different bytes run to run (session 17). The cross terms now gather the pairs by matrix
    products, whose backward is a matmul."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from rls_core import priors

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.seen.append((str(func), args))
            return func(*args, **(kwargs or {}))

    w = torch.randn(5, 12, 16, dtype=torch.float64, requires_grad=True)
    value = getattr(priors, term)(w)
    with Ops() as ops:
        value.sum().backward()
    accumulating = [name for name, args in ops.seen if "index_put" in name and len(args) > 3 and args[3]]
    assert not accumulating, accumulating
    assert torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


_RUN_FIELD = r"""
import hashlib, sys, numpy as np, tifffile, torch
torch.set_num_threads(2)
from rls_core.api import super_resolve
img = [tifffile.imread(f"{sys.argv[1]}/translocation_DMSO_B02_s1_{c}.tif") for c in ("DNA", "NFkB")]
r = super_resolve(img, "translocation", 16, steps=25, name="s1")
print(hashlib.sha256(np.ascontiguousarray(r.image).tobytes()).hexdigest())
"""


def test_the_same_field_gives_the_same_bytes_in_separate_processes():
    """The shipped model's RLS on an example field, three processes, two threads each: the
    same bytes (before session 17's fix, five such runs at 25 steps gave five different results)."""
    from pathlib import Path

    lr = Path(__file__).resolve().parents[1] / "examples" / "translocation" / "lr"
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    digests = {subprocess.run([sys.executable, "-c", _RUN_FIELD, str(lr)], env=env, capture_output=True,
                              text=True, check=True, timeout=600).stdout.strip().splitlines()[-1]
               for _ in range(3)}
    assert len(digests) == 1, digests

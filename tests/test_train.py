"""`rls train`: data grouping and errors, augmentation, discriminator, a tiny training run,
exact resume, weights_only checkpoints and the final bundle (tiny 32-px config, 1 thread)."""
from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import torch.nn.functional as F

from rls_core.generator import _fir_kernel, upfirdn2d
from rls_core.train.augment import AugmentConfig, augment, cutout, translate
from rls_core.train.data import CropSampler, DataError, discover_fields, load_fields
from rls_core.train.discriminator import Discriminator, DiscriminatorConfig, EqualConv2d
from rls_core.train.loop import CHECKPOINT_NAME, RESUME_NAME, TrainConfig, TrainError, train

CHANNELS = ["DNA", "NFkB"]


def _blobs(rng: np.random.Generator, h: int, w: int, n: int = 8) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    img = np.zeros((h, w))
    for _ in range(n):
        cy, cx, s = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, 5)
        img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    img = img / img.max() * 20000 + rng.normal(400, 40, img.shape)
    return np.clip(img, 0, 65535).astype(np.uint16)


def _write_fields(folder: Path, n: int = 3, size=(48, 56), channels=CHANNELS, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        for ch in channels:
            tifffile.imwrite(str(folder / f"translocation_DMSO_B0{i}_s1_{ch}.tif"), _blobs(rng, *size))
    return folder


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = _write_fields(tmp_path_factory.mktemp("fields"))
    # Things that must be ignored: label images, tables, an unrelated channel.
    tifffile.imwrite(str(d / "translocation_DMSO_B00_s1_nuclei.tif"), np.ones((48, 56), np.uint16))
    tifffile.imwrite(str(d / "translocation_DMSO_B00_s1_DNA_labels.tif"), np.ones((48, 56), np.uint16))
    (d / "ground_truth.csv").write_text("field,ratio\nB00,1.0\n")
    return d


def _cfg(data_dir: Path, outdir: Path, **kw) -> TrainConfig:
    base = dict(data_dir=str(data_dir), outdir=str(outdir), name="tiny", channels=list(CHANNELS),
                resolution=32, preset="tiny", iters=4, batch=4, seed=3, r1_interval=2,
                snapshot_every=2, checkpoint_every=100, log_every=1, fit_prior_samples=0,
                threads=1, progress=False)
    base.update(kw)
    return TrainConfig(**base)


def test_ema_half_life_ramps_up_from_scratch_only():
    """From scratch the EMA's half-life grows with the images seen (5 % of them) up to
    ema_kimg; a fine-tune of trained weights gets the full half-life at once."""
    from rls_core.train.loop import ema_beta

    scratch = TrainConfig(data_dir=".", ema_kimg=10.0, ema_rampup=0.05)
    tuned = TrainConfig(data_dir=".", ema_kimg=10.0, ema_rampup=0.05, init_from="run/resume.pt")
    assert ema_beta(scratch, 100, 16) == pytest.approx(0.5 ** (16 / (100 * 16 * 0.05)))
    assert ema_beta(scratch, 100_000, 16) == pytest.approx(0.5 ** (16 / 10_000))
    assert ema_beta(tuned, 100, 16) == pytest.approx(0.5 ** (16 / 10_000))


# ----------------------------------------------------------------------------- data

def test_grouping_normalisation_and_crops(data_dir):
    fs = load_fields(data_dir, CHANNELS, crop=32)
    assert fs.channel_names == CHANNELS and len(fs.fields) == 3
    assert fs.names[0] == "translocation_DMSO_B00_s1" and fs.fields[0].shape == (2, 48, 56)
    raw = tifffile.imread(str(data_dir / "translocation_DMSO_B01_s1_NFkB.tif"))
    all_nfkb = np.concatenate([tifffile.imread(str(p)).ravel() / 65535.0
                               for p in sorted(data_dir.glob("*_s1_NFkB.tif"))])
    lo, hi = np.percentile(all_nfkb, [0.1, 99.9])
    assert fs.normalization[1]["low"] == pytest.approx(lo, rel=1e-4)
    assert fs.normalization[1]["high"] == pytest.approx(hi, rel=1e-4)
    expect = np.clip((raw / 65535.0 - lo) / (hi - lo), 0, 1) * 2 - 1
    np.testing.assert_allclose(fs.fields[1][1].astype(np.float64), expect, atol=2e-3)

    s1, s2 = CropSampler(fs, 32, seed=5), CropSampler(fs, 32, seed=5)
    a = s1.sample(6)
    assert a.shape == (6, 2, 32, 32) and a.dtype == torch.float32
    assert a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, s2.sample(6))
    state = s1.state_dict()
    nxt = s1.sample(3)
    s2.load_state_dict(state)
    assert torch.equal(nxt, s2.sample(3))


def test_multichannel_tiffs_cyx_and_yxc(tmp_path):
    rng = np.random.default_rng(1)
    stack = np.stack([_blobs(rng, 40, 40), _blobs(rng, 40, 40)])
    tifffile.imwrite(str(tmp_path / "f1.tif"), stack)                    # C, Y, X
    tifffile.imwrite(str(tmp_path / "f2.tif"), np.moveaxis(stack, 0, -1))  # Y, X, C
    fs = load_fields(tmp_path, None, crop=32)
    assert fs.channel_names == ["ch0", "ch1"] and fs.layout == "multi-channel files"
    np.testing.assert_array_equal(fs.fields[0], fs.fields[1])
    assert load_fields(tmp_path, ["DNA", "NFkB"], crop=32).channel_names == ["DNA", "NFkB"]
    with pytest.raises(DataError, match="3 \\(A, B, C\\)|names 3"):
        load_fields(tmp_path, ["A", "B", "C"], crop=32)


def test_data_errors(tmp_path):
    with pytest.raises(DataError, match="no training images"):
        discover_fields(tmp_path, CHANNELS)
    d = _write_fields(tmp_path / "missing", n=2)
    (d / "translocation_DMSO_B01_s1_NFkB.tif").unlink()
    with pytest.raises(DataError, match="translocation_DMSO_B01_s1.*NFkB"):
        discover_fields(d, CHANNELS)
    with pytest.raises(DataError, match="--channels.*DNA, NFkB"):
        discover_fields(d, None)
    small = _write_fields(tmp_path / "small", n=1, size=(20, 40))
    with pytest.raises(DataError, match="translocation_DMSO_B00_s1.*smaller than the 32-px"):
        load_fields(small, CHANNELS, crop=32)
    # the searches' intensity rule (rls_core.intensity) applies to training images too: float
    # pixels holding raw counts are refused with the file named, not trained on at a wrong scale
    raw = _write_fields(tmp_path / "rawfloat", n=1)
    bad = raw / "translocation_DMSO_B00_s1_NFkB.tif"
    tifffile.imwrite(str(bad), tifffile.imread(str(bad)).astype(np.float32))
    with pytest.raises(DataError, match="translocation_DMSO_B00_s1_NFkB.tif: values from .* must lie in 0..1; save training images"):
        load_fields(raw, CHANNELS, crop=32)


# ----------------------------------------------------------------------------- modules

def test_augment_ops():
    torch.manual_seed(0)
    x = torch.randn(5, 2, 16, 16, requires_grad=True)
    cfg = AugmentConfig(p=1.0)
    t = translate(x, cfg)
    for i in range(5):  # every output is an integer shift of its input with zeros shifted in
        ok = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                ref = torch.zeros(2, 20, 20)
                ref[:, 2 + dy:18 + dy, 2 + dx:18 + dx] = x[i].detach()
                ok |= torch.equal(t[i].detach(), ref[:, 2:18, 2:18])
        assert ok
    c = cutout(x, cfg)
    zeros = (c.detach() == 0).float().mean(dim=(1, 2, 3))
    assert torch.all(zeros > 0) and torch.all(zeros <= 0.25 + 1e-6)
    y = augment(x, cfg)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert torch.equal(augment(x, AugmentConfig(p=0.0)), x)


def test_discriminator_shapes_and_downsampling():
    for preset, res in [("tiny", 32), ("cpu", 64)]:
        D = Discriminator(DiscriminatorConfig.preset(preset, res, 2))
        out = D(torch.randn(6, 2, res, res))
        assert out.shape == (6,) and torch.isfinite(out).all()
    # the 1x1 skip path: blur then keep every other pixel, as in StyleGAN2's downsample2d
    conv = EqualConv2d(3, 4, 1, bias=False, activation=False, down=True).double()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    ref = upfirdn2d(x, _fir_kernel((1, 3, 3, 1)).double(), pad=(1, 1, 1, 1))[:, :, ::2, ::2]
    ref = torch.nn.functional.conv2d(ref, conv.weight * conv.weight_gain)
    torch.testing.assert_close(conv(x), ref)
    conv3 = EqualConv2d(3, 4, 3, down=True)
    assert conv3(torch.randn(1, 3, 16, 16)).shape == (1, 4, 8, 8)


# ----------------------------------------------------------------------------- training

def _ckpt(outdir: Path) -> dict:
    return torch.load(outdir / CHECKPOINT_NAME, map_location="cpu", weights_only=True)


def test_train_run_checkpoint_and_bundle(data_dir, tmp_path):
    from rls_core.bundle import load_bundle

    out = tmp_path / "run"
    path = train(_cfg(data_dir, out, pl_weight=2.0, pl_interval=2, fit_prior_samples=300, flow_epochs=1))
    assert path == out / "tiny.h5"
    rows = list(csv.DictReader(open(out / "train_log.csv")))
    assert len(rows) == 4
    assert all(math.isfinite(float(r["D"])) and math.isfinite(float(r["G"])) for r in rows)
    assert any(r["R1"] for r in rows) and any(r["pl"] for r in rows)
    ck = _ckpt(out)  # weights_only=True: no arbitrary pickles in the checkpoint
    assert ck["iteration"] == 4 and set(ck) >= {"G", "D", "G_ema", "opt_G", "opt_D", "rng"}
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["reals.png", "samples_000004.png", "samples_final.png"]

    b = load_bundle(path)
    assert b.channel_names == CHANNELS and b.has_prior
    assert [n["low"] for n in b.normalization] == pytest.approx([n["low"] for n in ck["data"]["normalization"]])
    prov = b.provenance
    assert prov["iterations"] == 4 and prov["kimg"] == pytest.approx(0.016)
    assert prov["data"]["n_fields"] == 3 and prov["data"]["channels"] == CHANNELS
    # a bundle travels: no absolute path of the training machine in it
    assert not Path(prov["data"]["folder"]).is_absolute() and prov["data"]["folder"].endswith(data_dir.name)
    for key in ("command", "wall_time_s", "device", "torch", "date", "git_commit", "train_config"):
        assert key in prov
    # the one provenance shape of a fitted prior (as `rls fit-prior` and `rls import --fit-prior` write it)
    assert set(prov["prior"]) == {"fitted", "n_samples", "flow", "flow_epochs", "flow_noise", "seed", "seconds"}
    assert prov["prior"]["n_samples"] == 300 and prov["prior"]["flow_epochs"] == 1
    G = b.build_generator()
    assert G.cfg.resolution == 32 and G.cfg.img_channels == 2
    assert float(G.w_avg.abs().sum()) > 0  # w_avg estimated at the end
    img = G.synthesis(G.w_avg[None, None].repeat(1, G.num_ws, 1))
    assert img.shape == (1, 2, 32, 32) and torch.isfinite(img).all()


def test_resume_is_bit_identical(data_dir, tmp_path):
    kw = dict(iters=6, pl_weight=1.0, pl_interval=3, r1_interval=2)
    straight = tmp_path / "straight"
    train(_cfg(data_dir, straight, **kw))
    split = tmp_path / "split"
    # a time limit that is always exceeded: stops after the first iteration, checkpointed
    stopped = train(_cfg(data_dir, split, time_limit=1e-6, **kw))
    assert stopped == split / CHECKPOINT_NAME and _ckpt(split)["iteration"] == 1
    assert not (split / "tiny.h5").exists()
    with pytest.raises(TrainError, match="--resume"):
        train(_cfg(data_dir, split, **kw))
    train(_cfg(data_dir, split, iters=3, resume=True))  # kw come back from the checkpoint
    assert _ckpt(split)["iteration"] == 3
    train(_cfg(data_dir, split, resume=True, **kw))
    a, b = _ckpt(straight), _ckpt(split)
    assert b["iteration"] == 6 and len(b["commands"]) == 3
    for key in ("G", "D", "G_ema"):
        for name, t in a[key].items():
            assert torch.equal(t, b[key][name]), f"{key}.{name} differs after resume"
    for key in ("opt_G", "opt_D"):
        for pid, s in a[key]["state"].items():
            for name, t in s.items():
                assert torch.equal(t, b[key]["state"][pid][name]), f"{key} {pid} {name}"
    assert torch.equal(a["pl_mean"], b["pl_mean"])


def test_slim_resume_checkpoint(data_dir, tmp_path):
    """The checkpoint kept in the repository: D in float16 and the run state, the generator
    from the bundle beside it. Resuming from the two files continues the run (iteration,
    data order) with finite losses near those before the stop; a bundle from another
    iteration is refused with the fix in the message."""
    import shutil

    straight = tmp_path / "straight"  # the same run without a stop, for comparison
    train(_cfg(data_dir, straight, iters=12))
    reference = [float(r["D"]) for r in csv.DictReader(open(straight / "train_log.csv"))]
    out = tmp_path / "run"
    train(_cfg(data_dir, out, iters=6, fit_prior_samples=300, flow_epochs=1))
    slim = torch.load(out / RESUME_NAME, map_location="cpu", weights_only=True)
    assert slim["slim"] and slim["iteration"] == 6 and slim["bundle"] == "tiny.h5"
    assert not {"G", "G_ema", "opt_G", "opt_D"} & set(slim)
    assert all(t.dtype == torch.float16 for t in slim["D"].values() if t.is_floating_point())
    assert (out / RESUME_NAME).stat().st_size < (out / CHECKPOINT_NAME).stat().st_size / 3

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copy(out / RESUME_NAME, resumed / CHECKPOINT_NAME)
    shutil.copy(out / "tiny.h5", resumed / "tiny.h5")
    train(_cfg(data_dir, resumed, iters=12, resume=True))
    after = [float(r["D"]) for r in csv.DictReader(open(resumed / "train_log.csv"))]
    assert _ckpt(resumed)["iteration"] == 12 and len(after) == 6
    # Stable: D's mean loss after the slim resume stays within a quarter of the range the
    # uninterrupted run itself covers over the same iterations' neighbourhood (measured:
    # within 0.01 of it; a divergence sends it towards 0 or far above 2 ln 2).
    spread = max(reference) - min(reference)
    assert all(math.isfinite(d) for d in after)
    assert abs(np.mean(after) - np.mean(reference[6:])) <= spread / 4, (reference, after)

    # The bundle must be the one written with the checkpoint.
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(out / RESUME_NAME, other / CHECKPOINT_NAME)
    shutil.copy(resumed / "tiny.h5", other / "tiny.h5")
    with pytest.raises(TrainError, match="bundle written beside it"):
        train(_cfg(data_dir, other, iters=14, resume=True))


def test_finish_and_cli(data_dir, tmp_path, capsys):
    from rls_core.bundle import load_bundle
    from rls_core.train.cli import add_arguments, config_from_args, main, run

    parser = add_arguments(argparse.ArgumentParser(prog="rls train"))
    help_text = parser.format_help()
    assert "docs/performance.md" in help_text and "example" in help_text and "--resume" in help_text
    out = tmp_path / "cli"
    args = parser.parse_args([str(data_dir), "-o", str(out), "--channels", "DNA,NFkB", "--name", "m",
                              "--resolution", "32", "--preset", "tiny", "--iters", "2", "--batch", "4",
                              "--threads", "1", "--fit-prior-samples", "0", "--no-progress"])
    assert run(args) == 0
    assert load_bundle(out / "m.h5").provenance["iterations"] == 2
    (out / "m.h5").unlink()
    args = parser.parse_args(["-o", str(out), "--finish", "--name", "m2", "--fit-prior-samples", "0",
                              "--no-progress"])
    assert run(args) == 0 and (out / "m2.h5").exists()
    # --export raw: the bundle holds G itself (float16), not its moving average
    args = parser.parse_args(["-o", str(out), "--finish", "--name", "m3", "--fit-prior-samples", "0",
                              "--export", "raw", "--no-progress"])
    assert run(args) == 0
    raw, ck = load_bundle(out / "m3.h5"), _ckpt(out)
    assert raw.provenance["exported_generator"] == "raw"
    assert load_bundle(out / "m2.h5").provenance["exported_generator"] == "ema"
    for name, g in ck["G"].items():
        if name != "mapping.w_avg":  # (estimated at the finish)
            b = torch.from_numpy(np.asarray(raw.generator_state[name])).float()
            assert torch.equal(b, g.half().float()), name
    assert any(not torch.equal(ck["G"][k], ck["G_ema"][k]) for k in ck["G"] if k != "mapping.w_avg")
    assert main([str(tmp_path / "nowhere"), "-o", str(tmp_path / "x"), "--no-progress"]) == 2
    # --export best without measurements: refused with the option that fixes it (exit 2, no traceback)
    assert main([str(data_dir), "-o", str(tmp_path / "y"), "--export", "best", "--no-progress"]) == 2
    assert not (tmp_path / "y" / CHECKPOINT_NAME).exists()
    err = capsys.readouterr().err
    assert err.count("rls train: error:") == 2 and "--metrics-every" in err and "Traceback" not in err
    assert config_from_args(parser.parse_args([str(data_dir), "-o", "o", "--metrics-every", "7"])).metrics_every == 7


def test_noise_default_and_checkpoints_from_before_it(data_dir, tmp_path):
    """A fresh run puts noise only in the two finest blocks and records it; a checkpoint from
    before the setting (no such key) resumes with noise at every layer, as it was trained."""
    fresh = tmp_path / "fresh"
    train(_cfg(data_dir, fresh, iters=1))
    ck = _ckpt(fresh)
    assert ck["config"]["noise_min_res"] == 16 and ck["generator_config"]["noise_min_res"] == 16

    out = tmp_path / "old"  # an old checkpoint: noise everywhere, and no key that says so
    train(_cfg(data_dir, out, iters=2, noise_min_res=4))
    ck = _ckpt(out)
    del ck["config"]["noise_min_res"], ck["generator_config"]["noise_min_res"]
    torch.save(ck, out / CHECKPOINT_NAME)
    train(_cfg(data_dir, out, iters=3, resume=True))
    after = _ckpt(out)
    assert after["generator_config"]["noise_min_res"] == 4 and after["config"]["noise_min_res"] == 4
    # every layer's noise strength is still a trained parameter (moved away from its zero start)
    assert all(float(t) != 0 for k, t in after["G"].items() if k.endswith("noise_strength"))


def _one_iteration(fakes: str, it: int = 1):
    """One `_iteration` of a tiny fresh state: the inputs D saw and the gradients each
    optimiser stepped with (recorded at its step), and a copy of D from before."""
    import copy

    from rls_core.train import loop

    cfg = TrainConfig(resolution=32, preset="tiny", batch=4, seed=5, fakes=fakes, noise_min_res=16)
    st = loop._build(cfg, *loop._configs(cfg, 2), torch.device("cpu"))
    st.iteration = it  # 1: no R1 this iteration
    D0, seen, grads = copy.deepcopy(st.D), [], {}
    forward = st.D.forward
    st.D.forward = lambda x: seen.append(x.detach().clone()) or forward(x)
    for name, opt, module in (("G", st.opt_G, st.G), ("D", st.opt_D, st.D)):
        def step(_opt=opt, _name=name, _module=module, _step=opt.step):
            grads[_name] = [p.grad.clone() for p in _module.parameters()]
            return _step()
        opt.step = step
    torch.manual_seed(11)
    real = torch.rand(4, 2, 32, 32) * 2 - 1
    loop._iteration(st, cfg, real, AugmentConfig(p=0.5))
    return seen, grads, D0


def test_shared_fakes_give_d_the_g_steps_batch_with_the_same_gradients():
    """`fakes="shared"`: D's step is computed on the very batch the G step made
    and showed D (two D forwards per iteration instead of three, one G forward instead of
    two), with D's exact gradient of its loss on that batch and the reals; G's step is the
    same as with fresh fakes."""
    assert TrainConfig().fakes == "shared"  # the default since 0.4.3
    seen, grads, D0 = _one_iteration("shared")
    assert len(seen) == 2  # G's fakes (as augmented), the reals
    fake, real = seen
    D0.zero_grad()
    (F.softplus(D0(fake)).mean() + F.softplus(-D0(real)).mean()).backward()
    for g, p in zip(grads["D"], D0.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-7)
    seen_fresh, grads_fresh, _ = _one_iteration("fresh")
    assert len(seen_fresh) == 3 and torch.equal(seen_fresh[0], fake)  # same draws up to G's step
    for a, b in zip(grads["G"], grads_fresh["G"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert not torch.equal(seen_fresh[1], fake)  # fresh: D's step draws a new batch


def test_fakes_setting_checkpoints_from_before_it_and_cli(data_dir, tmp_path, capsys):
    """A run records its --fakes (not asked: shared); a checkpoint from before the setting
    resumes with fresh fakes, as it was trained, and says nothing about it; a wrong value is
    refused."""
    from rls_core.train.cli import add_arguments, config_from_args

    out = tmp_path / "old"
    train(_cfg(data_dir, out, iters=1, fakes=None))
    ck = _ckpt(out)
    assert ck["config"]["fakes"] == "shared"
    del ck["config"]["fakes"]
    torch.save(ck, out / CHECKPOINT_NAME)
    capsys.readouterr()
    train(_cfg(data_dir, out, iters=2, resume=True, fakes=None))  # the CLI's "not asked"
    assert _ckpt(out)["config"]["fakes"] == "fresh" and "fakes=" not in capsys.readouterr().err
    parser = add_arguments(argparse.ArgumentParser(prog="rls train"))
    assert config_from_args(parser.parse_args([str(data_dir), "-o", "o"])).fakes is None
    assert config_from_args(parser.parse_args([str(data_dir), "-o", "o", "--fakes", "fresh"])).fakes == "fresh"
    with pytest.raises(TrainError, match="--fakes must be one of shared, fresh"):
        train(_cfg(data_dir, tmp_path / "bad", fakes="stale"))


def test_init_from_checkpoint_and_bundle(data_dir, tmp_path):
    """--init-from starts a new run from trained weights: from a slim resume checkpoint G (the
    bundle's EMA) and D, from a bundle G alone; coarse noise is switched off when the new run
    asks for it; a source of another shape is refused with what to change."""
    import shutil

    from rls_core.bundle import load_bundle

    src = tmp_path / "src"
    train(_cfg(data_dir, src, iters=4, noise_min_res=4, fit_prior_samples=300, flow_epochs=1))
    moved = tmp_path / "kept"  # as in the repository: resume.pt and its bundle in another folder
    moved.mkdir()
    shutil.copy(src / RESUME_NAME, moved / "tiny.pt")
    shutil.copy(src / "tiny.h5", moved / "tiny.h5")
    slim = torch.load(src / RESUME_NAME, map_location="cpu", weights_only=True)
    g_src = {k: torch.from_numpy(np.asarray(v)) for k, v in load_bundle(src / "tiny.h5").generator_state.items()}

    out = tmp_path / "tuned"  # zero iterations: the written model is the starting point
    train(_cfg(data_dir, out, iters=0, init_from=str(moved / "tiny.pt"), noise_min_res=16, fit_prior_samples=0))
    tuned = load_bundle(out / "tiny.h5")
    assert tuned.provenance["train_config"]["init_from"] == str(moved / "tiny.pt")
    assert tuned.generator_config["noise_min_res"] == 16
    for name, v in tuned.generator_state.items():
        t = torch.from_numpy(np.asarray(v))
        if name.endswith("noise_strength") and ".b16." not in name and ".b32." not in name:
            assert float(t) == 0.0, name  # coarse noise switched off
        elif name != "mapping.w_avg":  # (w_avg is estimated again at the end)
            assert torch.equal(t, g_src[name].to(t.dtype)), name
    d_tuned = torch.load(out / RESUME_NAME, map_location="cpu", weights_only=True)["D"]
    for name, t in d_tuned.items():
        assert torch.equal(t, slim["D"][name].to(t.dtype)), name

    out2 = tmp_path / "from_bundle"  # D starts afresh, as wide as the source generator
    train(_cfg(data_dir, out2, iters=1, preset="cpu", init_from=str(moved / "tiny.h5")))
    ck2 = _ckpt(out2)
    assert ck2["iteration"] == 1
    # A fine-tune's EMA has its full half-life from the first step (no ramp-up): after one step
    # it has moved 1 - beta = 0.03 % of the way from the starting G to the trained one; with
    # the from-scratch ramp-up it would have jumped (almost) all the way. (10 %: float32 rounding of
    # such small steps on weights of order 1.)
    # (w_avg is estimated at the end; the coarse noise strengths were zeroed at the start)
    start = {k: t.float() for k, t in load_bundle(moved / "tiny.h5").generator_tensors().items()
             if k != "mapping.w_avg" and not k.endswith("noise_strength")}
    moved_ema = sum(float((ck2["G_ema"][k] - start[k]).square().sum()) for k in start)
    moved_g = sum(float((ck2["G"][k] - start[k]).square().sum()) for k in start)
    assert moved_g > 0 and math.sqrt(moved_ema / moved_g) == pytest.approx(1 - 0.5 ** (4 / 10_000), rel=0.1)
    assert list(ck2["generator_config"]["channels"]) == list(slim["generator_config"]["channels"])
    assert list(ck2["discriminator_config"]["channels"]) == list(slim["discriminator_config"]["channels"])
    with pytest.raises(TrainError, match="2 channel.*this run has 1 channel"):
        train(_cfg(data_dir, tmp_path / "wrong", channels=["DNA"], init_from=str(moved / "tiny.h5")))
    with pytest.raises(TrainError, match="init-from"):
        train(_cfg(data_dir, tmp_path / "missing", init_from=str(tmp_path / "nothing.h5")))
    with pytest.raises(TrainError, match="no such checkpoint"):
        train(_cfg(data_dir, tmp_path / "missing2", init_from=str(tmp_path / "nothing.pt")))


def test_coverage_loss_pulls_samples_onto_the_real_lr_images():
    """The coverage loss (nearest of K single-w samples, in the LR image) makes G cover the
    real crops, not just their mean: after 100 Adam steps on it alone, the 8 real crops'
    squared LR distance to the nearest of 64 fresh samples is, on average, below 0.65x the
    distance by which the crops spread around their mean (the best a G collapsed onto the
    mean could do). Measured with torch seeds 0-3 (this test uses 0): 0.45-0.51 with the
    nearest-neighbour choice, 0.76-0.79 when each crop is matched to a random sample instead
    (mean fitting), so 0.65 tells the two apart. One thread: ~2 s."""
    from rls_core.generator import Generator, GeneratorConfig
    from rls_core.train.coverage import _single_w, coverage_loss, lr_operator

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: more threads only contend with a busy machine
    try:
        torch.manual_seed(0)
        G = Generator(GeneratorConfig.preset("tiny", 32, 2, 4))
        rng = np.random.default_rng(1)
        blobs = np.stack([_blobs(rng, 32, 32) for _ in range(8)]).astype(np.float32) / 20400
        real = torch.from_numpy(blobs)[:, None].repeat(1, 2, 1, 1) * 2 - 1
        opt = torch.optim.Adam(G.parameters(), lr=0.01)
        for _ in range(100):
            loss = coverage_loss(G, real, factor=8, candidates=16)
            opt.zero_grad()
            loss.backward()
            opt.step()
        op = lr_operator(8)
        with torch.no_grad():
            lr_real = op(real).flatten(1)
            lr_fake = op(G.synthesis(_single_w(G, torch.randn(64, G.cfg.z_dim)), noise_mode="random")).flatten(1)
            nearest = torch.cdist(lr_real, lr_fake).square().min(dim=1).values.mean()
            collapsed = (lr_real - lr_real.mean(0)).square().sum(1).mean()
    finally:
        torch.set_num_threads(threads)
    assert float(nearest / collapsed) < 0.65, float(nearest / collapsed)
    with pytest.raises(ValueError, match="cannot be reduced"):
        coverage_loss(G, real, factor=5, candidates=4)


def test_training_with_coverage_logs_it(data_dir, tmp_path):
    """--coverage-weight adds the lazily applied loss to a real run (its column in the log)
    and is refused where it cannot work."""
    out = tmp_path / "cov"
    train(_cfg(data_dir, out, iters=4, coverage_weight=1.0, coverage_factor=8, coverage_candidates=8,
               coverage_interval=2))
    with open(out / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    logged = [float(r["coverage"]) for r in rows if r["coverage"]]
    assert len(logged) >= 2 and all(math.isfinite(v) and v > 0 for v in logged)
    with pytest.raises(TrainError, match="coverage-factor"):
        train(_cfg(data_dir, tmp_path / "bad", coverage_weight=1.0, coverage_factor=7))
    with pytest.raises(TrainError, match="coverage-weight"):
        train(_cfg(data_dir, tmp_path / "bad2", coverage_weight=float("nan")))


def test_a_log_begun_by_an_older_version_keeps_its_columns(tmp_path):
    """Resuming a run whose train_log.csv predates the coverage column appends rows that
    follow the file's own header, so the CSV stays rectangular."""
    from rls_core.train.loop import LOG_NAME, _append_log

    log = tmp_path / LOG_NAME
    log.write_text("iteration,kimg,D,G,R1,pl,s_per_iter,wall_s\n1,0.016,0.5,2,,,1.0,1.0\n")
    _append_log(log, {"iteration": 2, "kimg": 0.032, "D": 0.4, "G": 2.1, "coverage": 0.07, "s_per_iter": 1.0,
                      "wall_s": 2.0})
    with open(log) as f:
        rows = list(csv.reader(f))
    assert [len(r) for r in rows] == [8, 8, 8] and rows[2][0] == "2" and rows[2][3] == "2.1"
    fresh = tmp_path / "new.csv"  # a new file gets every column, coverage included
    _append_log(fresh, {"iteration": 1, "coverage": 0.07})
    assert fresh.read_text().splitlines()[0].endswith(",coverage")


def test_d_warmup_trains_only_the_discriminator_first(data_dir, tmp_path):
    """--d-warmup N: the first N iterations of a run step D alone; G and its EMA keep the
    starting weights bit for bit, the log keeps a G column; from iteration N on G trains."""
    src = tmp_path / "src"
    train(_cfg(data_dir, src, iters=3, fit_prior_samples=0))
    start = _ckpt(src)

    warm = tmp_path / "warm"
    train(_cfg(data_dir, warm, iters=3, d_warmup=3, init_from=str(src / CHECKPOINT_NAME), fit_prior_samples=0))
    ck = _ckpt(warm)
    for k in start["G_ema"]:  # --init-from a full checkpoint starts G and its EMA from its EMA
        assert torch.equal(ck["G"][k], start["G_ema"][k]), k
        assert torch.equal(ck["G_ema"][k], start["G_ema"][k]), k
    assert any(not torch.equal(ck["D"][k], start["D"][k]) for k in start["D"])
    with open(warm / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(math.isfinite(float(r["G"])) for r in rows)

    after = tmp_path / "after"  # one iteration past the warm-up: G has moved
    train(_cfg(data_dir, after, iters=3, d_warmup=2, init_from=str(src / CHECKPOINT_NAME), fit_prior_samples=0))
    assert any(not torch.equal(_ckpt(after)["G"][k], start["G_ema"][k]) for k in start["G_ema"])
    with pytest.raises(TrainError, match="d-warmup"):
        train(_cfg(data_dir, tmp_path / "bad", d_warmup=-1))


@pytest.mark.filterwarnings("ignore:accel 'bf16'")
def test_bf16_autocast_training_runs_and_compile_is_refused(data_dir, tmp_path):
    """`--accel bf16` trains (main passes in bfloat16, losses and R1 in float32): finite
    losses, R1 applied; compile is for searches only and is refused with the reason."""
    out = tmp_path / "bf16"
    train(_cfg(data_dir, out, accel="bf16"))
    rows = list(csv.DictReader(open(out / "train_log.csv")))
    assert len(rows) == 4 and all(math.isfinite(float(r["D"])) and math.isfinite(float(r["G"])) for r in rows)
    assert any(r["R1"] for r in rows)
    assert _ckpt(out)["config"]["accel"] == "bf16"
    with pytest.raises(TrainError, match="double backward"):
        train(_cfg(data_dir, tmp_path / "c", accel="compile"))


def test_metrics_keep_the_best_snapshot_and_leave_training_alone(data_dir, tmp_path):
    """--metrics-every measures SWD of G and its EMA with its own draws: the run's weights are
    the same with and without it, a split run measures the same figures, best.pt holds the
    generator of the lowest figure and --export best writes exactly that generator."""
    from rls_core.bundle import load_bundle
    from rls_core.train.monitor import BEST_NAME, METRICS_NAME, read_metrics

    kw = dict(iters=6, r1_interval=2)
    plain, measured, split = tmp_path / "plain", tmp_path / "measured", tmp_path / "split"
    train(_cfg(data_dir, plain, **kw))
    train(_cfg(data_dir, measured, metrics_every=2, **kw))
    a, b = _ckpt(plain), _ckpt(measured)
    for key in ("G", "D", "G_ema"):
        for name, t in a[key].items():
            assert torch.equal(t, b[key][name]), f"{key}.{name} changed by measuring"

    rows = read_metrics(measured / METRICS_NAME)
    assert [int(r["iteration"]) for r in rows] == [2, 4, 6]
    swd, gen, it = math.inf, None, None
    for r in rows:  # the running minimum over both generators (a tie keeps the earlier), and who scored it
        for col, name in (("swd_G", "raw"), ("swd_G_ema", "ema")):
            if float(r[col]) < swd:
                swd, gen, it = float(r[col]), name, int(r["iteration"])
        # Early in a run G_ema is within rounding of G: the CSV's 6 digits may show a tie that the
        # monitor's float32 figures broke either way.
        tied = {name for col, name in (("swd_G", "raw"), ("swd_G_ema", "ema"))
                if int(r["iteration"]) == it and float(r[col]) == swd}
        assert float(r["best_swd"]) == pytest.approx(swd, rel=1e-5)
        assert int(r["best_iteration"]) == it and r["best_generator"] in (tied or {gen})
        gen = r["best_generator"]
        assert math.isfinite(swd) and swd > 0
    assert (measured / "metrics.png").stat().st_size > 0
    assert b["best"] == {"iteration": it, "generator": gen, "swd": pytest.approx(swd, rel=1e-5)}

    train(_cfg(data_dir, split, metrics_every=2, time_limit=1e-6, **kw))  # stops after iteration 1
    train(_cfg(data_dir, split, metrics_every=2, resume=True, **kw))
    again = read_metrics(split / METRICS_NAME)
    assert [(r["swd_G"], r["swd_G_ema"], r["best_iteration"]) for r in again] == \
        [(r["swd_G"], r["swd_G_ema"], r["best_iteration"]) for r in rows]

    best = torch.load(measured / BEST_NAME, map_location="cpu", weights_only=True)
    assert best["best"]["iteration"] == it
    train(_cfg(data_dir, measured, finish=True, name="best", export="best"))
    bundle = load_bundle(measured / "best.h5")
    assert bundle.provenance["exported_generator"] == "best"
    assert bundle.provenance["best"]["iteration"] == it and bundle.provenance["iterations"] == 6
    for name, g in best["G"].items():
        if name != "mapping.w_avg":  # (estimated at the finish)
            got = torch.from_numpy(np.asarray(bundle.generator_state[name])).float()
            assert torch.equal(got, g.half().float()), name

    # a run shorter than --metrics-every (as a time-limited chunk on a GPU can be): its last state
    # is measured too, so --export best has a generator to write
    short = tmp_path / "short"
    train(_cfg(data_dir, short, metrics_every=5, export="best", name="short", iters=3, r1_interval=2))
    assert [int(r["iteration"]) for r in read_metrics(short / METRICS_NAME)] == [3]
    assert load_bundle(short / "short.h5").provenance["best"]["iteration"] == 3

    with pytest.raises(TrainError, match="--metrics-every"):
        train(_cfg(data_dir, tmp_path / "nometrics", export="best"))
    with pytest.raises(TrainError, match="best.pt"):
        train(_cfg(data_dir, plain, finish=True, name="x", export="best"))


@pytest.mark.parametrize("extra, message", [
    (["--resolution", "100"], "resolution must be a power of two"), (["--lr", "-1"], "--lr must be a finite"),
    (["--flow-epochs", "0"], "--flow-epochs must be >= 1"), (["--fit-prior-samples", "1"], "--fit-prior-samples")])
def test_settings_no_run_could_use_stop_before_training(tmp_path, extra, message):
    """Refused when the command is read, not as a traceback, nor (the prior's) after hours of training."""
    from rls_core.train.cli import add_arguments, config_from_args

    args = add_arguments(argparse.ArgumentParser()).parse_args([str(tmp_path), "-o", str(tmp_path / "run"), "--channels", "DNA", *extra])
    with pytest.raises(SystemExit, match=message):
        config_from_args(args)
    assert not (tmp_path / "run").exists()

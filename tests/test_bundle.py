"""Model bundle round trip and every bad-file error (each must name the file and the problem)."""
import pickle

import h5py
import numpy as np
import pytest
import torch

from rls_core.bundle import BundleError, FORMAT_VERSION, load_bundle, save_bundle, bundle_summary
from rls_core.registry import resolve_model


def test_round_trip(tiny_model_path, tmp_path):
    b = load_bundle(tiny_model_path)
    assert b.channel_names == ["DNA", "NFkB"] and b.has_prior
    G = b.build_generator()
    out = save_bundle(b, tmp_path / "copy.h5")
    b2 = load_bundle(out)
    G2 = b2.build_generator()
    z = torch.randn(2, G.cfg.z_dim)
    assert torch.equal(G(z), G2(z))
    assert b2.provenance == b.provenance
    for k in b.latent:
        np.testing.assert_array_equal(b.latent[k], b2.latent[k])
    f1, f2 = b.build_flow(), b2.build_flow()
    x = torch.randn(5, G.cfg.w_dim)
    assert torch.equal(f1.log_prob(x), f2.log_prob(x))
    assert "DNA, NFkB" in bundle_summary(b2)
    assert "noise        at every layer" in bundle_summary(b2)


def test_noise_min_res_round_trip(tmp_path):
    """A generator with noise only at fine layers comes back the same from its bundle, noise
    setting included, and `rls info` says where its noise enters."""
    from rls_core.bundle import ModelBundle
    from rls_core.generator import Generator, GeneratorConfig

    G = Generator(GeneratorConfig.preset("tiny", 32, 2, noise_min_res=16)).eval()
    b = load_bundle(save_bundle(ModelBundle.from_generator(G, ["DNA", "NFkB"]), tmp_path / "fine.h5"))
    G2 = b.build_generator()
    assert G2.cfg.noise_min_res == 16
    assert [l.use_noise for l in G2.synthesis.layers()] == [l.resolution >= 16 for l in G2.synthesis.layers()]
    z = torch.randn(2, G.cfg.z_dim)
    assert torch.equal(G(z), G2(z))
    assert "noise        at layers of 16 px and up" in bundle_summary(b)


def _copy(src, dst):
    dst.write_bytes(src.read_bytes())
    return dst


def test_missing_file(tmp_path):
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "nope.h5")


def test_not_hdf5(tmp_path):
    p = tmp_path / "model.pt"
    with open(p, "wb") as fh:
        pickle.dump({"g_ema": 1}, fh)
    with pytest.raises(BundleError, match=r"model\.pt: not an HDF5 file.*rls import"):
        load_bundle(p)


def test_truncated(tiny_model_path, tmp_path):
    data = tiny_model_path.read_bytes()
    p = tmp_path / "cut.h5"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match=r"cut\.h5: .*(truncated|damaged)"):
        load_bundle(p)


def test_other_hdf5(tmp_path):
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as h5:
        h5["x"] = np.zeros(3)
    with pytest.raises(BundleError, match="not a SuperResolveRLS model bundle"):
        load_bundle(p)


def test_future_version(tiny_model_path, tmp_path):
    p = _copy(tiny_model_path, tmp_path / "future.h5")
    with h5py.File(p, "a") as h5:
        h5.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(BundleError, match="newer SuperResolveRLS.*upgrade"):
        load_bundle(p)


def _reseal(p):
    """Recompute the checksum after an in-place edit: a file whose contents are wrong but whose
    checksum matches, as a buggy writer would produce; the semantic checks must catch it."""
    from rls_core.bundle import _read_group, content_sha256

    with h5py.File(p, "a") as h5:
        texts = {k: str(h5["meta"].attrs[k]) for k in ("generator", "channels", "normalization", "provenance")}
        groups = {g: (_read_group(h5[g]) if g in h5 else None) for g in ("generator", "latent", "flow")}
        if "flow" in h5:
            texts["flow_config"] = str(h5["flow"].attrs["config"])
        h5.attrs["content_sha256"] = content_sha256(groups, texts)


def test_any_change_without_its_checksum_is_refused(tiny_model_path, tmp_path):
    p = _copy(tiny_model_path, tmp_path / "edited.h5")
    with h5py.File(p, "a") as h5:
        d = h5["flow/mades/0/l2/weight"]
        d[0, 0] = d[0, 0] + 0.5  # a plausible, finite value: only the checksum can tell
    with pytest.raises(BundleError, match="edited.h5: is damaged.*checksum"):
        load_bundle(p)


def test_random_bytes_in_the_flow_weights_are_refused(tiny_model_path, tmp_path):
    """The case from the bug report: bytes overwritten inside the file's flow weights."""
    p = _copy(tiny_model_path, tmp_path / "noise.h5")
    with h5py.File(p, "r") as h5:
        info = h5["flow/mades/1/l2/weight"].id.get_chunk_info(0)  # compressed: one chunk
    raw = bytearray(p.read_bytes())
    n = min(64, info.size)
    raw[info.byte_offset:info.byte_offset + n] = np.random.default_rng(0).bytes(n)
    p.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="noise.h5"):
        load_bundle(p)


def test_a_bundle_without_a_checksum_loads_with_a_notice(tiny_model_path, tmp_path, caplog):
    p = _copy(tiny_model_path, tmp_path / "old.h5")
    with h5py.File(p, "a") as h5:
        del h5.attrs["content_sha256"]
    with caplog.at_level("WARNING", logger="rls_core.bundle"):
        b = load_bundle(p)
    assert b.has_prior and "without one" in caplog.text


def _resealed_edit(src, dest, edit):
    """A copy of `src` changed by `edit(h5)` and resealed (see _reseal)."""
    p = _copy(src, dest)
    with h5py.File(p, "a") as h5:
        edit(h5)
    _reseal(p)
    return p


@pytest.mark.parametrize("array", ["latent/w_std", "flow/mades/0/l1/bias"])
def test_nan_anywhere_is_refused(tiny_model_path, tmp_path, array):
    def put_nan(h5):
        h5[array][0] = np.nan

    with pytest.raises(BundleError, match="NaN"):
        load_bundle(_resealed_edit(tiny_model_path, tmp_path / "nan_any.h5", put_nan))


def test_a_flow_array_of_the_wrong_shape_is_refused(tiny_model_path, tmp_path):
    def narrow(h5):
        w = h5["flow/mades/0/l2/weight"][()]
        del h5["flow/mades/0/l2/weight"]
        h5["flow/mades/0/l2/weight"] = w[:, :-1]

    with pytest.raises(BundleError, match="flow array 'mades.0.l2.weight' has shape"):
        load_bundle(_resealed_edit(tiny_model_path, tmp_path / "shape.h5", narrow))


def test_missing_weight(tiny_model_path, tmp_path):
    p = _copy(tiny_model_path, tmp_path / "broken.h5")
    with h5py.File(p, "a") as h5:
        del h5["generator/synthesis/const"]
    _reseal(p)
    b = load_bundle(p)
    with pytest.raises(BundleError, match=r"broken\.h5: generator weights do not match"):
        b.build_generator()


def test_nan_weights(tiny_model_path, tmp_path):
    p = _copy(tiny_model_path, tmp_path / "nan.h5")
    with h5py.File(p, "a") as h5:
        d = h5["generator/synthesis/const"]
        d[0, 0, 0] = np.nan
    _reseal(p)
    with pytest.raises(BundleError, match="NaN"):
        load_bundle(p)


def test_channel_mismatch(tiny_model_path, tmp_path):
    p = _copy(tiny_model_path, tmp_path / "chan.h5")
    with h5py.File(p, "a") as h5:
        h5["meta"].attrs["channels"] = '["DNA"]'
    _reseal(p)
    with pytest.raises(BundleError, match="1 channel names for a 2-channel"):
        load_bundle(p)


def test_no_prior(tmp_path):
    from conftest import make_tiny_bundle
    p = make_tiny_bundle(tmp_path / "bare.h5", with_prior=False)
    b = load_bundle(p)
    with pytest.raises(BundleError, match="fit-prior"):
        b.latent_stats()


def test_resolve_unknown_name():
    with pytest.raises(BundleError, match="shipped model"):
        resolve_model("no-such-model")


def test_standard_preset_bundle_fits_the_size_budget_in_float16(tmp_path):
    """Issue 11's budget: a standard-preset bundle with its prior <= 12 MiB. Its float16
    weights render the same image as the float32 ones to within float16 rounding (~1e-3 of
    the [0, 1] range), and the flow rebuilt without stored masks gives the same densities."""
    from rls_core.bundle import ModelBundle, set_prior
    from rls_core.generator import Generator, GeneratorConfig
    from rls_core.model import LoadedModel
    from rls_core.priors import fit_prior

    torch.manual_seed(0)
    G = Generator(GeneratorConfig.preset("standard", 128, 2)).eval()
    G.estimate_w_avg(2000)
    stats, flow = fit_prior(G.mapping, 512, n_samples=3000, flow_epochs=1, progress=False)
    bundle = set_prior(ModelBundle.from_generator(G, ["DNA", "NFkB"], provenance={"note": "x" * 20000}),
                       stats, flow)
    half = save_bundle(bundle, tmp_path / "half.h5", half=True)
    full = save_bundle(bundle, tmp_path / "full.h5")
    assert half.stat().st_size <= 12 * 2 ** 20 < full.stat().st_size
    b = load_bundle(half)
    assert b.generator_state["synthesis.b128.conv1.weight"].dtype == np.float16
    assert not any(k.endswith(".mask") for k in b.flow_state)
    m16, m32 = LoadedModel(b, "cpu"), LoadedModel(load_bundle(full), "cpu")
    w = m32.w_mean[None, None].repeat(2, m32.num_ws, 1)
    assert (m16.render(w) - m32.render(w)).abs().max() < 0.01
    x = torch.randn(16, 512)
    assert torch.allclose(m16.flow().log_prob(x), m32.flow().log_prob(x), rtol=1e-2, atol=0.5)


def test_format_1_bundles_still_load(tmp_path):
    """The shipped cpu-preset models were written as format 1 (float32, flow masks stored)."""
    path = resolve_model("translocation")
    with h5py.File(path, "r") as h5:
        assert int(h5.attrs["format_version"]) == 1 and "mades" in h5["flow"]
    b = load_bundle(path)
    assert b.has_prior and torch.isfinite(b.build_flow().log_prob(torch.randn(3, 128))).all()


def test_committed_campaign_files_fit_the_budget():
    """What the training campaign keeps in the repository (docs/models.md): standard-preset
    bundles (the campaign's translocation candidate; the shipped golgi) and the slim resume
    checkpoint of the model still in training, each <= 12 MiB, belonging to its bundle."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    folder = root / "training" / "checkpoints"
    pairs = {"translocation": (folder / "translocation.h5", None),
             "golgi": (root / "rls_core" / "models" / "golgi.h5", folder / "golgi.pt")}
    for name, (bundle, resume) in pairs.items():
        assert bundle.stat().st_size <= 12 * 2 ** 20, name
        b = load_bundle(bundle)
        assert b.has_prior and b.generator_config["w_dim"] == 512 and b.generator_config["mapping_layers"] == 8
        if resume is not None:
            assert resume.stat().st_size <= 12 * 2 ** 20, name
            ck = torch.load(resume, map_location="cpu", weights_only=True)
            assert ck["slim"] and ck["bundle"] == bundle.name and ck["iteration"] == b.provenance["iterations"]


def test_shipped_bundles_without_their_own_checksum_are_checked_against_the_manifest(tmp_path, monkeypatch,
                                                                                       caplog):
    """The shipped models predate per-bundle checksums: models/SHA256SUMS vouches for them."""
    import hashlib
    import shutil

    import rls_core.bundle as bundle_mod

    models = tmp_path / "models"
    models.mkdir()
    src = resolve_model("translocation")  # the cpu-preset models carry no checksum of their own
    with h5py.File(src, "r") as h5:
        assert "content_sha256" not in h5.attrs
    shutil.copy(src, models / "translocation.h5")
    (models / "SHA256SUMS").write_text(f"{hashlib.sha256(src.read_bytes()).hexdigest()}  translocation.h5\n")
    monkeypatch.setattr(bundle_mod, "MANIFEST", models / "SHA256SUMS")
    with caplog.at_level("WARNING", logger="rls_core.bundle"):
        assert load_bundle(models / "translocation.h5").has_prior
    assert "without one" not in caplog.text  # vouched for: no notice
    raw = bytearray((models / "translocation.h5").read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped bit pattern in the middle of the weights
    (models / "translocation.h5").write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="translocation.h5: is damaged"):
        load_bundle(models / "translocation.h5")


def test_the_committed_manifest_lists_every_shipped_model():
    import hashlib

    from rls_core.bundle import shipped_checksums
    from rls_core.registry import list_models

    known = shipped_checksums()
    for name, path in list_models().items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() in known.get(path.name, []), name


def test_shipped_provenance_names_no_absolute_path():
    """A bundle says where its training data lay relative to the training run, never as the
    training machine's absolute path (a path on our machine means nothing on a user's)."""
    import json
    from pathlib import Path

    from rls_core.bundle import load_bundle
    from rls_core.registry import list_models

    for name, path in list_models().items():
        text = json.dumps(load_bundle(path).provenance, default=str)
        for token in text.replace('"', " ").replace("'", " ").split():
            assert not token.startswith(("/work", "/tmp", "/home", "/root", "/Users")), (name, token)
        assert not Path(load_bundle(path).provenance["data"]["folder"]).is_absolute(), name

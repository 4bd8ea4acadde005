"""Importers of rosinality .pt / NVlabs .pkl StyleGAN2 checkpoints: exact reproduction of the
upstream reference outputs, and refusal of anything that could run code from the file.

Fixtures (small random generators + reference arrays computed with the upstream code) are read
from <repo>/../shared/fixtures/stylegan2 or $RLS_FIXTURES; tests needing them skip otherwise.
"""
from __future__ import annotations

import argparse
import copy
import copyreg
import io
import os
import pickle
import uuid
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import pytest
import torch

from rls_core.bundle import load_bundle, save_bundle
from rls_core.importers import (FORMAT_NVLABS, FORMAT_ROSINALITY, ImportErrorRLS, UnsafeCheckpointError,
                                import_checkpoint, load_generator)
from rls_core.importers.nvlabs import convert_snapshot
from rls_core.importers.safe_pickle import ALLOWED_GLOBALS, InertPersistentObject, safe_loads

TOL = 1e-4  # float32 re-implementation; measured differences are ~1e-6


def _fixture_dir() -> Optional[Path]:
    here = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "stylegan2"
    if here.is_dir():
        return here
    env = os.environ.get("RLS_FIXTURES")
    if env:
        for cand in (Path(env), Path(env) / "stylegan2"):
            if (cand / "rosinality_small.pt").is_file():
                return cand
    return None


FIX = _fixture_dir()
needs_fixtures = pytest.mark.skipif(FIX is None, reason="StyleGAN2 fixtures not found: expected "
                                    "../shared/fixtures/stylegan2 next to the repo or $RLS_FIXTURES")


def _ref(name: str) -> Dict[str, np.ndarray]:
    with np.load(FIX / f"{name}_reference.npz") as z:
        return {k: z[k] for k in z.files}


def _maxdiff(a: torch.Tensor, b: np.ndarray) -> float:
    assert tuple(a.shape) == tuple(b.shape), (tuple(a.shape), b.shape)
    return float(np.abs(a.detach().cpu().numpy().astype(np.float64) - b.astype(np.float64)).max())


def _wplus(G, w: torch.Tensor) -> torch.Tensor:
    return w[:, None].expand(-1, G.num_ws, -1)


def _marker() -> Path:
    return Path("/tmp") / f"pwned_{uuid.uuid4().hex}"


# ----------------------------------------------------------------------------- reproduction

def check_rosinality(G) -> Dict[str, float]:
    ref = _ref("rosinality_small")
    out = {}
    with torch.no_grad():
        z = torch.from_numpy(ref["z"])
        w = G.mapping(z)
        out["w"] = _maxdiff(w, ref["w"])
        out["img_z"] = _maxdiff(G(z, noise_mode="const"), ref["img_z"])
        out["img_z(synthesis)"] = _maxdiff(G.synthesis(_wplus(G, w)), ref["img_z"])
        out["img_w"] = _maxdiff(G.synthesis(_wplus(G, torch.from_numpy(ref["w"]))), ref["img_w"])
        out["img_w_plus"] = _maxdiff(G.synthesis(torch.from_numpy(ref["w_plus"])), ref["img_w_plus"])
        out["img_z_trunc05"] = _maxdiff(G.synthesis(_wplus(G, G.mapping(z, 0.5))), ref["img_z_trunc05"])
        out["latent_avg"] = _maxdiff(G.mapping.w_avg, ref["latent_avg"])
        for i, layer in enumerate(G.synthesis.layers()):
            out[f"noise_{i}"] = _maxdiff(layer.noise_const, ref[f"noise_{i}"][0, 0])
    return out


def check_nvlabs(G, name: str) -> Dict[str, float]:
    ref = _ref(name)
    out = {}
    with torch.no_grad():
        z = torch.from_numpy(ref["z"])
        ws = _wplus(G, G.mapping(z))
        out["ws"] = _maxdiff(ws, ref["ws"])
        out["img"] = _maxdiff(G.synthesis(ws, noise_mode="const"), ref["img"])
        out["img(G)"] = _maxdiff(G(z), ref["img"])
        out["img_ws_rand"] = _maxdiff(G.synthesis(torch.from_numpy(ref["ws_rand"])), ref["img_ws_rand"])
        out["img_noise_none"] = _maxdiff(G.synthesis(ws, noise_mode="none"), ref["img_noise_none"])
        wt = _wplus(G, G.mapping(z, 0.7))
        out["ws_trunc07"] = _maxdiff(wt, ref["ws_trunc07"])
        out["img_trunc07"] = _maxdiff(G.synthesis(wt), ref["img_trunc07"])
        out["w_avg"] = _maxdiff(G.mapping.w_avg, ref["w_avg"])
        assert len(ref["noise_names"]) == len(G.synthesis.layers())
        for i, layer in enumerate(G.synthesis.layers()):
            out[f"noise_{i}"] = _maxdiff(layer.noise_const, ref[f"noise_{i}"])
    return out


def _assert_all_close(diffs: Dict[str, float]) -> None:
    bad = {k: v for k, v in diffs.items() if not v <= TOL}
    assert not bad, f"differences above {TOL}: {bad} (all: {diffs})"


@needs_fixtures
def test_rosinality_reproduces_every_reference():
    imp = load_generator(FIX / "rosinality_small.pt")
    assert imp.format == FORMAT_ROSINALITY and imp.network == "g_ema" and not imp.warnings
    cfg = imp.generator.cfg
    assert (cfg.resolution, cfg.img_channels, cfg.z_dim, cfg.w_dim, cfg.mapping_layers) == (32, 3, 64, 64, 2)
    assert cfg.channels == (64, 64, 32, 16) and cfg.conv_clamp is None
    _assert_all_close(check_rosinality(imp.generator))


@needs_fixtures
@pytest.mark.parametrize("name,channels,clamp", [("nvlabs_small", 3, None), ("nvlabs_small_gray", 1, 256.0)])
def test_nvlabs_reproduces_every_reference(name, channels, clamp):
    imp = load_generator(FIX / f"{name}.pkl")
    assert imp.format == FORMAT_NVLABS and imp.network == "G_ema" and not imp.warnings
    cfg = imp.generator.cfg
    assert (cfg.resolution, cfg.img_channels, cfg.z_dim, cfg.w_dim, cfg.mapping_layers) == (32, channels, 64, 64, 2)
    assert cfg.channels == (64, 64, 32, 16) and cfg.conv_clamp == clamp
    assert imp.extra["num_fp16_res"] == (4 if channels == 1 else 0)
    _assert_all_close(check_nvlabs(imp.generator, name))


@needs_fixtures
@pytest.mark.parametrize("fname", ["rosinality_small.pt", "nvlabs_small.pkl", "nvlabs_small_gray.pkl"])
def test_bundle_round_trip_reproduces(tmp_path, fname):
    bundle = import_checkpoint(FIX / fname)
    n = bundle.generator_config["img_channels"]
    assert bundle.channel_names == (["R", "G", "B"] if n == 3 else ["ch0"])
    assert bundle.normalization == [{"low": 0.0, "high": 1.0}] * n
    prov = bundle.provenance
    assert prov["source_file"] == fname and len(prov["source_sha256"]) == 64
    assert prov["source_format"] in (FORMAT_ROSINALITY, FORMAT_NVLABS) and prov["imported"]
    assert isinstance(prov["upstream_kwargs"], dict)
    path = save_bundle(bundle, tmp_path / "model.h5")
    G = load_bundle(path).build_generator()
    if fname.startswith("rosinality"):
        _assert_all_close(check_rosinality(G))
    else:
        _assert_all_close(check_nvlabs(G, fname[:-4]))
        assert load_bundle(path).provenance["num_fp16_res"] == (4 if "gray" in fname else 0)


@needs_fixtures
def test_rosinality_legacy_torch_format_and_fallbacks(tmp_path):
    with torch.serialization.safe_globals([argparse.Namespace]):
        ckpt = torch.load(FIX / "rosinality_small.pt", weights_only=True)
    legacy = tmp_path / "legacy.pt"
    torch.save(ckpt, legacy, _use_new_zipfile_serialization=False)
    _assert_all_close(check_rosinality(load_generator(legacy).generator))

    # g_ema preferred over g; only g -> used, with a warning
    g = {k: v + 0.05 * torch.randn_like(v) if v.dtype.is_floating_point else v for k, v in ckpt["g_ema"].items()}
    both = tmp_path / "both.pt"
    torch.save(dict(ckpt, g=g), both)
    imp = load_generator(both)
    assert imp.network == "g_ema"
    _assert_all_close(check_rosinality(imp.generator))
    only_g = tmp_path / "only_g.pt"
    torch.save({"g": ckpt["g_ema"], "latent_avg": ckpt["latent_avg"], "args": ckpt["args"]}, only_g)
    imp = load_generator(only_g)
    assert imp.network == "g" and any("g_ema" in w for w in imp.warnings)

    # no latent_avg (train.py checkpoints): estimated from mapped samples
    no_avg = tmp_path / "no_avg.pt"
    torch.save({"g_ema": ckpt["g_ema"]}, no_avg)
    imp = load_generator(no_avg)
    assert any("latent_avg" in w for w in imp.warnings)
    ref = _ref("rosinality_small")
    assert _maxdiff(imp.generator.mapping.w_avg, ref["latent_avg"]) < 0.2  # 10k vs 4096 samples


@needs_fixtures
def test_nvlabs_picks_g_ema_not_g():
    data = safe_loads((FIX / "nvlabs_small.pkl").read_bytes())
    assert convert_snapshot(data).network == "G_ema"
    only_g = {k: v for k, v in data.items() if k != "G_ema"}
    imp = convert_snapshot(only_g)
    assert imp.network == "G" and any("G_ema" in w for w in imp.warnings)
    diffs = check_nvlabs(imp.generator, "nvlabs_small")
    assert diffs["img"] > 0.05  # G really differs: picking it by mistake would be visible


# ----------------------------------------------------------------------------- hostile files

class _SystemCall:
    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class _Eval:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


def _expect_refused(path: Path, global_name: str, marker: Path) -> None:
    with pytest.raises(UnsafeCheckpointError) as info:
        import_checkpoint(path)
    assert global_name in str(info.value) and str(path) in str(info.value)
    assert not marker.exists(), "the hostile payload ran"


def test_hostile_pickle_os_system_is_refused(tmp_path):
    marker = _marker()
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_SystemCall(f"touch {marker}"), protocol=4))
    _expect_refused(path, f"{os.system.__module__}.system", marker)
    # protocol 2 (GLOBAL instead of STACK_GLOBAL) too
    path.write_bytes(pickle.dumps(_SystemCall(f"touch {marker}"), protocol=2))
    _expect_refused(path, f"{os.system.__module__}.system", marker)


def test_hostile_pickle_builtins_eval_is_refused(tmp_path):
    marker = _marker()
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Eval(marker)}, protocol=4))
    _expect_refused(path, "builtins.eval", marker)


def test_hostile_global_disguised_next_to_fake_g_ema(tmp_path):
    marker = _marker()
    fake = {"G_ema": {"z_dim": 512, "mapping": {"fc0": [1.0, 2.0]}}, "G": None,
            "augment_pipe": [1, 2, {"hooks": _SystemCall(f"touch {marker}")}], "training_set_kwargs": {}}
    path = tmp_path / "network-snapshot-000000.pkl"
    path.write_bytes(pickle.dumps(fake, protocol=4))
    _expect_refused(path, f"{os.system.__module__}.system", marker)


def _persistent_obj_pickle(meta: dict) -> bytes:
    """What NVlabs writes for a network, built by hand (no upstream code needed)."""
    body = pickle.dumps(meta, protocol=2)[2:-1]  # strip PROTO 2 and STOP
    # GLOBAL, the meta dict, TUPLE1, REDUCE, STOP
    return b"\x80\x02ctorch_utils.persistence\n_reconstruct_persistent_obj\n" + body + b"\x85R."


def test_embedded_module_source_is_never_executed(tmp_path):
    marker = _marker()
    src = f"open({str(marker)!r}, 'w').close()\nclass Generator: pass\n"
    meta = {"type": "class", "version": 6, "module_src": src, "class_name": "Generator",
            "state": {"_parameters": {}, "_buffers": {}, "_modules": {}, "_init_kwargs": {"c_dim": 0}}}
    blob = _persistent_obj_pickle(meta)
    obj = safe_loads(blob)
    assert isinstance(obj, InertPersistentObject) and obj.class_name == "Generator"
    assert obj.module_src == src and obj.init_kwargs == {"c_dim": 0}
    assert not marker.exists()
    # a snapshot dict {'G_ema': <that object>}: EMPTY_DICT, BINUNICODE key, value, SETITEM, STOP
    path = tmp_path / "snap.pkl"
    path.write_bytes(b"\x80\x02}X\x05\x00\x00\x00G_ema" + blob[2:-1] + b"s.")
    with pytest.raises(ImportErrorRLS):
        import_checkpoint(path)
    assert not marker.exists()


def test_persistent_ids_and_extension_codes_are_refused():
    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return "storage" if obj == "x" else None

    buf = io.BytesIO()
    P(buf, protocol=2).dump({"a": "x"})
    with pytest.raises(UnsafeCheckpointError, match="persistent id|BINPERSID"):
        safe_loads(buf.getvalue())

    copyreg.add_extension(os.system.__module__, "system", 0xBEEF)
    try:
        blob = pickle.dumps(os.system, protocol=2)
    finally:
        copyreg.remove_extension(os.system.__module__, "system", 0xBEEF)
    with pytest.raises(UnsafeCheckpointError, match="EXT"):
        safe_loads(blob)


def test_allow_list_is_small_and_exact():
    assert ("builtins", "eval") not in ALLOWED_GLOBALS and ("os", "system") not in ALLOWED_GLOBALS
    assert len(ALLOWED_GLOBALS) <= 10
    with pytest.raises(UnsafeCheckpointError, match=r"torch\._utils\._rebuild_tensor\b"):
        safe_loads(b"\x80\x02ctorch._utils\n_rebuild_tensor\n.")


@pytest.mark.parametrize("legacy", [False, True])
def test_torch_file_with_forbidden_global_is_refused(tmp_path, legacy):
    marker = _marker()
    sd = {"style.1.weight": torch.zeros(4, 4), "input.input": torch.zeros(1, 4, 4, 4)}
    path = tmp_path / "550000.pt"
    torch.save({"g_ema": sd, "args": argparse.Namespace(arch="stylegan2"),
                "ada_aug_p": _SystemCall(f"touch {marker}")}, path, _use_new_zipfile_serialization=not legacy)
    _expect_refused(path, f"{os.system.__module__}.system", marker)


# ----------------------------------------------------------------------------- unsupported variants

def _gray_snapshot():
    return safe_loads((FIX / "nvlabs_small_gray.pkl").read_bytes())


@needs_fixtures
def test_conditional_generator_is_refused():
    data = _gray_snapshot()
    data["G_ema"].state["_init_kwargs"]["c_dim"] = 10
    with pytest.raises(ImportErrorRLS, match=r"conditional.*c_dim=10"):
        convert_snapshot(data)


@needs_fixtures
def test_non_skip_architecture_is_refused():
    data = _gray_snapshot()
    data["G_ema"].state["_init_kwargs"]["synthesis_kwargs"]["architecture"] = "resnet"
    with pytest.raises(ImportErrorRLS, match="'resnet'.*not supported"):
        convert_snapshot(data)
    data = _gray_snapshot()  # only the block attribute says so (kwargs left at the default)
    data["G_ema"].modules["synthesis"].modules["b16"].state["architecture"] = "orig"
    with pytest.raises(ImportErrorRLS, match="'orig'"):
        convert_snapshot(data)


@needs_fixtures
def test_stylegan3_and_unknown_classes_are_refused():
    data = _gray_snapshot()
    data["G_ema"].modules["synthesis"].modules["b4"].class_name = "SynthesisInput"
    with pytest.raises(ImportErrorRLS, match="StyleGAN3"):
        convert_snapshot(data)
    data = _gray_snapshot()
    data["G_ema"].modules["mapping"].modules["fc0"].class_name = "FancyLayer"
    with pytest.raises(ImportErrorRLS, match="FancyLayer"):
        convert_snapshot(data)
    with pytest.raises(ImportErrorRLS, match="G_ema"):
        convert_snapshot({"D": data["D"]})


def _tiny_rosinality_sd() -> Dict[str, torch.Tensor]:
    return {"style.1.weight": torch.zeros(8, 8), "style.1.bias": torch.zeros(8),
            "input.input": torch.zeros(1, 8, 4, 4), "to_rgb1.conv.weight": torch.zeros(1, 3, 8, 1, 1)}


@pytest.mark.parametrize("how", ["args", "keys"])
def test_swagan_is_refused(tmp_path, how):
    sd = _tiny_rosinality_sd()
    ckpt = {"g_ema": sd}
    if how == "args":
        ckpt["args"] = argparse.Namespace(arch="swagan", size=32)
    else:
        sd["to_rgbs.0.iwt.ll"] = torch.zeros(1, 1, 2, 2)
        sd["to_rgbs.0.dwt.ll"] = torch.zeros(1, 1, 2, 2)
    path = tmp_path / "swagan.pt"
    torch.save(ckpt, path)
    with pytest.raises(ImportErrorRLS, match="SWAGAN"):
        import_checkpoint(path)


@needs_fixtures
def test_nonstandard_blur_kernel_is_refused(tmp_path):
    with torch.serialization.safe_globals([argparse.Namespace]):
        ckpt = torch.load(FIX / "rosinality_small.pt", weights_only=True)
    ckpt = copy.deepcopy(ckpt)
    ckpt["g_ema"]["convs.2.conv.blur.kernel"] = torch.ones(4, 4) / 4
    path = tmp_path / "blur.pt"
    torch.save(ckpt, path)
    with pytest.raises(ImportErrorRLS, match=r"convs\.2\.conv\.blur\.kernel.*\[1,3,3,1\]"):
        import_checkpoint(path)


def test_unknown_files_are_refused_with_the_file_name(tmp_path):
    txt = tmp_path / "notes.pt"
    txt.write_text("not a checkpoint")
    with pytest.raises(ImportErrorRLS, match="notes.pt.*unrecognised"):
        import_checkpoint(txt)
    h5 = tmp_path / "model.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(ImportErrorRLS, match="HDF5"):
        import_checkpoint(h5)
    pkl = tmp_path / "other.pkl"
    pkl.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}, protocol=4))
    with pytest.raises(ImportErrorRLS, match="other.pkl.*G_ema"):
        import_checkpoint(pkl)
    with pytest.raises(ImportErrorRLS, match="not found"):
        import_checkpoint(tmp_path / "missing.pkl")
    assert not isinstance(ImportErrorRLS("x"), UnsafeCheckpointError)
    assert issubclass(ImportErrorRLS, ValueError) and issubclass(UnsafeCheckpointError, ImportErrorRLS)


@needs_fixtures
def test_channel_names_must_match_image_channels():
    with pytest.raises(ImportErrorRLS, match="2 channel name.*3-channel"):
        import_checkpoint(FIX / "nvlabs_small.pkl", ["DNA", "Actin"])
    b = import_checkpoint(FIX / "nvlabs_small_gray.pkl", ["DNA"])
    assert b.channel_names == ["DNA"]


# ----------------------------------------------------------------------------- command line

@needs_fixtures
def test_cli_import(tmp_path, capsys):
    from rls_core.importers.cli import main

    out = tmp_path / "cells.h5"
    rc = main([str(FIX / "nvlabs_small.pkl"), "-o", str(out), "--channels", "DNA,Tubulin,Actin",
               "--intensity-range", "0,0.5", "--intensity-range", "0,1", "--intensity-range", "0.1,0.3"])
    assert rc == 0
    b = load_bundle(out)
    assert b.channel_names == ["DNA", "Tubulin", "Actin"]
    assert b.normalization == [{"low": 0.0, "high": 0.5}, {"low": 0.0, "high": 1.0}, {"low": 0.1, "high": 0.3}]
    assert b.provenance["source_format"] == FORMAT_NVLABS and not b.has_prior
    assert main([str(FIX / "nvlabs_small.pkl"), "-o", str(out), "--channels", "DNA"]) == 2  # exists
    assert main([str(FIX / "nvlabs_small.pkl"), "-o", str(out), "--channels", "DNA", "--force"]) == 2
    assert "1 channel name" in capsys.readouterr().err
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(_SystemCall("true"), protocol=4))
    assert main([str(evil), "-o", str(tmp_path / "e.h5")]) == 2
    assert "refused global" in capsys.readouterr().err and not (tmp_path / "e.h5").exists()


@needs_fixtures
def test_cli_fit_prior(tmp_path):
    from rls_core.importers.cli import main

    out = tmp_path / "gray.h5"
    rc = main([str(FIX / "nvlabs_small_gray.pkl"), "-o", str(out), "--channels", "DNA", "--fit-prior",
               "--prior-samples", "2000", "--flow-epochs", "1", "--device", "cpu"])
    assert rc == 0
    b = load_bundle(out)
    assert b.has_prior and b.provenance["prior"]["n_samples"] == 2000
    assert set(b.provenance["prior"]) == {"fitted", "n_samples", "flow", "flow_epochs", "flow_noise", "seed", "seconds"}
    G = b.build_generator()
    _assert_all_close(check_nvlabs(G, "nvlabs_small_gray"))  # fitting the prior leaves the weights alone


def test_cli_help_teaches():
    from rls_core.importers.cli import add_arguments

    p = argparse.ArgumentParser(prog="rls import")
    add_arguments(p)
    text = p.format_help()
    for needle in ("rls import", "--channels DNA,Tubulin,Actin", "--fit-prior", "--prior-samples", "G_ema", "float32"):
        assert needle in text


# ----------------------------------------------------------------------------- clamp placement

def test_synthesis_layer_clamp_matches_nvlabs():
    """NVlabs' bias_act clamps at +-conv_clamp after the sqrt(2) gain (not at conv_clamp*sqrt(2))."""
    from rls_core.generator import SynthesisLayer, _fir_kernel

    layer = SynthesisLayer(4, 4, 4, 8, False, _fir_kernel((1, 3, 3, 1)), conv_clamp=1.0)
    with torch.no_grad():
        layer.bias.fill_(100.0)
        y = layer(torch.randn(1, 4, 8, 8), torch.randn(1, 4), noise_mode="none")
    assert float(y.abs().max()) <= 1.0 + 1e-6


def test_pickle_cannot_modify_the_stand_ins():
    # GLOBAL torch._utils._rebuild_tensor_v2, then BUILD (None, {'__defaults__': (1,)}), STOP
    blob = (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n" + b"N}X\x0c\x00\x00\x00__defaults__K\x01\x85s\x86b.")
    with pytest.raises((UnsafeCheckpointError, AttributeError)):
        safe_loads(blob)
    assert ALLOWED_GLOBALS[("torch._utils", "_rebuild_tensor_v2")]._fn.__defaults__ == (None,)

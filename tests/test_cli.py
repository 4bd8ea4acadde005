"""The `rls` command line on real files: multi-channel fields, outputs, summary, bad inputs."""
import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from rls_core.cli import main


@pytest.fixture()
def lr_folder(tmp_path, generated_field):
    _, lr = generated_field
    d = tmp_path / "lr"
    d.mkdir()
    raw = (np.clip(lr, 0, 1) * 65535).astype(np.uint16)
    tifffile.imwrite(d / "plate_A01_s1_DNA.tif", raw[0])
    tifffile.imwrite(d / "plate_A01_s1_NFkB.tif", raw[1])
    tifffile.imwrite(d / "stack_A02.tif", raw)  # one multi-page file holding both channels
    return d


def read_summary(out):
    with open(out / "summary.csv") as fh:
        return list(csv.DictReader(fh))


def test_super_resolve_multichannel_with_uncertainty(lr_folder, tmp_path, tiny_model_path):
    out = tmp_path / "sr"
    files = sorted(str(p) for p in lr_folder.iterdir())
    rc = main(["super-resolve", *files, "-o", str(out), "--model", str(tiny_model_path), "--factor", "8",
               "--steps", "10", "--samples", "2", "-q"])
    assert rc == 0
    rows = read_summary(out)
    assert {r["field"] for r in rows} == {"plate_A01_s1", "stack_A02"}
    for r in rows:
        assert r["status"] == "ok" and float(r["lr_psnr"]) > 10 and 0 <= float(r["converged_fraction"]) <= 1
        sr = tifffile.imread(out / f"{r['field']}_sr.tif")
        std = tifffile.imread(out / f"{r['field']}_sr_std.tif")
        assert sr.shape == std.shape == (2, 64, 64) and sr.dtype == np.float32
        assert np.isfinite(sr).all() and (std >= 0).all()


def test_a_bad_field_does_not_stop_the_others(lr_folder, tmp_path, tiny_model_path):
    tifffile.imwrite(lr_folder / "tiny_B01_DNA.tif", np.zeros((2, 2), np.uint16))
    tifffile.imwrite(lr_folder / "tiny_B01_NFkB.tif", np.zeros((2, 2), np.uint16))
    out = tmp_path / "sr"
    files = sorted(str(p) for p in lr_folder.iterdir())
    rc = main(["super-resolve", *files, "-o", str(out), "--model", str(tiny_model_path), "--factor", "8",
               "--steps", "3", "-q"])
    assert rc == 1
    rows = {r["field"]: r for r in read_summary(out)}
    assert rows["tiny_B01"]["status"].startswith("error:") and "smaller than one LR tile" in rows["tiny_B01"]["status"]
    assert rows["plate_A01_s1"]["status"] == "ok" and (out / "plate_A01_s1_sr.tif").exists()
    assert not (out / "tiny_B01_sr.tif").exists()


def test_missing_channel_and_bad_model_messages(lr_folder, tmp_path, tiny_model_path, capsys):
    rc = main(["super-resolve", str(lr_folder / "plate_A01_s1_DNA.tif"), "-o", str(tmp_path / "o"),
               "--model", str(tiny_model_path), "--factor", "8"])
    assert rc == 2 and "missing channel(s) NFkB" in capsys.readouterr().err
    junk = tmp_path / "junk.h5"
    junk.write_text("not a model")
    rc = main(["super-resolve", str(lr_folder / "stack_A02.tif"), "-o", str(tmp_path / "o"), "--model", str(junk)])
    assert rc == 2 and "junk.h5: not an HDF5 file" in capsys.readouterr().err


def test_info_and_models(tiny_model_path, capsys):
    assert main(["info", str(tiny_model_path)]) == 0
    out = capsys.readouterr().out
    assert "DNA, NFkB" in out and "latent prior fitted" in out


def test_models_lists_good_models_and_fails_on_a_broken_one(tiny_model_path, tmp_path, monkeypatch, capsys):
    import shutil

    import rls_core.registry as registry

    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_model_path, models / "good.h5")
    monkeypatch.setattr(registry, "MODELS_DIR", models)
    assert main(["models"]) == 0
    assert "good" in capsys.readouterr().out
    damaged = models / "damaged.h5"
    damaged.write_bytes(tiny_model_path.read_bytes()[:4096])  # a truncated copy
    assert main(["models"]) == 1
    captured = capsys.readouterr()
    assert "damaged" in captured.out and "BROKEN" in captured.out and "good" in captured.out
    assert "cannot be used" in captured.err


def test_fit_prior_completes_a_bare_bundle(tmp_path, capsys):
    from conftest import make_tiny_bundle
    from rls_core.bundle import load_bundle

    p = make_tiny_bundle(tmp_path / "bare.h5", with_prior=False)
    assert not load_bundle(p).has_prior
    assert main(["fit-prior", str(p), "--samples", "3000", "--flow-epochs", "1", "--flow-hidden", "32"]) == 0
    b = load_bundle(p)
    assert b.has_prior and b.provenance["prior"]["n_samples"] == 3000
    assert set(b.provenance["prior"]) == {"fitted", "n_samples", "flow", "flow_epochs", "seed", "seconds"}


def test_console_script_help():
    exe = Path(sys.executable).with_name("rls")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "rls_core.cli"]
    out = subprocess.run(cmd + ["super-resolve", "--help"], capture_output=True, text=True, check=True).stdout
    assert "fidelity vs realism" in out and "--samples" in out

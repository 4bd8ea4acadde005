"""scripts/train_on_device.sh, the one call prepared for a lent GPU, run here on the CPU.

Real run, small knobs: 1 simulated field per condition, the tiny preset, a 1-minute limit
and a quick prior. Checks what the device machine must hand back: at most 8 files, each
<= 16 MiB, a loadable bundle with its prior, the slim resume checkpoint; then that a second
call resumes from those files. The script itself is what runs on the GPU, with the defaults.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rls_core.bundle import load_bundle

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train_on_device.sh"


def _run(args, tmp_path, **env):
    e = dict(os.environ, FIELDS="1", PRESET="tiny", PRIOR_SAMPLES="500", FLOW_EPOCHS="1",
             WORKDIR=str(tmp_path / "work"), PYTHON=sys.executable, DEVICE="cpu", OMP_NUM_THREADS="1", **env)
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], env=e, capture_output=True, text=True,
                          timeout=900)


def test_usage_and_bad_model(tmp_path):
    r = _run([], tmp_path)
    assert r.returncode == 2 and "MODEL MINUTES OUTDIR" in r.stdout
    r = _run(["mitochondria", 1, tmp_path / "o"], tmp_path)
    assert r.returncode == 2 and "unknown MODEL 'mitochondria'" in r.stderr


@pytest.mark.slow
def test_one_minute_run_then_resume(tmp_path):
    out = tmp_path / "out"
    r = _run(["translocation", 1, out], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(["translocation.h5", "resume.pt", "samples_final.png", "reals.png",
                            "train_log.csv", "train.log"])
    assert len(files) <= 8 and all((out / f).stat().st_size <= 16 * 2 ** 20 for f in files)
    b = load_bundle(out / "translocation.h5")
    assert b.has_prior and b.channel_names == ["DNA", "NFkB"]
    assert b.provenance["data"]["data_seed"] == 3000
    it = b.provenance["iterations"]
    assert it >= 1
    ck = torch.load(out / "resume.pt", map_location="cpu", weights_only=True)
    assert ck["slim"] and ck["iteration"] == it

    # resume from the files as the repository keeps them (training/checkpoints/MODEL.pt + MODEL.h5)
    kept = tmp_path / "kept"
    kept.mkdir()
    (out / "resume.pt").rename(kept / "translocation.pt")
    (out / "translocation.h5").rename(kept / "translocation.h5")
    # ... measuring every iteration and exporting the best measured generator
    again = tmp_path / "again"
    r = _run(["translocation", 0.2, again, kept], tmp_path, METRICS_EVERY="1", EXPORT="best")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resuming" in (again / "train.log").read_text()
    files = sorted(p.name for p in again.iterdir())
    assert {"metrics.csv", "metrics.png"} <= set(files) and len(files) <= 8
    prov = load_bundle(again / "translocation.h5").provenance
    assert prov["iterations"] > it and prov["exported_generator"] == "best"
    assert it < prov["best"]["iteration"] <= prov["iterations"]


@pytest.mark.slow
def test_the_committed_golgi_checkpoint_resumes_with_the_shipped_bundle(tmp_path):
    """The shipped golgi bundle lives in the package (rls_core/models), its slim checkpoint in
    training/checkpoints: the script pairs them, and rls train checks they were written together."""
    kept = ROOT / "training" / "checkpoints"
    assert (kept / "golgi.pt").is_file() and not (kept / "golgi.h5").exists()
    out = tmp_path / "out"
    r = _run(["golgi", 0.2, out, kept], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resuming" in (out / "train.log").read_text()
    start = load_bundle(ROOT / "rls_core" / "models" / "golgi.h5").provenance["iterations"]
    b = load_bundle(out / "golgi.h5")
    assert b.channel_names == ["DNA", "Golgi"] and b.provenance["iterations"] > start


@pytest.mark.slow
def test_gpu_session_dry_run_on_cpu(tmp_path):
    """scripts/gpu_session.sh with DEV=cpu: the whole lease in one call, small knobs, golgi only
    (its checkpoint is committed): training continues the committed checkpoint until the deadline,
    the finish writes a bundle that measures its last state, and what comes back fits the device
    tool's limits (<= 8 files of <= 16 MiB)."""
    out = tmp_path / "out"
    e = dict(os.environ, OUT=str(out), DEV="cpu", MODELS="golgi", SKIP_CHECKS="1", FIELDS="1",
             PRIOR_SAMPLES="500", FLOW_EPOCHS="1", METRICS_EVERY="1000", FINISH_S="10",
             WORKDIR=str(tmp_path / "work"), PYTHON=sys.executable, OMP_NUM_THREADS="1")
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_session.sh"), "5"], env=e,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == ["golgi.h5", "golgi.pt", "gpu_session.tar.gz"]
    assert all((out / f).stat().st_size <= 16 * 2 ** 20 for f in files)
    b = load_bundle(out / "golgi.h5")
    start = torch.load(ROOT / "training" / "checkpoints" / "golgi.pt", map_location="cpu",
                       weights_only=True)["iteration"]
    assert b.has_prior and b.provenance["iterations"] > start
    assert b.provenance["exported_generator"] == "best" and b.provenance["best"]["iteration"] > start
    import tarfile
    with tarfile.open(out / "gpu_session.tar.gz") as t:
        names = t.getnames()
    assert "logs/session.log" in names and "logs/golgi_metrics.csv" in names

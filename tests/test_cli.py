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


def clean_uint16(lr):
    """The model's LR field as a uint16 camera image. 0.8: the tiny model's own field reaches
    1.0 on > 1 % of its pixels, which is a "saturated" warning; these tests want clean inputs."""
    return (np.clip(lr, 0, 1) * 0.8 * 65535).astype(np.uint16)


@pytest.fixture()
def lr_folder(tmp_path, generated_field):
    _, lr = generated_field
    d = tmp_path / "lr"
    d.mkdir()
    raw = clean_uint16(lr)
    tifffile.imwrite(d / "plate_A01_s1_DNA.tif", raw[0])
    tifffile.imwrite(d / "plate_A01_s1_NFkB.tif", raw[1])
    tifffile.imwrite(d / "stack_A02.tif", raw)  # one multi-page file holding both channels
    return d


def read_summary(out, name="summary.csv"):
    with open(out / name) as fh:
        return list(csv.DictReader(fh))


def run_folder(folder, out, model, *extra):
    """`rls super-resolve` on every file of `folder` (tiny model, 8x); (exit code, rows by field)."""
    files = sorted(str(p) for p in folder.iterdir())
    rc = main(["super-resolve", *files, "-o", str(out), "--model", str(model), "--factor", "8", "-q", *extra])
    return rc, {r["field"]: r for r in read_summary(out)}


def test_super_resolve_multichannel_with_uncertainty(lr_folder, tmp_path, tiny_model_path):
    out = tmp_path / "sr"
    files = sorted(str(p) for p in lr_folder.iterdir())
    rc = main(["super-resolve", *files, "-o", str(out), "--model", str(tiny_model_path), "--factor", "8",
               "--steps", "10", "--samples", "2", "-q"])
    assert rc == 0
    rows = read_summary(out)
    assert {r["field"] for r in rows} == {"plate_A01_s1", "stack_A02"}
    # the floor a search must beat: the LR consistency of a blank output (all zeros), in the
    # model's units as lr_psnr is measured; a result no better than blank is garbage
    from rls_core.model import load_model

    m = load_model(tiny_model_path, "cpu")
    lr = tifffile.imread(lr_folder / "stack_A02.tif").astype(np.float32) / 65535.0
    blank_db = -10 * np.log10(np.mean((m.to_unit(lr) - m.to_unit(np.zeros_like(lr))) ** 2))
    for r in rows:
        assert r["status"] == "ok" and float(r["lr_psnr"]) > blank_db + 3, (r["lr_psnr"], blank_db)
        assert 0 <= float(r["converged_fraction"]) <= 1
        sr = tifffile.imread(out / f"{r['field']}_sr.tif")
        std = tifffile.imread(out / f"{r['field']}_sr_std.tif")
        assert sr.shape == std.shape == (2, 64, 64) and sr.dtype == np.float32
        assert np.isfinite(sr).all() and (std >= 0).all() and std.max() > 0  # K samples differ


def test_a_bad_field_does_not_stop_the_others(lr_folder, tmp_path, tiny_model_path):
    tifffile.imwrite(lr_folder / "tiny_B01_DNA.tif", np.zeros((2, 2), np.uint16))
    tifffile.imwrite(lr_folder / "tiny_B01_NFkB.tif", np.zeros((2, 2), np.uint16))
    out = tmp_path / "sr"
    rc, rows = run_folder(lr_folder, out, tiny_model_path, "--steps", "3")
    assert rc == 1
    assert rows["tiny_B01"]["status"] == "failed" and "smaller than one LR tile" in rows["tiny_B01"]["reason"]
    assert rows["plate_A01_s1"]["status"] == "ok" and (out / "plate_A01_s1_sr.tif").exists()
    assert not (out / "tiny_B01_sr.tif").exists()


def test_missing_channel_and_bad_model_messages(lr_folder, tmp_path, tiny_model_path, capsys):
    rc = main(["super-resolve", str(lr_folder / "plate_A01_s1_DNA.tif"), "-o", str(tmp_path / "o"),
               "--model", str(tiny_model_path), "--factor", "8"])
    assert rc == 1 and "missing channel(s) NFkB" in capsys.readouterr().err  # that field failed
    assert read_summary(tmp_path / "o")[0]["status"] == "failed"
    junk = tmp_path / "junk.h5"
    junk.write_text("not a model")
    rc = main(["super-resolve", str(lr_folder / "stack_A02.tif"), "-o", str(tmp_path / "o"), "--model", str(junk)])
    assert rc == 2 and "junk.h5: not an HDF5 file" in capsys.readouterr().err


def test_a_channel_name_earlier_in_the_file_name_does_not_split_the_field(generated_field, tmp_path):
    """The golgi examples are named golgi_<cond>_<well>_<site>_<channel>.tif, and the assay name
    is also a channel name of the golgi model: the channel is the rightmost token, so both files
    of a site make one field (before, every file became a field missing its DNA)."""
    from conftest import make_tiny_bundle
    from rls_core.io import plan_fields

    _, lr = generated_field
    d = tmp_path / "lr"
    d.mkdir()
    raw = clean_uint16(lr)
    for site in ("s1", "s2"):
        tifffile.imwrite(d / f"golgi_DMSO_B02_{site}_DNA.tif", raw[0])
        tifffile.imwrite(d / f"golgi_DMSO_B02_{site}_Golgi.tif", raw[1])
    specs = plan_fields(sorted(d.iterdir()), ["DNA", "Golgi"])
    assert [(s.stem, [p.name for p in s.sources], s.problem) for s in specs] == [
        (f"golgi_DMSO_B02_{site}", [f"golgi_DMSO_B02_{site}_DNA.tif", f"golgi_DMSO_B02_{site}_Golgi.tif"], None)
        for site in ("s1", "s2")]
    model = make_tiny_bundle(tmp_path / "golgi_tiny.h5", channels=("DNA", "Golgi"))
    rc, rows = run_folder(d, tmp_path / "sr", model, "--steps", "1")
    assert rc == 0 and set(rows) == {"golgi_DMSO_B02_s1", "golgi_DMSO_B02_s2"}
    assert all(r["status"] == "ok" for r in rows.values())


def test_unreadable_and_mismatched_fields_fail_alone(lr_folder, tmp_path, tiny_model_path, caplog):
    """A corrupt TIFF and a field whose channels differ in size, among good fields: the good
    ones are written, the bad ones are reported with their reason (ours, not tifffile's raw
    log line), exit 1."""
    (lr_folder / "broken_B02_DNA.tif").write_bytes(b"II*\x00garbage")  # tifffile logs "invalid offset"
    tifffile.imwrite(lr_folder / "broken_B02_NFkB.tif", np.zeros((16, 16), np.uint16))
    tifffile.imwrite(lr_folder / "odd_B03_DNA.tif", np.zeros((16, 16), np.uint16))
    tifffile.imwrite(lr_folder / "odd_B03_NFkB.tif", np.zeros((20, 16), np.uint16))
    (lr_folder / "garbage.tif").write_bytes(b"\x00" * 100)  # no channel token, unreadable
    out = tmp_path / "sr"
    rc, rows = run_folder(lr_folder, out, tiny_model_path, "--steps", "2")
    assert rc == 1
    assert rows["plate_A01_s1"]["status"] == rows["stack_A02"]["status"] == "ok"
    assert rows["broken_B02"]["status"] == "failed" and "cannot be read" in rows["broken_B02"]["reason"]
    assert rows["odd_B03"]["status"] == "failed" and "differ in size" in rows["odd_B03"]["reason"]
    assert rows["garbage"]["status"] == "failed" and "cannot be read" in rows["garbage"]["reason"]
    assert {p.name for p in out.glob("*_sr.tif")} == {"plate_A01_s1_sr.tif", "stack_A02_sr.tif"}
    assert not [r for r in caplog.records if r.name.startswith("tifffile")]


def test_tifffile_quiet_restores_the_log_level_once_every_thread_is_done():
    """Readers in several threads (a Dask worker) silence tifffile's log while any of them
    reads and give back the caller's level after the last one, whatever the interleaving."""
    import logging
    import threading

    from rls_core.io import tifffile_quiet

    logger = logging.getLogger("tifffile")
    logger.setLevel(logging.WARNING)
    inside, release = threading.Barrier(3), threading.Event()

    def reader():
        with tifffile_quiet():
            inside.wait()
            release.wait()

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    inside.wait()  # both readers are inside
    assert logger.level == logging.CRITICAL
    release.set()
    for t in threads:
        t.join()
    assert logger.level == logging.WARNING
    logger.setLevel(logging.NOTSET)


def test_outputs_record_their_settings_and_resume_skips_only_matching_ones(lr_folder, tmp_path, tiny_model_path,
                                                                            capsys):
    from rls_core.io import read_tiff_info

    out = tmp_path / "sr"
    files = sorted(str(p) for p in lr_folder.iterdir())
    base = ["super-resolve", *files, "-o", str(out), "--model", str(tiny_model_path), "--factor", "8",
            "--steps", "2", "-q"]
    assert main(base) == 0
    info = read_tiff_info(out / "plate_A01_s1_sr.tif")
    s = info["settings"]
    assert s["method"] == "rls" and s["steps"] == 2 and s["seed"] == 0 and s["factor"] == 8
    assert len(s["model_sha256"]) == 64 and [i["file"] for i in s["inputs"]] == ["plate_A01_s1_DNA.tif",
                                                                                "plate_A01_s1_NFkB.tif"]
    before = (out / "plate_A01_s1_sr.tif").stat().st_mtime_ns
    capsys.readouterr()
    assert main(base + ["--skip-existing"]) == 0
    rows = {r["field"]: r for r in read_summary(out)}
    assert {r["status"] for r in rows.values()} == {"skipped"}
    assert rows["plate_A01_s1"]["lr_psnr"] == info["result"]["lr_psnr"]  # the recorded result, not blank
    assert (out / "plate_A01_s1_sr.tif").stat().st_mtime_ns == before
    # another seed: every field is redone and the summary says why
    assert main(base + ["--skip-existing", "--seed", "1"]) == 0
    rows = {r["field"]: r for r in read_summary(out)}
    assert {r["status"] for r in rows.values()} == {"ok"} and all("seed" in r["reason"] for r in rows.values())
    assert read_tiff_info(out / "plate_A01_s1_sr.tif")["settings"]["seed"] == 1


def test_an_output_path_that_is_a_file_is_refused(lr_folder, tmp_path, tiny_model_path, capsys):
    target = tmp_path / "afile"
    target.write_text("x")
    rc = main(["super-resolve", str(lr_folder / "stack_A02.tif"), "-o", str(target), "--model",
               str(tiny_model_path), "--factor", "8", "--steps", "1", "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "is a file" in err and "Traceback" not in err


def test_a_missing_prior_stops_before_any_field(lr_folder, tmp_path, capsys):
    from conftest import make_tiny_bundle

    bare = make_tiny_bundle(tmp_path / "bare.h5", with_prior=False)
    out = tmp_path / "sr"
    rc = main(["super-resolve", str(lr_folder / "stack_A02.tif"), "-o", str(out), "--model", str(bare),
               "--factor", "8", "--steps", "1", "-q"])
    assert rc == 2 and "fit-prior" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("flag, value, message", [
    ("--steps", "0", "steps must be >= 1"), ("--lr", "-1", "learning rate"), ("--lr", "nan", "learning rate"),
    ("--refine-steps", "-1", "refine steps"), ("--samples", "0", "samples must be >= 1")])
def test_search_settings_no_field_could_run_stop_before_any_field(lr_folder, tmp_path, tiny_model_path, capsys,
                                                                  flag, value, message):
    """Refused up front with exit 2 and the rule, not field by field with exit 1 (issue 15)."""
    out = tmp_path / "sr"
    rc = main(["super-resolve", str(lr_folder / "stack_A02.tif"), "-o", str(out), "--model", str(tiny_model_path),
               "--factor", "8", "--steps", "1", "-q", flag, value])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err and not out.exists()


@pytest.mark.parametrize("extra, message", [
    (["--overlap", "4"], "--overlap: tile overlap must be between 0 and 3"), (["--batch-size", "0"], "--batch-size"),
    (["--realism", "inf"], "realism must be a finite number"),
    (["--weight", "lambda_cross=-5"], "weights must be finite numbers >= 0"),
    (["--weight", "lambda_cross=nan"], "weights must be finite numbers >= 0"),
    (["--print-commands", "0"], "--print-commands needs N >= 1"),
    (["--scheduler", "localhost"], "is not a Dask scheduler address"),
    (["--workers", "2"], "--workers sets the size of --cluster local"),
    (["--cluster", "local", "--scheduler", "tcp://h:1"], "--scheduler and --cluster both")])
def test_run_settings_no_field_could_run_stop_before_any_field(lr_folder, tmp_path, tiny_model_path, capsys,
                                                               extra, message):
    """Overlap, batch size, weights and the scheduler's address are refused up front (exit 2),
    not field by field or as a traceback; a negative weight no longer switches its term off."""
    out = tmp_path / "sr"
    rc = main(["super-resolve", str(lr_folder / "stack_A02.tif"), "-o", str(out), "--model", str(tiny_model_path),
               "--factor", "8", "--steps", "1", "-q", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err and not (out / "stack_A02_sr.tif").exists()


def test_a_rerun_over_its_own_outputs_leaves_them_alone(lr_folder, tmp_path, tiny_model_path, capsys):
    """Outputs written into the input folder are not super-resolved again by `folder/*.tif`."""
    rc, _ = run_folder(lr_folder, lr_folder, tiny_model_path, "--steps", "2")
    assert rc == 0 and (lr_folder / "stack_A02_sr.tif").exists()
    capsys.readouterr()
    files = sorted(str(p) for p in lr_folder.glob("*.tif"))  # what `lr/*.tif` gives the second time
    rc = main(["super-resolve", *files, "-o", str(lr_folder), "--model", str(tiny_model_path), "--factor", "8", "-q",
               "--steps", "2", "--skip-existing"])
    rows = {r["field"]: r for r in read_summary(lr_folder)}
    assert rc == 0 and set(rows) == {"plate_A01_s1", "stack_A02"}
    assert {r["status"] for r in rows.values()} == {"skipped"}
    assert "ignoring 2 file(s) that rls super-resolve wrote" in capsys.readouterr().err
    assert not list(lr_folder.glob("*_sr_sr*"))


def test_bicubic_with_several_samples_is_skipped_when_done(lr_folder, tmp_path, tiny_model_path):
    """Bicubic draws one sample whatever --samples says, so it writes no uncertainty image;
    a resume must not wait for one (it redid the field every time)."""
    args = ["super-resolve", str(lr_folder / "stack_A02.tif"), "-o", str(tmp_path / "sr"), "--model",
            str(tiny_model_path), "--factor", "8", "--method", "bicubic", "--samples", "3", "-q", "--skip-existing"]
    assert main(args) == 0 and main(args) == 0
    assert read_summary(tmp_path / "sr")[0]["status"] == "skipped"


def test_a_run_without_samples_removes_an_earlier_uncertainty_map(lr_folder, tmp_path, tiny_model_path):
    common = ["super-resolve", str(lr_folder / "stack_A02.tif"), "-o", str(tmp_path / "sr"), "--model",
              str(tiny_model_path), "--factor", "8", "--steps", "2", "-q"]
    assert main(common + ["--samples", "2"]) == 0 and (tmp_path / "sr" / "stack_A02_sr_std.tif").exists()
    assert main(common) == 0 and not (tmp_path / "sr" / "stack_A02_sr_std.tif").exists()


def test_fields_of_the_same_name_from_two_folders_fail_instead_of_overwriting(lr_folder, tmp_path, tiny_model_path):
    other = tmp_path / "plate2"
    shutil.copytree(lr_folder, other)
    files = [str(p) for d in (lr_folder, other) for p in sorted(d.iterdir())]
    out = tmp_path / "sr"
    rc = main(["super-resolve", *files, "-o", str(out), "--model", str(tiny_model_path), "--factor", "8",
               "--steps", "1", "-q"])
    rows = read_summary(out)
    assert rc == 1 and len(rows) == 4 and {r["status"] for r in rows} == {"failed"}
    assert all("outputs would overwrite each other" in r["reason"] for r in rows)
    assert not list(out.glob("*_sr.tif"))


def test_a_channel_file_with_several_planes_is_not_a_whole_field(lr_folder, tmp_path, tiny_model_path):
    """x_DNA.tif holding two planes (a z-pair, say) must not be read as DNA + NFkB."""
    tifffile.imwrite(lr_folder / "zpair_DNA.tif", tifffile.imread(lr_folder / "stack_A02.tif"))
    out = tmp_path / "sr"
    rc = main(["super-resolve", str(lr_folder / "zpair_DNA.tif"), str(lr_folder / "stack_A02.tif"),
               str(lr_folder / "stack_A02.tif"), "-o", str(out), "--model", str(tiny_model_path), "--factor", "8",
               "--steps", "1", "-q"])
    rows = {r["field"]: r for r in read_summary(out)}
    assert rc == 1 and set(rows) == {"zpair_DNA", "stack_A02"}  # the file given twice counts once
    assert rows["zpair_DNA"]["status"] == "failed" and "named as channel DNA but has 2 planes" in \
        rows["zpair_DNA"]["reason"]
    assert rows["stack_A02"]["status"] == "ok"


def _many_fields(folder: Path, n: int) -> list:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"field{i:02d}.tif"
        tifffile.imwrite(p, (rng.uniform(0.05, 0.5, (2, 16, 16)) * 65535).astype(np.uint16))
        paths.append(str(p))
    return paths


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGINT"])
def test_interrupted_run_leaves_a_true_summary_and_resumes(tmp_path, tiny_model_path, sig):
    """Start a real `rls` process, stop it after its first output, rerun with --skip-existing."""
    import os
    import signal
    import time

    lr = tmp_path / "lr"
    lr.mkdir()
    files = _many_fields(lr, 6)
    out = tmp_path / "sr"
    cmd = [sys.executable, "-m", "rls_core", "super-resolve", *files, "-o", str(out), "--model",
           str(tiny_model_path), "--factor", "8", "--steps", "150", "-q"]
    # A shell starts background jobs with SIGINT ignored, and children inherit that (a CI runner
    # may run us so): give the child the default, as a terminal's foreground job has, so that
    # Python turns SIGINT into KeyboardInterrupt.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not list(out.glob("*_sr.tif")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted: give it more work"
    os.kill(proc.pid, getattr(signal, sig))
    _, err = proc.communicate(timeout=60)
    done = sorted(p.name for p in out.glob("*_sr.tif"))
    assert 1 <= len(done) < 6 and not list(out.glob("*.tmp"))  # no half-written file under any name
    rows = read_summary(out)
    ok = {r["field"] for r in rows if r["status"] == "ok"}
    assert {f"{f}_sr.tif" for f in ok} <= set(done)  # the summary never claims what is not there
    if sig == "SIGINT":  # Ctrl-C: a clean stop, the rest marked
        assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
        assert {r["status"] for r in rows} <= {"ok", "not run"} and len(rows) == 6
    # resume: only what is missing runs
    res = subprocess.run(cmd + ["--skip-existing"], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert res.returncode == 0, res.stderr
    rows = {r["field"]: r for r in read_summary(out)}
    assert len(rows) == 6 and {r["status"] for r in rows.values()} <= {"ok", "skipped"}
    # every output that existed is complete (written under a temporary name, then renamed) and
    # records its settings, so every one of them is skipped, none redone
    assert {f for f, r in rows.items() if r["status"] == "skipped"} == {d[:-len("_sr.tif")] for d in done}


def test_info_and_models(tiny_model_path, capsys):
    assert main(["info", str(tiny_model_path)]) == 0
    out = capsys.readouterr().out
    assert "DNA, NFkB" in out and "latent prior fitted" in out


def test_models_lists_good_models_and_fails_on_a_broken_one(tiny_model_path, tmp_path, monkeypatch, capsys):
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
    assert set(b.provenance["prior"]) == {"fitted", "n_samples", "flow", "flow_epochs", "flow_noise", "seed", "seconds"}


@pytest.mark.parametrize("extra, message", [
    (["--samples", "0"], "--samples must be >= 2"), (["--flow-blocks", "0"], "--flow-blocks must be >= 1"),
    (["--flow-hidden", "0"], "--flow-hidden"), (["--flow-epochs", "0"], "--flow-epochs must be >= 1"),
    (["--flow-noise", "-1"], "--flow-noise must be")])
def test_fit_prior_refuses_settings_before_any_work(tmp_path, capsys, extra, message):
    from conftest import make_tiny_bundle

    p = make_tiny_bundle(tmp_path / "bare.h5", with_prior=False)
    rc = main(["fit-prior", str(p), "-o", str(tmp_path / "out.h5"), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err and not (tmp_path / "out.h5").exists()


def test_fit_prior_leaves_shipped_models_and_folders_alone(tmp_path, capsys, monkeypatch):
    from conftest import make_tiny_bundle
    import rls_core.registry as registry

    models = tmp_path / "models"
    shipped = make_tiny_bundle(models / "tiny.h5", with_prior=False)
    monkeypatch.setattr(registry, "MODELS_DIR", models)
    before = shipped.read_bytes()
    assert main(["fit-prior", "tiny", "--samples", "100", "--flow-epochs", "1"]) == 2
    assert "shipped with the package" in capsys.readouterr().err and shipped.read_bytes() == before
    monkeypatch.chdir(tmp_path)
    assert main(["fit-prior", str(shipped), "-o", str(models), "--samples", "100", "--flow-epochs", "1"]) == 2
    assert "is a folder" in capsys.readouterr().err and not list(tmp_path.glob("*.tmp"))


def test_console_script_help():
    exe = Path(sys.executable).with_name("rls")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "rls_core.cli"]
    out = subprocess.run(cmd + ["super-resolve", "--help"], capture_output=True, text=True, check=True).stdout
    assert "fidelity vs realism" in out and "--samples" in out


def test_shards_cover_every_field_once_with_the_bytes_of_one_run(tmp_path, tiny_model_path, capsys):
    """Two array tasks (--shard 1/2, 2/2) into one folder give every field exactly once, with
    the same bytes as one in-process run (per-tile random streams keyed by field name)."""
    lr = tmp_path / "lr"
    lr.mkdir()
    files = _many_fields(lr, 5)
    common = ["--model", str(tiny_model_path), "--factor", "8", "--steps", "3", "-q"]
    assert main(["super-resolve", *files, "-o", str(tmp_path / "one"), *common]) == 0
    for i in (1, 2):  # the inputs in another order for each task: the split must not care
        order = files if i == 1 else files[::-1]
        assert main(["super-resolve", *order, "-o", str(tmp_path / "arr"), *common, "--shard", f"{i}/2"]) == 0
    parts = [read_summary(tmp_path / "arr", f"summary_shard{i}of2.csv") for i in (1, 2)]
    names = [r["field"] for rows in parts for r in rows]
    assert sorted(names) == sorted(Path(f).stem for f in files) and len(set(names)) == len(names)
    for f in files:
        stem = Path(f).stem
        assert (tmp_path / "arr" / f"{stem}_sr.tif").read_bytes() != b""
        a = tifffile.imread(tmp_path / "one" / f"{stem}_sr.tif")
        b = tifffile.imread(tmp_path / "arr" / f"{stem}_sr.tif")
        assert np.array_equal(a, b), stem
    # negative control: the draws matter (another seed, other bytes), so the equality above is
    # the per-tile streams' doing and not a search that draws nothing
    stem = Path(files[0]).stem
    assert main(["super-resolve", files[0], "-o", str(tmp_path / "seed1"), *common, "--seed", "1"]) == 0
    assert not np.array_equal(tifffile.imread(tmp_path / "seed1" / f"{stem}_sr.tif"),
                              tifffile.imread(tmp_path / "one" / f"{stem}_sr.tif"))
    # the array's commands, one shard each
    capsys.readouterr()
    assert main(["super-resolve", *files, "-o", str(tmp_path / "arr"), *common, "--print-commands", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(f"--shard {i}/3" in line for i, line in enumerate(lines, 1))
    assert all("--print-commands" not in line for line in lines)
    assert main(["super-resolve", *files, "-o", str(tmp_path / "x"), *common, "--shard", "3/2"]) == 2


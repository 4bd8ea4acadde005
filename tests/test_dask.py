"""The Dask engine of `rls super-resolve` on a real dask.distributed cluster (worker processes)."""
import os
import signal
import sys
import threading
import time

import numpy as np
import pytest
import tifffile

distributed = pytest.importorskip("distributed", reason="the Dask extra is not installed: pip install -e '.[dask]'")

from rls_core.cli import main  # noqa: E402
from test_cli import clean_uint16, read_summary  # noqa: E402

TIMING = {"seconds"}


@pytest.fixture()
def fields(tmp_path, generated_field):
    """Six two-channel fields (multi-page TIFFs), each a differently shifted copy of the model's field."""
    _, lr = generated_field
    d = tmp_path / "lr"
    d.mkdir()
    raw = clean_uint16(lr)
    for i in range(6):
        tifffile.imwrite(d / f"well_{i:02d}.tif", np.roll(raw, i, axis=2))
    return sorted(str(p) for p in d.iterdir())


def common(model, steps):
    return ["--model", str(model), "--factor", "8", "--method", "rls", "--steps", str(steps), "-q"]


@pytest.fixture()
def one_thread():
    """The workers run torch on one thread: so does the in-process reference run."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def assert_same_run(out_a, out_b, names):
    rows_a = {r["field"]: r for r in read_summary(out_a)}
    rows_b = {r["field"]: r for r in read_summary(out_b)}
    assert sorted(rows_a) == sorted(rows_b) == sorted(names)
    for name in names:
        a = {k: v for k, v in rows_a[name].items() if k not in TIMING | {"output"}}
        b = {k: v for k, v in rows_b[name].items() if k not in TIMING | {"output"}}
        assert a == b and a["status"] == "ok"
        np.testing.assert_array_equal(tifffile.imread(out_a / f"{name}_sr.tif"), tifffile.imread(out_b / f"{name}_sr.tif"))


def test_local_cluster_gives_the_bytes_of_an_in_process_run(fields, tmp_path, tiny_model_path, one_thread):
    names = [os.path.basename(f)[:-4] for f in fields]
    assert main(["super-resolve", *fields, "-o", str(tmp_path / "inproc"), *common(tiny_model_path, 20)]) == 0
    assert main(["super-resolve", *fields, "-o", str(tmp_path / "dask"), *common(tiny_model_path, 20),
                 "--cluster", "local", "--workers", "2"]) == 0
    assert_same_run(tmp_path / "inproc", tmp_path / "dask", names)
    # negative control: another seed gives other bytes, so the equality is the streams' doing
    assert main(["super-resolve", fields[0], "-o", str(tmp_path / "seed1"), *common(tiny_model_path, 20),
                 "--seed", "1"]) == 0
    assert not np.array_equal(tifffile.imread(tmp_path / "seed1" / f"{names[0]}_sr.tif"),
                              tifffile.imread(tmp_path / "dask" / f"{names[0]}_sr.tif"))
    # the summary lists the fields in input order, whatever order they finished in
    assert [r["field"] for r in read_summary(tmp_path / "dask")] == names


def test_a_worker_killed_mid_run_loses_nothing(fields, tmp_path, tiny_model_path, one_thread):
    """SIGKILL a worker that is running a field once the first output exists: the field runs
    again on a worker, every field ends ok, and the bytes equal an in-process run's."""
    names = [os.path.basename(f)[:-4] for f in fields]
    out = tmp_path / "dask"
    killed = []
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc, \
            distributed.Client(lc) as client:

        def kill_a_busy_worker():
            deadline = time.time() + 120
            while time.time() < deadline and not list(out.glob("*_sr.tif")):
                time.sleep(0.05)
            while time.time() < deadline:
                busy = [w for w, keys in client.processing().items() if keys]
                if busy:
                    pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
                time.sleep(0.02)

        t = threading.Thread(target=kill_a_busy_worker)
        t.start()
        rc = main(["super-resolve", *fields, "-o", str(out), *common(tiny_model_path, 150),
                   "--scheduler", lc.scheduler_address])
        t.join()
    assert killed, "no worker was busy after the first output: the fields ran too fast for this test"
    assert rc == 0
    assert main(["super-resolve", *fields, "-o", str(tmp_path / "inproc"), *common(tiny_model_path, 150)]) == 0
    assert_same_run(tmp_path / "inproc", out, names)
    assert not list(out.glob("*.tmp"))  # the killed worker's half-written file never got a final name


def test_without_dask_the_option_says_how_to_install_it(fields, tmp_path, tiny_model_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the extra were not installed
    rc = main(["super-resolve", *fields, "-o", str(tmp_path / "x"), *common(tiny_model_path, 2), "--cluster", "local"])
    err = capsys.readouterr().err
    assert rc == 2 and "pip install" in err and "[dask]" in err and "Traceback" not in err


def test_an_unreachable_scheduler_is_one_clear_line(fields, tmp_path, tiny_model_path, capsys):
    rc = main(["super-resolve", *fields, "-o", str(tmp_path / "x"), *common(tiny_model_path, 2),
               "--scheduler", "tcp://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in err


def test_the_default_run_never_imports_dask(fields, tmp_path, tiny_model_path):
    import subprocess

    code = ("import sys; from rls_core.cli import main; "
            f"rc = main(['super-resolve', *{fields!r}, '-o', {str(tmp_path / 'y')!r}, *{common(tiny_model_path, 2)!r}]); "
            "assert rc == 0, rc; assert 'distributed' not in sys.modules and 'dask' not in sys.modules; print('clean')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert res.returncode == 0 and "clean" in res.stdout, res.stderr[-2000:]


def _malloc_trim_threshold():
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_local_cluster_workers_keep_glibcs_adaptive_malloc():
    """Dask's nanny would start workers with MALLOC_TRIM_THRESHOLD_=65536, which switches off
    glibc's adaptive mmap threshold and made each field ~1.9x slower (docs/scale-out.md)."""
    from rls_core.dask_engine import open_client

    with open_client(cluster="local", workers=1) as client:
        assert list(client.run(_malloc_trim_threshold).values()) == [None]
    # the setting is the cluster's own: Dask's default is back for anything started later
    import dask

    assert dask.config.get("distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_") == 65536

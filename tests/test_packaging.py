"""A regular (non-editable) install carries the CellProfiler module and the shared pipelines."""
from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

from rls_core.errors import RLSError
from rls_core.resources import candidates, shared_dir

ROOT = Path(__file__).resolve().parents[1]
SHARED = ("plugins/superresolverls.py", "pipelines/translocation.cppipe", "pipelines/translocation_hr.cppipe",
          "pipelines/golgi.cppipe", "pipelines/golgi_hr.cppipe")


def test_a_clone_finds_its_own_folders():
    assert shared_dir("pipelines") == ROOT / "pipelines"
    assert shared_dir("plugins") == ROOT / "plugins"
    with pytest.raises(ValueError, match="unknown kind"):
        candidates("models")


def test_missing_files_name_the_places_and_the_fix(monkeypatch, tmp_path):
    import rls_core.resources as res

    monkeypatch.setattr(res, "_REPO", tmp_path)
    monkeypatch.setattr(res.sys, "prefix", str(tmp_path))
    monkeypatch.setattr(res.sysconfig, "get_paths", lambda: {"data": str(tmp_path)})
    monkeypatch.setattr(res.site, "USER_BASE", str(tmp_path))
    with pytest.raises(RLSError, match="not installed.*reinstall"):
        res.shared_dir("pipelines")


@pytest.mark.slow
def test_wheel_install_finds_and_copies_the_cellprofiler_files(tmp_path):
    """Build the wheel, install it (no dependencies: these paths need no torch) into a fresh
    venv and run `rls cellprofiler-files` there, outside the clone."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(ROOT)], check=True, capture_output=True, timeout=300)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    wheel = next(wheels.glob("*.whl"))
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True,
                   capture_output=True, timeout=300)
    # numpy (bundle.py) from this environment, appended after the venv's own packages: a plain
    # path line, so this environment's editable rls_core is not picked up
    import numpy
    site_dir = next((env_dir / "lib").glob("python3*/site-packages"))
    (site_dir / "zz_numpy_from_test_env.pth").write_text(str(Path(numpy.__file__).resolve().parents[1]) + "\n")
    out = tmp_path / "cp"
    res = subprocess.run([str(env_dir / "bin" / "rls"), "cellprofiler-files", str(out)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    for rel in SHARED:
        copied = out / rel
        assert copied.read_bytes() == (ROOT / rel).read_bytes(), rel
    # the installed copy is what was found (not this clone)
    found = subprocess.run([str(py), "-c", "from rls_core.resources import shared_dir; print(shared_dir('pipelines'))"],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(found) == env_dir / "share" / "superresolve-rls" / "pipelines"
    # a second copy into the same folder refuses to overwrite, with the fix
    again = subprocess.run([str(env_dir / "bin" / "rls"), "cellprofiler-files", str(out)], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "--force" in again.stderr and "Traceback" not in again.stderr

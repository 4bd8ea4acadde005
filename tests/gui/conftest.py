"""Fixtures of the opt-in GUI tests (`pytest -m gui tests/gui`): one real CellProfiler GUI session.

The session runs once (session fixture `gui_session`): a private Xvfb display, a temporary HOME
with CellProfiler's preferences seeded for an unattended run, a tiny model and tiny LR images,
and tests/gui/driver.py started as the GUI's Python. The driver clicks through the GUI and
writes what it saw to a JSON file; the tests assert on that, on the spreadsheets the analysis
wrote and on the screenshots, which stay in tests/gui/artifacts/ for people to look at.

Set-up: scripts/install_gui.sh (Debian/Ubuntu). The GUI's Python is the one running pytest with
.venv/gui-path (Debian's wx) on PYTHONPATH, or .venv-gui's, or RLS_GUI_PYTHON=/path/to/python
(e.g. a conda environment with wxPython).
"""
from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ARTIFACTS = HERE / "artifacts"
#: folder with a `wx` link to Debian's wxPython, made by scripts/install_gui.sh
GUI_PATH = ROOT / ".venv" / "gui-path"
EXAMPLES_LR = ROOT / "examples" / "translocation" / "lr"
#: site 1 of each condition, cropped to 8x8 LR pixels (64x64 at 8x): seconds per search
LR_FIELDS = ("translocation_DMSO_B02_s1", "translocation_TNFa_B03_s1")
CHANNELS = ("DNA", "NFkB")
MODEL_FILE = "my_assay.h5"
FACTOR, STEPS = 8, 3
ADVANCED_LABELS = ("Prior weight of the latent likelihood (lambda_logp)",
                   "Prior weight of the latent norm (lambda_pnorm)",
                   "Prior weight of the cross-layer consistency (lambda_cross)",
                   "Batch size (tiles x samples)",
                   "Generator acceleration")
SCREEN = (1920, 1200)
DEADLINE_S = 240  # the driver gives up (with a screenshot) after this
START_ATTEMPTS = 3  # Xvfb here now and then refuses wx's first connection: start again


def gui_python() -> tuple[str, list[str]]:
    """(python, extra PYTHONPATH entries) that run the GUI."""
    custom = os.environ.get("RLS_GUI_PYTHON")
    if custom:
        return custom, [str(ROOT / "gui")]
    gui_venv = ROOT / ".venv-gui" / "bin" / "python"  # made where .venv cannot load Debian's wx
    if gui_venv.exists():
        return str(gui_venv), [str(ROOT / "gui")]
    return sys.executable, [str(GUI_PATH), str(ROOT / "gui")]


def gui_env(display: str, home: Path) -> dict:
    python, paths = gui_python()
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)  # the GUI needs WXAgg (test.sh sets Agg for the headless tests)
    env.update(
        DISPLAY=display, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
        PYTHONPATH=os.pathsep.join(paths + [p for p in [os.environ.get("PYTHONPATH")] if p]),
        GDK_BACKEND="x11", NO_AT_BRIDGE="1",  # no accessibility bus to wait for under Xvfb
        PYTHONUNBUFFERED="1",
    )
    return env


def _cannot_run(reason: str):
    """Skip with the reason, or fail where the GUI tests are required (CI: RLS_GUI_REQUIRED=1,
    set by scripts/test.sh), so CI never passes without having run them."""
    if os.environ.get("RLS_GUI_REQUIRED") == "1":
        pytest.fail("the GUI tests are required here but cannot run: " + reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def gui_available():
    if not shutil.which("Xvfb"):
        _cannot_run("Xvfb is not installed (run scripts/install_gui.sh, or apt-get install xvfb)")
    python, paths = gui_python()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    probe = subprocess.run([python, "-c", "import wx, appose, cellprofiler, rls_core; print(wx.__version__)"],
                           capture_output=True, text=True, env=env, timeout=120)
    if probe.returncode != 0:
        _cannot_run("the GUI's Python (%s) cannot import wxPython/appose/CellProfiler/rls_core: run "
                    "scripts/install_gui.sh, or set RLS_GUI_PYTHON (%s)"
                    % (python, (probe.stderr.strip().splitlines() or ["?"])[-1]))
    return python


@pytest.fixture(scope="session")
def xvfb_display(gui_available):
    """A private Xvfb; -displayfd lets the server pick a free display number and say when it listens."""
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "%dx%dx24" % SCREEN,
                             "-nolisten", "tcp"], pass_fds=(write_fd,), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    os.close(write_fd)
    try:
        ready, _, _ = select.select([read_fd], [], [], 30)
        number = os.read(read_fd, 64).decode().strip() if ready else ""
        if not number:
            pytest.fail("Xvfb did not start (no display number within 30 s)")
        yield ":" + number
    finally:
        os.close(read_fd)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def make_lr_images(dest: Path) -> int:
    import tifffile

    dest.mkdir(parents=True, exist_ok=True)
    for field in LR_FIELDS:
        for channel in CHANNELS:
            name = "%s_%s.tif" % (field, channel)
            tifffile.imwrite(dest / name, tifffile.imread(EXAMPLES_LR / name)[4:12, 4:12])
    return len(LR_FIELDS) * len(CHANNELS)


def seed_preferences(home: Path) -> None:
    """CellProfiler's preferences for an unattended run (no telemetry prompt, no update check,
    no welcome screen, no Bio-Formats/Java), with this repository's plugins folder."""
    cfg = home / ".config" / "CellProfiler" / "CellProfilerLocal.cfg"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text("\n".join([
        "Telemetry=0", "Telemetry prompt=0", "CheckForUpdates=Disabled", "StartupBlurb=0",
        "PluginDirectoryCP4=%s" % (ROOT / "plugins"), "Reader.Bio-Formats.enabled=0",
        "ShowAnalysisCompleteDlg=False", "ShowExitingTestModeDlg=False", "ShowBadSizesDlg=False",
        "WarnAboutOldPipeline=0", "MaxWorkers=1", ""]))
    # no blinking caret or animations: a screenshot counts once the window stops changing
    gtk = home / ".config" / "gtk-3.0" / "settings.ini"
    gtk.parent.mkdir(parents=True, exist_ok=True)
    gtk.write_text("[Settings]\ngtk-cursor-blink=false\ngtk-enable-animations=false\n")


def stop_group(proc: subprocess.Popen) -> None:
    """End the GUI and its analysis workers (the process group this fixture started)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.fixture(scope="session")
def gui_session(request, xvfb_display, tmp_path_factory):
    """Run the scripted GUI session once; returns its result (see tests/gui/driver.py)."""
    parent = request.config.pluginmanager.get_plugin(str(ROOT / "tests" / "conftest.py"))
    work = tmp_path_factory.mktemp("gui")
    output_dir = work / "output"
    parent.make_tiny_bundle(output_dir / "models" / MODEL_FILE, channels=CHANNELS, resolution=32)
    n_files = make_lr_images(work / "lr")
    home = work / "home"
    seed_preferences(home)
    ARTIFACTS.mkdir(exist_ok=True)
    for old in list(ARTIFACTS.glob("*.png")) + list(ARTIFACTS.glob("*.json")) + list(ARTIFACTS.glob("*.log")):
        old.unlink()
    spec = {
        "artifacts": str(ARTIFACTS), "result": str(ARTIFACTS / "result.json"),
        "pipeline": str(ROOT / "pipelines" / "translocation.cppipe"), "plugins": str(ROOT / "plugins"),
        "output_dir": str(output_dir), "lr_dir": str(work / "lr"), "n_files": n_files,
        "category": "Image Processing", "model_choice": "Custom file...",
        # the model sits in <Default Output Folder>/models: no temporary path in the screenshots' settings
        "model_directory": "Default Output Folder sub-folder|models", "model_file": MODEL_FILE,
        "factor": FACTOR, "steps": STEPS, "advanced_labels": list(ADVANCED_LABELS),
        "frame_size": [1150, SCREEN[1] - 20], "analysis_timeout": 150, "deadline_s": DEADLINE_S,
    }
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    python, _ = gui_python()
    log_path = ARTIFACTS / "gui.log"
    t0 = time.time()
    for attempt in range(1, START_ATTEMPTS + 1):
        with open(log_path, "w") as log:
            proc = subprocess.Popen([python, str(HERE / "driver.py"), str(spec_path)], cwd=ROOT,
                                    env=gui_env(xvfb_display, home), stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                proc.wait(DEADLINE_S + 60)
            except subprocess.TimeoutExpired:
                pass
            finally:
                stop_group(proc)
        text = log_path.read_text(errors="replace")
        if Path(spec["result"]).exists() or "Unable to access the X Display" not in text \
                and "wxEntryStart failed" not in text:
            break
        shutil.copy(log_path, ARTIFACTS / ("gui_start_failure_%d.log" % attempt))
    result_path = Path(spec["result"])
    if not result_path.exists():
        pytest.fail("the GUI session wrote no result; last lines of %s:\n%s"
                    % (log_path, "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])))
    result = json.loads(result_path.read_text())
    result.update(output_dir=str(output_dir), attempts=attempt, wall_seconds=round(time.time() - t0, 1),
                  log=str(log_path))
    return result

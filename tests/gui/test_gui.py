"""SuperResolveRLS in the real CellProfiler 5 GUI (opt-in: `pytest -m gui tests/gui`).

One scripted session (tests/gui/driver.py, run by the `gui_session` fixture) opens
pipelines/translocation.cppipe, finds the module under its category in "Add modules", points
it at a tiny model through its settings panel, toggles the advanced settings, opens the help,
runs test mode on the first image set and then "Analyze Images" on both. Each test checks one
of these outcomes; the screenshots are kept in tests/gui/artifacts/.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from .conftest import ADVANCED_LABELS, ARTIFACTS, FACTOR

pytestmark = pytest.mark.gui

SR = "SuperResolveRLS"
FEATURES = ("LRPSNR", "ConvergedFraction", "Seconds", "NumberOfTiles", "Succeeded")
TEXT_FEATURES = ("FailureReason", "Warnings", "Model", "ModelChecksum", "Version")
#: what a user sees with a custom model, the RLS method and the advanced settings hidden
BASIC_LABELS = ("Model", "Folder holding the model file", "Model file name", "Number of channels",
                "Select the LR image for model channel 1", "Select the LR image for model channel 2",
                "Name the super-resolved image", "Upscaling factor", "Method", "Fidelity vs realism",
                "Search steps", "Number of samples (uncertainty)", "Random seed", "Compute device",
                "Automatic tile overlap?", "Show advanced settings?")


def need(session, key):
    """A part of the session's result, or a failure that shows why the driver stopped."""
    if key not in session:
        pytest.fail("the GUI session did not get to '%s': %s\n(log: %s)"
                    % (key, session.get("error", "no error recorded"), session["log"]))
    return session[key]


def labels(entries):
    return {e["label"] for e in entries}


def screenshot(session, name):
    """The screenshot as an RGB array; it must exist and not be blank."""
    from PIL import Image

    shots = need(session, "screenshots")
    assert name in shots, "no screenshot %s (%s)" % (name, session.get("error"))
    path = Path(shots[name]["path"])
    assert path.is_file() and path.parent == ARTIFACTS
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=float)
    gray = pixels.mean(axis=2)
    assert gray.std() > 10, "%s looks blank (pixel std %.1f)" % (name, gray.std())
    # a picture, not one flat colour with a few pixels of noise
    values, counts = np.unique(gray.astype(int), return_counts=True)
    assert counts.max() < 0.95 * gray.size and len(values) > 20, name
    return pixels


def test_session_completed_without_dialogs(gui_session):
    assert "error" not in gui_session, gui_session["error"]
    # every message box CellProfiler would have shown (and the driver answered) is a problem
    assert gui_session["dialogs"] == []
    # (no time limit here: speed belongs in benchmarks; the driver's own timeout catches a hang)


def test_module_listed_under_its_category(gui_session):
    registry = need(gui_session, "registry")
    assert registry == {"listed": True, "category": "Image Processing"}
    add_modules = need(gui_session, "add_modules")
    assert "Image Processing" in add_modules["categories"]
    # CellProfiler 5 prefixes plugins with a puzzle piece: "\N{JIGSAW PUZZLE PIECE} SuperResolveRLS"
    assert [m for m in add_modules["modules"] if m.split()[-1] == SR], add_modules["modules"]
    assert "Threshold" in add_modules["modules"]  # the built-in modules of the category are there too
    screenshot(gui_session, "add_modules.png")
    assert SR in need(gui_session, "pipeline_modules")


def test_settings_panel_readable_and_valid(gui_session):
    shown = need(gui_session, "labels_basic")
    assert set(BASIC_LABELS) <= labels(shown), set(BASIC_LABELS) - labels(shown)
    assert not labels(shown) & set(ADVANCED_LABELS), "advanced settings shown without asking"
    for entry in shown:  # every label is drawn in full and none is red (the module validates)
        assert entry["width"] >= entry["best"], "label cut: %r" % entry["label"]
        assert not entry["red"], "setting in error: %r" % entry["label"]
    assert gui_session["list_state_after"] == "ok"  # no error icon next to it in the pipeline list
    settings = gui_session["settings_after_edit"]
    assert settings["Model"] == "Custom file..." and settings["Upscaling factor"] == str(FACTOR)
    assert settings["Model file name"] == "my_assay.h5"
    screenshot(gui_session, "settings.png")  # the main window: pipeline + settings
    panel = screenshot(gui_session, "settings_panel.png")  # the settings alone (README picture)
    assert panel.shape[0] > 500 and panel.shape[1] > 500, panel.shape


def test_advanced_settings_hidden_until_asked(gui_session):
    basic = labels(need(gui_session, "labels_basic"))
    advanced = labels(need(gui_session, "labels_advanced"))
    hidden_again = labels(need(gui_session, "labels_hidden_again"))
    adv = set(ADVANCED_LABELS)
    # Only the advanced labels are compared: other rows (the model folder's "Sub-folder:",
    # rows scrolled past the panel's edge) may change between two snapshots.
    assert not adv & basic  # hidden until asked
    assert adv <= advanced  # "Yes" shows them
    assert not adv & hidden_again  # "No" hides them again
    screenshot(gui_session, "settings_advanced.png")


def test_help_opens(gui_session):
    module_help = need(gui_session, "help")
    assert module_help["title"] == 'Help for module, "%s"' % SR
    text = module_help["text"]
    assert len(text) > 2000
    for phrase in ("regularized latent search", "Measurements made by this module", "LRPSNR", "References"):
        assert phrase in text, phrase
    screenshot(gui_session, "help_module.png")
    setting_help = need(gui_session, "setting_help")
    assert setting_help["title"] == "Model" and "Custom file" in setting_help["text"]


def test_test_mode_runs_module_and_shows_display(gui_session):
    run = need(gui_session, "test_mode")
    assert run["image_set"] == 1
    assert run["module_errors"] and all(float(v) == 0 for v in run["module_errors"].values()), run["module_errors"]
    measured = run["sr_measurements"]
    assert set(measured) == {"%s_%s_DNA" % (SR, f) for f in FEATURES + TEXT_FEATURES}
    values = {"%s_%s_DNA" % (SR, f): float(measured["%s_%s_DNA" % (SR, f)]) for f in FEATURES}
    assert values["%s_Succeeded_DNA" % SR] == 1 and measured["%s_FailureReason_DNA" % SR] == ""
    assert math.isfinite(values["%s_LRPSNR_DNA" % SR])
    assert values["%s_NumberOfTiles_DNA" % SR] == 9  # 8x8 LR px in 4-px tiles, 1 px overlap
    display = need(gui_session, "display")
    assert display["title"].startswith("%s #5" % SR)
    assert display["axes"] == ["LR input: DNA_LR", "Super-resolved: DNA (DNA)",
                               "LR input: NFkB_LR", "Super-resolved: NFkB (NFkB)"]
    screenshot(gui_session, "display.png")


def test_analyze_images_writes_the_module_measurements(gui_session):
    analysis = need(gui_session, "analysis")
    assert analysis["cancelled"] is False and analysis["image_sets"] == 2
    assert analysis["status"] == ["Done", "Done"]
    path = Path(gui_session["output_dir"]) / "Translocation_Image.csv"
    assert path.is_file(), "Analyze Images wrote no image spreadsheet"
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2
    columns = [c for c in rows[0] if c.startswith(SR + "_")]
    assert sorted(columns) == sorted("%s_%s_DNA" % (SR, f) for f in FEATURES + TEXT_FEATURES)
    assert {r["Metadata_Condition"] for r in rows} == {"DMSO", "TNFa"}
    for row in rows:
        assert math.isfinite(float(row["%s_LRPSNR_DNA" % SR]))
        assert int(float(row["%s_NumberOfTiles_DNA" % SR])) == 9
        assert row["%s_Succeeded_DNA" % SR] == "1" and len(row["%s_ModelChecksum_DNA" % SR]) == 64
    assert (Path(gui_session["output_dir"]) / "Translocation_Cells.csv").is_file()
    screenshot(gui_session, "after_analysis.png")

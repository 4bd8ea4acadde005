"""The SuperResolveRLS CellProfiler module on its own, in real CellProfiler 5 (headless).

Settings round-trip through a saved pipeline, every validation error, and runs on a tiny real
model in a real workspace: output shapes, masks, measurements, uncertainty images, run-time
errors, and a downstream IdentifyPrimaryObjects on the SR output (the mask gotcha).
"""
from __future__ import annotations

import io
import math
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_make_pipelines():
    """pipelines/make_pipelines.py as a module (it holds the headless CellProfiler set-up)."""
    from conftest import load_script

    return load_script(ROOT / "pipelines" / "make_pipelines.py", "make_pipelines")


@pytest.fixture(scope="session")
def cp():
    """Headless CellProfiler with the repository's plugins (once per session)."""
    import sys

    mp = sys.modules.get("make_pipelines") or load_make_pipelines()
    sys.modules["make_pipelines"] = mp
    mp.init_cellprofiler()
    return mp


@pytest.fixture
def sr_module(cp, tiny_model_path):
    return make_module(tiny_model_path)


def make_module(model_path, channels=("DNA_LR", "NFkB_LR"), outputs=("DNA", "NFkB"), **settings):
    from cellprofiler_core.preferences import ABSOLUTE_FOLDER_NAME
    from cellprofiler_core.utilities.core.modules import instantiate_module

    m = instantiate_module("SuperResolveRLS")
    m.set_module_num(1)
    m.model_choice.value = "Custom file..."
    m.model_directory.join_parts(ABSOLUTE_FOLDER_NAME, str(Path(model_path).parent))
    m.model_file.value = Path(model_path).name
    m.channel_count.value = len(channels)
    for g, lr, out in zip(m.channels, channels, outputs):
        g.input_image.value = lr
        g.output_image.value = out
    defaults = dict(factor=8, steps=3, device="CPU", batch_size=64)
    defaults.update(settings)
    for k, v in defaults.items():
        getattr(m, k).value = v
    return m


def workspace_for(module, images, masks=None):
    """A real CellProfiler workspace holding `images` (name -> 2-D array) for `module`."""
    from cellprofiler_core.image import Image, ImageSetList
    from cellprofiler_core.measurement import Measurements
    from cellprofiler_core.object import ObjectSet
    from cellprofiler_core.pipeline import Pipeline
    from cellprofiler_core.workspace import Workspace

    pipeline = Pipeline()
    pipeline.add_module(module)
    isl = ImageSetList()
    image_set = isl.get_image_set(0)
    for name, px in images.items():
        mask = None if masks is None else masks.get(name)
        image_set.add(name, Image(px, mask=mask) if mask is not None else Image(px))
    return Workspace(pipeline, module, image_set, ObjectSet(), Measurements(), isl)


def lr_pair(shape=(8, 12), seed=0):
    rng = np.random.default_rng(seed)
    return {"DNA_LR": rng.uniform(0.0, 0.08, shape).astype(np.float32),
            "NFkB_LR": rng.uniform(0.0, 0.05, shape).astype(np.float32)}


def validation_message(module, pipeline=None):
    from cellprofiler_core.pipeline import Pipeline
    from cellprofiler_core.setting import ValidationError

    if pipeline is None:
        pipeline = Pipeline()
        pipeline.add_module(module)
    try:
        module.validate_module(pipeline)
    except ValidationError as e:
        return e.message, e.get_setting()
    return None, None


# ----------------------------------------------------------------------------- loading, settings
def test_plugin_registered(cp):
    from cellprofiler_core.utilities.core.modules import get_module_class

    cls = get_module_class("SuperResolveRLS")
    assert cls.category == "Image Processing"
    assert cls.variable_revision_number == 3
    # every setting a user can see has help (the GUI's "?" buttons), and the Method help explains
    # every choice, which come from the library's method table: a method added there without
    # help in the module fails here
    from rls_core.methods import MODULE_CHOICES

    module = cls()
    module.show_advanced.value = True
    for setting in module.visible_settings():
        if type(setting).__name__ == "Divider":
            continue
        assert len((setting.doc or "").strip()) >= 40, f"setting {setting.text!r} has no help text"
    assert module.method.choices == list(MODULE_CHOICES)
    for name in MODULE_CHOICES:
        assert f"*{name}*" in module.method.doc, f"method {name!r} is not explained in the Method help"
    # heavy dependencies are imported lazily: loading the plugin (as CellProfiler does at start-up,
    # for every user, pipeline or not) imports neither torch nor the search code
    import subprocess
    import sys

    code = ("import sys; sys.path.insert(0, %r); import superresolverls; "
            "heavy = sorted(m for m in ('torch', 'rls_core.api', 'rls_core.model') if m in sys.modules); "
            "print('HEAVY', heavy)" % str(ROOT / "plugins"))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert "HEAVY []" in res.stdout, res.stdout[-2000:] + res.stderr[-3000:]


def test_settings_round_trip(cp, tiny_model_path):
    from cellprofiler_core.pipeline import Pipeline

    m = make_module(tiny_model_path, method="PULSE", realism=2.5, steps=17, samples=3,
                    uncertainty_suffix="_Std", seed=11, gpu_memory_share=0.5, auto_overlap=False, overlap=1,
                    show_advanced=True, lambda_logp=0.01, lambda_pnorm=0.02, lambda_cross=0.3, batch_size=7)
    p = Pipeline()
    p.add_module(m)
    buf = io.StringIO()
    p.dump(buf, save_image_plane_details=False)
    p2 = Pipeline()
    p2.loadtxt(io.StringIO(buf.getvalue()))
    m2 = p2.modules()[0]
    assert m2.module_name == "SuperResolveRLS"
    assert [s.value_text for s in m2.settings()] == [s.value_text for s in m.settings()]
    assert m2.model_reference() == str(tiny_model_path)
    assert m2.uncertainty_names() == ["DNA_Std", "NFkB_Std"]  # K = 3 samples
    m2.method.value = "bicubic"
    assert m2.uncertainty_names() == []  # no search, no samples


def test_older_revisions_upgrade_step_by_step(cp, sr_module):
    """Revision 1 lacked the acceleration setting (-> float32, the reference), revision 2 the
    on-failure setting (-> stop, as before); the module's labels map onto rls_core's modes."""
    import sys

    from rls_core.accel import ACCEL_MODES

    plugin = sys.modules[type(sr_module).__module__]
    assert set(plugin.ACCEL_LABELS.values()) == set(ACCEL_MODES)
    current = [s.value_text for s in sr_module.settings()]
    rev2, rev1 = current[:-1], current[:-2]
    assert sr_module.upgrade_settings(list(rev1), 1, "SuperResolveRLS") == (
        rev1 + [plugin.ACCEL_DEFAULT_LABEL, plugin.ON_FAILURE_STOP], 3)
    assert sr_module.upgrade_settings(list(rev2), 2, "SuperResolveRLS") == (rev2 + [plugin.ON_FAILURE_STOP], 3)
    # a newer revision than the plugin knows: refused with the fix, not zipped onto these settings
    with pytest.raises(ValueError, match="newer version of the module .*revision 4.*Update SuperResolveRLS"):
        sr_module.upgrade_settings(current + ["x"], sr_module.variable_revision_number + 1, "SuperResolveRLS")


def test_a_revision_2_pipeline_file_loads_with_stop_on_failure(cp, tiny_model_path):
    """A .cppipe saved by the previous release (revision 2, no on-failure line) loads."""
    from cellprofiler_core.pipeline import Pipeline

    m = make_module(tiny_model_path)
    m.on_failure.value = "Continue with blank outputs"
    p = Pipeline()
    p.add_module(m)
    buf = io.StringIO()
    p.dump(buf, save_image_plane_details=False)
    text = buf.getvalue()
    assert "variable_revision_number:3" in text and "When an image set fails:Continue" in text
    old = "\n".join(line for line in text.splitlines() if "When an image set fails" not in line)
    old = old.replace("variable_revision_number:3", "variable_revision_number:2")
    p2 = Pipeline()
    p2.loadtxt(io.StringIO(old))
    m2 = p2.modules()[0]
    assert m2.on_failure.value == "Stop the analysis"
    assert [s.value_text for s in m2.settings()][:-1] == [s.value_text for s in m.settings()][:-1]


def test_visible_settings_follow_choices(cp, sr_module):
    m = sr_module
    vis = m.visible_settings()
    assert m.model_file in vis and m.channels[2].input_image not in vis and m.lambda_cross not in vis
    m.method.value = "bicubic"
    assert m.steps not in m.visible_settings()
    m.method.value = "RLS"
    m.show_advanced.value = True
    m.samples.value = 2
    vis = m.visible_settings()
    assert m.lambda_cross in vis and m.batch_size in vis and m.uncertainty_suffix in vis


# ----------------------------------------------------------------------------- validation
def test_validates_with_tiny_model(cp, sr_module):
    assert validation_message(sr_module) == (None, None)


def test_validation_missing_model_file(cp, tmp_path):
    m = make_module(tmp_path / "nope.h5")
    msg, setting = validation_message(m)
    assert "not found" in msg and "nope.h5" in msg
    assert setting is m.model_file


def test_validation_not_a_bundle(cp, tmp_path):
    import h5py

    text = tmp_path / "notes.h5"
    text.write_text("not a model")
    msg, _ = validation_message(make_module(text))
    assert "not an HDF5 file" in msg
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros(3)
    msg, _ = validation_message(make_module(other))
    assert "not a SuperResolveRLS model bundle" in msg


def test_validation_channel_count_names_model_channels(cp, tiny_model_path):
    m = make_module(tiny_model_path, channels=("DNA_LR",), outputs=("DNA",))
    msg, setting = validation_message(m)
    assert setting is m.channel_count
    assert "2 channel(s): DNA, NFkB" in msg


def test_validation_factor_and_overlap(cp, tiny_model_path):
    m = make_module(tiny_model_path, factor=3)
    msg, setting = validation_message(m)
    assert setting is m.factor and "choose one of 2, 4, 8, 16" in msg
    m = make_module(tiny_model_path, factor=8, auto_overlap=False, overlap=4)
    msg, setting = validation_message(m)
    assert setting is m.overlap and "smaller than the LR tile (4 pixels" in msg


def test_validation_duplicate_outputs(cp, tiny_model_path):
    m = make_module(tiny_model_path, outputs=("Same", "Same"))
    msg, setting = validation_message(m)
    assert "used twice" in msg and setting is m.channels[1].output_image


def test_validation_model_without_prior(cp, tmp_path):
    from conftest import make_tiny_bundle

    path = make_tiny_bundle(tmp_path / "noprior.h5", with_prior=False)
    m = make_module(path)
    msg, setting = validation_message(m)
    assert "no latent prior" in msg and setting is m.method
    m.method.value = "w/o regularisation"
    assert validation_message(m) == (None, None)


def test_validation_shipped_model_missing(cp, monkeypatch, tmp_path):
    """A shipped model that is not installed (an empty models folder) is named with the fix."""
    import rls_core.registry as registry
    from cellprofiler_core.utilities.core.modules import instantiate_module

    monkeypatch.setattr(registry, "MODELS_DIR", tmp_path)
    m = instantiate_module("SuperResolveRLS")
    m.model_choice.value = "golgi"
    msg, setting = validation_message(m)
    assert "not installed" in msg and "golgi.h5" in msg and setting is m.model_choice


# ----------------------------------------------------------------------------- running
def test_run_outputs_shapes_masks_measurements(cp, sr_module):
    from cellprofiler_core.constants.measurement import IMAGE

    ws = workspace_for(sr_module, lr_pair())
    sr_module.run(ws)
    for name in ("DNA", "NFkB"):
        img = ws.image_set.get_image(name)
        assert img.pixel_data.shape == (64, 96)
        assert img.mask.shape == (64, 96) and img.mask.all()
        assert np.isfinite(img.pixel_data).all()
    cols = sr_module.get_measurement_columns(ws.pipeline)
    numeric = ["SuperResolveRLS_LRPSNR_DNA", "SuperResolveRLS_ConvergedFraction_DNA",
               "SuperResolveRLS_Seconds_DNA", "SuperResolveRLS_NumberOfTiles_DNA", "SuperResolveRLS_Succeeded_DNA"]
    text = ["SuperResolveRLS_FailureReason_DNA", "SuperResolveRLS_Warnings_DNA", "SuperResolveRLS_Model_DNA", "SuperResolveRLS_ModelChecksum_DNA",
            "SuperResolveRLS_Version_DNA"]
    assert [c[1] for c in cols] == numeric + text
    for feature in numeric:
        value = ws.measurements.get_current_image_measurement(feature)
        assert value is not None and math.isfinite(float(value))
    m = ws.measurements.get_current_image_measurement
    assert m("SuperResolveRLS_Succeeded_DNA") == 1 and m("SuperResolveRLS_FailureReason_DNA") == ""
    assert m("SuperResolveRLS_Warnings_DNA") == ""
    # which model made these numbers: the file's SHA-256, as `sha256sum` prints it
    import hashlib

    digest = hashlib.sha256(Path(sr_module.model_path()).read_bytes()).hexdigest()
    assert m("SuperResolveRLS_ModelChecksum_DNA") == digest and m("SuperResolveRLS_Model_DNA") == "tiny"
    assert ws.measurements.get_current_image_measurement("SuperResolveRLS_NumberOfTiles_DNA") > 0
    assert sr_module.get_categories(ws.pipeline, IMAGE) == ["SuperResolveRLS"]
    assert "LRPSNR" in sr_module.get_measurements(ws.pipeline, IMAGE, "SuperResolveRLS")
    assert sr_module.get_measurement_images(ws.pipeline, IMAGE, "SuperResolveRLS", "LRPSNR") == ["DNA"]


def test_run_respects_mask_and_feeds_identify_primary(cp, sr_module):
    """The SR output carries an upscaled mask (not the LR parent's), so later modules work."""
    from cellprofiler_core.utilities.core.modules import instantiate_module
    from cellprofiler_core.workspace import Workspace

    images = lr_pair((8, 8))
    lr_mask = np.zeros((8, 8), bool)
    lr_mask[:, :4] = True
    ws = workspace_for(sr_module, images, masks={"DNA_LR": lr_mask})
    sr_module.run(ws)
    out = ws.image_set.get_image("DNA")
    assert out.pixel_data.shape == (64, 64)
    np.testing.assert_array_equal(out.mask, np.kron(lr_mask, np.ones((8, 8), bool)))
    assert np.all(out.pixel_data[:, 32:] == 0)

    ipo = instantiate_module("IdentifyPrimaryObjects")
    ipo.set_module_num(2)
    ipo.x_name.value = "DNA"
    ipo.y_name.value = "Nuclei"
    ipo.size_range.value = (2, 60)
    ws.pipeline.add_module(ipo)
    ws2 = Workspace(ws.pipeline, ipo, ws.image_set, ws.object_set, ws.measurements, ws.image_set_list)
    ipo.run(ws2)  # fails with "Image to be cropped is smaller" if the LR mask leaked through
    assert ws2.object_set.get_objects("Nuclei").segmented.shape == (64, 64)


def test_run_uncertainty_images(cp, tiny_model_path):
    m = make_module(tiny_model_path, samples=2, steps=2)
    ws = workspace_for(m, lr_pair((4, 4)))
    m.run(ws)
    assert m.other_providers("imagegroup") == ["DNA_Uncertainty", "NFkB_Uncertainty"]
    for name in ("DNA_Uncertainty", "NFkB_Uncertainty"):
        u = ws.image_set.get_image(name)
        assert u.pixel_data.shape == (32, 32) and (u.pixel_data >= 0).all() and u.mask.shape == (32, 32)
        assert u.pixel_data.max() > 0  # the two searches start apart: their std is not zero


def test_uncertainty_images_are_offered_to_later_modules(cp, tiny_model_path):
    from cellprofiler_core.pipeline import Pipeline
    from cellprofiler_core.setting import ValidationError
    from cellprofiler_core.utilities.core.modules import instantiate_module

    m = make_module(tiny_model_path, samples=2)
    ipo = instantiate_module("IdentifyPrimaryObjects")
    ipo.set_module_num(2)
    ipo.x_name.value = "NFkB_Uncertainty"
    p = Pipeline()
    p.add_module(m)
    p.add_module(ipo)
    ipo.x_name.test_valid(p)  # offered while K > 1 ...
    m.samples.value = 1
    with pytest.raises(ValidationError):
        ipo.x_name.test_valid(p)  # ... and not with a single sample


def test_run_bicubic_method(cp, tiny_model_path):
    m = make_module(tiny_model_path, method="bicubic", samples=3)
    ws = workspace_for(m, lr_pair((4, 6)))
    m.run(ws)
    assert ws.image_set.get_image("NFkB").pixel_data.shape == (32, 48)
    assert "NFkB_Uncertainty" not in ws.image_set.names


@pytest.mark.parametrize("case, needle", [
    ("nan", "NaN or infinite"),
    ("sizes", "same size"),
    ("small", "smaller than one LR tile"),
    # a setting that no image set can run with stops at once (issue: headless runs skip validation)
    ("channels", "has 2 channel(s): DNA, NFkB"),
    # CellProfiler 4.2 hands float files over unscaled: raw counts must not be clipped silently
    ("counts", "values from 0 to 3000"),
])
def test_run_time_errors_are_clear(cp, tiny_model_path, case, needle):
    images = lr_pair((8, 8))
    m = make_module(tiny_model_path)
    if case == "nan":
        images["DNA_LR"][2, 3] = np.nan
    elif case == "sizes":
        images["NFkB_LR"] = images["NFkB_LR"][:6]
    elif case == "small":
        images = lr_pair((3, 8))
    elif case == "channels":
        m = make_module(tiny_model_path, channels=("DNA_LR",), outputs=("DNA",))
    elif case == "counts":
        images["NFkB_LR"] = np.round(images["NFkB_LR"] / images["NFkB_LR"].max() * 3000)
        images["NFkB_LR"][0, 0] = 0.0
    ws = workspace_for(m, images)
    with pytest.raises(ValueError) as err:
        m.run(ws)
    assert str(err.value).startswith("SuperResolveRLS: ") and needle in str(err.value)
    if case == "counts":
        assert "Manual" in str(err.value)


def test_a_saturated_channel_runs_with_a_warning_measurement(cp, tiny_model_path):
    images = lr_pair((8, 8))
    images["DNA_LR"][:2] = 1.0  # 25 % of the pixels at the top of the range
    m = make_module(tiny_model_path, steps=2)
    ws = workspace_for(m, images)
    m.run(ws)
    get = ws.measurements.get_current_image_measurement
    assert get("SuperResolveRLS_Succeeded_DNA") == 1
    assert "channel DNA is saturated (25.0 % of pixels" in get("SuperResolveRLS_Warnings_DNA")


def test_display_draws_every_panel(cp, tiny_model_path):
    """display() with a recording stand-in for CellProfiler's wx figure (no wx here)."""
    m = make_module(tiny_model_path, samples=2, steps=1)
    m.show_window = True
    ws = workspace_for(m, lr_pair((4, 4)))
    m.run(ws)
    calls = []

    class Figure:
        def set_subplots(self, dims, *a, **k):
            calls.append(("set_subplots", dims))

        def subplot_imshow_grayscale(self, x, y, image, title=None, **k):
            calls.append(("image", x, y, image.shape, title))

        def subplot_table(self, x, y, statistics, **k):
            calls.append(("table", x, y, [row[0] for row in statistics]))

    m.display(ws, Figure())
    assert calls[0] == ("set_subplots", (3, 3))  # 3 panels per channel row, the table in its own row
    shapes = {(c[1], c[2]): c[3] for c in calls if c[0] == "image"}
    assert shapes[(0, 0)] == (4, 4) and shapes[(1, 1)] == (32, 32) and shapes[(2, 1)] == (32, 32)
    table = [c for c in calls if c[0] == "table"][0]
    assert table[1:3] == (0, 2)
    assert "LR consistency (PSNR)" in table[3] and "Converged tiles" in table[3]


def test_post_run_releases_models(cp, sr_module):
    import rls_core.model as model

    ws = workspace_for(sr_module, lr_pair((4, 4)))
    sr_module.run(ws)
    assert model._CACHE
    sr_module.post_run(ws)
    assert not model._CACHE


def test_cpu_threads_shared_between_analysis_workers(cp, monkeypatch):
    """Inside a CellProfiler analysis worker, PyTorch gets cores / workers threads; elsewhere all."""
    import os
    import sys
    import types

    import torch
    import cellprofiler_core.preferences as prefs

    plugin = __import__("superresolverls")
    before, workers = torch.get_num_threads(), prefs.get_max_workers()
    try:
        plugin.share_cpu_between_workers(torch)  # pytest is not a worker: unchanged
        assert torch.get_num_threads() == before
        worker_main = types.ModuleType("__main__")
        worker_main.__file__ = "/x/site-packages/cellprofiler_core/worker/__init__.py"
        monkeypatch.setitem(sys.modules, "__main__", worker_main)
        # 16 cores over 4 workers: 4 threads each (differs from any `before` a no-op could leave)
        monkeypatch.setattr(os, "cpu_count", lambda: 16)
        torch.set_num_threads(3)
        prefs.set_max_workers(4)
        plugin.share_cpu_between_workers(torch)
        assert torch.get_num_threads() == 4
        prefs.set_max_workers(64)  # more workers than cores: still one thread each
        plugin.share_cpu_between_workers(torch)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
        prefs.set_max_workers(workers)


@pytest.mark.parametrize("line, value, setting", [
    ("Search steps", "0", "steps"), ("Number of samples (uncertainty)", "0", "samples"),
    ("Fidelity vs realism", "-1", "realism"), ("Fidelity vs realism", "nan", "realism"),
    ("Batch size (tiles x samples)", "2.5", "batch_size"), ("Method", "Foo", "method")])
def test_out_of_range_settings_in_a_hand_edited_pipeline_are_refused(cp, tiny_model_path, line, value, setting):
    """CellProfiler may pass such values on; the module re-checks them, in validation and at run time."""
    from cellprofiler_core.pipeline import Pipeline

    p = Pipeline()
    p.add_module(make_module(tiny_model_path))
    buf = io.StringIO()
    p.dump(buf, save_image_plane_details=False)
    lines = buf.getvalue().splitlines()
    idx = [i for i, t in enumerate(lines) if t.strip().startswith(line + ":")]
    assert len(idx) == 1
    lines[idx[0]] = lines[idx[0]].split(":", 1)[0] + ":" + value
    p2 = Pipeline()
    p2.loadtxt(io.StringIO("\n".join(lines) + "\n"))
    m = p2.modules()[0]
    msg, where = validation_message(m)
    assert msg is not None and line in msg and where is getattr(m, setting)
    with pytest.raises(ValueError, match="SuperResolveRLS: '%s'" % re.escape(line)):
        m.run(workspace_for(m, lr_pair()))


def test_a_library_method_name_in_a_pipeline_file_means_that_method(cp, sr_module):
    """Older make_pipelines.customize(method="plain") wrote the library's name, not the label."""
    sr_module.method.value = "plain"
    sr_module.check_numbers()
    assert sr_module.method_name() == "plain"


def test_a_factor_that_does_not_fit_the_model_stops_even_when_continuing(cp, sr_module):
    """Headless runs skip validate_module: run() must still stop on a setting no image set can
    run with, rather than write blank outputs for every set (a hand-edited .cppipe)."""
    m = sr_module
    m.on_failure.value = "Continue with blank outputs"
    m.factor.value = 3
    with pytest.raises(ValueError, match="SuperResolveRLS: The factor 3 does not fit"):
        m.run(workspace_for(m, lr_pair()))


def test_continue_on_failure_gives_blank_outputs_and_a_reason(cp, sr_module):
    m = sr_module
    m.on_failure.value = "Continue with blank outputs"
    pair = lr_pair()
    bad = dict(pair, NFkB_LR=pair["NFkB_LR"][:-2])  # channels of different sizes
    ws = workspace_for(m, bad)
    m.run(ws)
    h, w = pair["DNA_LR"].shape
    f = int(m.factor.value)
    for name in m.output_names():
        img = ws.image_set.get_image(name)
        assert img.pixel_data.shape == (h * f, w * f) and not img.pixel_data.any()
    get = ws.measurements.get_current_image_measurement
    assert get("SuperResolveRLS_Succeeded_DNA") == 0 and "same size" in get("SuperResolveRLS_FailureReason_DNA")
    m.on_failure.value = "Stop the analysis"
    with pytest.raises(ValueError, match="same size"):
        m.run(workspace_for(m, bad))

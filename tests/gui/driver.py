"""Drive the real CellProfiler GUI from inside its own process, as a user would.

Launched by tests/gui/conftest.py as the GUI's Python (`python driver.py SPEC.json`), on a
private Xvfb display. It starts CellProfiler exactly like `cellprofiler -p PIPELINE
--plugins-directory PLUGINS -o OUT`, then, from the wx main loop (wx.CallLater), clicks the
GUI's own buttons and controls by sending them the events a mouse click sends, polls for the
outcome (no fixed sleeps), takes screenshots of the real windows (read from the X server through GDK), and writes
what it saw to SPEC["result"] (JSON) for the assertions in test_gui.py. Then it exits hard
(os._exit) so that no "save changes?" prompt can block the exit.

Nothing here changes CellProfiler's behaviour, except that message boxes are recorded and
answered "Cancel/No" instead of blocking the unattended run (the tests assert there were none).
"""
import functools
import json
import os
import sys
import time
import traceback

SR = "SuperResolveRLS"
SCREEN_POLL_MS = 50
STABLE_S = 0.6


T0 = time.time()


@functools.lru_cache(maxsize=None)
def _lib(name):
    """GDK's C functions for screenshots, through ctypes (no extra package, no extra X client)."""
    import ctypes

    p, i = ctypes.c_void_p, ctypes.c_int
    signatures = {
        "libgdk-3.so.0": {"gdk_get_default_root_window": (p, []), "gdk_pixbuf_get_from_window": (p, [p, i, i, i, i])},
        "libgdk_pixbuf-2.0.so.0": {"gdk_pixbuf_get_rowstride": (i, [p]), "gdk_pixbuf_get_n_channels": (i, [p]),
                                   "gdk_pixbuf_get_pixels": (ctypes.POINTER(ctypes.c_uint8), [p])},
        "libgobject-2.0.so.0": {"g_object_unref": (None, [p])},
    }
    lib = ctypes.CDLL(name)
    for fn, (restype, argtypes) in signatures[name].items():
        getattr(lib, fn).restype = restype
        getattr(lib, fn).argtypes = argtypes
    return lib


def log(msg):
    sys.stderr.write("[gui-driver %.1fs] %s\n" % (time.time() - T0, msg))
    sys.stderr.flush()


class Driver:
    def __init__(self, app, spec, result):
        import wx

        self.wx = wx
        self.app = app
        self.spec = spec
        self.result = result
        self.artifacts = spec["artifacts"]
        self.gen = None
        self.t_phase = T0  # the first phase, "startup", counts from the process start

    # ------------------------------------------------------------------ plumbing
    def start(self):
        self.wx.CallLater(int(self.spec["deadline_s"] * 1000), self.abort)
        self.gen = self.script()
        self.advance(None)

    def advance(self, value, exc=None):
        """Run the script to its next `yield` (a wait), or finish."""
        try:
            request = self.gen.throw(exc) if exc is not None else self.gen.send(value)
        except StopIteration:
            self.finish()
            return
        except Exception:
            self.result["error"] = traceback.format_exc()
            log("FAILED\n" + self.result["error"])
            try:
                self.grab_screen("failure_screen.png")
            except Exception:
                pass
            self.finish()
            return
        predicate, timeout, what = request
        self.poll(predicate, time.time() + timeout, what, timeout)

    def poll(self, predicate, deadline, what, timeout, last_error=None):
        """Check `predicate` every SCREEN_POLL_MS from the main loop; resume the script with its
        first truthy value, or throw TimeoutError into it at the deadline."""
        try:
            value = predicate()
        except Exception as e:  # a condition that cannot be evaluated yet is not met yet
            value, last_error = None, "%s: %s" % (type(e).__name__, e)
        if value:
            self.wx.CallAfter(self.advance, value)
        elif time.time() > deadline:
            msg = "timed out after %ss waiting for: %s" % (timeout, what)
            self.wx.CallAfter(self.advance, None, TimeoutError(msg + (" (last: %s)" % last_error if last_error else "")))
        else:
            self.wx.CallLater(SCREEN_POLL_MS, self.poll, predicate, deadline, what, timeout, last_error)

    def abort(self):
        """Whole-session deadline: fires even while a modal loop (a progress dialog) runs."""
        self.result["error"] = "the GUI session passed its %ss deadline" % self.spec["deadline_s"]
        log(self.result["error"])
        try:
            self.grab_screen("failure_screen.png")
        except Exception:
            pass
        self.finish()

    @staticmethod
    def until(predicate, timeout, what):
        return predicate, timeout, what

    def phase(self, name):
        now = time.time()
        self.result.setdefault("timings", {})[name] = round(now - self.t_phase, 2)
        self.t_phase = now
        log("phase done: %s" % name)

    def finish(self):
        self.result["total_seconds"] = round(time.time() - T0, 1)
        with open(self.spec["result"], "w") as fh:
            json.dump(self.result, fh, indent=1, default=str)
        log("result written; exiting")
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(0)  # the GUI would ask to save the edited pipeline on a normal close

    # ------------------------------------------------------------------ wx helpers
    def descendants(self, win):
        for child in win.GetChildren():
            yield child
            yield from self.descendants(child)

    def top_windows(self):
        return [w for w in self.wx.GetTopLevelWindows() if w.IsShown()]

    def send(self, ctrl, event_type, **fields):
        """Deliver the command event a user's click on `ctrl` produces."""
        evt = self.wx.CommandEvent(event_type, ctrl.GetId())
        evt.SetEventObject(ctrl)
        if "int" in fields:
            evt.SetInt(fields["int"])
        if "string" in fields:
            evt.SetString(fields["string"])
        ctrl.GetEventHandler().ProcessEvent(evt)

    def click(self, button):
        assert button.IsShownOnScreen() and button.IsEnabled(), "button %r is not clickable" % button.GetLabel()
        self.send(button, self.wx.wxEVT_BUTTON)

    def button(self, label):
        import wx.lib.buttons

        for w in self.descendants(self.app.frame):
            if isinstance(w, (wx.Button, wx.lib.buttons.GenButton)) and w.GetLabel() == label and w.IsShownOnScreen():
                return w
        return None

    def visible_labels(self, panel):
        """Static texts a user can see in `panel`: (label, width, best width, is red)."""
        from cellprofiler_core.preferences import get_error_color

        red = get_error_color()
        out = []
        for w in self.descendants(panel):
            if isinstance(w, self.wx.StaticText) and w.IsShown() and w.GetLabel().strip():
                # CellProfiler wraps long labels to the panel's width: compare them as one line
                out.append({"label": " ".join(w.GetLabel().split()), "lines": w.GetLabel().count("\n") + 1,
                            "width": w.GetSize().width, "best": w.GetBestSize().width,
                            "red": w.GetForegroundColour() == red})
        return out

    # ------------------------------------------------------------------ screenshots
    def capture(self, rect):
        """The screen's pixels in `rect` (H x W x 3), read from the X server through GDK.

        GDK reads what the server shows now; wx.ScreenDC gave stale pictures of CellProfiler's
        main window here. Same process and display connection: no extra X client needed.
        """
        import numpy

        w, h = rect.width, rect.height
        gdk, pb = _lib("libgdk-3.so.0"), _lib("libgdk_pixbuf-2.0.so.0")
        buf = gdk.gdk_pixbuf_get_from_window(gdk.gdk_get_default_root_window(), rect.x, rect.y, w, h)
        if not buf:
            raise RuntimeError("could not read the screen at %s" % (rect,))
        try:
            stride, channels = pb.gdk_pixbuf_get_rowstride(buf), pb.gdk_pixbuf_get_n_channels(buf)
            # the last row is only w * channels long (no padding to the stride)
            size = (h - 1) * stride + w * channels
            raw = numpy.ctypeslib.as_array(pb.gdk_pixbuf_get_pixels(buf), shape=(size,))
            padded = numpy.zeros(h * stride, numpy.uint8)
            padded[:size] = raw
            pixels = padded.reshape(h, stride)[:, : w * channels].reshape(h, w, channels)[..., :3].copy()
        finally:
            _lib("libgobject-2.0.so.0").g_object_unref(buf)
        return pixels

    def save_png(self, pixels, path):
        h, w = pixels.shape[:2]
        self.wx.Bitmap.FromBuffer(w, h, pixels.tobytes()).SaveFile(path, self.wx.BITMAP_TYPE_PNG)

    def screenshot(self, window, name, rect=None):
        """Save `window` as it is on screen once its pixels stop changing (repaints done).

        On a loaded machine CellProfiler repaints late (timers, idle events): the picture
        counts as final once unchanged for STABLE_S.
        """
        import numpy

        window.Raise()
        window.Refresh()
        state = {"pixels": None, "since": time.time()}

        def settled():
            pixels = self.capture(rect or window.GetScreenRect())  # the window may still be resizing
            if state["pixels"] is None or not numpy.array_equal(state["pixels"], pixels):
                state.update(pixels=pixels, since=time.time())
                return None
            return (pixels,) if time.time() - state["since"] >= STABLE_S else None

        (pixels,) = yield self.until(settled, 20, "a stable picture of %s" % name)
        path = os.path.join(self.artifacts, name)
        self.save_png(pixels, path)
        self.result.setdefault("screenshots", {})[name] = {
            "path": path, "size": [pixels.shape[1], pixels.shape[0]], "std": float(pixels.std())}
        return pixels

    def grab_screen(self, name):
        w, h = self.wx.GetDisplaySize()
        self.save_png(self.capture(self.wx.Rect(0, 0, w, h)), os.path.join(self.artifacts, name))

    # ------------------------------------------------------------------ the user's session
    def script(self):
        wx = self.wx
        import wx.html
        from cellprofiler.gui.addmoduleframe import AddModuleFrame
        from cellprofiler.gui.utilities.module_view import edit_control_name, help_ctrl_name
        from cellprofiler_core.preferences import set_max_workers
        from cellprofiler_core.utilities.core.modules import get_module_class, get_module_names

        r, spec = self.result, self.spec
        frame = self.app.frame
        plc, mv, plv, pipeline = frame.pipeline_controller, frame.module_view, frame.pipeline_list_view, frame.pipeline
        set_max_workers(1)  # one analysis worker: the machine's cores are shared
        frame.SetSize(0, 0, *spec["frame_size"])  # a fixed geometry makes screenshots comparable
        yield self.until(lambda: any(m.module_name == SR for m in pipeline.modules()), 60, "the pipeline to load")
        r["pipeline_modules"] = [m.module_name for m in pipeline.modules()]
        self.phase("startup")

        # --- the module is known to CellProfiler and offered under its category
        names = list(get_module_names())
        r["registry"] = {"listed": SR in names, "category": get_module_class(SR).category if SR in names else None}
        plc.open_add_modules()
        amf = yield self.until(lambda: next((w for w in self.top_windows() if isinstance(w, AddModuleFrame)), None),
                               20, "the Add modules window")
        categories, modules = [w for w in self.descendants(amf) if isinstance(w, wx.ListBox)][:2]
        category = spec["category"]
        r["add_modules"] = {"categories": list(categories.GetStrings())}
        if categories.SetStringSelection(category):
            self.send(categories, wx.wxEVT_LISTBOX, int=categories.GetSelection(), string=category)
        yield self.until(lambda: modules.GetCount() > 0, 10, "the module list of %s" % category)
        r["add_modules"]["modules"] = list(modules.GetStrings())
        # CellProfiler 5 lists plugins with a puzzle-piece prefix: "\N{JIGSAW PUZZLE PIECE} SuperResolveRLS"
        listed = next((s for s in modules.GetStrings() if s.split()[-1] == SR), None)
        if listed:
            modules.SetStringSelection(listed)
        amf.SetPosition((spec["frame_size"][0] + 8, 0))
        yield from self.screenshot(amf, "add_modules.png")
        amf.Hide()
        self.phase("add_modules")

        # --- the LR images, added like a drag and drop onto the file list
        plc.add_paths_to_pathlist([spec["lr_dir"]])
        yield self.until(lambda: len(pipeline.file_list) >= spec["n_files"], 30, "the file list")
        r["file_list"] = len(pipeline.file_list)

        # --- select the module and point it at the test model, through the settings panel
        sr = next(m for m in pipeline.modules() if m.module_name == SR)
        plv.select_one_module(sr.module_num)
        yield self.until(lambda: mv.get_current_module() is sr, 20, "the SuperResolveRLS settings panel")
        panel = mv.module_panel
        r["labels_default"] = self.visible_labels(panel)
        model_box = panel.FindWindowByName(edit_control_name(sr.model_choice))
        model_box.SetValue(spec["model_choice"])  # pick "Custom file..." in the drop-down
        self.send(model_box, wx.wxEVT_COMBOBOX, string=spec["model_choice"])
        yield self.until(lambda: any(d["label"] == sr.model_file.text for d in self.visible_labels(panel)), 20,
                         "the model file settings to appear")
        # what typing into the settings' fields does (SettingEditedEvent -> pipeline controller)
        for setting, value in ((sr.model_directory, spec["model_directory"]), (sr.model_file, spec["model_file"]),
                               (sr.factor, str(spec["factor"])), (sr.steps, str(spec["steps"])),
                               (sr.device, spec.get("device", "CPU"))):
            mv.on_value_change(setting, panel.FindWindowByName(edit_control_name(setting)), value, None)

        def list_state():  # the icon next to the module in the pipeline list: "ok", "warning" or "error"
            ctrl, index = plv.get_ctrl_and_index(sr)
            return ctrl.items[index].error_state

        r["list_state_before"] = list_state()

        def validated():
            sr.test_valid(pipeline)  # raises until the model is usable
            labels = self.visible_labels(panel)
            if not labels or any(d["red"] for d in labels) or list_state() != "ok":
                return None
            return labels

        r["labels_basic"] = yield self.until(validated, 30, "the module to validate (no red setting, no error icon)")
        r["list_state_after"] = list_state()
        r["settings_after_edit"] = {s.text: s.value_text for s in sr.visible_settings()}
        yield from self.screenshot(frame, "settings.png")
        # the settings alone, down to the last one (the picture for the README)
        rect = panel.GetScreenRect()
        bottom = max(c.GetRect().GetBottom() for c in panel.GetChildren() if c.IsShown())
        rect.height = min(rect.height, bottom + 12)
        yield from self.screenshot(panel, "settings_panel.png", rect=rect)
        self.phase("settings")

        # --- advanced settings: hidden until "Show advanced settings?" is Yes
        def toggle_advanced(value):
            radio = panel.FindWindowByName(edit_control_name(sr.show_advanced))
            radio.SetStringSelection(value)
            self.send(radio, wx.wxEVT_RADIOBOX, int=radio.GetSelection(), string=value)

        def labels_if(shown):  # the visible labels once the advanced ones are all shown / all hidden
            labels = self.visible_labels(panel)
            present = [a in [d["label"] for d in labels] for a in spec["advanced_labels"]]
            return labels if (all(present) if shown else not any(present)) else None

        toggle_advanced("Yes")
        r["labels_advanced"] = yield self.until(lambda: labels_if(True), 20, "the advanced settings to appear")
        panel.Scroll(0, panel.GetVirtualSize().height)  # show the bottom of the panel, as a user scrolls
        yield from self.screenshot(frame, "settings_advanced.png")
        toggle_advanced("No")
        r["labels_hidden_again"] = yield self.until(lambda: labels_if(False), 20, "the advanced settings to hide")
        panel.Scroll(0, 0)
        self.phase("advanced")

        # --- help: the module's help ("?" next to "Adjust modules") and one setting's "?"
        from cellprofiler.gui.cpframe import ID_HELP_MODULE

        help_button = next(w for w in self.descendants(frame) if isinstance(w, wx.Button)
                           and w.GetId() == ID_HELP_MODULE)
        self.click(help_button)
        title = 'Help for module, "%s"' % SR
        helpframe = yield self.until(lambda: next((w for w in self.top_windows() if w.GetTitle() == title), None),
                                     20, "the module help window")
        html = next(w for w in self.descendants(helpframe) if isinstance(w, wx.html.HtmlWindow))
        r["help"] = {"title": helpframe.GetTitle(), "text": html.ToText()}
        helpframe.SetPosition((spec["frame_size"][0] + 8, 0))
        yield from self.screenshot(helpframe, "help_module.png")
        helpframe.Close()
        self.click(panel.FindWindowByName(help_ctrl_name(sr.model_choice)))
        dialog = yield self.until(lambda: next((w for w in self.top_windows() if isinstance(w, wx.Dialog)
                                                and w.GetTitle() == sr.model_choice.text), None),
                                  20, "the help of the Model setting")
        html = next(w for w in self.descendants(dialog) if isinstance(w, wx.html.HtmlWindow))
        r["setting_help"] = {"title": dialog.GetTitle(), "text": html.ToText()}
        dialog.Destroy()
        self.phase("help")

        # --- test mode on the first image set: Start Test Mode, Run, the module's display window
        for m in pipeline.modules():  # only the module under test opens a window (faster, clearer)
            m.show_window = m is sr
        self.click(self.button("Start Test Mode"))
        yield self.until(plc.is_in_debug_mode, 60, "test mode to start")
        run = yield self.until(lambda: self.button("Run"), 20, "the test mode Run button")
        self.click(run)  # runs every module of image set 1 (returns when done)
        debug_m = plc._PipelineController__debug_measurements  # what "View Workspace" shows
        r["test_mode"] = {
            "image_set": int(debug_m.image_set_number),
            "module_errors": {k: debug_m.get_measurement("Image", k) for k in debug_m.get_feature_names("Image")
                              if k.startswith("ModuleError_")},
            "sr_measurements": {k: debug_m.get_measurement("Image", k) for k in debug_m.get_feature_names("Image")
                                if k.startswith(SR + "_")},
        }
        fig_name = "CellProfiler:%s:%d" % (SR, sr.module_num)
        fig = yield self.until(lambda: next((w for w in self.top_windows() if w.GetName() == fig_name), None),
                               30, "the SuperResolveRLS display window")
        fig.SetPosition((spec["frame_size"][0] + 8, 0))
        r["display"] = {"title": fig.GetTitle(),
                        "axes": [a.get_title() for a in fig.figure.axes if a.get_title()]}
        yield from self.screenshot(fig, "display.png")
        self.click(self.button("Exit Test Mode"))
        yield self.until(lambda: not plc.is_in_debug_mode(), 20, "test mode to end")
        self.phase("test_mode")

        # --- Analyze Images: all image sets, in a worker process, to the spreadsheet
        finished = {}
        on_stop = plc.on_stop_analysis

        def record_stop(event):  # the analysis' own summary, before the GUI closes it
            m = event.measurements
            numbers = list(m.get_image_numbers())
            finished.update(cancelled=bool(event.cancelled), image_sets=len(numbers),
                            status=[str(s) for s in m["Image", "ProcessingStatus", numbers]]
                            if m.has_feature("Image", "ProcessingStatus") else None)
            on_stop(event)

        plc.on_stop_analysis = record_stop
        self.click(self.button("Analyze Images"))
        yield self.until(lambda: finished and not plc.is_running(), spec["analysis_timeout"], "the analysis to finish")
        r["analysis"] = finished
        yield from self.screenshot(frame, "after_analysis.png")
        self.phase("analysis")


def main():
    spec = json.load(open(sys.argv[1]))
    result = {"dialogs": []}
    os.makedirs(spec["artifacts"], exist_ok=True)

    import matplotlib

    matplotlib.use("WXAgg")  # as `cellprofiler` does before it imports its GUI
    import wx

    # Xvfb here sometimes hangs up a connection made right after another one closed (seen as
    # ~1% of XOpenDisplay calls, ~15% of wx start-ups: wx probes the display, closes it and
    # GTK reconnects at once). Give the server a moment after the probe and retry it.
    probe = wx.App.IsDisplayAvailable

    def display_available():
        for _ in range(20):
            ok = probe()
            time.sleep(0.05)
            if ok:
                return True
        return False

    wx.App.IsDisplayAvailable = staticmethod(display_available)

    def message_box(message, caption="Message", style=wx.OK, *args, **kwargs):
        """Record what CellProfiler would ask, answer No/Cancel (an unattended run must not block)."""
        result["dialogs"].append({"caption": str(caption), "message": str(message)})
        log("message box: %s: %s" % (caption, message))
        return wx.NO if style & wx.YES_NO else wx.CANCEL

    wx.MessageBox = message_box

    import cellprofiler.gui.app

    on_init = cellprofiler.gui.app.App.OnInit

    def on_init_then_drive(app):
        ok = on_init(app)
        if ok:
            wx.CallAfter(Driver(app, spec, result).start)
        return ok

    cellprofiler.gui.app.App.OnInit = on_init_then_drive
    sys.argv = ["cellprofiler", "-p", spec["pipeline"], "--plugins-directory", spec["plugins"],
                "-o", spec["output_dir"], "-L", "INFO"]
    from cellprofiler.__main__ import main as cellprofiler_main

    try:
        cellprofiler_main()
    finally:  # the main loop ended without the driver finishing (e.g. start-up failed)
        result.setdefault("error", "CellProfiler's main loop ended before the driver finished")
        with open(spec["result"], "w") as fh:
            json.dump(result, fh, indent=1, default=str)
        sys.stderr.flush()
        os._exit(3)


if __name__ == "__main__":
    main()

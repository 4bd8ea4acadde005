"""Float -> int shim for Debian's wxPython 4.2.0 under CellProfiler 5 (GUI only).

Why: CellProfiler 5 is written against wxPython >= 4.2.1, which accepts a float where an int is
expected. Debian 12's `python3-wxgtk4.0` is wxPython 4.2.0, whose bindings raise
`TypeError: Point(): ... argument 1 has unexpected type 'float'`. Seen without this shim:
- the module settings panel does not lay out (cellprofiler/gui/module_view/_module_sizer.py,
  RecalcSizes: wx.Point(x / 2, ...)), for every module;
- a module's display window fails where it shows a table (cellprofiler/gui/figure/_figure.py,
  align_widget: wx.Point), e.g. SuperResolveRLS in test mode;
- "Analyze Images" stops at its progress gauge (Gauge.SetValue with a float).

What: when (and only when) `wx` is imported, wrap the constructors/methods below so that float
arguments are rounded to int (wx.Rect and Gauge.SetRange as well, for the same reason). Nothing
else changes; a process that never imports wx (CellProfiler's headless analysis workers) only
pays for an import hook.

Scope: only Debian/Ubuntu's wxPython 4.2.0 + CellProfiler 5. With any other wxPython version
(pip, conda-forge, CellProfiler's installers) it does nothing. It is loaded by putting this
folder on PYTHONPATH (gui/cellprofiler_gui.sh and tests/gui do); Python imports
`sitecustomize` at start-up. SUPERRESOLVERLS_NO_WX_SHIM=1 turns it off. It shadows any other
`sitecustomize` (Debian's only installs apport's crash hook).
"""
import importlib.abc
import os
import sys

#: wx classes -> methods whose integer arguments CellProfiler 5 may pass as floats
PATCHES = {
    "Point": ("__init__",),
    "Size": ("__init__",),
    "Rect": ("__init__",),
    "Gauge": ("SetValue", "SetRange"),
}


def _coerce(value):
    if isinstance(value, float):
        return int(round(value))
    if isinstance(value, tuple) and len(value) in (2, 4) and any(isinstance(v, float) for v in value):
        return tuple(int(round(v)) if isinstance(v, float) else v for v in value)  # (w, h) / (x, y, w, h)
    return value


def _wrap(method):
    def wrapper(self, *args, **kwargs):
        return method(self, *[_coerce(a) for a in args], **{k: _coerce(v) for k, v in kwargs.items()})

    wrapper.__name__ = getattr(method, "__name__", "wrapper")
    wrapper.__doc__ = getattr(method, "__doc__", None)
    wrapper._float_shim = True
    return wrapper


def patch_wx(wx):
    """Apply the shim to an imported wx (idempotent; only for wxPython 4.2.0)."""
    if getattr(wx, "_superresolverls_float_shim", False):
        return
    version = tuple(int(p) for p in wx.__version__.split(".")[:3] if p.isdigit())
    if version[:3] != (4, 2, 0):
        return
    for cls_name, methods in PATCHES.items():
        cls = getattr(wx, cls_name, None)
        for name in methods:
            method = getattr(cls, name, None)
            if method is not None and not getattr(method, "_float_shim", False):
                setattr(cls, name, _wrap(method))
    wx._superresolverls_float_shim = True


class _PatchWxOnImport(importlib.abc.MetaPathFinder):
    """Run patch_wx right after the `wx` package is imported (lazily: no wx import here)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "wx":
            return None
        sys.meta_path.remove(self)  # find the real spec without recursing into this finder
        try:
            import importlib.util

            spec = importlib.util.find_spec("wx")
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            patch_wx(module)

        spec.loader.exec_module = exec_and_patch
        return spec


if not os.environ.get("SUPERRESOLVERLS_NO_WX_SHIM"):
    if "wx" in sys.modules:
        patch_wx(sys.modules["wx"])
    else:
        sys.meta_path.insert(0, _PatchWxOnImport())

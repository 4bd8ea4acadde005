"""Run by tests/test_python39.py with the Python 3.9 environment of scripts/setup_py39.sh.

    PYTHONPATH=<clone> <py39 env>/bin/python tests/py39_check.py [--cp42]

Not a pytest module (it runs on a Python and packages the test runner does not have). Checks:
1. every rls_core module imports (the package walked; `__main__` modules are skipped: they run
   the CLI at import);
2. a real super-resolution through rls_core.api.super_resolve with a shipped model (3 steps of
   RLS on a small crop of the committed LR example) gives a finite result of the right shape;
3. rls_core.features (scikit-image 0.18.3 here) measures cells on the HR examples (the test
   compares the values with the test runner's own Python and scikit-image);
4. plugins/*.py compile under this Python (3.9 syntax);
5. with --cp42: the plugin imports next to cellprofiler_core 4.2 and registers as a module.
Prints one JSON line prefixed `PY39_RESULT ` and exits non-zero on any failure.
"""
import json
import os
import pkgutil
import sys
import time
import traceback
from importlib import import_module
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def check_imports(report):
    import rls_core

    failed = {}
    names = ["rls_core"]
    for info in pkgutil.walk_packages(rls_core.__path__, "rls_core."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue
        names.append(info.name)
    for name in names:
        try:
            import_module(name)
        except Exception:  # noqa: BLE001 - report every module, not just the first
            failed[name] = traceback.format_exc(limit=-3)
    report["modules"] = len(names)
    report["import_failures"] = failed
    return not failed


def check_super_resolve(report):
    import numpy as np
    import tifffile
    import torch

    from rls_core.api import super_resolve
    from rls_core.model import load_model

    torch.set_num_threads(1)
    model = load_model("translocation", "cpu")
    factor = 16
    tile = model.resolution // factor
    lr_dir = ROOT / "examples" / "translocation" / "lr"
    chans = []
    for name in model.channel_names:
        img = tifffile.imread(str(lr_dir / f"translocation_TNFa_B03_s1_{name}.tif"))
        img = img[:2 * tile, :2 * tile]  # 2x2 LR tiles
        chans.append(img.astype(np.float32) / np.iinfo(img.dtype).max if img.dtype.kind == "u" else img)
    t0 = time.perf_counter()
    res = super_resolve(chans, model, factor=factor, method="rls", steps=3, device="cpu", seed=0, batch_size=4)
    report["super_resolve"] = {
        "seconds": round(time.perf_counter() - t0, 2), "lr_shape": list(chans[0].shape),
        "shape": list(res.image.shape), "lr_psnr": float(res.lr_psnr), "n_tiles": res.n_tiles,
        "torch": torch.__version__, "numpy": np.__version__}
    expected = (len(model.channel_names), 2 * tile * factor, 2 * tile * factor)
    ok = tuple(res.image.shape) == expected and bool(np.isfinite(res.image).all()) and np.isfinite(res.lr_psnr)
    if not ok:
        report["super_resolve"]["error"] = f"expected a finite {expected} result"
    return ok


def feature_summary():
    """Per-cell features (rls_core.features, scikit-image) of site 1 of each treated HR example."""
    import numpy as np
    import tifffile

    from rls_core.features import measure_crop

    out = {}
    for assay, cond, chans in (("translocation", "TNFa", ("DNA", "NFkB")),
                               ("golgi", "Nocodazole", ("DNA", "Golgi"))):
        hr = ROOT / "examples" / assay / "hr"
        imgs = []
        for c in chans:
            (path,) = sorted(hr.glob(f"{assay}_{cond}_*_s1_{c}.tif"))
            img = tifffile.imread(str(path))
            imgs.append(img.astype(np.float32) / float(img.max()))  # crops in [0, 1]
        v = measure_crop(assay, np.stack(imgs))
        out[assay] = {"n": int(len(v)), "mean": float(np.mean(v)) if len(v) else None,
                      "finite": bool(np.isfinite(v).all())}
    return out


def check_features(report):
    report["features"] = f = feature_summary()
    return all(v["n"] > 0 and v["finite"] for v in f.values())


def check_plugin_compiles(report):
    failed = {}
    for path in sorted((ROOT / "plugins").glob("*.py")):
        try:
            compile(path.read_text(encoding="utf-8"), str(path), "exec")  # writes no .pyc into the clone
        except SyntaxError:
            failed[path.name] = traceback.format_exc(limit=0)
    report["plugin_compile_failures"] = failed
    return not failed


def check_plugin_in_cp42(report):
    """The plugin module and class next to CellProfiler 4.2's cellprofiler_core (no Java needed)."""
    import cellprofiler_core
    from cellprofiler_core.module import Module

    sys.path.insert(0, str(ROOT / "plugins"))
    mod = import_module("superresolverls")
    cls = getattr(mod, "SuperResolveRLS")
    assert issubclass(cls, Module)
    m = cls()  # Module.__init__ creates the settings
    report["cp42"] = {"cellprofiler_core": cellprofiler_core.__version__, "module_name": cls.module_name,
                      "variable_revision_number": cls.variable_revision_number,
                      "n_settings": len(m.settings())}
    return True


def main(argv):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    report = {"python": sys.version.split()[0]}
    checks = [check_imports, check_super_resolve, check_features, check_plugin_compiles]
    if "--cp42" in argv:
        checks.append(check_plugin_in_cp42)
    ok = True
    for check in checks:
        try:
            passed = check(report)
        except Exception:  # noqa: BLE001
            report[check.__name__] = traceback.format_exc()
            passed = False
        report.setdefault("failed", [])
        if not passed:
            report["failed"].append(check.__name__)
            ok = False
    print("PY39_RESULT " + json.dumps(report))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Load a .cppipe in this CellProfiler (4.2 or 5), print what its SuperResolveRLS module holds,
and save the pipeline as this CellProfiler writes it. Run by tests/test_python39.py with both
lines' Pythons (not a pytest module: CellProfiler 4.2 runs in another Python):

    PYTHONPATH=<clone> python tests/cp_roundtrip.py SRC.cppipe DEST.cppipe

Prints one line `ROUNDTRIP {json}`: the CellProfiler version, the pipeline's modules, and the
module's revision and settings (text -> value as a string). Exits non-zero if loading fails.
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(src: str, dest: str) -> int:
    import cellprofiler_core
    import cellprofiler_core.preferences as prefs

    prefs.set_headless()
    prefs.set_plugin_directory(str(ROOT / "plugins"), globally=False)
    try:  # CellProfiler 5: keep Bio-Formats (Java) out; 4.2 has no reader registry
        from cellprofiler_core.reader import fill_readers, filter_active_readers

        fill_readers(check_config=False)
        filter_active_readers(["imageio_reader"])
    except ImportError:
        pass
    import cellprofiler_core.modules  # noqa: F401  (registers the built-in modules and plugins)
    from cellprofiler_core.pipeline import Pipeline

    errors = []
    pipeline = Pipeline()
    pipeline.add_listener(lambda caller, event: errors.append(repr(event))
                          if type(event).__name__ == "LoadException" else None)
    pipeline.load(src)
    sr = [m for m in pipeline.modules() if m.module_name == "SuperResolveRLS"]
    with open(dest, "w", encoding="utf-8", newline="\n") as fh:
        pipeline.dump(fh, save_image_plane_details=False)
    out = {"cellprofiler_core": cellprofiler_core.__version__, "errors": errors,
           "modules": [m.module_name for m in pipeline.modules()],
           "revision": sr[0].variable_revision_number if sr else None,
           "settings": [[s.text, str(s.value)] for s in sr[0].settings()] if sr else []}
    print("ROUNDTRIP " + json.dumps(out))
    return 0 if sr and not errors else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))

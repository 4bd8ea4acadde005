"""Regenerate the shared CellProfiler pipelines from code, so that CellProfiler itself writes them.

    .venv/bin/python pipelines/make_pipelines.py          # -> pipelines/*.cppipe

translocation.cppipe  LR DNA + NF-kB -> SuperResolveRLS (model translocation, 16x, RLS) ->
                      Nuclei -> Cells (propagation on NF-kB) -> Cytoplasm -> NF-kB intensity ->
                      per-cell translocation ratio (nuclear mean / cytoplasmic mean) -> CSVs
golgi.cppipe          LR DNA + Golgi -> SuperResolveRLS (model golgi) -> Nuclei, Golgi spots ->
                      spot area -> CSVs with the per-image mean spot area
*_hr.cppipe           the same analysis on HR images, without super-resolution

    .venv/bin/python pipelines/make_pipelines.py --customize pipelines/translocation.cppipe \
        my.cppipe --model /path/to/my_model.h5 --factor 16 --steps 500   # your own model

The SR and HR variants share every downstream module setting: in the SR pipelines
NamesAndTypes names the LR images DNA_LR, NFkB_LR / Golgi_LR and SuperResolveRLS outputs
DNA, NFkB / Golgi; the HR pipelines name the HR images DNA, NFkB / Golgi directly. Segmentation
is tuned for the HR pixel scale (nuclei 20-35 px across, as in the simulator and the shipped
models' training data). Inputs come from the default input folder (``-i``) and are matched
by file name metadata (``<assay>_<Condition>_<Well>_s<Site>_<Stain>.tif``; the stain tag is
called Stain because CellProfiler 5 reserves "Channel"); CSVs go to the default output folder
(``-o``) with fixed names: Translocation_{Image,Cells,Nuclei,Cytoplasm}.csv and
Golgi_{Image,GolgiSpots,Nuclei}.csv.

Compatibility: written by CellProfiler 5 (nightly 5.0.0.dev784). CellProfiler 4.2.8 loads all
four files with identical settings (only the Images module's CP5 plane-splitting options are
dropped) and runs the HR pipelines to identical results; SuperResolveRLS itself loads in 4.2
(Python 3.9) and needs rls_core + PyTorch in that environment to run.

`init_cellprofiler()` is also what the tests use to run CellProfiler in-process.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PLUGINS = ROOT / "plugins"

FILE_REGEX = (r"^(?P<Assay>[a-z]+)_(?P<Condition>[A-Za-z]+)_(?P<Well>[A-P][0-9]{2})_s(?P<Site>[0-9]+)"
              r"_(?P<Stain>[A-Za-z]+)\.tif$")
#: "Channel" (the simulator docs' tag name) is reserved by CellProfiler 5 (it numbers image planes)
STAIN_TAG = "Stain"
#: assay -> (model channels in order, SuperResolveRLS model name, CSV prefix)
ASSAYS = {
    "translocation": (("DNA", "NFkB"), "translocation", "Translocation_"),
    "golgi": (("DNA", "Golgi"), "golgi", "Golgi_"),
}
NUCLEUS_DIAMETER = (15, 50)  # px at the HR scale; simulated nuclei are 20-35 px across
FACTOR = 16

_INITIALISED = False


def init_cellprofiler(plugins_dir: Path = PLUGINS) -> None:
    """Headless CellProfiler with this repository's plugins and the imageio reader only.

    Idempotent. Must run before anything imports `cellprofiler_core.modules`; afterwards the
    plugin directory cannot be changed in this process.
    """
    global _INITIALISED
    if _INITIALISED:
        return
    import cellprofiler_core.preferences as prefs

    prefs.set_headless()
    prefs.set_plugin_directory(str(plugins_dir), globally=False)
    from cellprofiler_core.reader import fill_readers, filter_active_readers

    fill_readers(check_config=False)
    filter_active_readers(["imageio_reader"])  # Bio-Formats would start Java and fetch jars
    import cellprofiler_core.modules  # noqa: F401  (registers built-in modules and plugins)
    from cellprofiler_core.utilities.core.modules import get_module_names

    if "SuperResolveRLS" not in get_module_names():
        raise RuntimeError(f"the SuperResolveRLS plugin did not load from {plugins_dir}; "
                           "see the log above for the import error")
    _INITIALISED = True


def module(name: str, **values):
    """Instantiate a CellProfiler module and set settings by attribute name."""
    from cellprofiler_core.utilities.core.modules import instantiate_module

    m = instantiate_module(name)
    for attr, value in values.items():
        getattr(m, attr).value = value
    return m


def set_threshold(m, method: str = "Minimum Cross-Entropy", smoothing: Optional[float] = None,
                  correction: float = 1.0) -> None:
    m.threshold.threshold_scope.value = "Global"
    m.threshold.global_operation.value = method
    m.threshold.threshold_correction_factor.value = correction
    if smoothing is not None:
        m.threshold.threshold_smoothing_scale.value = smoothing


# ----------------------------------------------------------------------------- input modules
def input_modules(channels: Sequence[str], image_names: Sequence[str]) -> list:
    """Images + Metadata (file-name regex) + NamesAndTypes (by Stain, matched on Well+Site) + Groups."""
    images = module("Images")
    metadata = module("Metadata", wants_metadata=True)
    em = metadata.extraction_methods[0]
    em.extraction_method.value = "Extract from file/folder names"
    em.source.value = "File name"
    em.file_regexp.value = FILE_REGEX
    em.filter_choice.value = "All images"

    nat = module("NamesAndTypes", assignment_method="Images matching rules", matching_choice="Metadata")
    while len(nat.assignments) < len(channels):
        nat.add_assignment()
    for group, channel, name in zip(nat.assignments, channels, image_names):
        group.rule_filter.value = 'and (metadata does %s "%s")' % (STAIN_TAG, channel)
        group.image_name.value = name
        group.load_as_choice.value = "Grayscale image"
        # raw / 65535 for 16-bit files: the intensity units the models were trained in
        group.rescale_method.value = "Image bit-depth"
    nat.join.build([{name: key for name in image_names} for key in ("Well", "Site")])
    groups = module("Groups", wants_groups=False)
    return [images, metadata, nat, groups]


def superresolve_module(model: str, lr_names: Sequence[str], out_names: Sequence[str]):
    # A failed image set continues with blank outputs (and Succeeded = 0), so a long headless run
    # keeps the CSV rows of every good set.
    m = module("SuperResolveRLS", model_choice=model, channel_count=len(lr_names), factor=FACTOR, method="RLS",
               on_failure="Continue with blank outputs")
    m.set_notes(f"Super-resolves {' + '.join(lr_names)} {FACTOR}x with the shipped '{model}' model. The outputs "
                f"({', '.join(out_names)}) carry the names the HR reference pipeline gives its HR images, so "
                "every later module is identical in both pipelines.")
    for group, lr, out in zip(m.channels, lr_names, out_names):
        group.input_image.value = lr
        group.output_image.value = out
    return m


def nuclei_module(dna: str = "DNA"):
    m = module("IdentifyPrimaryObjects", x_name=dna, y_name="Nuclei", size_range=NUCLEUS_DIAMETER,
               exclude_size=True, exclude_border_objects=True, use_advanced=True,
               unclump_method="Shape", watershed_method="Shape")  # intensity declumping splits textured nuclei
    set_threshold(m, "Minimum Cross-Entropy")
    m.set_notes("Nuclei at the HR pixel scale (simulated nuclei are 20-35 px across); shape-based declumping.")
    return m


def export_module(prefix: str, objects: Sequence[str]):
    """Per-object CSVs (with Condition/Well/Site) and per-image means, fixed file names prefix+Object.csv."""
    m = module("ExportToSpreadsheet", wants_everything=False, wants_prefix=True, prefix=prefix,
               wants_overwrite_without_warning=True, add_metadata=True, wants_aggregate_means=True,
               wants_aggregate_medians=True, nan_representation="NaN")
    m.directory.value = "Default Output Folder|"
    names = ["Image"] + list(objects)
    while len(m.object_groups) < len(names):
        m.add_object_group()
    for group, name in zip(m.object_groups, names):
        group.name.value = name
        group.previous_file.value = False
        group.wants_automatic_file_name.value = True
    return m


# ----------------------------------------------------------------------------- analyses
def translocation_analysis() -> list:
    """Nuclei -> Cells -> Cytoplasm on DNA/NFkB; ratio per cell = nuclear / cytoplasmic mean NF-kB."""
    cells = module("IdentifySecondaryObjects", x_name="Nuclei", y_name="Cells", method="Propagation",
                   image_name="NFkB", regularization_factor=0.05, wants_discard_edge=False, fill_holes=True)
    set_threshold(cells, "Minimum Cross-Entropy", smoothing=1.0)
    cyto = module("IdentifyTertiaryObjects", secondary_objects_name="Cells", primary_objects_name="Nuclei",
                  subregion_objects_name="Cytoplasm", shrink_primary=True)
    intensity = module("MeasureObjectIntensity")
    intensity.images_list.value = "NFkB"
    intensity.objects_list.value = "Nuclei, Cytoplasm, Cells"
    # Nuclei and Cytoplasm come from the same Cells, one each: the ratio is per cell. It is
    # stored on Nuclei and Cytoplasm; RelateObjects copies it onto Cells (per-parent mean of one).
    ratio = module("CalculateMath", output_feature_name="TranslocationRatio", operation="Divide")
    for op, obj in zip(ratio.operands, ("Nuclei", "Cytoplasm")):
        op.operand_choice.value = "Object"
        op.operand_objects.value = obj
        op.operand_measurement.value = "Intensity_MeanIntensity_NFkB"
    ratio.set_notes("Translocation ratio per cell: mean NF-kB in the nucleus / mean NF-kB in the cytoplasm.")
    relate = module("RelateObjects", x_name="Cells", y_name="Nuclei", wants_per_parent_means=True,
                    find_parent_child_distances="None", wants_child_objects_saved=False)
    relate.set_notes("Copies each nucleus' ratio onto its cell: Cells.Mean_Nuclei_Math_TranslocationRatio.")
    return [nuclei_module(), cells, cyto, intensity, ratio, relate,
            export_module("Translocation_", ["Cells", "Nuclei", "Cytoplasm"])]


def golgi_analysis() -> list:
    """Nuclei on DNA; Golgi elements as small bright objects after a speckle (top-hat) filter."""
    enhance = module("EnhanceOrSuppressFeatures", x_name="Golgi", y_name="GolgiEnhanced", method="Enhance",
                     enhance_method="Speckles", object_size=12, speckle_accuracy="Slow")
    spots = module("IdentifyPrimaryObjects", x_name="GolgiEnhanced", y_name="GolgiSpots", size_range=(1, 60),
                   exclude_size=False, exclude_border_objects=False, unclump_method="None",
                   watershed_method="None", fill_holes="Never", use_advanced=True)
    set_threshold(spots, "Otsu", smoothing=1.0)
    spots.set_notes("Golgi elements: ribbons in DMSO, small puncta after nocodazole. Their mean area per image "
                    "(Golgi_Image.csv: Mean_GolgiSpots_AreaShape_Area) is the readout.")
    size = module("MeasureObjectSizeShape", calculate_zernikes=False, calculate_advanced=False)
    size.objects_list.value = "GolgiSpots, Nuclei"
    return [nuclei_module(), enhance, spots, size, export_module("Golgi_", ["GolgiSpots", "Nuclei"])]


# ----------------------------------------------------------------------------- pipelines
def build(assay: str, super_resolve: bool):
    """The Pipeline object for one assay, SR (LR inputs) or HR reference."""
    from cellprofiler_core.pipeline import Pipeline

    init_cellprofiler()
    channels, model, _ = ASSAYS[assay]
    names = list(channels)
    mods = []
    if super_resolve:
        lr_names = [c + "_LR" for c in channels]
        mods += input_modules(channels, lr_names)
        mods.append(superresolve_module(model, lr_names, names))
    else:
        mods += input_modules(channels, names)
    mods += translocation_analysis() if assay == "translocation" else golgi_analysis()
    p = Pipeline()
    for i, m in enumerate(mods, start=1):
        m.set_module_num(i)
        m.show_window = False
        p.add_module(m)
    return p


def check(pipeline) -> None:
    """Every module must be valid. Tolerated: the plugin's model check (the model may not be trained
    yet) and NamesAndTypes' metadata rules (their keys are known only once files are listed); a
    real run (tests/test_pipelines.py) checks both."""
    from cellprofiler_core.setting import ValidationError

    for m in pipeline.modules():
        try:
            m.test_valid(pipeline)
        except ValidationError as e:
            if m.module_name == "SuperResolveRLS" and ("model" in e.message.lower()):
                print(f"  note: {m.module_name}: {e.message}", file=sys.stderr)
                continue
            if m.module_name == "NamesAndTypes" and "filter predicate" in e.message:
                continue
            raise RuntimeError(f"{m.module_name} #{m.module_num} invalid: {e.message}") from None


def method_label(method: str) -> str:
    """The module's label of a method, given its label or its library name ("rls" -> "RLS")."""
    from rls_core.methods import MODULE_CHOICES

    names = {name: label for label, name in MODULE_CHOICES.items()}
    return names.get(method, method)


def method_choices() -> List[str]:
    """The module's method labels, from the one table (rls_core.methods)."""
    from rls_core.methods import MODULE_CHOICES

    return list(MODULE_CHOICES)


def load(path: Path):
    from cellprofiler_core.pipeline import Pipeline

    init_cellprofiler()
    p = Pipeline()
    p.load(str(path))
    return p


def customize(pipeline, model: Optional[str] = None, **settings):
    """Point the pipeline's SuperResolveRLS module(s) at another model and/or change settings.

    model: a shipped model name or a path to a .h5 bundle (stored as a custom file, absolute).
    settings: attribute names of the module's settings, e.g. factor=8, method="bicubic", steps=50
    (a method by its module label or its library name).
    """
    from cellprofiler_core.preferences import ABSOLUTE_FOLDER_NAME

    mods = [m for m in pipeline.modules() if m.module_name == "SuperResolveRLS"]
    if not mods:
        raise ValueError("the pipeline has no SuperResolveRLS module")
    for m in mods:
        if model is not None:
            if os.sep in str(model) or str(model).endswith((".h5", ".hdf5")):
                path = Path(model).expanduser().resolve()
                m.model_choice.value = "Custom file..."
                m.model_directory.join_parts(ABSOLUTE_FOLDER_NAME, str(path.parent))
                m.model_file.value = path.name
            else:
                m.model_choice.value = str(model)
        for attr, value in settings.items():
            if attr == "method" and value is not None:
                value = method_label(value)
            if value is not None:
                getattr(m, attr).value = value
    return pipeline


def save(pipeline, path: Path) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        pipeline.dump(fh, save_image_plane_details=False)


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE, help="folder for the .cppipe files (default: pipelines/)")
    cu = ap.add_argument_group("customize an existing pipeline instead (e.g. for your own model)")
    cu.add_argument("--customize", nargs=2, type=Path, metavar=("IN", "OUT"),
                    help="read IN.cppipe, change its SuperResolveRLS settings as below, write OUT.cppipe")
    cu.add_argument("--model", help="shipped model name or path to a .h5 model bundle")
    cu.add_argument("--factor", type=int)
    cu.add_argument("--method", choices=method_choices())
    cu.add_argument("--steps", type=int)
    cu.add_argument("--samples", type=int)
    args = ap.parse_args(argv)
    if args.customize:
        src, dst = args.customize
        p = customize(load(src), args.model, factor=args.factor, method=args.method, steps=args.steps,
                      samples=args.samples)
        save(p, dst)
        print(f"wrote {dst}")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    for assay in ASSAYS:
        for sr in (True, False):
            p = build(assay, sr)
            check(p)
            path = args.out / f"{assay}{'' if sr else '_hr'}.cppipe"
            save(p, path)
            print(f"wrote {path} ({len(p.modules())} modules)")


if __name__ == "__main__":
    main()

"""
SuperResolveRLS
===============

**SuperResolveRLS** increases the resolution of low-resolution (LR)
fluorescence images by up to 16x or 32x so that cells, nuclei and
organelles can be segmented and measured as if they had been imaged
at high resolution (HR).

It searches, for each small LR tile, the image that a generative model
(a StyleGAN2 trained on HR images of the same kind of cells) would
produce and that, once shrunk back to the LR size, matches the LR
input. Priors on the model's latent space keep the result realistic
("regularized latent search", RLS). The channels of one field (for
example DNA and NF-kB) are super-resolved *jointly*, so their
structures stay consistent with each other.

What you need
^^^^^^^^^^^^^

-  A model trained on HR images of your assay. Two assay models ship with
   the package and are offered here: *translocation* (channels DNA, NFkB)
   and *golgi* (channels DNA, Golgi), both with 128-pixel tiles (a third,
   *fly*, is a proof of concept: ``rls models`` lists it). Other models
   are single ``.h5`` files made with ``rls train`` / ``rls fit-prior``; choose
   *Custom file…* to use one.
-  One grayscale image per model channel, given **in the model's channel
   order** (the module tells you the order when the count does not
   match). All images of a field must have the same size.
-  The upscaling factor must be a power of two that divides the model's
   tile size (2 to 64 for 128-pixel models; the paper uses 16 and 32).

Which method?
^^^^^^^^^^^^^

-  *RLS* (default): the published method. Realistic, interpretable
   cells that stay faithful to the LR image.
-  *w/o regularisation*: the same search without any prior: most
   faithful to the LR pixels, often less realistic.
-  *PULSE* and *BRGM*: earlier latent-search methods, for comparison.
-  *bicubic*: plain interpolation, no model search. The baseline and a
   quick way to set up the rest of a pipeline.

**Fidelity vs realism.** One knob multiplies every prior weight: 0 turns
the priors off (like *w/o regularisation*), 1 uses the paper's values,
values above 1 favour realistic cells over matching every LR pixel.
That holds for a well-trained model; the shipped models are early
CPU-trained priors, for which low values (0 to 0.05) kept the
differences between conditions best (see docs/results).

**Uncertainty.** With more than one sample, each tile is searched several
times from random starting points; the output is their mean and an extra
image per channel holds the per-pixel standard deviation: bright areas
are where the LR image does not determine the HR image well.

**Speed.** The search costs roughly (number of tiles) x (steps) generator
passes. A GPU is much faster; on a CPU start with a small image, few
steps, or *bicubic* to set up the pipeline. On a CPU, each CellProfiler
analysis worker uses its share of the cores (cores / maximum number of
workers in Preferences); on a GPU, lower *GPU memory share* when several
workers share one GPU. *Generator acceleration* (advanced settings)
trades a little numerical exactness for speed: bfloat16 on GPUs, or
compiling the generator once per worker.

Installation: the module needs the ``rls_core`` Python package (this
repository, ``pip install -e .`` into CellProfiler's Python) and PyTorch.
If ``rls_core`` is not installed, the module also looks for it in the
parent folder of the plugins folder (the repository root when the
plugins folder is the repository's ``plugins/``). A missing package shows
as an error on the module, not as a missing module.

|

============ ============ ===============
Supports 2D? Supports 3D? Respects masks?
============ ============ ===============
YES          NO           YES
============ ============ ===============

Masks: tiles without any unmasked input pixel are skipped; the outputs
carry the input mask scaled up by the factor.

Measurements made by this module
^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^

Per image set, suffixed with the first output image name (e.g.
``SuperResolveRLS_LRPSNR_DNA``):

-  *LRPSNR*: how well the result, shrunk back to LR, matches the LR input
   (dB; higher is more faithful; typical values per method and model
   are in the project's docs/results).
-  *ConvergedFraction*: fraction of tiles (x samples) whose search
   reached the LR-consistency target. Low values: more steps are needed
   or the model does not fit these images.
-  *Seconds*: time spent in the search.
-  *NumberOfTiles*: number of LR tiles super-resolved.
-  *Succeeded* (1 or 0), *FailureReason*: see *When an image set fails*.
-  *Warnings*: problems with the input that did not stop the search:
   a saturated channel (over 1 % of its pixels at the maximum) or a
   constant one. Check these rows before trusting their numbers.
-  *Model*, *ModelChecksum*, *Version*: which model file (its SHA-256)
   and which package version made the numbers.

Intensities: the module takes images as NamesAndTypes gives them (0 to
1). Values outside 0-1 (CellProfiler 4.2 passes float files through
unscaled) or NaN fail the image set with the fix: set NamesAndTypes'
*Set intensity range from* to *Manual* with the camera's maximum. The
``rls`` command line and Python API scale files by the same rule
(README, "Intensities").

References
^^^^^^^^^^

-  Gheisari M, Genovesio A. Reconstructing interpretable features in
   computational super-resolution microscopy via regularized latent
   search. *Biological Imaging* (2024).
   https://www.cambridge.org/core/journals/biological-imaging/article/reconstructing-interpretable-features-in-computational-superresolution-microscopy-via-regularized-latent-search/276254C2F3C97BDCF968EB1D9B7A6F77
   ; arXiv:2405.19112
-  Menon S et al. PULSE: self-supervised photo upsampling via latent
   space exploration of generative models. CVPR 2020. arXiv:2003.03808
-  Marinescu RV et al. Bayesian image reconstruction using deep
   generative models (BRGM). ICLR 2021 (workshop). arXiv:2012.09967
-  Karras T et al. Analyzing and improving the image quality of
   StyleGAN (StyleGAN2). CVPR 2020. arXiv:1912.04958
-  Wulff J, Torralba A. Improving inversion and generation diversity in
   StyleGAN using a Gaussianized latent space. arXiv:2004.00049
"""

# Python 3.9 syntax on purpose: the same file loads in CellProfiler 4.2 (Python 3.8/3.9).
import logging
import os
import sys
import time
from typing import Dict, List, Optional, Tuple

import numpy

from cellprofiler_core.constants.measurement import COLTYPE_FLOAT, COLTYPE_INTEGER, COLTYPE_VARCHAR, IMAGE
from cellprofiler_core.image import Image
from cellprofiler_core.module import Module
from cellprofiler_core.setting import Binary, Divider, SettingsGroup, ValidationError
from cellprofiler_core.setting.choice import Choice
from cellprofiler_core.setting.subscriber import ImageSubscriber
from cellprofiler_core.setting.text import Directory, Filename, Float, ImageName, Integer, Text

LOGGER = logging.getLogger(__name__)

__all__ = ["SuperResolveRLS"]

#: models shipped in rls_core/models (fixed so that saved pipelines stay loadable everywhere)
SHIPPED_MODELS = ("translocation", "golgi")
CUSTOM_MODEL = "Custom file..."
MAX_CHANNELS = 4



REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _import_from_package_or_repo(name: str):
    """Import `name` (an rls_core module) from the installed package, else from the repository
    that holds this plugin (a clone used without `pip install`)."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        if not os.path.isdir(os.path.join(REPO_ROOT, "rls_core")) or REPO_ROOT in sys.path:
            raise
        sys.path.append(REPO_ROOT)
        return importlib.import_module(name)


def _import_method_table():
    """rls_core.methods (torch-free): the method choices and their defaults live there. None
    when rls_core is nowhere, so the module still loads and its validation says how to install it."""
    try:
        return _import_from_package_or_repo("rls_core.methods")
    except ImportError:
        return None

METHOD_TABLE = _import_method_table()
#: method choice shown to the user -> rls_core method name (the table's module labels)
METHODS = dict(METHOD_TABLE.MODULE_CHOICES) if METHOD_TABLE is not None else {"RLS": "rls"}

DEVICE_AUTO, DEVICE_CPU, DEVICE_GPU = "Automatic", "CPU", "GPU"
DEVICES = {DEVICE_AUTO: "auto", DEVICE_CPU: "cpu", DEVICE_GPU: "cuda"}

#: generator acceleration shown to the user -> rls_core.accel mode (a test checks they agree)
ACCEL_LABELS = {"Float32 (reference)": "none", "bfloat16 (GPUs)": "bf16", "Compiled (torch.compile)": "compile",
                "bfloat16 + compiled": "bf16+compile", "Automatic": "auto"}
ACCEL_DEFAULT_LABEL = "Float32 (reference)"

#: RLS's prior weights at realism 1, shown as the advanced settings' defaults
RLS_PRIOR_DEFAULTS = {k: (METHOD_TABLE.METHODS["rls"].weights[k] if METHOD_TABLE is not None else 0.0)
                      for k in ("lambda_logp", "lambda_pnorm", "lambda_cross")}

C_SUPERRESOLVE = "SuperResolveRLS"
F_LRPSNR, F_CONVERGED, F_SECONDS, F_TILES = "LRPSNR", "ConvergedFraction", "Seconds", "NumberOfTiles"
#: per image set: 1 done, 0 failed (with "continue" on failure); why; warnings about the input
#: (saturated or constant channels); and what made the numbers
F_STATUS, F_REASON, F_WARNINGS = "Succeeded", "FailureReason", "Warnings"
F_MODEL, F_CHECKSUM, F_VERSION = "Model", "ModelChecksum", "Version"
FEATURES = ((F_LRPSNR, COLTYPE_FLOAT), (F_CONVERGED, COLTYPE_FLOAT), (F_SECONDS, COLTYPE_FLOAT),
            (F_TILES, COLTYPE_INTEGER), (F_STATUS, COLTYPE_INTEGER), (F_REASON, COLTYPE_VARCHAR),
            (F_WARNINGS, COLTYPE_VARCHAR),
            (F_MODEL, COLTYPE_VARCHAR), (F_CHECKSUM, COLTYPE_VARCHAR), (F_VERSION, COLTYPE_VARCHAR))

ON_FAILURE_STOP, ON_FAILURE_CONTINUE = "Stop the analysis", "Continue with blank outputs"

INSTALL_HINT = (
    "Install it into CellProfiler's Python with `pip install -e <SuperResolveRLS folder>` "
    "(this also needs PyTorch), or keep this plugin in the repository's plugins/ folder."
)


def import_rls_core():
    """Import rls_core (and torch through it), from the package or this plugin's repository.

    Raises ImportError with an installation hint. Done lazily so that a missing dependency
    shows as a validation error instead of a module missing from "Add modules".
    """
    try:
        _import_from_package_or_repo("rls_core.api")
    except ImportError as e:
        where = "from %s " % REPO_ROOT if os.path.isdir(os.path.join(REPO_ROOT, "rls_core")) else ""
        raise ImportError("SuperResolveRLS cannot import rls_core %s(%s). %s" % (where, e, INSTALL_HINT)) from None
    import rls_core
    return rls_core


def share_cpu_between_workers(torch) -> None:
    """Give each CellProfiler analysis worker its share of the CPU cores for PyTorch.

    The GUI's analysis runs one worker process per core by default; PyTorch in each would start
    a thread per core and the workers would slow each other down many times over. Headless
    `cellprofiler -c` runs in one process and keeps all cores.
    """
    main = sys.modules.get("__main__")
    path = (getattr(main, "__file__", "") or "").replace("\\", "/")
    if not path.endswith("cellprofiler_core/worker/__init__.py"):
        return
    try:
        from cellprofiler_core.preferences import get_max_workers

        workers = max(1, int(get_max_workers()))
    except Exception:  # preferences unavailable: leave PyTorch's default
        return
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


_MODEL_INFO = {}  # type: Dict[Tuple[str, float, int], Tuple[str, List[str], int, bool]]


_CHECKSUMS = {}  # type: Dict[Tuple[str, float, int], str]


def model_checksum(path: str) -> str:
    """SHA-256 of a model file (cached while the file is unchanged): each CSV row says which
    exact model produced it."""
    import_rls_core()
    from rls_core.bundle import file_sha256

    st = os.stat(path)
    key = (os.path.abspath(path), st.st_mtime, st.st_size)
    if key not in _CHECKSUMS:
        _CHECKSUMS[key] = file_sha256(path)
    return _CHECKSUMS[key]


def model_info(path: str) -> Tuple[str, List[str], int, bool]:
    """(name, channel names, tile resolution, has prior) of a bundle, cached on (path, mtime, size).

    Reads the file without building the network, so validation stays cheap in the GUI.
    Raises rls_core.bundle.BundleError for anything that is not a usable bundle.
    """
    import_rls_core()
    from rls_core.bundle import load_bundle

    st = os.stat(path) if os.path.exists(path) else None
    key = (os.path.abspath(path), st.st_mtime if st else -1.0, st.st_size if st else -1)
    if key not in _MODEL_INFO:
        b = load_bundle(path)
        _MODEL_INFO.clear()  # keep one entry: bundles can be large
        _MODEL_INFO[key] = (b.name, list(b.channel_names), int(b.generator_config["resolution"]), b.has_prior)
    return _MODEL_INFO[key]


class SuperResolveRLS(Module):
    module_name = "SuperResolveRLS"
    category = "Image Processing"
    variable_revision_number = 3
    doi = {
        "Please cite the RLS paper when using SuperResolveRLS:": "https://arxiv.org/abs/2405.19112",
        "If you use PULSE, also cite:": "https://arxiv.org/abs/2003.03808",
        "If you use BRGM, also cite:": "https://arxiv.org/abs/2012.09967",
    }

    # ------------------------------------------------------------------ settings
    def create_settings(self) -> None:
        self.model_choice = Choice(
            "Model", list(SHIPPED_MODELS) + [CUSTOM_MODEL], value=SHIPPED_MODELS[0],
            doc="""\
The generative model that knows what HR images of your cells look like.

-  *translocation*: channels DNA, NFkB (NF-kB nuclear translocation assay).
-  *golgi*: channels DNA, Golgi (Golgi dispersal assay).
-  *%(CUSTOM_MODEL)s*: a model file (``.h5``) that you trained with
   ``rls train`` and ``rls fit-prior`` on HR images of your own assay.

The model must have been trained on images like yours (same stains,
similar magnification at HR); otherwise the result looks realistic but is
wrong. Use *bicubic* as a sanity check.""" % globals(),
        )
        self.model_directory = Directory(
            "Folder holding the model file",
            doc="*(Used only for a custom model)* Folder that holds the model file (``.h5``).",
        )

        def get_directory_fn():
            return self.model_directory.get_absolute_path()

        def set_directory_fn(path):
            dir_choice, custom_path = self.model_directory.get_parts_from_path(path)
            self.model_directory.join_parts(dir_choice, custom_path)

        self.model_file = Filename(
            "Model file name", "model.h5", get_directory_fn=get_directory_fn, set_directory_fn=set_directory_fn,
            browse_msg="Choose a SuperResolveRLS model file", exts=[("Model bundle (*.h5)", "*.h5")],
            doc="*(Used only for a custom model)* Name of the model file, e.g. ``my_assay.h5``.",
        )
        self.channel_count = Integer(
            "Number of channels", 2, minval=1, maxval=MAX_CHANNELS,
            doc="""\
How many images make up one field. This must equal the number of
channels of the model (2 for the shipped models). The channels are
super-resolved together.""",
        )
        self.channels = []  # type: List[SettingsGroup]
        for i in range(MAX_CHANNELS):
            group = SettingsGroup()
            group.append("divider", Divider(line=False))
            group.append("input_image", ImageSubscriber(
                "Select the LR image for model channel %d" % (i + 1), "None",
                doc="""\
The low-resolution image for channel %d of the model. Give the images in
the model's channel order (translocation: DNA, NFkB; golgi: DNA, Golgi);
the module names the order when it does not match. Images must be
grayscale and all of the same size.""" % (i + 1),
            ))
            group.append("output_image", ImageName(
                "Name the super-resolved image", "SuperResolved%d" % (i + 1),
                doc="Name of the HR image made from this channel, for use by later modules.",
            ))
            self.channels.append(group)

        self.factor = Integer(
            "Upscaling factor", 16, minval=2, maxval=64,
            doc="""\
How many times larger (in each direction) the output is than the input.
The LR tile is the model's tile size divided by this factor, so the
factor must be a power of two that divides it: 2 to 64 for the shipped
128-pixel models (the paper's 16 and 32 give an LR tile of 8 or 4
pixels). Use the factor between your LR and HR imaging (e.g. 16 for a 4x
objective vs a 64x one, with equal camera pixels).""",
        )
        self.method = Choice(
            "Method", list(METHODS), value="RLS",
            doc="""\
-  *RLS*: regularized latent search (recommended).
-  *PULSE*, *BRGM*: earlier latent-search methods, for comparison.
-  *w/o regularisation*: the search without priors (most faithful to
   LR pixels, least realistic).
-  *bicubic*: interpolation only; fast, blurry, the reference baseline.""",
        )
        self.realism = Float(
            "Fidelity vs realism", 1.0, minval=0.0, maxval=100.0,
            doc="""\
Multiplies the strength of all priors. *0*: no prior (faithful to the
LR pixels, possibly unrealistic); *1*: the published setting; *2* or more:
more realistic cells that may match the LR image less closely. Change
this when segmentation on the output fails because cells look noisy
(increase) or because they look plausible but do not match the LR image
(decrease). The priors can only be as realistic as the model's own
samples: with the shipped, briefly trained models, measurements kept
their condition differences best at 0 to 0.05 (docs/results in the
repository).""",
        )
        self.steps = Integer(
            "Search steps", 200, minval=1, maxval=100000,
            doc="""\
Optimisation steps per tile. More steps fit the LR image better and take
proportionally longer. 200 is a good interactive value; the paper uses
500. Check *ConvergedFraction* in the measurements: if it is low, use
more steps.""",
        )
        self.samples = Integer(
            "Number of samples (uncertainty)", 1, minval=1, maxval=64,
            doc="""\
*1*: one search per tile. *K > 1*: K searches from random starts; the
output is their mean and an uncertainty image (per-pixel standard
deviation) is added for each channel. Costs K times more.""",
        )
        self.uncertainty_suffix = Text(
            "Suffix for the uncertainty image names", "_Uncertainty",
            doc="""\
*(Used only with more than one sample)* The uncertainty image of an
output named *X* is named *X* followed by this suffix, e.g.
``DNA_Uncertainty``.""",
        )
        self.seed = Integer(
            "Random seed", 0, minval=0,
            doc="Seed of the random numbers of the search. The same seed gives the same result.",
        )
        self.device = Choice(
            "Compute device", [DEVICE_AUTO, DEVICE_CPU, DEVICE_GPU], value=DEVICE_AUTO,
            doc="""\
*%(DEVICE_AUTO)s* uses an NVIDIA GPU when PyTorch can see one, else the
CPU. *%(DEVICE_GPU)s* fails with an error if no GPU is usable (install a
CUDA build of PyTorch); *%(DEVICE_CPU)s* always uses the CPU.""" % globals(),
        )
        self.gpu_memory_share = Float(
            "GPU memory share", 1.0, minval=0.1, maxval=1.0,
            doc="""\
*(Used only on a GPU)* Largest fraction of the GPU's memory this module
may use in each CellProfiler worker. Lower it (e.g. to 1 / number of
workers) when several workers share one GPU.""",
        )
        self.auto_overlap = Binary(
            "Automatic tile overlap?", True,
            doc="""\
Neighbouring tiles overlap and are blended to avoid seams. *Yes* uses a
quarter of the LR tile; *No* lets you choose.""",
        )
        self.overlap = Integer(
            "Tile overlap (LR pixels)", 2, minval=0,
            doc="""\
*(Used only without automatic overlap)* LR pixels shared by neighbouring
tiles: more overlap means fewer seams and more tiles (slower). Must be
smaller than the LR tile.""",
        )
        self.show_advanced = Binary(
            "Show advanced settings?", False,
            doc="Show the individual prior weights and the batch size.",
        )
        self.lambda_logp = Float(
            "Prior weight of the latent likelihood (lambda_logp)", RLS_PRIOR_DEFAULTS["lambda_logp"], minval=0.0,
            doc="*(RLS only)* Weight of the learned likelihood of the latent code (p_w, log p).",
        )
        self.lambda_pnorm = Float(
            "Prior weight of the latent norm (lambda_pnorm)", RLS_PRIOR_DEFAULTS["lambda_pnorm"], minval=0.0,
            doc="*(RLS only)* Weight keeping the Gaussianised latent code at its typical length (p_w, norm).",
        )
        self.lambda_cross = Float(
            "Prior weight of the cross-layer consistency (lambda_cross)", RLS_PRIOR_DEFAULTS["lambda_cross"], minval=0.0,
            doc="""\
*(RLS only)* Weight keeping the latent codes of the generator's layers
close to each other (p_cross). These weights are multiplied by the
fidelity-vs-realism knob.""",
        )
        self.batch_size = Integer(
            "Batch size (tiles x samples)", 32, minval=1, maxval=4096,
            doc="""\
How many tiles are searched at once. Larger is faster on a GPU until
memory runs out; lower it after an out-of-memory error.""",
        )
        self.accel = Choice(
            "Generator acceleration", list(ACCEL_LABELS), value=ACCEL_DEFAULT_LABEL,
            doc="""\
How the generator runs. *Float32* is the reference. *bfloat16* is
faster on GPUs (and on CPUs with native bfloat16 support, e.g. AMX);
elsewhere it is much slower. *Compiled* first compiles the generator
once per CellProfiler worker, then runs faster: worth it for many
images. *Automatic* picks bfloat16 where it is native, else float32.
The results agree closely with float32; docs/performance.md has the
measured speeds.""",
        )

        self.on_failure = Choice(
            "When an image set fails", [ON_FAILURE_STOP, ON_FAILURE_CONTINUE], value=ON_FAILURE_STOP,
            doc="""\
What happens when an image set cannot be super-resolved (an unreadable or
mismatched image, NaN pixels, a search that broke down).

-  *%(ON_FAILURE_STOP)s*: the run stops with the error (best while you set
   up a pipeline).
-  *%(ON_FAILURE_CONTINUE)s*: the outputs of that image set are blank
   images, its *SuperResolveRLS_Succeeded* measurement is 0 and
   *SuperResolveRLS_FailureReason* says why; the run goes on, so a long
   headless run keeps the rows of every good image set. The shared
   pipelines use this. Filter on *Succeeded* in your analysis.""" % globals(),
        )

    def settings(self) -> list:
        result = [self.model_choice, self.model_directory, self.model_file, self.channel_count]
        for group in self.channels:
            result += [group.input_image, group.output_image]
        result += [self.factor, self.method, self.realism, self.steps, self.samples, self.uncertainty_suffix,
                   self.seed, self.device, self.gpu_memory_share, self.auto_overlap, self.overlap,
                   self.show_advanced, self.lambda_logp, self.lambda_pnorm, self.lambda_cross, self.batch_size,
                   self.accel, self.on_failure]
        return result

    def visible_settings(self) -> list:
        result = [self.model_choice]
        if self.model_choice.value == CUSTOM_MODEL:
            result += [self.model_directory, self.model_file]
        result += [self.channel_count]
        for group in self.active_channels():
            result += [group.divider, group.input_image, group.output_image]
        result += [self.factor, self.method]
        if self.method_name() != "bicubic":
            result += [self.realism, self.steps, self.samples]
            if self.samples.value > 1:
                result += [self.uncertainty_suffix]
            result += [self.seed]
        result += [self.device]
        if self.device.value != DEVICE_CPU:
            result += [self.gpu_memory_share]
        result += [self.on_failure]
        if self.method_name() != "bicubic":
            result += [self.auto_overlap]
            if not self.auto_overlap.value:
                result += [self.overlap]
        result += [self.show_advanced]
        if self.show_advanced.value:
            if self.method_name() == "rls":
                result += [self.lambda_logp, self.lambda_pnorm, self.lambda_cross]
            result += [self.batch_size]
            if self.method_name() != "bicubic":
                result += [self.accel]
        return result

    def help_settings(self) -> list:
        return [self.model_choice, self.model_directory, self.model_file, self.channel_count,
                self.channels[0].input_image, self.channels[0].output_image, self.factor, self.method,
                self.realism, self.steps, self.samples, self.uncertainty_suffix, self.seed, self.device,
                self.gpu_memory_share, self.auto_overlap, self.overlap, self.show_advanced, self.lambda_logp,
                self.lambda_pnorm, self.lambda_cross, self.batch_size, self.accel]

    def upgrade_settings(self, setting_values, variable_revision_number, module_name):
        """Bring settings saved by an older revision to the current layout, one step per
        revision. 1 -> 2: the generator acceleration setting, appended (float32, as before)."""
        if variable_revision_number > self.variable_revision_number:
            # CellProfiler would zip the unknown layout onto these settings without a word.
            raise ValueError(
                "SuperResolveRLS: this pipeline was saved by a newer version of the module (settings "
                "revision %d; this one knows up to %d). Update SuperResolveRLS (the package and the "
                "plugins/ file: pip install -U superresolve-rls, then rls cellprofiler-files DIR) and "
                "load the pipeline again." % (variable_revision_number, self.variable_revision_number))
        if variable_revision_number == 1:
            setting_values = list(setting_values) + [ACCEL_DEFAULT_LABEL]
            variable_revision_number = 2
        if variable_revision_number == 2:  # 2 -> 3: "When an image set fails", appended (stop, as before)
            setting_values = list(setting_values) + [ON_FAILURE_STOP]
            variable_revision_number = 3
        return setting_values, variable_revision_number

    # ------------------------------------------------------------------ helpers
    def active_channels(self) -> List[SettingsGroup]:
        n = min(max(int(self.channel_count.value), 1), MAX_CHANNELS)
        return self.channels[:n]

    def known_method(self) -> Optional[str]:
        """The library's name of the chosen method, or None for a label no method has. A library
        name in place of the label (as older `make_pipelines.customize(method="rls")` wrote)
        means that method."""
        value = self.method.value
        if value in METHODS:
            return METHODS[value]
        return value if value in METHODS.values() else None

    def method_name(self) -> str:
        """`known_method`; an unknown label is refused by `check_numbers` before any run, and
        reads as RLS (the default) only for the GUI's display."""
        return self.known_method() or "rls"

    def output_names(self) -> List[str]:
        return [g.output_image.value for g in self.active_channels()]

    def uncertainty_names(self) -> List[str]:
        if self.method_name() == "bicubic" or self.samples.value <= 1:
            return []
        return [name + self.uncertainty_suffix.value for name in self.output_names()]

    def model_reference(self) -> str:
        """Shipped model name or absolute path of the custom model file."""
        if self.model_choice.value == CUSTOM_MODEL:
            return os.path.join(self.model_directory.get_absolute_path(), self.model_file.value)
        return self.model_choice.value

    def model_path(self) -> str:
        """Path of the model file; raises BundleError (unknown name / missing file) or ImportError."""
        import_rls_core()
        from rls_core.bundle import BundleError
        from rls_core.registry import MODELS_DIR, list_models

        ref = self.model_reference()
        if self.model_choice.value != CUSTOM_MODEL:
            shipped = list_models()
            if ref not in shipped:
                raise BundleError(ref, "this shipped model is not installed (expected %s)"
                                  % os.path.join(str(MODELS_DIR), ref + ".h5"),
                                  "Train or copy it there, or choose '%s' and select a model file" % CUSTOM_MODEL)
            return str(shipped[ref])
        if not os.path.isfile(ref):
            raise BundleError(ref, "model file not found", "Check the folder and file name of the custom model")
        return ref

    def weights(self) -> Optional[Dict[str, float]]:
        if self.method_name() != "rls" or not self.show_advanced.value:
            return None
        return {"lambda_logp": self.lambda_logp.value, "lambda_pnorm": self.lambda_pnorm.value,
                "lambda_cross": self.lambda_cross.value}

    @staticmethod
    def field_name(workspace, images) -> str:
        """What keys the field's random streams: the first input's file name, which stays the
        same however CellProfiler splits or orders the image sets (batch mode, -f/-l)."""
        for im in images:
            if getattr(im, "file_name", None):
                return str(im.file_name)
        return "image set %d" % workspace.measurements.image_set_number

    def feature_name(self, feature: str) -> str:
        return "%s_%s_%s" % (C_SUPERRESOLVE, feature, self.output_names()[0])

    # ------------------------------------------------------------------ validation
    def _numbers(self) -> list:
        """(setting, kind, low, high) of every numeric setting the run uses."""
        out = [(self.channel_count, int, 1, MAX_CHANNELS), (self.factor, int, 2, 64),
               (self.realism, float, 0.0, 100.0), (self.steps, int, 1, 100000), (self.samples, int, 1, 64),
               (self.seed, int, 0, 2 ** 63 - 1), (self.gpu_memory_share, float, 0.1, 1.0),
               (self.batch_size, int, 1, 4096), (self.overlap, int, 0, 10 ** 6)]
        if self.show_advanced.value:
            out += [(s, float, 0.0, 1e6) for s in (self.lambda_logp, self.lambda_pnorm, self.lambda_cross)]
        return out

    def check_numbers(self) -> None:
        """Re-check every numeric setting from its text: a hand-edited .cppipe can hold values
        that CellProfiler would otherwise replace or pass on unchecked (steps 0, realism -1,
        NaN). Raises ValidationError naming the setting."""
        for setting, kind, low, high in self._numbers():
            text = str(setting.value_text).strip()
            try:
                value = kind(float(text)) if kind is int and float(text).is_integer() else kind(text)
            except (TypeError, ValueError, OverflowError):
                raise ValidationError("'%s' must be %s, got '%s'." % (
                    setting.text, "a whole number" if kind is int else "a number", text), setting)
            if not (low <= value <= high):  # also refuses NaN
                raise ValidationError("'%s' must be between %s and %s, got %s." % (setting.text, low, high, text),
                                      setting)
        if self.known_method() is None:
            raise ValidationError("'%s' must be one of %s, got '%s'." % (
                self.method.text, ", ".join(METHODS), self.method.value), self.method)

    def validate_module(self, pipeline) -> None:
        self.check_numbers()
        if pipeline.volumetric():
            raise ValidationError("SuperResolveRLS works on 2D images only; this pipeline processes 3D stacks.",
                                  self.model_choice)
        names = self.output_names() + self.uncertainty_names()
        for i, name in enumerate(names):
            if name in names[:i]:
                setting = self.active_channels()[min(i, len(self.active_channels()) - 1)].output_image
                raise ValidationError("The output image name '%s' is used twice; give every output a different name."
                                      % name, setting)
        try:
            import_rls_core()
        except ImportError as e:
            raise ValidationError(str(e), self.model_choice)
        self.check_model_settings()

    def check_model_settings(self) -> None:
        """The checks that need the model file: it loads, and the channels, factor, weights and
        overlap fit it. Raises ValidationError naming the setting."""
        from rls_core.bundle import BundleError

        model_setting = self.model_file if self.model_choice.value == CUSTOM_MODEL else self.model_choice
        try:
            name, channel_names, resolution, has_prior = model_info(self.model_path())
        except BundleError as e:
            raise ValidationError("Cannot use the model: %s" % e, model_setting)
        n = len(channel_names)
        if int(self.channel_count.value) != n:
            raise ValidationError(
                "The model '%s' has %d channel(s): %s. Set the number of channels to %d and select the images "
                "in this order." % (name, n, ", ".join(channel_names), n), self.channel_count)
        factor = int(self.factor.value)
        ok = METHOD_TABLE.valid_factors(resolution)
        if factor not in ok:
            raise ValidationError(
                "The factor %d does not fit the model '%s' (%d-pixel tiles); choose one of %s."
                % (factor, name, resolution, ", ".join(map(str, ok))), self.factor)
        method = METHOD_TABLE.get_method(self.method_name())
        try:
            weights = method.weights_at(float(self.realism.value), self.weights())
        except ValueError as e:
            raise ValidationError(str(e), self.realism)
        if method.needs_prior(weights) and not has_prior:
            raise ValidationError(
                "The model '%s' has no latent prior, which %s needs: run `rls fit-prior` on the model file, or "
                "choose 'w/o regularisation'." % (name, self.method.value), self.method)
        if self.method_name() != "bicubic" and not self.auto_overlap.value:
            tile = resolution // factor
            if int(self.overlap.value) >= tile:
                raise ValidationError("The tile overlap must be smaller than the LR tile (%d pixels at %dx)."
                                      % (tile, factor), self.overlap)

    def other_providers(self, group: str) -> List[str]:
        """Uncertainty images are named from the outputs, so announce them to later modules."""
        if group == "imagegroup":
            return self.uncertainty_names()
        return []

    def volumetric(self) -> bool:
        return False

    # ------------------------------------------------------------------ run
    def run(self, workspace) -> None:
        try:
            import_rls_core()
        except ImportError as e:
            raise RuntimeError(str(e)) from None
        try:  # the GUI's checks again (headless runs skip validate_module); model_info is cached
            self.check_numbers()
            self.check_model_settings()
        except ValidationError as e:  # a bad setting fails every image set: always stop
            raise ValueError("SuperResolveRLS: %s" % e.message) from None
        from rls_core.bundle import BundleError
        from rls_core.errors import DeviceError, InputError, SearchError

        t0 = time.perf_counter()
        try:
            self.run_image_set(workspace)
        except (BundleError, DeviceError) as e:  # the model or the device: every set would fail, so stop
            raise ValueError("SuperResolveRLS: %s" % e) from None
        except (InputError, SearchError, ValueError) as e:  # this image set's own problem
            if self.on_failure.value != ON_FAILURE_CONTINUE:
                raise ValueError("SuperResolveRLS: %s" % e) from None
            LOGGER.warning("SuperResolveRLS: image set %d failed and continues with blank outputs: %s",
                           workspace.measurements.image_set_number, e)
            self.add_blank_outputs(workspace, str(e), time.perf_counter() - t0)

    def add_blank_outputs(self, workspace, reason: str, seconds: float) -> None:
        """Blank images of the expected HR size and a failure record, so later modules and the
        CSVs keep a row for this image set."""
        factor = int(self.factor.value)
        shape = None
        for g in self.active_channels():
            try:
                shape = workspace.image_set.get_image(g.input_image.value).pixel_data.shape[:2]
                break
            except Exception:  # the input itself may be what failed; try the next channel
                continue
        hr_shape = (shape[0] * factor, shape[1] * factor) if shape else (factor, factor)
        names = self.output_names() + self.uncertainty_names()
        for name in names:
            workspace.image_set.add(name, Image(numpy.zeros(hr_shape, numpy.float32)))
        self.add_measurements(workspace, {F_LRPSNR: float("nan"), F_CONVERGED: float("nan"), F_SECONDS: seconds,
                                          F_TILES: 0, F_STATUS: 0, F_REASON: reason[:1000]})
        if self.show_window:
            d = workspace.display_data
            d.failed = reason

    def add_measurements(self, workspace, values: Dict[str, object]) -> None:
        """The per-image record: the run's figures plus what produced them."""
        import rls_core

        try:
            path = self.model_path()
            checksum = model_checksum(path)
            model = os.path.splitext(os.path.basename(path))[0]
        except Exception:  # the model itself may be what failed
            model, checksum = self.model_reference(), ""
        values = dict(values)
        values.setdefault(F_REASON, "")
        values.setdefault(F_WARNINGS, "")
        values.update({F_MODEL: model, F_CHECKSUM: checksum, F_VERSION: str(rls_core.__version__)})
        for feature, value in values.items():
            workspace.measurements.add_image_measurement(self.feature_name(feature), value)

    def run_image_set(self, workspace) -> None:
        import torch
        from rls_core.api import InputError, super_resolve
        from rls_core.model import resolve_device

        groups = self.active_channels()
        images = [workspace.image_set.get_image(g.input_image.value, must_be_grayscale=True) for g in groups]
        if any(im.dimensions != 2 for im in images):
            raise InputError("the input images must be 2D; 3D stacks are not supported")
        pixels = [im.pixel_data for im in images]
        lr_mask = None
        if any(im.has_mask for im in images) and len({p.shape for p in pixels}) == 1:
            lr_mask = numpy.logical_and.reduce([numpy.asarray(im.mask, bool) for im in images])
            if lr_mask.all():
                lr_mask = None

        method = self.method_name()
        device = resolve_device(DEVICES[self.device.value])  # DeviceError: stops the run (not this set's fault)
        if device.type == "cuda":  # the call needs an index; "cuda" alone means the current device
            index = device.index if device.index is not None else torch.cuda.current_device()
            torch.cuda.set_per_process_memory_fraction(float(self.gpu_memory_share.value), index)
        else:
            share_cpu_between_workers(torch)

        last_logged = [-1]

        def progress(done: int, total: int) -> None:  # the log shows how far a long search is
            pct = int(100 * done / max(total, 1)) // 10 * 10
            if pct != last_logged[0]:
                last_logged[0] = pct
                LOGGER.info("SuperResolveRLS: %d%% of the search done", pct)

        result = super_resolve(
            pixels, self.model_path(), int(self.factor.value), method,
            steps=int(self.steps.value), samples=int(self.samples.value) if method != "bicubic" else 1,
            seed=int(self.seed.value), name=self.field_name(workspace, images), device=str(device),
            realism=float(self.realism.value), weights=self.weights(),
            overlap=None if self.auto_overlap.value else int(self.overlap.value),
            batch_size=int(self.batch_size.value), mask=lr_mask, callback=progress,
            accel=ACCEL_LABELS[self.accel.value])

        hr_shape = result.image.shape[1:]
        hr_mask = result.mask if result.mask is not None else numpy.ones(hr_shape, bool)
        for c, (group, im) in enumerate(zip(groups, images)):
            # Own mask of the HR shape: an image inheriting the LR parent's mask breaks later modules.
            out = Image(result.image[c], mask=hr_mask, path_name=im.path_name, file_name=im.file_name,
                        scale=im.scale)
            workspace.image_set.add(group.output_image.value, out)
        unc_names = self.uncertainty_names()
        if result.std is not None and unc_names:
            for c, name in enumerate(unc_names):
                workspace.image_set.add(name, Image(result.std[c], mask=hr_mask))

        self.add_measurements(workspace, {F_LRPSNR: float(result.lr_psnr),
                                          F_CONVERGED: float(result.converged_fraction),
                                          F_SECONDS: float(result.seconds), F_TILES: int(result.n_tiles),
                                          F_STATUS: 1, F_WARNINGS: "; ".join(result.warnings)[:1000]})
        for warning in result.warnings:
            LOGGER.warning("SuperResolveRLS: image set %d: %s", workspace.measurements.image_set_number, warning)

        if self.show_window:
            d = workspace.display_data
            d.input_names = [g.input_image.value for g in groups]
            d.output_names = [g.output_image.value for g in groups]
            d.channel_names = list(result.channel_names)
            d.lr = pixels
            d.sr = list(result.image)
            d.std = list(result.std) if (result.std is not None and unc_names) else None
            d.statistics = [
                ["Method", "%s %dx (%s)" % (self.method.value, result.factor, result.model)],
                ["LR consistency (PSNR)", "%.1f dB" % result.lr_psnr],
                ["Converged tiles", "%.0f%%" % (100 * result.converged_fraction)],
                ["Tiles", str(result.n_tiles)],
                ["Seconds", "%.1f" % result.seconds],
            ] + [["Warning", w] for w in result.warnings]

    def display(self, workspace, figure) -> None:
        d = workspace.display_data
        if getattr(d, "failed", None):
            figure.set_subplots((1, 1))
            figure.subplot_table(0, 0, [["Failed (continued with blank outputs)", d.failed]],
                                 col_labels=("Status", "Reason"))
            return
        n = len(d.sr)
        cols = 3 if d.std is not None else 2
        figure.set_subplots((cols, n + 1))  # table in its own row: fits the default window
        for i in range(n):
            label = "%s (%s)" % (d.output_names[i], d.channel_names[i])
            figure.subplot_imshow_grayscale(0, i, d.lr[i], title="LR input: %s" % d.input_names[i])
            figure.subplot_imshow_grayscale(1, i, d.sr[i], title="Super-resolved: %s" % label)
            if d.std is not None:
                figure.subplot_imshow_grayscale(2, i, d.std[i], title="Uncertainty (std): %s" % label)
        figure.subplot_table(0, n, d.statistics, col_labels=("Measurement", "Value"), n_cols=cols)

    def post_run(self, workspace) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        """Drop cached models and release GPU memory (called after each analysis run)."""
        if "rls_core.model" in sys.modules:
            sys.modules["rls_core.model"].clear_cache()

    # ------------------------------------------------------------------ measurements
    def get_measurement_columns(self, pipeline) -> list:
        return [(IMAGE, self.feature_name(f), t) for f, t in FEATURES]

    def get_categories(self, pipeline, object_name) -> List[str]:
        return [C_SUPERRESOLVE] if object_name == IMAGE else []

    def get_measurements(self, pipeline, object_name, category) -> List[str]:
        if object_name == IMAGE and category == C_SUPERRESOLVE:
            return [f for f, _ in FEATURES]
        return []

    def get_measurement_images(self, pipeline, object_name, category, measurement) -> List[str]:
        if object_name == IMAGE and category == C_SUPERRESOLVE and measurement in dict(FEATURES):
            return [self.output_names()[0]]
        return []


# CellProfiler shows the class docstring as the module's help: use the module docstring above.
SuperResolveRLS.__doc__ = __doc__

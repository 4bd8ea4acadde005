"""`rls super-resolve` over many fields: each field on its own, crash-safe, resumable.

- Each field is read, checked, super-resolved and written on its own; a failure is recorded
  (status, reason) and the batch goes on.
- Outputs are written under a temporary name and renamed; `summary.csv` is rewritten
  atomically after every field, so an interrupted run leaves a true summary.
- Every output TIFF records the settings that made it (model and its checksum, method, factor,
  steps, seed, realism, weights, inputs' checksums, package version). With `skip_existing`, a
  field whose output records the same settings is not run again; any other is redone, and the
  summary says why.
"""
from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import __version__
from .bundle import file_sha256
from .errors import InputError, RLSError
from .io import FieldSpec, is_sr_output, output_paths, read_field, read_tiff_info, write_tiff

SUMMARY_NAME = "summary.csv"
SUMMARY_COLUMNS = ["field", "status", "reason", "warnings", "method", "factor", "samples", "model", "lr_psnr",
                   "converged_fraction", "tiles", "seconds", "output", "inputs"]
#: statuses in summary.csv ("warning": written, but read the warnings column first)
OK, WARNING, SKIPPED, FAILED, NOT_RUN = "ok", "warning", "skipped", "failed", "not run"


@dataclass
class BatchOptions:
    """What `super_resolve` is asked to do for every field (the settings an output records)."""

    method: str = "rls"
    factor: int = 16
    steps: Optional[int] = None
    learning_rate: Optional[float] = None
    samples: int = 1
    seed: int = 0
    realism: float = 1.0
    weights: Dict[str, float] = field(default_factory=dict)
    p_w: str = "flow"
    overlap: Optional[int] = None
    operator: str = "bicubic"
    refine_steps: int = 0
    intensity_range: Optional[Tuple[float, float]] = None  # raw (LO, HI) -> 0..1; None: by file type


def output_settings(model, opts: BatchOptions, spec: FieldSpec, model_sha256: str) -> Dict[str, Any]:
    """Everything that decides a field's output bytes on a given machine (the batch size does
    not: per-tile random streams, docs/reproducibility.md)."""
    settings = {"package": __version__, "model": model.name, "model_sha256": model_sha256, "accel": model.accel,
                "field": spec.stem, "inputs": [{"file": s.name, "sha256": file_sha256(s)} for s in spec.sources],
                **asdict(opts)}
    return json.loads(json.dumps(settings))  # as it reads back from a TIFF (tuples become lists)


def _differences(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    keys = sorted(set(old) | set(new))
    return [k for k in keys if old.get(k) != new.get(k)]


class Summary:
    """summary.csv, rewritten atomically after every field."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: List[Dict[str, Any]] = []

    def add(self, row: Dict[str, Any]) -> None:
        self.rows.append(row)
        self.write()

    def write(self, pending: Optional[List[Dict[str, Any]]] = None) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(self.rows + (pending or []))
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(buf.getvalue())
            os.replace(tmp, self.path)
        except OSError as e:
            raise RLSError(f"cannot write {self.path} ({e.strerror or e})",
                           "choose an output folder you can write to (-o)") from None


def prepare_output(out: Path) -> Path:
    """The output folder, created if needed; a clear error if it cannot be."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"the output path {out} is a file", "give a folder with -o (it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create the output folder {out} ({e.strerror or e})",
                         "choose a folder you can write to with -o") from None
    return out


def parse_shard(text: str) -> Tuple[int, int]:
    """'I/N' (1 <= I <= N) -> (I, N)."""
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise InputError(f"--shard expects I/N, e.g. 1/4, got {text!r}") from None
    if not 1 <= i <= n:
        raise InputError(f"--shard {text}: need 1 <= I <= N")
    return i, n


def shard(specs: List[FieldSpec], i: int, n: int) -> List[FieldSpec]:
    """Shard I of N of the fields sorted by name (round robin): N tasks cover every field
    exactly once, whatever order the inputs were given in."""
    return sorted(specs, key=lambda s: s.stem)[i - 1::n]


def summary_name(shard_: Optional[Tuple[int, int]] = None) -> str:
    """summary.csv, or summary_shardIofN.csv for one task of an array (tasks never share a file)."""
    return SUMMARY_NAME if shard_ is None else f"summary_shard{shard_[0]}of{shard_[1]}.csv"


@dataclass
class FieldJob:
    """What one field's run needs besides the model: picklable, so a Dask worker gets file
    paths and settings, never arrays."""

    spec: FieldSpec
    opts: BatchOptions
    out: Path
    model_sha256: str
    batch_size: int = 32
    skip_existing: bool = False
    progress: bool = False


def model_sha256_of(model) -> str:
    path = getattr(model.bundle, "path", None)
    return file_sha256(Path(path)) if path and Path(path).is_file() else "unknown"


def _writes_std(opts: BatchOptions) -> bool:
    """Whether a field's run writes an uncertainty image (several samples of a search; a method
    without a search, bicubic, always draws one)."""
    from .methods import get_method

    return opts.samples > 1 and get_method(opts.method).search is not None


def run_field(job: FieldJob, model, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)
              ) -> Dict[str, Any]:
    """Read, check, super-resolve and write one field; its summary row. A problem of this field
    (bad file, bad values, a search that broke down, a write error) becomes a "failed" row;
    only KeyboardInterrupt escapes."""
    from .api import super_resolve

    spec, opts, out = job.spec, job.opts, Path(job.out)
    t0 = time.perf_counter()
    sr_path, std_path = output_paths(out, spec.stem)
    row: Dict[str, Any] = dict(field=spec.stem, inputs=";".join(str(s) for s in spec.sources),
                               method=opts.method, factor=opts.factor, samples=opts.samples, model=model.name)
    try:
        settings = output_settings(model, opts, spec, job.model_sha256) if not spec.problem else None
        if job.skip_existing and settings is not None:
            done = read_tiff_info(sr_path)
            if done is not None and done.get("settings") == settings and \
                    (not _writes_std(opts) or std_path.is_file()):
                row.update(done.get("result", {}), status=SKIPPED, reason="done with the same settings",
                           output=str(sr_path))
                log(f"  {spec.stem}: skipped (done with the same settings)")
                return row
            if done is not None:
                row["reason"] = "redone: " + ", ".join(_differences(done.get("settings", {}), settings)) + \
                                " changed"
        image, notes = read_field(spec, model.channel_names, opts.intensity_range)
        res = super_resolve(image, model, opts.factor, opts.method, steps=opts.steps,
                            learning_rate=opts.learning_rate, samples=opts.samples, seed=opts.seed,
                            name=spec.stem, realism=opts.realism, weights=opts.weights, p_w=opts.p_w,
                            overlap=opts.overlap, batch_size=job.batch_size, operator=opts.operator,
                            refine_steps=opts.refine_steps, progress=job.progress)
        warnings = notes + res.warnings
        result = dict(lr_psnr=f"{res.lr_psnr:.2f}", converged_fraction=f"{res.converged_fraction:.3f}",
                      tiles=res.n_tiles, seconds=f"{res.seconds:.2f}", warnings="; ".join(warnings))
        info = {"settings": settings, "result": result}
        if res.std is not None:  # the std first: an image without its std is never "done"
            write_tiff(std_path, res.std, res.channel_names, info)
        elif is_sr_output(std_path):  # an earlier run's uncertainty map would sit beside this result
            std_path.unlink()
        write_tiff(sr_path, res.image, res.channel_names, info)
        row.update(result, status=WARNING if warnings else OK, output=str(sr_path))
        log(f"  {spec.stem}: {res.image.shape[2]}x{res.image.shape[1]} px, LR PSNR {res.lr_psnr:.1f} dB, "
            f"{100 * res.converged_fraction:.0f}% tiles converged, {res.seconds:.1f} s")
        for w in warnings:
            log(f"  {spec.stem}: WARNING: {w}")
    except (ValueError, RuntimeError, OSError, MemoryError) as e:  # one bad field never stops the others
        if isinstance(e, MemoryError):  # e.g. a very large field at 32x: the others may still fit
            reason = "out of memory (split the field, or run it on a machine with more memory)"
        elif isinstance(e, OSError):
            reason = f"cannot write the output ({e.strerror or e})"
        else:
            reason = str(e)
        row.update(status=FAILED, reason=reason, seconds=f"{time.perf_counter() - t0:.2f}", output="")
        log(f"  {spec.stem}: FAILED: {reason}")
    return row


def not_run_rows(specs: List[FieldSpec], reason: str = "interrupted") -> List[Dict[str, Any]]:
    return [dict(field=s.stem, status=NOT_RUN, reason=reason, inputs=";".join(map(str, s.sources))) for s in specs]


def run_batch(specs: List[FieldSpec], model, opts: BatchOptions, out: Path, batch_size: int = 32,
              skip_existing: bool = False, progress: bool = True, summary_file: str = SUMMARY_NAME,
              log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> Summary:
    """Super-resolve every planned field into `out`, in this process. Ctrl-C writes the summary
    (the fields not run marked so) and re-raises."""
    out = prepare_output(out)
    summary = Summary(out / summary_file)
    sha = model_sha256_of(model)
    for i, spec in enumerate(specs):
        try:
            row = run_field(FieldJob(spec, opts, out, sha, batch_size, skip_existing, progress), model, log)
        except KeyboardInterrupt:
            summary.write(not_run_rows(specs[i:]))
            raise
        summary.add(row)
    return summary

"""`rls super-resolve` on a Dask cluster: one task per field (optional: `pip install .[dask]`).

- Tasks carry file paths and settings (`batch.FieldJob`), never arrays; each worker loads the
  model once (rls_core.model's cache) and writes its outputs itself, so the output folder must
  be visible to every worker (a shared filesystem on a cluster).
- A field's result does not depend on which worker runs it: its random streams are keyed by
  its name (docs/reproducibility.md). At the same torch thread count and precision the bytes
  equal an in-process run's.
- The client rewrites summary.csv after every finished field, as the in-process run does. A
  worker lost mid-run loses nothing finished; the scheduler runs its field again elsewhere
  (up to distributed's `allowed-failures`, default 3).
- Nothing here is imported unless --cluster or --scheduler is given.
"""
from __future__ import annotations

import contextlib
import os
import sys
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from .batch import FAILED, BatchOptions, FieldJob, Summary, not_run_rows, prepare_output, run_field
from .errors import DeviceError, RLSError
from .io import FieldSpec

INSTALL_FIX = "install the optional Dask extra: pip install 'superresolverls[dask]' (or pip install -e '.[dask]')"


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise RLSError("--cluster / --scheduler need dask.distributed, which is not installed", INSTALL_FIX) from None
    return distributed


def _work(job: FieldJob, model_ref: str, device: str, accel: str, threads: int) -> Tuple[Dict[str, Any], List[str]]:
    """On a worker: the field's summary row and its log lines (printed by the client)."""
    import torch

    from .model import load_model

    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    lines: List[str] = []
    model = load_model(model_ref, device, accel=accel)
    return run_field(job, model, lines.append), lines


@contextlib.contextmanager
def open_client(scheduler: Optional[str] = None, cluster: Optional[str] = None,
                workers: Optional[int] = None) -> Iterator[Any]:
    """A Client on an existing scheduler, or on a LocalCluster of `workers` one-thread
    processes (closed again on exit)."""
    distributed = _import_distributed()
    if scheduler:
        try:
            client = distributed.Client(scheduler, timeout="10s")
        except ValueError as e:  # "localhost" (no port), "http://..." (not a Dask protocol)
            raise RLSError(f"--scheduler {scheduler!r} is not a Dask scheduler address ({e})",
                           "give PROTOCOL://HOST:PORT as the scheduler prints it, e.g. --scheduler "
                           "tcp://host:8786") from None
        except (OSError, TimeoutError) as e:
            raise RLSError(f"cannot reach the Dask scheduler at {scheduler} ({e})",
                           "start it first (dask scheduler / dask-jobqueue) and give its address, "
                           "e.g. --scheduler tcp://host:8786") from None
        with client:
            yield client
        return
    if cluster != "local":
        raise RLSError(f"--cluster {cluster!r} is not known", "use --cluster local, or --scheduler ADDRESS for "
                                                               "any other cluster (docs/scale-out.md)")
    if workers is not None and workers < 1:
        raise RLSError(f"--workers must be >= 1, got {workers}")
    n = workers or max(1, os.cpu_count() or 1)
    import dask

    # The nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536. Setting it switches off glibc's
    # adaptive mmap threshold, so every large tensor of the search is mmap'ed and freed anew:
    # measured 1.9x slower per field on the 2-core dev machine (docs/scale-out.md). Our workers
    # free their memory when a field ends anyway. The nanny also copies its settings into this
    # process's environment, so an earlier cluster's value is lifted while ours runs.
    inherited = os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}), \
                distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                         dashboard_address=None) as local, distributed.Client(local) as client:
            yield client
    finally:
        if inherited is not None:
            os.environ["MALLOC_TRIM_THRESHOLD_"] = inherited


def run_batch_dask(specs: List[FieldSpec], model, opts: BatchOptions, out: Path, client, batch_size: int = 32,
                   skip_existing: bool = False, summary_file: str = "summary.csv", threads: int = 1,
                   progress: bool = True, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)
                   ) -> Summary:
    """Every planned field as one Dask task; rows land in the summary as fields finish and are
    sorted into input order at the end. Ctrl-C cancels what is left and writes the summary."""
    distributed = _import_distributed()
    from .batch import model_sha256_of

    out = prepare_output(out)
    summary = Summary(out / summary_file)
    path = getattr(model.bundle, "path", None)
    model_ref = str(Path(path).resolve()) if path and Path(path).is_file() else model.name
    if model.device.type != "cpu" and not all(client.run(_has_cuda).values()):
        raise DeviceError("the Dask workers have no GPU", "run with --device cpu, or start GPU workers")
    sha = model_sha256_of(model)
    order = {s.stem: i for i, s in enumerate(specs)}
    futures = {client.submit(_work, FieldJob(s, opts, out, sha, batch_size, skip_existing, False), model_ref,
                             str(model.device), model.accel, threads, pure=False, key=f"rls-field-{s.stem}-{uuid.uuid4().hex[:8]}"):
               s for s in specs}
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(specs), desc="fields", unit="field")
    try:
        for fut in distributed.as_completed(futures):
            spec = futures[fut]
            try:
                row, lines = fut.result()
            except Exception as e:  # the task itself died (worker lost too often, unpicklable, ...)
                row, lines = dict(field=spec.stem, status=FAILED, reason=f"the Dask task failed: {e}",
                                  inputs=";".join(map(str, spec.sources))), [f"  {spec.stem}: FAILED on the cluster: {e}"]
            for line in lines:
                log(line)
            summary.add(row)
            if bar is not None:
                bar.update(1)
    except KeyboardInterrupt:
        client.cancel(list(futures))
        finished = {r["field"] for r in summary.rows}
        summary.write(not_run_rows([s for s in specs if s.stem not in finished]))
        raise
    finally:
        if bar is not None:
            bar.close()
    summary.rows.sort(key=lambda r: order.get(r["field"], len(order)))
    summary.write()
    return summary


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()

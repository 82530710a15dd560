"""Independent tasks in this process or on Dask: a local cluster started and shut down here, or a running scheduler.

::

    results = run_tasks(work, [(path,) for path in files], workers=4, desc="reweight", name=lambda job: job[0])

:func:`run_tasks` calls ``fn(*job)`` for every job, with a progress bar over finished jobs, and returns the results
in job order. A failing job does not stop the others; when all have run the first failure (in job order) is
re-raised with its job named and the count of finished ones, with the original exception type where possible
(so a ``ValueError`` stays a user error for the CLI). ``workers=0`` runs a plain loop here (no Dask needed);
otherwise ``dask.distributed`` is needed (the ``dask`` extra). Paths inside jobs must be reachable from every worker
(a shared file system for a remote cluster).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = ["DASK_HINT", "check_workers", "dask_client", "import_distributed", "run_tasks", "task_client"]

DASK_HINT = 'pip install "bgflow_sci[dask]"'


def check_workers(workers: int, scheduler: str | None) -> None:
    """Validate ``workers`` (an int >= 0; 0: in-process) and ``scheduler`` (``None`` or an address string)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be an integer >= 0 (0: in-process, no Dask), got {workers!r}")
    if scheduler is not None and (not isinstance(scheduler, str) or not scheduler):
        raise ValueError(f"scheduler must be the address of a Dask scheduler, got {scheduler!r}")


def import_distributed(purpose: str) -> Any:
    """``dask.distributed``, or an ImportError that says how to install it and how to do without."""
    try:
        import dask  # noqa: F401
        import distributed
    except ImportError as err:
        raise ImportError(
            f"{purpose} with Dask needs dask.distributed: {DASK_HINT} (or workers=0 / --workers 0 for the "
            f"in-process loop without Dask); {err}"
        ) from err
    return distributed


@contextlib.contextmanager
def dask_client(distributed: Any, scheduler: str | None, workers: int) -> Iterator[tuple[Any, str]]:
    """``(client, label)``: of a local cluster of ``workers`` single-thread processes started and shut down here, or
    of a running scheduler at ``scheduler`` (only the client is closed then)."""
    if scheduler is not None:
        with distributed.Client(scheduler) as client:
            yield client, scheduler
        return
    with (
        distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client, "local"


@contextlib.contextmanager
def task_client(workers: int, scheduler: str | None, purpose: str) -> Iterator[tuple[Any, str] | None]:
    """One Dask client for several :func:`run_tasks` calls (``client=``): ``None`` for the in-process loop
    (``workers=0``, no scheduler), else ``(client, label)`` of :func:`dask_client`."""
    check_workers(workers, scheduler)
    if scheduler is None and workers == 0:
        yield None
        return
    with dask_client(import_distributed(purpose), scheduler, workers) as pair:
        yield pair


def _same_type(err: BaseException, msg: str) -> Exception:
    """An exception of ``err``'s type with the message ``msg`` where that type allows it, else a RuntimeError."""
    try:
        new = type(err)(msg)
    except Exception:  # noqa: BLE001 - an exception type that needs other arguments
        new = None
    return new if isinstance(new, Exception) and str(new) == msg else RuntimeError(msg)


def run_tasks(
    fn: Callable[..., Any],
    jobs: Sequence[tuple],
    *,
    workers: int = 0,
    scheduler: str | None = None,
    progress: bool = True,
    desc: str = "tasks",
    unit: str = "task",
    name: Callable[[tuple], str] = lambda job: str(job[0]),
    what: str = "task",
    verb: str = "finished",
    client: tuple[Any, str] | None = None,
) -> tuple[list[Any], dict[str, Any]]:
    """``fn(*job)`` for every job; returns ``(results in job order, {"workers": n, "scheduler": label})``.

    ``workers=0`` and no ``scheduler``: a loop in this process (label ``"in-process"``); ``scheduler``: a running
    Dask scheduler's address; else a local cluster of ``workers`` processes. ``name(job)`` names a job in the
    progress bar and in errors, ``what`` says what failed (``"reweighting samples file"``), ``verb`` what the
    finished ones did (``"[2 of 3 files were morphed]"``). ``client``: a :func:`task_client` to use (then
    ``workers`` and ``scheduler`` are not looked at).
    """
    from tqdm.auto import tqdm

    if client is None and (scheduler is not None or workers > 0):
        with task_client(workers, scheduler, desc) as pair:
            return run_tasks(fn, jobs, progress=progress, desc=desc, unit=unit, name=name, what=what, verb=verb,
                             client=pair)  # fmt: skip
    check_workers(workers, scheduler)
    results: list[Any] = [None] * len(jobs)
    done = [False] * len(jobs)
    errors: list[tuple[int, BaseException]] = []
    bar = tqdm(total=len(jobs), unit=unit, desc=desc, disable=not progress)

    def finished(i: int) -> None:
        bar.set_postfix_str(name(jobs[i]), refresh=False)
        bar.update(1)

    try:
        if client is None:
            label, n_workers = "in-process", 0
            for i, job in enumerate(jobs):
                try:
                    results[i], done[i] = fn(*job), True
                except Exception as err:  # noqa: BLE001 - collected, re-raised with the job named below
                    errors.append((i, err))
                finished(i)
        else:
            import distributed

            dask, label = client
            n_workers = len(dask.nthreads())
            futures = {dask.submit(fn, *job, pure=False): i for i, job in enumerate(jobs)}
            for future in distributed.as_completed(futures):
                i = futures[future]
                if future.status == "finished":
                    results[i], done[i] = future.result(), True
                elif future.status == "cancelled":  # e.g. the scheduler went away
                    errors.append((i, RuntimeError("the Dask task was cancelled")))
                else:
                    errors.append((i, future.exception()))
                finished(i)
    finally:
        bar.close()
    if errors:
        errors.sort(key=lambda e: e[0])
        i, err = errors[0]
        msg = f"{what} {name(jobs[i])!r} failed: {err} [{sum(done)} of {len(jobs)} {unit}s {verb}"
        if len(errors) > 1:
            msg += f"; {len(errors) - 1} more failed: {[name(jobs[j]) for j, _ in errors[1:]]}"
        raise _same_type(err, msg + "]") from err
    return results, {"workers": n_workers, "scheduler": label}

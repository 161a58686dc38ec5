"""Several cached computations at once: one process per core, each with one torch thread.

The book's runs are small U-Nets on 16x16 images; on this project's 2-core machine a fine-tuning step takes
0.14 s with two torch threads and 0.16 s with one, so two runs side by side, one thread each, fine-tune in
0.59 of the time they take one after the other with two (2026-12-04). ``benchmarks/parallel_runs.py`` times a
small table of runs both ways, the start of the processes included. Every cached result
(:mod:`experiments`' runs and gradient sums) is computed under :func:`one_torch_thread`, in a worker or not:
the thread count changes the order of float sums, and a cached number must not depend on how many were
computed at once.
"""
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager

import torch

from .errors import InputError
from .progress import bar


@contextmanager
def one_torch_thread():
    """torch computes with one thread inside the block (then with as many as before)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def default_workers() -> int:
    """Processes at once: one per core this process may use; one where a GPU takes the work."""
    if torch.cuda.is_available():
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # macOS: no affinity


def in_workers(stages: list, *, workers: int | None = None, progress: bool = True, desc: str = "runs") -> list:
    """``[[call() for call in calls] for calls in stages]``, computed by up to ``workers`` processes at once
    (default :func:`default_workers`), in the order given, a stage's calls once the previous stage's are done;
    in this process when one is enough. Every call computes with one torch thread (:func:`one_torch_thread`),
    so what it returns does not depend on ``workers``.

    The processes start once for all stages (each takes seconds to import torch). Each call must be picklable (a
    module-level function or a ``functools.partial`` of one). The bar counts finished calls. A failed call raises
    here once the calls already started have finished (each writes its result atomically, so none is left
    half-written); the calls not started are cancelled.
    """
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    at_once = min(workers, max(map(len, stages), default=0))
    results = []
    with one_torch_thread(), bar(total=sum(map(len, stages)), desc=f"{desc} ({max(at_once, 1)} at once)",
                                 progress=progress and at_once > 0) as loop:
        if at_once <= 1:
            for calls in stages:
                results.append([])
                for call in calls:
                    results[-1].append(call())
                    loop.update()
            return results
        with ProcessPoolExecutor(at_once, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=torch.set_num_threads, initargs=(1,)) as pool:
            for calls in stages:
                futures = [pool.submit(call) for call in calls]
                try:
                    for future in as_completed(futures):
                        future.result()
                        loop.update()
                except BaseException:
                    pool.shutdown(cancel_futures=True)
                    raise
                results.append([future.result() for future in futures])
    return results

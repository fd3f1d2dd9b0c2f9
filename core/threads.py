"""Keep torch's OpenMP runtime to one team of threads when the model moves to a worker thread.

libgomp gives every thread that starts a parallel region its own team of worker threads. Once the
process holds more OpenMP threads than the machine has cores, libgomp cuts its spin-waits short and
each of the hundreds of parallel regions in a forward pass ends in a futex wake-up. On 2 cores, a
generation thread started after the main thread had loaded the models and embedded the corpus took
about 70% longer to its first token (docs/serving.md). Freeing the loading thread's team first
avoids that; the team comes back by itself if that thread runs torch again.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from functools import cache

OMP_PAUSE_SOFT = 1  # omp_pause_resource_t: free the threads, keep nothing needed to restart


@cache
def _pause_all() -> Callable[[int], int] | None:
    import torch  # noqa: F401  (loads the OpenMP runtime torch was built with)

    try:
        fn = ctypes.CDLL(None).omp_pause_resource_all
    except (OSError, AttributeError):  # a torch without OpenMP, or one whose runtime is not global
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def release_openmp_team() -> bool:
    """Free the calling thread's OpenMP worker threads; False when the runtime offers no way to."""
    fn = _pause_all()
    return fn is not None and fn(OMP_PAUSE_SOFT) == 0

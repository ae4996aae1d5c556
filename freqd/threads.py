"""The CPU settings of a run: the torch thread count (``threads``, ``auto`` by default) and subnormals.

Two torch threads competing for one free core make every small batch wait for the scheduler
(measured: epochs 4-10x slower), so ``auto`` takes this process's share of the CPUs it may use,
never more. Subnormal floats (below 1.2e-38) are flushed to zero: Adam's moments of parameters
whose gradient stays zero (dead ReLU units of a projector, untouched rows) decay into that range
after a few hundred steps, and x86 arithmetic on them is slow (a FreqD epoch 6.5x slower after 60
epochs, benchmarks/RESULTS.md §15a). On Linux with glibc, freed large blocks are kept for reuse:
glibc gives every block above 32 MB its own mapping and unmaps it when freed, so each step's
embedding gradients and propagation buffers came back as fresh pages that the kernel faults in and
zeroes (a Gowalla BPR d = 300 step spent as long in the kernel as in torch, §24b). Set
``FREQD_MALLOC_REUSE=0`` to keep glibc's defaults.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from typing import Any, Final

AUTO: Final = "auto"
#: glibc's mallopt parameters (malloc.h) and the values set: large blocks from the heap, never trimmed.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD, _TRIM_THRESHOLD = 1 << 30, (1 << 31) - 1


@functools.cache
def reuse_freed_memory() -> bool:
    """Make glibc's malloc serve blocks up to 1 GiB from the heap and keep freed memory for reuse
    (``mallopt``; no well-kept Python package sets it). Returns whether it is in effect: False
    off Linux/glibc or with ``FREQD_MALLOC_REUSE=0``. Costs peak memory (freed blocks are not
    returned to the system), never changes a result. Set once per process."""
    if os.environ.get("FREQD_MALLOC_REUSE", "1").strip() == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers and ``taskset`` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity API on this platform
        return os.cpu_count() or 1


def parse_threads(value: Any, key: str = "threads") -> int | str:
    """``value`` as a positive int or ``"auto"``; a ``ValueError`` naming ``key`` and the value otherwise.

    Strings are accepted (command line, environment): ``"2"`` is 2, ``"auto"`` (any case) is auto.
    """
    if value is None:
        return AUTO
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == AUTO:
            return AUTO
        if text.isdigit() and int(text) >= 1:
            return int(text)
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError(f"{key}={value!r} is invalid: expected a positive integer or 'auto'")


def resolve_threads(value: Any = AUTO, jobs: int = 1) -> int:
    """The thread count ``value`` stands for when ``jobs`` processes share this machine.

    A positive integer is itself. ``auto`` is the available CPUs divided by ``jobs`` (at least 1),
    and no more than ``OMP_NUM_THREADS`` when the environment sets it.
    """
    parsed = parse_threads(value)
    if isinstance(parsed, int):  # not AUTO
        return parsed
    share = max(1, available_cpus() // max(1, jobs))
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp:
        cap = parse_threads(omp, key="OMP_NUM_THREADS")
        if isinstance(cap, int):  # OMP_NUM_THREADS=auto sets no cap
            share = min(share, cap)
    return share


def apply_threads(value: Any = AUTO, jobs: int = 1) -> int:
    """Resolve ``value`` and set torch's intra-op (and, while still allowed, inter-op) thread count;
    flush subnormal floats to zero on CPUs that support it; keep freed memory for reuse
    (:func:`reuse_freed_memory`).

    Returns the count set. Torch accepts the inter-op count only once per process and only before
    inter-op work starts; later calls keep the first value (freqd's runs use intra-op threads).
    Threads started later inherit the flush mode, so it is set before any parallel work.
    """
    import torch

    torch.set_flush_denormal(True)
    reuse_freed_memory()
    count = resolve_threads(value, jobs)
    torch.set_num_threads(count)
    if torch.get_num_interop_threads() != count:
        try:
            torch.set_num_interop_threads(count)
        except RuntimeError:
            pass
    return count

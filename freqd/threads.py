"""The CPU settings of a run: the torch thread count (``threads``, ``auto`` by default) and subnormals.

Two torch threads competing for one free core make every small batch wait for the scheduler
(measured: epochs 4-10x slower), so ``auto`` takes this process's share of the CPUs it may use,
never more. Subnormal floats (below 1.2e-38) are flushed to zero: Adam's moments of parameters
whose gradient stays zero (dead ReLU units of a projector, untouched rows) decay into that range
after a few hundred steps, and x86 arithmetic on them is slow (a FreqD epoch 6.5x slower after 60
epochs, benchmarks/RESULTS.md §15a).
"""

from __future__ import annotations

import os
from typing import Any, Final

AUTO: Final = "auto"


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
    flush subnormal floats to zero on CPUs that support it.

    Returns the count set. Torch accepts the inter-op count only once per process and only before
    inter-op work starts; later calls keep the first value (freqd's runs use intra-op threads).
    Threads started later inherit the flush mode, so it is set before any parallel work.
    """
    import torch

    torch.set_flush_denormal(True)
    count = resolve_threads(value, jobs)
    torch.set_num_threads(count)
    if torch.get_num_interop_threads() != count:
        try:
            torch.set_num_interop_threads(count)
        except RuntimeError:
            pass
    return count

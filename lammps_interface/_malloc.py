"""glibc's malloc in the LAMMPS process: keep freed memory for the next MD step.

torch takes every CPU tensor from ``malloc``. glibc serves a block above its mmap threshold
(dynamic, at most 32 MB on 64-bit Linux) with fresh pages from the kernel and gives them
back at ``free``, so a large system's tensors are faulted in and zeroed again at every
step: a 32,000-atom CPU box spent about half of its two cores in the kernel doing that
(``benchmarks/results/lammps_mpi_cpu``). An MD step asks for the same sizes at every step,
so the memory one step frees is best kept for the next: :func:`apply_malloc_mode` sets
``M_MMAP_MAX`` to 0 (large blocks come from the heap too; glibc still maps memory when
the heap cannot grow) and ``M_TRIM_THRESHOLD`` to 2 GiB (the heap is not shrunk after
each step), the same as starting LAMMPS with ``MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=2147483647``. The process then holds its largest step's memory
between steps, which it needs again at the next one.

``MGP_LAMMPS_MALLOC`` = ``keep`` (default) | ``default`` (leave glibc's settings as they
are). Not glibc (macOS, musl): there is nothing to set and nothing is changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

from ._errors import LAMMPSInterfaceError

__all__ = ["MALLOC_ENV", "MALLOC_MODES", "apply_malloc_mode", "malloc_mode"]

#: The environment variable that chooses the mode.
MALLOC_ENV = "MGP_LAMMPS_MALLOC"
MALLOC_MODES = ("keep", "default")

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int


def malloc_mode() -> str:
    """The mode ``MGP_LAMMPS_MALLOC`` asks for (``keep`` when unset); raises
    :class:`LAMMPSInterfaceError` for any other value."""
    mode = os.environ.get(MALLOC_ENV, "keep")
    if mode not in MALLOC_MODES:
        raise LAMMPSInterfaceError(f"{MALLOC_ENV} must be one of {MALLOC_MODES}, not {mode!r}")
    return mode


def apply_malloc_mode() -> str:
    """Apply :func:`malloc_mode` to this process; what was done: ``"keep"`` (glibc took
    both settings), ``"default"`` (asked to leave glibc alone) or ``"not glibc"``.
    Idempotent (the settings are the process's, not this module's)."""
    mode = malloc_mode()
    if mode == "default":
        return mode
    libc = _glibc()
    if libc is None:
        return "not glibc"
    if libc.mallopt(_M_MMAP_MAX, 0) != 1 or libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) != 1:
        raise LAMMPSInterfaceError(f"glibc refused mallopt; run with {MALLOC_ENV}=default to leave malloc as it is")
    return mode


def _glibc() -> "ctypes.CDLL | None":
    """The C library of this process if it is glibc (it has ``gnu_get_libc_version``)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc

"""``MGP_LAMMPS_MALLOC``: the wrapper tells glibc's malloc to keep freed memory, so an MD
step's large tensors stop being faulted in afresh at every step (``lammps_interface._malloc``).
Each case runs in a child process: the settings belong to the process."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

#: a child that allocates and frees a 64 MB tensor 40 times (above glibc's mmap threshold),
#: after applying the mode in its environment; prints what was done and its minor page faults
CHILD = """
import resource, torch
from lammps_interface._malloc import apply_malloc_mode
torch.set_num_threads(1)
print(apply_malloc_mode())
x = torch.ones(16 * 1024 * 1024)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    y = x * 2.0
    del y
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _child(mode: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.pop("MGP_LAMMPS_MALLOC", None)
    if mode is not None:
        env["MGP_LAMMPS_MALLOC"] = mode
    return subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the settings are glibc's")
def test_keep_stops_the_page_faults_of_repeated_large_tensors() -> None:
    runs = {mode: _child(mode) for mode in ("keep", "default", None)}
    for mode, res in runs.items():
        assert res.returncode == 0, res.stderr[-2000:]
    done = {mode: res.stdout.split()[0] for mode, res in runs.items()}
    faults = {mode: int(res.stdout.split()[1]) for mode, res in runs.items()}
    assert done == {"keep": "keep", "default": "default", None: "keep"}  # keep unless told otherwise
    pages = 40 * 64 * 2**20 // 4096  # what faulting every allocation in afresh costs
    assert faults["default"] > pages / 2, faults  # glibc's own behaviour: every block mapped anew
    assert faults["keep"] < pages / 3 and faults[None] < pages / 3, faults  # kept and reused (seen: 1/6 to 1/10)


def test_unknown_mode_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from lammps_interface import LAMMPSInterfaceError
    from lammps_interface._malloc import apply_malloc_mode

    monkeypatch.setenv("MGP_LAMMPS_MALLOC", "tcmalloc")
    with pytest.raises(LAMMPSInterfaceError, match="MGP_LAMMPS_MALLOC must be one of"):
        apply_malloc_mode()

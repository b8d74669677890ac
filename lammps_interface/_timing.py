"""Per-force-call timing of the ML-IAP wrapper, for ``md_benchmark.py``'s step split.

Off unless ``MGP_LAMMPS_TIMING=PATH`` is set in the LAMMPS process. Then every force
call appends one line ``total_s model_s READ:UPDATED:EDGES ...`` to ``PATH``
(``PATH.rankR`` on several MPI ranks): the wall time of the whole ``compute_forces`` call
and of the model core call inside it (the device synchronised around it, so GPU work is
counted where it runs), then per interaction layer (first to last) the nodes it read,
the nodes it updated and the edges it evaluated on this rank.
LAMMPS' loop time per step minus ``model_s`` is what the wrapper and LAMMPS add to the
model; ``total_s - model_s`` is the wrapper's own host work (graph building, copies).
The file is line-buffered, so it is complete even if LAMMPS never finalises Python.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import IO, Optional, Sequence

import torch

#: The environment variable that switches timing on and names the output file.
TIMING_ENV = "MGP_LAMMPS_TIMING"


class ForceCallTimer:
    """Wall times of force calls, written line by line to a file (see the module doc)."""

    def __init__(self, path: Optional[str]) -> None:
        self.path = path
        self._file: Optional[IO[str]] = None
        self._call_start = 0.0
        self._model_start = 0.0
        self._model_s = 0.0
        self._device = torch.device("cpu")

    @classmethod
    def from_environment(cls) -> "ForceCallTimer":
        return cls(os.environ.get(TIMING_ENV) or None)

    @property
    def enabled(self) -> bool:
        return self.path is not None

    @property
    def needs_opening(self) -> bool:
        """Timing is on and :meth:`open` has not run yet (so callers skip its arguments' cost)."""
        return self.enabled and self._file is None

    def open(self, world_rank: int, world_size: int, device: torch.device) -> None:
        """Start the file (once per process); a no-op when timing is off."""
        if not self.needs_opening:
            return
        path = Path(self.path if world_size == 1 else f"{self.path}.rank{world_rank}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "w", buffering=1)
        self._device = device

    def _sync(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)

    def call_started(self) -> None:
        if self.enabled:
            self._call_start = time.perf_counter()

    def model_started(self) -> None:
        if self.enabled:
            self._sync()
            self._model_start = time.perf_counter()

    def model_finished(self) -> None:
        if self.enabled:
            self._sync()
            self._model_s = time.perf_counter() - self._model_start

    def call_finished(self, layer_counts: Sequence[tuple[int, int, int]] = ()) -> None:
        """End a call; ``layer_counts``: (nodes read, nodes updated, edges) per layer."""
        if self._file is not None:
            total = time.perf_counter() - self._call_start
            counts = "".join(f" {r}:{u}:{e}" for r, u, e in layer_counts)
            self._file.write(f"{total:.9f} {self._model_s:.9f}{counts}\n")


def read_timings(path: Path) -> list[tuple[float, float]]:
    """The ``(total_s, model_s)`` pairs a :class:`ForceCallTimer` wrote, in call order."""
    rows = []
    for line in path.read_text().splitlines():
        total, model = line.split()[:2]
        rows.append((float(total), float(model)))
    return rows


def read_layer_counts(path: Path) -> list[list[tuple[int, int, int]]]:
    """Per call, the (nodes read, nodes updated, edges) of each layer a :class:`ForceCallTimer` wrote."""
    return [
        [tuple(int(c) for c in field.split(":")) for field in line.split()[2:]]  # type: ignore[misc]
        for line in path.read_text().splitlines()
    ]

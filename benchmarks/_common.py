"""Shared benchmark helpers: timing with warm-up and device synchronisation, medians, peak
GPU memory, a machine/version stamp, backend specs from the command line, the fcc-Cu test
system, and JSON + Markdown result files under ``benchmarks/results/``.

Import ``mace`` (done here) before e3nn in a standalone script: it sets the environment
e3nn 0.4.4 needs on recent torch.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import mace  # noqa: F401  (before e3nn)
import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

__all__ = [
    "RESULTS",
    "BackendSpec",
    "parse_backend_specs",
    "devices_from_arg",
    "synchronize",
    "time_fn",
    "machine_stamp",
    "fcc_copper",
    "write_results",
    "markdown_table",
]


# --------------------------------------------------------------------------- backends


class BackendSpec(tuple):
    """``(label, name, options)`` parsed from ``name[:key=value[;key=value]]``."""

    @property
    def label(self) -> str:
        return self[0]

    @property
    def name(self) -> str:
        return self[1]

    @property
    def options(self) -> dict[str, str]:
        return self[2]


def parse_backend_specs(text: str) -> list[BackendSpec]:
    """``"e3nn,grid,grid:conv_weights=l1l2;fused=false"`` -> specs; names are checked
    against the registry, so a typo fails before anything runs.

    >>> [s.label for s in parse_backend_specs("e3nn,grid:conv_weights=l1l2")]
    ['e3nn', 'grid:conv_weights=l1l2']
    """
    import mace_gaunt_plugin as mgp

    specs = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, _, rest = item.partition(":")
        options = dict(kv.split("=", 1) for kv in filter(None, rest.split(";")))
        backend = mgp.get_backend(name)  # UnknownBackendError lists the registered ones
        backend.resolve_options(options)  # BackendOptionError names the bad option
        specs.append(BackendSpec((item, name, options)))
    return specs


def comma_list(cast: Callable[[str], Any] = str, choices: Optional[Sequence[Any]] = None) -> Callable[[str], list[Any]]:
    """An argparse ``type`` for ``"a,b,c"``: the items cast with ``cast``; with ``choices``,
    an item outside them is a usage error naming the choices."""
    import argparse

    def parse(text: str) -> list[Any]:
        items = [cast(v.strip()) for v in text.split(",") if v.strip()]
        bad = sorted(set(items) - set(choices)) if choices is not None else []
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {list(choices)}")
        return items

    return parse


def devices_from_arg(text: str) -> list[str]:
    """``"auto"`` -> cpu, plus cuda when present; otherwise a comma list."""
    if text == "auto":
        return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    devices = [d.strip() for d in text.split(",") if d.strip()]
    if "cuda" in devices and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but torch.cuda.is_available() is False")
    return devices


# --------------------------------------------------------------------------- timing


def add_timing_arguments(parser: Any) -> None:
    """The command-line options every timing study shares (device, repeats, threads,
    dtype, output folder)."""
    parser.add_argument("--device", default="auto", help="auto (cpu + cuda if present), cpu, cuda, or a comma list")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--cpu-repeats", type=int, default=5)
    parser.add_argument("--cpu-warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--out", type=Path, default=RESULTS)


def apply_torch_settings(args: Any) -> None:
    """Torch threads and default dtype from :func:`add_timing_arguments`' options."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_default_dtype(getattr(torch, args.dtype))


def synchronize(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_fn(fn: Callable[[], Any], device: str, warmup: int = 3, repeats: int = 10) -> dict[str, Any]:
    """Median (and quartiles) of ``repeats`` timed calls after ``warmup`` untimed ones, with
    the device synchronised around each call; peak CUDA memory of one call (GB).

    Returns ``{"median_ms", "q1_ms", "q3_ms", "min_ms", "repeats", "peak_gb"}``
    (``peak_gb`` is ``None`` on CPU).
    """
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
    peak = None
    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        fn()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated() / 1e9
    qs = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {
        "median_ms": statistics.median(times),
        "q1_ms": qs[0],
        "q3_ms": qs[2],
        "min_ms": min(times),
        "repeats": repeats,
        "peak_gb": peak,
    }


# --------------------------------------------------------------------------- stamp


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_stamp(devices: Iterable[str] = ("cpu",)) -> dict[str, Any]:
    """What ran the benchmark: CPU model and count, load average, GPU, library versions,
    commit and date (no host names)."""
    import e3nn

    import mace_gaunt_plugin

    stamp: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "e3nn": e3nn.__version__,
        "mace": getattr(mace, "__version__", None),
        "mace_gaunt_plugin": mace_gaunt_plugin.__version__,
        "commit": _git_commit(),
    }
    if any(str(d).startswith("cuda") for d in devices) and torch.cuda.is_available():
        stamp["gpu"] = torch.cuda.get_device_name()
        stamp["cuda"] = torch.version.cuda
    return stamp


def stamp_line(stamp: Mapping[str, Any]) -> str:
    parts = [f"{stamp['cpu']} ({stamp['cpu_count']} cores, {stamp['torch_threads']} torch threads, load {stamp['load_average_1_5_15']})"]
    if stamp.get("gpu"):
        parts.append(f"GPU {stamp['gpu']} (CUDA {stamp.get('cuda')})")
    parts.append(f"torch {stamp['torch']}, e3nn {stamp['e3nn']}, mace {stamp['mace']}, plugin {stamp['mace_gaunt_plugin']} @ {stamp['commit']}, {stamp['date']}")
    return "; ".join(parts)


# --------------------------------------------------------------------------- systems


def fcc_copper(cells: int, a: float = 3.61, rattle: float = 0.0, seed: int = 0) -> Any:
    """fcc Cu, ``cells**3`` cubic cells (4 atoms each), periodic; ``rattle``: Gaussian
    displacement (A). A perfect lattice has 42 neighbours per atom within 5 A (86,016
    edges at 2048 atoms); ``rattle=0.05`` gives about 87,550, close to DESIGN.md's 87,598."""
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat((cells, cells, cells))
    if rattle:
        atoms.rattle(stdev=rattle, seed=seed)
    return atoms


# --------------------------------------------------------------------------- output


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """Rows of dicts -> Markdown; ``columns`` is ``[(key, header)]``; floats get 2-3 digits."""

    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_results(name: str, payload: Mapping[str, Any], markdown: str, out_dir: Path = RESULTS) -> tuple[Path, Path]:
    """Write ``{out_dir}/{name}.json`` (``payload``) and ``{name}.md`` (``markdown``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    jpath, mpath = out_dir / f"{name}.json", out_dir / f"{name}.md"
    jpath.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    mpath.write_text(markdown.rstrip() + "\n")
    return jpath, mpath

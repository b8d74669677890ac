"""Which conv kernel ``kernel=auto`` should take on CUDA, from a GPU run's measurements.

Reads the JSON of ``bench_model.py`` from ``run_all.sh``'s ``kernels`` stage (the grid
model with ``kernel=torch`` and ``kernel=triton``, same cases) and the log of the CUDA
correctness tests of the conv (``pytest -m cuda tests/test_conv_primitives.py``), and prints
``kernel=auto on CUDA should take: <kernel>`` with the reasons. Triton only if its CUDA
tests passed, it ran every case the torch kernel ran, and its training step was faster in
each; otherwise torch (what ``AUTO_CUDA_KERNEL`` in ``backends/_sphere_sites.py`` holds
until then).

Usage::

    python benchmarks/gpu/auto_kernel.py RESULTS/model_gpu_kernels.json --tests-log RESULTS/test_conv_primitives_cuda.log
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any, Optional, Sequence

TORCH, TRITON = "grid:kernel=torch", "grid:kernel=triton"


def tests_passed(log: Optional[str]) -> Optional[bool]:
    """``True`` if pytest's summary says passed and nothing failed, ``False`` if something
    failed or errored, ``None`` if no test ran (skipped, no log)."""
    if not log:
        return None
    summary = log.strip().splitlines()[-1]
    if re.search(r"\b(failed|error|errors)\b", summary):
        return False
    return True if re.search(r"\d+ passed", summary) else None


def _train(res: dict[str, Any], key: str) -> Optional[float]:
    m = res.get(key, {}).get("train")
    return m.get("median_ms") if isinstance(m, dict) else None


def verdict(result: Optional[dict[str, Any]], passed: Optional[bool]) -> tuple[str, list[str]]:
    """``(kernel, reasons)``; ``result`` is bench_model.py's JSON (or ``None``)."""
    reasons: list[str] = []
    if passed is not True:
        reasons.append("the Triton kernels' CUDA tests " + ("failed" if passed is False else "did not run"))
    if result is None:
        return "torch", reasons + ["no timing of the kernels stage"]
    if not result.get("device", "").startswith("cuda"):
        reasons.append(f"timed on {result.get('device')}, not on a GPU")
    compared = 0
    for case in result.get("cases", []):
        res = case["results"]
        where = f"L={case['L']} C={case['channels']} atoms={case['atoms']}"
        t_torch, t_triton = _train(res, TORCH), _train(res, TRITON)
        if t_torch is None:
            continue
        if t_triton is None:
            reasons.append(f"{where}: triton did not run ({res.get(TRITON, {}).get('error', 'no timing')})")
            continue
        compared += 1
        peak = [(res[k].get("train") or {}).get("peak_gb") for k in (TORCH, TRITON)]
        mem = f", train peak {peak[0]} vs {peak[1]} GB" if None not in peak else ""
        line = f"{where}: train step torch {t_torch:.1f} ms, triton {t_triton:.1f} ms{mem}"
        print("  " + line)
        if t_triton >= t_torch:
            reasons.append(line + " (triton not faster)")
    if compared == 0:
        reasons.append("no case timed both kernels")
    return ("torch", reasons) if reasons else ("triton", [f"triton faster in all {compared} case(s) and its CUDA tests passed"])


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model_json", type=Path, help="bench_model.py output of the kernels stage")
    p.add_argument("--tests-log", type=Path, default=None, help="pytest output of the CUDA conv tests")
    args = p.parse_args(argv)
    result = json.loads(args.model_json.read_text()) if args.model_json.is_file() else None
    log = args.tests_log.read_text() if args.tests_log and args.tests_log.is_file() else None
    kernel, reasons = verdict(result, tests_passed(log))
    print(f"kernel=auto on CUDA should take: {kernel}" + (" (set AUTO_CUDA_KERNEL = 'triton' in backends/_sphere_sites.py)" if kernel == "triton" else ""))
    for r in reasons:
        print(f"  - {r}")


if __name__ == "__main__":
    main()

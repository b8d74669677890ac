"""CPU memory of a training step: e3nn, today's grid conv (``kernel=reference``) and the
quadrilinear-primitive grid conv (``kernel=torch``), in the same run.

Each (backend, hidden L) runs in its own child processes (the model and system of
``bench_model.py``: ScaleShiftMACE, 2 interactions, max_ell 3, correlation 3, rattled fcc
Cu; one training step = forward with forces kept differentiable, energy + force MSE,
``backward`` (the double backward through the forces), one Adam step). A memory child:

1. builds the batch and the model, runs ``--warmup`` training steps;
2. ``gc.collect()``, then reads its resident set (``VmRSS``) as the **baseline** (model,
   batch, optimiser state, the allocator's resting state);
3. resets the kernel's resident-set high-water mark (``/proc/self/clear_refs`` = 5), runs
   one training step and reads ``VmHWM``: **step peak = VmHWM - baseline**, the extra
   resident memory the step needs at its highest point.

Two such children, two figures:

* **default allocator** (the headline figure): the child's environment as
  ``mace_run_train`` gets it (glibc's malloc untouched, nothing trimmed), so the peak is
  what a user's training process adds per step (glibc keeps freed memory cached, which
  can lower or raise it). Its whole-process ``VmHWM`` (through start-up and warm-up) is
  reported too: the resident peak ``top`` shows.
* **tuned allocator** (beside it, for comparison): ``MALLOC_MMAP_THRESHOLD_`` fixed at
  64 KiB and ``malloc_trim(0)`` before the baseline, so every tensor buffer above that
  is its own mapping, returned to the system when freed: the resident set then follows
  the live tensors and the peak is the step's tensor peak, not glibc's cache. Users do
  not get this unless they set the variable themselves.

The step time comes from a third child with the default allocator: median of
``--repeats`` steps after ``--warmup``, one torch thread. The product sites alone are
measured with the default allocator.

Usage::

    python benchmarks/bench_memory.py                 # 864 atoms, C=32, L=1,2 (~5 min on one core)
    python benchmarks/bench_memory.py --cells 2 --Ls 1 --repeats 1 --out /tmp/memory_tiny
    python benchmarks/bench_memory.py --render-only benchmarks/results/memory_cpu.json
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_BACKENDS = "e3nn,grid:kernel=reference,grid:kernel=torch"
E3NN, REFERENCE, NEW = "e3nn", "grid:kernel=reference", "grid:kernel=torch"
MMAP_THRESHOLD = 65536


# --------------------------------------------------------------------------- child


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key}")


def _trim() -> None:
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def child(what: str, spec_text: str, L: int, channels: int, cells: int, dtype: str, warmup: int, repeats: int) -> dict[str, Any]:
    """One measurement, ``what`` = ``memory`` (default allocator), ``memory_tuned`` or
    ``time``, each optionally prefixed ``product_`` (see the module docstring); runs in its
    own process."""
    import torch

    import mace  # noqa: F401  (before e3nn)
    from _common import parse_backend_specs, time_fn
    from bench_model import build, copper_batch, model_config, step_functions

    torch.set_num_threads(1)
    torch.set_default_dtype(getattr(torch, dtype))
    (spec,) = parse_backend_specs(spec_text)
    batch = copper_batch(cells, "cpu")
    n_atoms, n_edges = int(batch["positions"].shape[0]), int(batch["edge_index"].shape[1])
    torch.manual_seed(0)
    model = build(spec.name, spec.options, model_config(dict(L=L, channels=channels), n_edges / n_atoms), "cpu")
    _, train = step_functions(model, batch)
    if what.startswith("product_"):
        train = _product_sites_step(model, train)
        what = what[len("product_"):]
    info = {"atoms": n_atoms, "edges": n_edges, "params": int(sum(p.numel() for p in model.parameters())),
            "repr": sorted({m.extra_repr() for m in model.modules() if type(m).__name__ == "SphereConv"})}  # fmt: skip
    if what == "time":
        timing = time_fn(train, "cpu", warmup=warmup, repeats=repeats)
        return dict(info, train_ms=timing["median_ms"], train_q1_ms=timing["q1_ms"], train_q3_ms=timing["q3_ms"], repeats=repeats)
    for _ in range(warmup):
        train()
    if what == "memory_tuned":
        _trim()
    else:
        gc.collect()  # as a training loop leaves it: glibc's cache stays
    process_peak_kb = _status_kb("VmHWM")
    baseline_kb = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
    if _status_kb("VmHWM") > baseline_kb + 1024:
        raise RuntimeError("could not reset the resident-set high-water mark (/proc/self/clear_refs)")
    train()
    peak_kb = _status_kb("VmHWM")
    return dict(info, baseline_mb=baseline_kb / 1024, step_peak_mb=(peak_kb - baseline_kb) / 1024,
                process_peak_mb=max(process_peak_kb, peak_kb) / 1024)  # fmt: skip


def _product_sites_step(model: Any, train: Any) -> Any:
    """A step of the product sites alone, as force training runs them: for each layer's
    product module (``products[i].symmetric_contractions``, any backend), its inputs as one
    training step feeds them (captured with forward hooks), then forward, the derivative
    with respect to the features (kept differentiable, as for forces) and a backward through
    that, into the parameters."""
    import torch

    sites = [block.symmetric_contractions for block in model.products]
    captured: list[tuple[Any, ...]] = []
    hooks = [site.register_forward_hook(lambda _m, inputs, _o: captured.append(tuple(t.detach() for t in inputs))) for site in sites]
    try:
        train()
    finally:
        for hook in hooks:
            hook.remove()
    pairs = list(zip(sites, captured))

    def step() -> None:
        for site, (feats, *rest) in pairs:
            feats = feats.clone().requires_grad_(True)
            out = site(feats, *rest)
            (grad,) = torch.autograd.grad(out.pow(2).sum(), feats, create_graph=True)
            grad.pow(2).sum().backward()

    return step


def _run_child(what: str, spec: str, L: int, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("MALLOC_MMAP_THRESHOLD_", None)  # the default allocator unless this child is the tuned one
    if what.endswith("memory_tuned"):
        env["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
    cmd = [sys.executable, __file__, "--child", what, spec, "--L", str(L), "--channels", str(args.channels), "--cells", str(args.cells),
           "--dtype", args.dtype, "--warmup", str(args.warmup), "--repeats", str(args.repeats)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- study


def run(args: argparse.Namespace) -> dict[str, Any]:
    import mace  # noqa: F401  (before e3nn)
    from _common import machine_stamp, parse_backend_specs

    labels = [s.label for s in parse_backend_specs(args.backends)]
    t0 = time.perf_counter()
    rows = []
    for L in args.Ls:
        for label in labels:
            res = _run_child("memory", label, L, args)
            if "error" not in res:
                tuned = _run_child("memory_tuned", label, L, args)
                res.update({f"tuned_{k}": tuned.get(k) for k in ("baseline_mb", "step_peak_mb", "error") if k in tuned})
                res.update(_run_child("time", label, L, args))
            if "error" not in res and args.product_sites:
                alone = {**_run_child("product_memory", label, L, args), **_run_child("product_time", label, L, args)}
                res.update({"product_peak_mb": alone.get("step_peak_mb"), "product_ms": alone.get("train_ms")})
            rows.append(dict(L=L, backend=label, **res))
            shown = (f"error: {res['error']}" if "error" in res else
                     f"peak {res['step_peak_mb']:.0f} MB (tuned allocator {_cell(res.get('tuned_step_peak_mb'), '.0f')}), {res['train_ms']:.0f} ms")  # fmt: skip
            print(f"[memory {time.perf_counter() - t0:5.0f}s] L={L} {label}: {shown}", flush=True)
    return {
        "study": "memory",
        "device": "cpu",
        "dtype": args.dtype,
        "channels": args.channels,
        "cells": args.cells,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "method": "resident set of a child process: VmHWM over one training step (reset by /proc/self/clear_refs) minus "
        "VmRSS before it (after warm-up and gc); default allocator (the environment mace_run_train gets); tuned "
        f"allocator beside it: MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD} and malloc_trim before the baseline",
        "model": "ScaleShiftMACE, 2 x RealAgnosticResidualInteractionBlock, max_ell 3, correlation 3, r_max 5 A, "
        "radial MLP [64, 64, 64]; fcc Cu a=3.61 A rattled by 0.05 A; energy + force MSE, backward, Adam",
        "backends": labels,
        "rows": rows,
        "stamp": machine_stamp(["cpu"]),
        "wall_seconds": time.perf_counter() - t0,
    }


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


def _cell(v: Optional[float], fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def render_markdown(result: dict[str, Any]) -> str:
    """The Markdown table of a result JSON (deterministic: the committed .md is this)."""
    from _common import stamp_line

    by = {(r["L"], r["backend"]): r for r in result["rows"]}
    lines = [
        f"# Training-step memory on CPU ({result['dtype']}, {result['channels']} channels, "
        f"{result['cells']}^3 fcc cells)",
        "",
        f"Model: {result['model']}. Method: {result['method']}. Time: median of {result['repeats']} steps after "
        f"{result['warmup']} warm-up, one thread, default allocator (separate child).",
        "",
        "'step peak': resident memory the training step adds, **default allocator** (what `mace_run_train` gets); "
        "'process peak': the child's whole resident high-water mark (default allocator); 'tuned': the step peak with "
        "glibc told to return every buffer over 64 KiB (the tensors' own peak; not what users get unless they set "
        "MALLOC_MMAP_THRESHOLD_). Ratios use the default-allocator step peak.",
        "",
        "| L | atoms | edges | backend | params | baseline MB | step peak MB | process peak MB | tuned step peak MB | "
        "peak / e3nn | peak / grid reference | step ms | time / grid reference |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['L']} | - | - | {r['backend']} | - | - | error: {r['error']} | - | - | - | - | - | - |")
            continue
        e3 = by.get((r["L"], E3NN), {})
        ref = by.get((r["L"], REFERENCE), {})
        lines.append(
            f"| {r['L']} | {r['atoms']} | {r['edges']} | {r['backend']} | {r['params']} | {r['baseline_mb']:.0f} | "
            f"{r['step_peak_mb']:.0f} | {_cell(r.get('process_peak_mb'), '.0f')} | {_cell(r.get('tuned_step_peak_mb'), '.0f')} | "
            f"{_cell(_ratio(r['step_peak_mb'], e3.get('step_peak_mb')), '.2f')} | "
            f"{_cell(_ratio(r['step_peak_mb'], ref.get('step_peak_mb')), '.2f')} | {r['train_ms']:.0f} | "
            f"{_cell(_ratio(r['train_ms'], ref.get('train_ms')), '.2f')} |"
        )
    products = [r for r in result["rows"] if r.get("product_peak_mb") is not None]
    if products:
        lines += [
            "",
            "Product sites alone (both layers; each layer's inputs from a training step; forward, derivative with "
            "respect to the features kept differentiable, backward: as force training runs them), default allocator "
            "(a figure near 0 means glibc served the sites from memory it kept cached since the warm-up):",
            "",
            "| L | backend | product peak MB | / step peak | product ms | / step ms |",
            "|---|---|---|---|---|---|",
        ]
        for r in products:
            lines.append(
                f"| {r['L']} | {r['backend']} | {r['product_peak_mb']:.0f} | {r['product_peak_mb'] / r['step_peak_mb']:.2f} | "
                f"{r['product_ms']:.0f} | {r['product_ms'] / r['train_ms']:.2f} |"
            )
    lines += ["", "Goals (issue 12): new grid peak <= e3nn's and <= 1/3 of the reference grid's; time within 10% of it. "
              "Judged on the default-allocator step peak; the tuned-allocator verdict in parentheses.", ""]  # fmt: skip
    for L in sorted({r["L"] for r in result["rows"]}):
        new, e3, ref = by.get((L, NEW), {}), by.get((L, E3NN), {}), by.get((L, REFERENCE), {})
        if not all("step_peak_mb" in d for d in (new, e3, ref)):
            lines.append(f"- L={L}: not measured (a backend failed)")
            continue
        lines.append(f"- L={L}: " + ", ".join(f"{name}: {verdict}" for name, verdict in goal_verdicts(new, e3, ref)))
    lines += ["", f"Machine: {stamp_line(result['stamp'])}."]
    return "\n".join(lines) + "\n"


def goal_verdicts(new: dict[str, Any], e3: dict[str, Any], ref: dict[str, Any]) -> list[tuple[str, str]]:
    """Issue 12's CPU goals for the new conv: ``(goal, "met"/"NOT met" [tuned: ...])``."""

    def verdict(key: str, ok: Any) -> str:
        values = [d.get(key) for d in (new, e3, ref)]
        return "-" if None in values else ("met" if ok(*values) else "NOT met")

    out = []
    for name, ok in (("peak <= e3nn", lambda n, e, r: n <= e), ("peak <= 1/3 reference", lambda n, e, r: 3 * n <= r)):
        out.append((name, f"{verdict('step_peak_mb', ok)} (tuned allocator: {verdict('tuned_step_peak_mb', ok)})"))
    out.append(("time <= 1.1 x reference", verdict("train_ms", lambda n, e, r: n <= 1.1 * r)))
    return out


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    from _common import comma_list

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backends", default=DEFAULT_BACKENDS)
    p.add_argument("--Ls", type=comma_list(int), default=[1, 2], help="hidden L values")
    p.add_argument("--L", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--cells", type=int, default=6, help="fcc cubic cells per side (4 n^3 atoms; 6: 864)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per child process")
    p.add_argument("--out", type=Path, default=RESULTS / "memory_cpu", help="output stem (.json, .md)")
    p.add_argument("--render-only", type=Path, default=None, metavar="JSON", help="regenerate the .md from a result JSON")
    p.add_argument("--no-product-sites", dest="product_sites", action="store_false",
                   help="skip the measurement of the product sites alone")
    p.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(*args.child, args.L, args.channels, args.cells, args.dtype, args.warmup, args.repeats)))
        return
    from _common import write_results

    if args.render_only is not None:
        result = json.loads(args.render_only.read_text())
        args.render_only.with_suffix(".md").write_text(render_markdown(result))
        return
    result = run(args)
    jpath, mpath = write_results(args.out.name, result, render_markdown(result), out_dir=args.out.parent)
    print(f"[memory] wrote {jpath} and {mpath}", flush=True)


if __name__ == "__main__":
    main()

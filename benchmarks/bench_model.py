"""Whole-model speed and memory per TP backend: inference with forces and one training step.

For every backend (``--backends``, default every registered one) and, on CUDA,
cuEquivariance through MACE's own converter (``mace.cli.convert_e3nn_cueq``, the model
``--enable_cueq`` trains), a ScaleShiftMACE model (2 interactions, max_ell 3, correlation
3, r_max 5 A, MACE's default radial MLP) on rattled fcc Cu supercells is timed for

* **inference**: energy and forces (``training=False``; forces by autograd);
* **train step**: forward with forces kept differentiable, an energy + force MSE loss,
  ``backward`` (the double backward through the forces) and one Adam step.

Timing: warm-up calls, device synchronisation around each timed call, median of the
repeats; peak memory is ``torch.cuda.max_memory_allocated`` over one call (CUDA only: on
CPU torch's allocator is invisible to tracemalloc and the RSS peak is per process, so no
CPU memory figure is reported). Speed-ups are e3nn's median over the backend's, from the
same run. Three scans around a base case (hidden L, channels, cells): over hidden
L = 0..3, over channels, over system size.

Usage::

    python benchmarks/bench_model.py --preset cpu      # ~15 min on 2 cores
    python benchmarks/bench_model.py --preset gpu      # ~4-5 min on an H200 (fcc Cu 500 to 16,384 atoms)
    python benchmarks/bench_model.py --preset tiny     # seconds: checks every code path
    python benchmarks/bench_model.py --render-only benchmarks/results/model_gpu.json
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULTS = Path(__file__).resolve().parent / "results"
E3NN, CUEQ = "e3nn", "cueq"
MODES = ("infer", "train")

#: base case, and the values each scan varies (the base case is shared by all scans).
PRESETS: dict[str, dict[str, Any]] = {
    # 8 cases x 5 backends, ~4-5 min on an H200 (estimated from a partial run); --cells 5,8,12,16,20 reaches
    # 32,000 atoms (e3nn's train step runs out of memory there)
    "gpu": dict(device="cuda", dtype="float32", warmup=2, repeats=5, max_minutes=6, base=dict(L=1, channels=128, cells=8),
                scans=dict(L=[0, 1, 2, 3], channels=[32, 128, 256], cells=[5, 8, 16])),
    "cpu": dict(device="cpu", dtype="float32", warmup=1, repeats=3, threads=1, base=dict(L=1, channels=64, cells=3),
                scans=dict(L=[0, 1, 2, 3], channels=[32, 64, 128], cells=[2, 3, 4, 5])),
    "tiny": dict(device="cpu", dtype="float32", warmup=1, repeats=2, threads=1, base=dict(L=1, channels=8, cells=1),
                 scans=dict(L=[0, 1], channels=[4, 8], cells=[1, 2])),
}  # fmt: skip
SCAN_KEYS = ("L", "channels", "cells")
SLOW_MS = 500.0  # a call slower than this is repeated half as often


# --------------------------------------------------------------------------- cases


def hidden_irreps(L: int, channels: int) -> str:
    """MACE's ``--num_channels C --max_L L`` hidden irreps (natural parity)."""
    return " + ".join(f"{channels}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(L + 1))


def cases_of(base: dict[str, int], scans: dict[str, list[int]], only: Sequence[str]) -> list[dict[str, Any]]:
    """Unique cases of the chosen scans, each with the scans it belongs to, in run order: the
    base case, then each scan in turn (values ascending), so a run stopped early has the
    most useful cases."""
    out: dict[tuple[int, int, int], dict[str, Any]] = {tuple(base[k] for k in SCAN_KEYS): dict(base, scans=[])}
    for key in only:
        for value in scans[key]:
            case = dict(base, **{key: value})
            ident = tuple(case[k] for k in SCAN_KEYS)
            out.setdefault(ident, dict(case, scans=[]))["scans"].append(key)
    return [c for c in out.values() if c["scans"]]


def model_config(case: dict[str, Any], avg_num_neighbors: float) -> dict[str, Any]:
    """ScaleShiftMACE arguments for fcc Cu (MACE's defaults apart from size)."""
    import numpy as np
    import torch
    from e3nn import o3
    from mace import modules

    inter = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    return dict(
        r_max=5.0, num_bessel=8, num_polynomial_cutoff=5, max_ell=3, interaction_cls=inter, interaction_cls_first=inter,
        num_interactions=2, num_elements=1, hidden_irreps=o3.Irreps(hidden_irreps(case["L"], case["channels"])),
        MLP_irreps=o3.Irreps("16x0e"), gate=torch.nn.functional.silu, atomic_energies=np.array([-3.0]),
        avg_num_neighbors=avg_num_neighbors, atomic_numbers=[29], correlation=3, radial_MLP=[64, 64, 64],
        atomic_inter_scale=1.0, atomic_inter_shift=0.0,
    )  # fmt: skip


def copper_batch(cells: int, device: str, seed: int = 0) -> dict[str, Any]:
    """A rattled fcc Cu supercell as a MACE input dict (neighbour list by MACE)."""
    import numpy as np

    from _common import fcc_copper
    from mace_gaunt_plugin.testing import atoms_to_batch

    atoms = fcc_copper(cells)
    atoms.positions += np.random.default_rng(seed).normal(scale=0.05, size=atoms.positions.shape)
    return atoms_to_batch([atoms], [29], 5.0, device=device)


# --------------------------------------------------------------------------- models


def cueq_missing(device: str) -> Optional[str]:
    """Why cuEquivariance cannot run here, or ``None``."""
    for mod in ("cuequivariance", "cuequivariance_torch", "cuequivariance_ops_torch"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed (pip install cuequivariance-torch cuequivariance-ops-torch-cu12)"
    if not str(device).startswith("cuda"):
        return "its kernels need a CUDA device"
    return None


def build(backend: str, options: dict[str, str], cfg: dict[str, Any], device: str, e3nn_model: Any = None) -> Any:
    """The model timed for ``backend``. ``sparse`` is timed frozen and compact (the form it
    trains into and is saved in); ``cueq`` is MACE's conversion of the e3nn model."""
    import mace_gaunt_plugin as mgp

    if backend == CUEQ:
        from mace.cli.convert_e3nn_cueq import run as e3nn_to_cueq

        return e3nn_to_cueq(e3nn_model, device=device)
    model = mgp.build_model(backend, backend_options=options, **cfg)
    if backend == "sparse":
        from mace_gaunt_plugin.backends.sparse_backend import compact, freeze

        model = compact(freeze(model))
    return model.to(device)


def step_functions(model: Any, batch: dict[str, Any]) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """``infer()``: energy + forces; ``train()``: energy + force loss, double backward, Adam step."""
    import torch

    n_atoms = batch["positions"].shape[0]
    gen = torch.Generator().manual_seed(0)
    e_ref = torch.randn(1, generator=gen).to(batch["positions"])
    f_ref = torch.randn(n_atoms, 3, generator=gen).to(batch["positions"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-6)

    def infer() -> Any:
        out = model(dict(batch), training=False, compute_force=True)
        return out["energy"].detach(), out["forces"].detach()

    def train() -> Any:
        opt.zero_grad(set_to_none=True)
        out = model(dict(batch), training=True, compute_force=True)
        loss = ((out["energy"] - e_ref) ** 2).mean() / n_atoms + 10.0 * ((out["forces"] - f_ref) ** 2).mean()
        loss.backward()
        opt.step()
        return loss.detach()

    return infer, train


def free(device: str) -> None:
    gc.collect()
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def measure(fn: Callable[[], Any], device: str, warmup: int, repeats: int) -> dict[str, Any]:
    """``_common.time_fn``, with fewer repeats for slow calls (one extra, untimed probe call
    decides; TorchScripted e3nn code needs a few calls before it is optimised)."""
    from _common import synchronize, time_fn

    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    first_ms = (time.perf_counter() - t0) * 1e3
    reps = repeats if first_ms < SLOW_MS else max(3, repeats // 2)
    return time_fn(fn, device, warmup=warmup, repeats=reps)


# --------------------------------------------------------------------------- run


def run(args: argparse.Namespace, on_case: Optional[Callable[[dict[str, Any]], None]] = None) -> dict[str, Any]:
    """Run the study; ``on_case(partial_result)`` after every case (so a killed run leaves
    its finished cases on disk)."""
    import torch

    import mace  # noqa: F401  (before e3nn)
    from _common import parse_backend_specs

    import mace_gaunt_plugin as mgp

    preset = PRESETS[args.preset]
    device = args.device or preset["device"]
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but torch.cuda.is_available() is False")
    torch.set_default_dtype(getattr(torch, args.dtype or preset["dtype"]))
    threads = args.threads or preset.get("threads")
    if threads:
        torch.set_num_threads(threads)
    warmup = preset["warmup"] if args.warmup is None else args.warmup
    repeats = preset["repeats"] if args.repeats is None else args.repeats
    base = dict(preset["base"])
    scans = {k: list(v) for k, v in preset["scans"].items()}
    for key, given in (("L", args.Ls), ("channels", args.channels), ("cells", args.cells)):
        if given:
            scans[key] = [int(v) for v in given.split(",")]
    for key, given in (("L", args.base_L), ("channels", args.base_channels), ("cells", args.base_cells)):
        if given is not None:
            base[key] = given
    only = args.scans.split(",") if args.scans else list(SCAN_KEYS)
    specs = parse_backend_specs(args.backends or ",".join(mgp.available_backends()))
    specs = sorted(specs, key=lambda s: s.label != E3NN)  # e3nn first: the reference, and cueq's source
    labels = [s.label for s in specs]
    skipped: dict[str, str] = {}
    if E3NN not in labels:
        raise SystemExit("--backends must include e3nn: it is the reference every ratio is taken against")
    why = cueq_missing(device) if not args.no_cueq else "--no-cueq"
    if why:
        skipped[CUEQ] = why
        print(f"[model] cuEquivariance skipped: {why}", flush=True)
    else:
        labels.insert(1, CUEQ)

    cases = cases_of(base, scans, only)
    total = len(cases) * len(labels)
    print(f"[model] {device}, {torch.get_default_dtype()}, {len(cases)} cases x {len(labels)} backends "
          f"({', '.join(labels)}), warm-up {warmup}, median of {repeats}", flush=True)  # fmt: skip
    t_start = time.perf_counter()
    oom_at: dict[tuple[Any, ...], int] = {}  # (backend, mode, L, C) -> smallest atom count that ran out of memory
    rows = []
    k = 0
    limit_s = 60.0 * (args.max_minutes if args.max_minutes is not None else preset.get("max_minutes", 1e9))
    truncated = None
    for i_case, case in enumerate(cases):
        if time.perf_counter() - t_start > limit_s:
            truncated = f"stopped after {i_case} of {len(cases)} cases: time limit of {limit_s / 60:g} min (--max-minutes)"
            print(f"[model] {truncated}", flush=True)
            break
        batch = copper_batch(case["cells"], device)
        n_atoms, n_edges = int(batch["positions"].shape[0]), int(batch["edge_index"].shape[1])
        case_row = dict(case, atoms=n_atoms, edges=n_edges, results={})
        cfg = model_config(case, n_edges / n_atoms)
        e3nn_model = None
        for label in labels:
            k += 1
            spec = next((s for s in specs if s.label == label), None)
            res: dict[str, Any] = {}
            try:
                torch.manual_seed(0)
                if label == CUEQ:
                    if e3nn_model is None:
                        raise RuntimeError("no e3nn model to convert in this case")
                    model = build(CUEQ, {}, cfg, device, e3nn_model)
                else:
                    model = build(spec.name, spec.options, cfg, device)
                res["params"] = int(sum(p.numel() for p in model.parameters()))
                infer, train = step_functions(model, batch)
                for mode, fn in zip(MODES, (infer, train)):
                    oom_key = (label, mode, case["L"], case["channels"])
                    if n_atoms >= oom_at.get(oom_key, 1 << 62):
                        res[mode] = {"status": "skipped: out of memory at a smaller size"}
                        continue
                    try:
                        res[mode] = measure(fn, device, warmup, repeats)
                    except RuntimeError as exc:
                        if not is_oom(exc):
                            raise
                        oom_at[oom_key] = n_atoms
                        res[mode] = {"status": "out of memory"}
                    if res[mode].get("status"):
                        free(device)  # outside the except block, whose traceback holds the tensors
                if label == E3NN and CUEQ in labels:
                    e3nn_model = model  # converted next (cueq is timed right after e3nn)
            except Exception as exc:  # noqa: BLE001  (one failing backend must not end the run: it is recorded)
                if args.fail_fast:
                    raise
                res["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            model = infer = train = None  # noqa: F841  (release before the next backend is built)
            if label == CUEQ:
                e3nn_model = None
            free(device)
            case_row["results"][label] = res
            print(f"[model {k}/{total} {time.perf_counter() - t_start:5.0f}s] L={case['L']} C={case['channels']} "
                  f"N={n_atoms} {label}: {progress_text(case_row, label)}", flush=True)  # fmt: skip
        del e3nn_model, batch
        free(device)
        rows.append(case_row)
        if on_case is not None:
            on_case(result_dict(args, device, warmup, repeats, base, scans, only, labels, skipped, rows, t_start, None))
    return result_dict(args, device, warmup, repeats, base, scans, only, labels, skipped, rows, t_start, truncated)


def result_dict(args: argparse.Namespace, device: str, warmup: int, repeats: int, base: dict[str, int], scans: dict[str, list[int]],
                only: Sequence[str], labels: list[str], skipped: dict[str, str], rows: list[dict[str, Any]], t_start: float,
                truncated: Optional[str]) -> dict[str, Any]:
    """The study's JSON payload."""
    import torch

    from _common import machine_stamp

    return {
        "study": "model",
        "preset": args.preset,
        "device": device,
        "dtype": str(torch.get_default_dtype()).replace("torch.", ""),
        "warmup": warmup,
        "repeats": repeats,
        "base": base,
        "scans": {k: scans[k] for k in only},
        "scan_order": only,
        "model": "ScaleShiftMACE, 2 x RealAgnosticResidualInteractionBlock, max_ell 3, correlation 3, r_max 5 A, "
        "radial MLP [64, 64, 64], 8 Bessel, MLP_irreps 16x0e; fcc Cu a=3.61 A rattled by 0.05 A",
        "backends": labels,
        "skipped": skipped,
        "cases": rows,
        "wall_seconds": time.perf_counter() - t_start,
        "truncated": truncated,
        "stamp": machine_stamp([device]),
    }


# --------------------------------------------------------------------------- report


def missing_cases(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Cases the study's scans define that the result does not hold (a stopped run)."""
    done = {tuple(c[k] for k in SCAN_KEYS) for c in result["cases"]}
    planned = cases_of(result["base"], result["scans"], result["scan_order"])
    return [c for c in planned if tuple(c[k] for k in SCAN_KEYS) not in done]


def _ms(res: dict[str, Any], mode: str) -> Optional[float]:
    m = res.get(mode)
    return m.get("median_ms") if isinstance(m, dict) else None


def _status(res: dict[str, Any], mode: str) -> str:
    if "error" in res:
        return "error"
    m = res.get(mode) or {}
    return "OOM" if "out of memory" in str(m.get("status", "")) else "-"


def speedup(case: dict[str, Any], label: str, mode: str) -> Optional[float]:
    """e3nn's median over ``label``'s, same case and run."""
    ref, mine = _ms(case["results"].get(E3NN, {}), mode), _ms(case["results"].get(label, {}), mode)
    return ref / mine if ref and mine else None


def progress_text(case: dict[str, Any], label: str) -> str:
    res = case["results"][label]
    if "error" in res:
        return res["error"]
    parts = []
    for mode in MODES:
        ms = _ms(res, mode)
        if ms is None:
            parts.append(f"{mode} {_status(res, mode)}")
            continue
        text = f"{mode} {ms:.1f} ms"
        peak = res[mode].get("peak_gb")
        if peak is not None:
            text += f" ({peak:.2f} GB)"
        s = speedup(case, label, mode)
        if label != E3NN and s is not None:
            text += f" x{s:.2f}"
        parts.append(text)
    return ", ".join(parts)


def _cell(value: Optional[float], fmt: str, missing: str = "-") -> str:
    return missing if value is None else format(value, fmt)


def render_markdown(result: dict[str, Any]) -> str:
    """All tables of the study from its JSON (the committed .md is exactly this)."""
    from _common import stamp_line

    gpu = result["device"].startswith("cuda")
    lines = [
        f"# Whole-model speed per TP backend ({result['device']}, {result['dtype']})",
        "",
        f"Stamp: {stamp_line(result['stamp'])}.",
        "",
        f"Model: {result['model']}. Median of {result['repeats']} after {result['warmup'] + 1} warm-up calls "
        f"(half as many repeats for calls over {SLOW_MS:.0f} ms). 'infer': energy + forces; 'train': forward with "
        "forces, energy + force MSE, backward (double backward), Adam step. Speed-up = e3nn time / backend time, "
        "same run. " + ("Peak: torch.cuda.max_memory_allocated over one call." if gpu else "No memory figures on CPU (see bench_model.py)."),
        "",
    ]
    if result.get("skipped"):
        lines += ["Skipped: " + "; ".join(f"{k}: {v}" for k, v in result["skipped"].items()), ""]
    if result.get("truncated"):
        lines += [f"**Incomplete run**: {result['truncated']}.", ""]
    missing = missing_cases(result)
    if missing:
        lines += [f"**Not run** ({len(missing)} of {len(missing) + len(result['cases'])} cases; the run was stopped or killed "
                  "before them): " + ", ".join(f"L={c['L']} C={c['channels']} cells={c['cells']}" for c in missing) + ".", ""]  # fmt: skip
    titles = {"L": "hidden L", "channels": "channels", "cells": "system size"}
    for scan in result["scan_order"]:
        cases = [c for c in result["cases"] if scan in c["scans"]]
        key = {"L": "L", "channels": "channels", "cells": "atoms"}[scan]
        cases.sort(key=lambda c: c[key])
        if not cases:
            continue
        b = result["base"]
        fixed = ", ".join(f"{k}={b[k]}" for k in SCAN_KEYS if k != scan)
        lines += [f"## Scan over {titles[scan]} ({fixed}; cells = fcc cubic cells per side)", ""]
        head = ["L", "C", "atoms", "edges", "backend", "params", "infer ms", "train ms", "infer x", "train x"]
        if gpu:
            head += ["infer GB", "train GB"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for c in cases:
            for label in result["backends"]:
                res = c["results"].get(label, {})
                cells = [str(c["L"]), str(c["channels"]), str(c["atoms"]), str(c["edges"]), label,
                         str(res.get("params", "-"))]  # fmt: skip
                cells += [_cell(_ms(res, m), ".1f", _status(res, m)) for m in MODES]
                cells += [_cell(speedup(c, label, m), ".2f") for m in MODES]
                if gpu:
                    cells += [_cell((res.get(m) or {}).get("peak_gb"), ".2f") for m in MODES]
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    errors = [(c, l, r["error"]) for c in result["cases"] for l, r in c["results"].items() if "error" in r]
    if errors:
        lines += ["Errors:", ""] + [f"- L={c['L']} C={c['channels']} N={c['atoms']} {l}: {e}" for c, l, e in errors] + [""]
    return "\n".join(lines).rstrip() + "\n"


def summary(result: dict[str, Any]) -> str:
    """A compact console summary: speed-ups against e3nn per case (train / infer)."""
    labels = [l for l in result["backends"] if l != E3NN]
    out = [f"[model] done in {result['wall_seconds']:.0f} s; speed-up vs e3nn as train/infer (e3nn ms train/infer):"]
    out.append("  case                     e3nn ms        " + "  ".join(f"{l:>13}" for l in labels))
    for c in sorted(result["cases"], key=lambda c: (c["atoms"], c["L"], c["channels"])):
        e = c["results"].get(E3NN, {})
        ref = f"{_cell(_ms(e, 'train'), '.0f', _status(e, 'train'))}/{_cell(_ms(e, 'infer'), '.0f', _status(e, 'infer'))}"
        cols = [f"{_cell(speedup(c, l, 'train'), '.2f', '?')}/{_cell(speedup(c, l, 'infer'), '.2f', '?')}" for l in labels]
        out.append(f"  L={c['L']} C={c['channels']:<3} N={c['atoms']:<6}  {ref:>14}  " + "  ".join(f"{x:>13}" for x in cols))
    return "\n".join(out)


def summary_markdown(result: dict[str, Any]) -> str:
    """The README's summary: e3nn's medians and every backend's speed-up (train / infer)
    per case, with peak GPU memory of the train step where measured."""
    labels = [l for l in result["backends"] if l != E3NN]
    gpu = result["device"].startswith("cuda")
    where = result["stamp"].get("gpu") or f"CPU ({result['stamp']['cpu']}, {result['stamp']['torch_threads']} thread(s))"
    head = ["L", "C", "atoms", "e3nn train / infer ms"] + [f"{l} x train / infer" for l in labels]
    if gpu:
        head += [f"train GB {l}" for l in [E3NN] + labels]
    lines = [f"{where}, {result['dtype']}, speed-up = e3nn time / backend time:", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
    for c in sorted(result["cases"], key=lambda c: (c["atoms"], c["L"], c["channels"])):
        e = c["results"].get(E3NN, {})
        cells = [str(c["L"]), str(c["channels"]), str(c["atoms"]),
                 f"{_cell(_ms(e, 'train'), '.1f', _status(e, 'train'))} / {_cell(_ms(e, 'infer'), '.1f', _status(e, 'infer'))}"]  # fmt: skip
        for l in labels:
            r = c["results"].get(l, {})
            cells.append(f"{_cell(speedup(c, l, 'train'), '.2f', _status(r, 'train'))} / {_cell(speedup(c, l, 'infer'), '.2f', _status(r, 'infer'))}")
        if gpu:
            cells += [_cell((c["results"].get(l, {}).get("train") or {}).get("peak_gb"), ".1f", _status(c["results"].get(l, {}), "train"))
                      for l in [E3NN] + labels]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """Median time against each scanned quantity, inference (top) and train step (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scans = list(result["scan_order"])
    fig, axes = plt.subplots(2, len(scans), figsize=(4.2 * len(scans), 7), squeeze=False)
    xkey = {"L": "L", "channels": "channels", "cells": "atoms"}
    for j, scan in enumerate(scans):
        cases = sorted((c for c in result["cases"] if scan in c["scans"]), key=lambda c: c[xkey[scan]])
        for i, mode in enumerate(MODES):
            ax = axes[i][j]
            for label in result["backends"]:
                pts = [(c[xkey[scan]], _ms(c["results"].get(label, {}), mode)) for c in cases]
                pts = [(x, y) for x, y in pts if y is not None]
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=label)
            ax.set_yscale("log")
            if scan != "L":
                ax.set_xscale("log")
            xs = sorted({c[xkey[scan]] for c in cases})
            ax.set_xticks(xs, [str(x) for x in xs])
            ax.minorticks_off()
            ax.set_xlabel(xkey[scan])
            ax.set_ylabel(f"{mode} median (ms)")
            ax.grid(alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(fontsize=8)
    gpu = result["stamp"].get("gpu") or "CPU"
    fig.suptitle(f"MACE whole model per TP backend: {gpu}, {result['dtype']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(result: dict[str, Any], stem: Path, with_plot: bool = True, quiet: bool = False) -> None:
    """``stem``.json, .md (rendered from the written JSON) and .png."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1, sort_keys=True, default=str) + "\n")
    stem.with_suffix(".md").write_text(render_markdown(json.loads(stem.with_suffix(".json").read_text())))
    if with_plot:
        plot(result, stem.with_suffix(".png"))
    if not quiet:
        print(f"[model] wrote {stem}.json/.md" + ("/.png" if with_plot else ""), flush=True)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--backends", default=None, help="e.g. 'e3nn,grid,gaunt:fused=false' (default: every registered backend)")
    p.add_argument("--no-cueq", action="store_true", help="leave cuEquivariance out even when installed")
    p.add_argument("--scans", default=None, help="subset of L,channels,cells")
    p.add_argument("--Ls", default=None, help="hidden L values of the L scan, e.g. 0,1,2,3")
    p.add_argument("--channels", default=None, help="channel values of the channel scan")
    p.add_argument("--cells", default=None, help="fcc cubic cells per side of the size scan (4 n^3 atoms)")
    p.add_argument("--base-L", type=int, default=None)
    p.add_argument("--base-channels", type=int, default=None)
    p.add_argument("--base-cells", type=int, default=None)
    p.add_argument("--device", default=None, help="override the preset's device (cpu, cuda)")
    p.add_argument("--dtype", choices=("float32", "float64"), default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (cpu preset: 1, stable on a shared machine)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="start no new case after this many minutes (gpu preset: 6); what ran is written")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first backend error instead of recording it")
    p.add_argument("--out", type=Path, default=None, help="output stem (default benchmarks/results/model_<preset>)")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--render-only", type=Path, default=None, metavar="JSON", help="regenerate .md/.png from a result JSON")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    import warnings

    # e3nn's code generation repeats these on every model build; they say nothing about the benchmark
    warnings.filterwarnings("ignore", message="The TorchScript type system doesn't support instance-level annotations")
    warnings.filterwarnings("ignore", message="Environment variable TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD detected")
    if args.render_only is not None:
        write_outputs(json.loads(args.render_only.read_text()), args.render_only.with_suffix(""), not args.no_plot)
        return
    stem = args.out or RESULTS / f"model_{args.preset}"
    result = run(args, on_case=lambda partial: write_outputs(partial, stem, with_plot=False, quiet=True))
    write_outputs(result, stem, not args.no_plot)
    print(summary(result), flush=True)


if __name__ == "__main__":
    main()

"""The ``sparse`` backend: 3BPA accuracy and conv time at sparsity s = 0, 0.3, 0.5, 0.7
against stock e3nn, with the kept paths listed.

1. **Accuracy.** One small ScaleShiftMACE per setting, trained with the plugin's
   ``mace_run_train`` (``python -m mace_gaunt_plugin.train``), same data, seed and
   hyper-parameters as ``bench_accuracy.py`` (its data split and evaluation are reused:
   train on ``train_300K.xyz``, test on the 300/600/1200 K blocks of
   ``train_mixedT.xyz``). The sparse schedule is a third of the epochs random, a third
   gated, the rest frozen; ``--save_all_checkpoints`` makes the saved model the last
   epoch's, i.e. the compact frozen one. Errors are total-energy RMSE (meV) and force RMSE
   (meV/A); the kept (l1, l2, l3) paths of each layer are read from the saved model.
2. **Conv time.** The layer-1 conv of a MACE ``RealAgnosticResidualInteractionBlock`` with
   the accuracy model's degrees (hidden L, max_ell) but ``--timing-channels`` channels,
   on real fcc-Cu edges (``bench_sites.py``'s system). Sparse rows use the compact
   conv holding the layer-1 paths that training kept at that sparsity (so timing and
   accuracy describe the same models); ``conv`` is the op with gather and scatter,
   ``conv block`` the whole interaction block (its radial MLP shrinks too). One extra
   row times the training form in phases 1-2 (all paths computed, masked).

Usage::

    python benchmarks/bench_sparse.py                     # the CPU study (~15 min on 2 cores)
    python benchmarks/bench_sparse.py --preset tiny       # plumbing check (~4 min)
    python benchmarks/bench_sparse.py --timing-only --device cuda --paths-from benchmarks/results/sparse_cpu.json

Results: ``benchmarks/results/sparse_<preset>.json`` and ``.md``; ``--timing-only`` adds or
replaces the timing of its devices in the ``--paths-from`` result (the GPU line above adds
a CUDA table to ``sparse_cpu``: 2048 atoms, 128 channels with ``--timing-channels 128``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as bc  # noqa: E402  (imports mace before e3nn)
import bench_accuracy as ba  # noqa: E402
import bench_sites as bs  # noqa: E402
import torch  # noqa: E402

import mace_gaunt_plugin as mgp  # noqa: E402
from mace_gaunt_plugin.backends import sparse_backend as sb  # noqa: E402

SPARSITIES = (0.0, 0.3, 0.5, 0.7)

PRESETS: dict[str, dict[str, Any]] = {
    # The committed CPU study: 5 trainings of ~2 min plus ~1 min of timing on 2 idle cores.
    "cpu": dict(epochs=6, n_train=60, channels=8, max_L=1, max_ell=2, correlation=2, r_max=4.5, batch_size=5),
    # Plumbing only.
    "tiny": dict(epochs=3, n_train=20, channels=4, max_L=1, max_ell=2, correlation=2, r_max=3.0, batch_size=5),
}

Paths = list[list[tuple[int, int, int]]]


# --------------------------------------------------------------------------- accuracy


def sparse_options(s: float, epochs: int) -> dict[str, str]:
    third = max(1, epochs // 3)
    return {"sparsity": str(s), "random_epochs": str(third), "gated_epochs": str(third)}


def train_and_evaluate(label: str, backend: str, options: dict[str, str], cfg: dict[str, Any], work: Path, e0s: dict, threads: int) -> dict[str, Any]:
    """One ``mace_run_train`` run and its test errors, parameters and kept paths."""
    run_dir = work / label
    cmd = ba.train_command(backend, options, cfg["epochs"], cfg, run_dir, work / "train.xyz", e0s)
    if "--save_all_checkpoints" not in cmd:  # the saved model must be the last (frozen, compact) epoch's
        cmd.append("--save_all_checkpoints")
    print(f"[sparse] {label}: training {cfg['epochs']} epochs ...", flush=True)
    curve, wall = ba.run_training(cmd, label, work, threads)
    model_path = run_dir / f"{label}.model"
    errors, n_params = ba.evaluate(model_path, work, threads)
    model = torch.load(model_path, map_location="cpu", weights_only=False)
    kept = sb.kept_paths(model) if backend == "sparse" else None
    compact = all(type(b.conv_tp).__name__ == "CompactCGConv" for b in model.interactions) if backend == "sparse" else None
    row = {
        "label": label,
        "backend": backend,
        "options": options,
        "params": n_params,
        "compact": compact,
        "kept_paths": kept,
        "s_per_epoch": statistics.median(curve["epoch_seconds"]),
        "run_wall_seconds": wall,
        "curve": curve,
        **errors,
    }
    print(f"[sparse] {label}: {n_params} params, " + " ".join(f"{t}: E {row['E'][t]:.1f} F {row['F'][t]:.1f}" for t in ba.TEMPERATURES), flush=True)
    return row


# --------------------------------------------------------------------------- conv time


def _layer1_mask(conv: Any, wanted: Sequence[Sequence[int]]) -> list[int]:
    """Indices of ``conv``'s paths whose (l1, l2, l3) are in ``wanted`` (one path per
    triple in MACE's natural-parity layout)."""
    want = {tuple(p) for p in wanted}
    idx = [i for i, p in enumerate(conv.paths) if tuple(p) in want]
    if len(idx) != len(want):
        raise SystemExit(f"kept paths {sorted(want)} do not match the timing conv's paths {conv.paths}")
    return idx


def _timed_call(fn: Any, device: str) -> float:
    bc.synchronize(device)
    t0 = time.perf_counter()
    fn()
    bc.synchronize(device)
    return (time.perf_counter() - t0) * 1e3


def time_convs(device: str, cfg: dict[str, Any], kept_by_s: dict[float, Paths], args: argparse.Namespace) -> dict[str, Any]:
    """Layer-1 conv (op and block) times: e3nn, sparse training form, sparse compact per s.

    All settings are built first and then timed in interleaved rounds (every setting once
    per round), so a change of machine load hits all of them alike; per setting the best
    (CPU) or median (GPU) of the rounds is reported, the median always kept in the JSON.
    """
    cpu = device == "cpu"
    cells, rounds, warmup = (args.cpu_cells, args.cpu_repeats, 2) if cpu else (args.cells, 20, 5)
    torch.set_default_dtype(torch.float32)
    system = bs.make_system(cells, 5.0, device)
    n_edges = int(system["edge_index"].shape[1])
    hidden = bs._hidden(args.timing_channels, cfg["max_L"])
    print(f"[sparse] timing on {device}: {system['n_atoms']} atoms, {n_edges} edges, hidden {hidden}, max_ell {cfg['max_ell']}", flush=True)
    settings: list[tuple[str, str, dict[str, str], Optional[float]]] = [("e3nn", "e3nn", {}, None)]
    settings.append(("sparse s=0.5, phases 1-2 (training form)", "sparse", {"sparsity": "0.5"}, None))
    settings += [(f"sparse s={s} compact", "sparse", {"sparsity": str(s)}, s) for s in sorted(kept_by_s)]
    keys = [(site, backward) for site in ("conv", "conv block") for backward in (False, True)]
    entries = []
    for label, name, options, s in settings:
        torch.manual_seed(0)
        spec = bc.BackendSpec((label, name, options))
        inter, prod = bs.build_blocks(spec, hidden, cfg["max_ell"], 1, n_edges / system["n_atoms"], 8)
        kept = None
        if s is not None:
            kept = kept_by_s[s][1]
            sb.freeze(inter, [_layer1_mask(inter.conv_tp, kept)])
            inter = sb.compact(inter)
        elif name == "sparse":
            inter.conv_tp.set_phase(1)  # a new random subset every call, as in training
        inter, prod = inter.to(device), prod.to(device)
        fns = bs.site_callables(inter, prod, system, hidden, cfg["max_ell"])
        row: dict[str, Any] = {"setting": label, "weights_per_edge": int(inter.conv_tp.weight_numel), "kept_layer1": kept}
        entries.append((row, fns, {k: [] for k in keys}))
        for site, backward in keys:
            for _ in range(warmup):
                fns[site](backward)
    for _ in range(rounds):
        for row, fns, samples in entries:
            for site, backward in keys:
                samples[(site, backward)].append(_timed_call(lambda: fns[site](backward), device))
    rows = []
    for row, _, samples in entries:
        for (site, backward), times in samples.items():
            key = f"{site} {'fwd+bwd' if backward else 'fwd'}"
            row[key] = min(times) if cpu else statistics.median(times)
            row[key + " median"] = statistics.median(times)
        rows.append(row)
        print(f"  {row['setting']:>42}: conv fwd {row['conv fwd']:.2f} ms, fwd+bwd {row['conv fwd+bwd']:.2f} ms", flush=True)
    base = rows[0]["conv fwd+bwd"]
    for row in rows:
        row["conv speedup"] = base / row["conv fwd+bwd"]
    stamp = bc.machine_stamp([device])
    stamp["load_average_after"] = list(os.getloadavg())
    return {"device": device, "atoms": system["n_atoms"], "edges": n_edges, "hidden": str(hidden), "repeats": rounds,
            "stat": "min_ms" if cpu else "median_ms", "stamp": stamp, "rows": rows}  # fmt: skip


# --------------------------------------------------------------------------- report


def _fmt(v: Any, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _paths(layer: Sequence[Sequence[int]]) -> str:
    return " ".join(f"{a}x{b}->{c}" for a, b, c in layer)


def render(result: dict[str, Any]) -> str:
    lines = ["# Sparse CG backend: accuracy and conv time vs e3nn", "", f"Machine: {bc.stamp_line(result['stamp'])}", ""]
    if result.get("accuracy"):
        cfg, split = result["config"], result["split"]
        lines += [
            "## 3BPA accuracy (small budget)",
            "",
            f"ScaleShiftMACE, {cfg['channels']} channels, hidden L={cfg['max_L']}, max_ell={cfg['max_ell']}, correlation "
            f"{cfg['correlation']}, 2 interactions, r_max {cfg['r_max']} A, float64, batch {cfg['batch_size']}, "
            f"{cfg['epochs']} epochs (sparse: {cfg['epochs'] // 3 or 1} random, {cfg['epochs'] // 3 or 1} gated, rest frozen), "
            f"lr 0.01, EMA 0.99, seed {cfg['seed']}, {result['threads']} threads. Train: {split['train']}. "
            f"Test: {split['test']}; " + ", ".join(f"{split['n_test'][t]} at {t}" for t in ba.TEMPERATURES) + ".",
            "",
            "E: total-energy RMSE (meV), F: force RMSE (meV/A) of the saved (last-epoch, compact) model. Far from "
            "converged: these compare settings under one small budget, not attainable accuracy (at this budget E is "
            "dominated by the not yet learned energy offset; F is the informative column). s/epoch: MACE's summed "
            "training-step times, all phases; the runs ran one after another on a shared machine whose load varied, "
            "so compare them loosely (the conv timing below interleaves its settings).",
            "",
            "| model | params | s/epoch | " + " | ".join(f"E {t}" for t in ba.TEMPERATURES) + " | " + " | ".join(f"F {t}" for t in ba.TEMPERATURES) + " |",
            "|" + "---|" * (3 + 2 * len(ba.TEMPERATURES)),
        ]
        for row in result["accuracy"]:
            cells = [row["label"], str(row["params"]), _fmt(row["s_per_epoch"])]
            cells += [_fmt(row["E"][t]) for t in ba.TEMPERATURES] + [_fmt(row["F"][t]) for t in ba.TEMPERATURES]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "Kept paths (l1 x l2 -> l3: node-feature degree x edge-harmonic degree -> output degree):", ""]
        for row in result["accuracy"]:
            if row["kept_paths"] is not None:
                layers = "; ".join(f"layer {i}: {_paths(layer)}" for i, layer in enumerate(row["kept_paths"]))
                lines.append(f"- {row['label']}{'' if row['compact'] else ' (NOT compact)'}: {layers}")
        lines.append("")
    for timing in result.get("timing", []):
        lines += [
            f"## Layer-1 conv time on {timing['device']}",
            "",
            f"Machine: {bc.stamp_line(timing['stamp'])}; load average after: {timing['stamp'].get('load_average_after')}.",
            "",
            f"fcc Cu: {timing['atoms']} atoms, {timing['edges']} edges (r_max 5); hidden {timing['hidden']}, max_ell "
            f"{result['config']['max_ell']}, float32; {'best' if timing['stat'] == 'min_ms' else 'median'} of {timing['repeats']} "
            "interleaved rounds (medians in the JSON); ms. conv = op with gather and scatter; "
            "block = whole interaction block (radial MLP, linears, conv). Sparse compact rows keep the layer-1 paths "
            "that training kept at that sparsity. speedup = e3nn conv fwd+bwd / this.",
            "",
        ]
        cols = [("setting", "setting"), ("weights_per_edge", "weights/edge"), ("conv fwd", "conv fwd"), ("conv fwd+bwd", "conv fwd+bwd"),
                ("conv speedup", "speedup"), ("conv block fwd", "block fwd"), ("conv block fwd+bwd", "block fwd+bwd")]  # fmt: skip
        rows = [dict(r, kept_layer1=None) for r in timing["rows"]]
        lines += [bc.markdown_table(rows, cols), ""]
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------- main


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--sparsities", type=bc.comma_list(float), default=list(SPARSITIES))
    p.add_argument("--device", default="cpu", help="timing devices: cpu, cuda, auto or a comma list")
    p.add_argument("--timing-only", action="store_true", help="skip training: time with the kept paths of --paths-from "
                   "and write the timing for --device into that result (other devices' timings kept)")
    p.add_argument("--paths-from", type=Path, default=None, help="a sparse_<preset>.json")
    p.add_argument("--timing-channels", type=int, default=64)
    p.add_argument("--cpu-cells", type=int, default=3, help="fcc cells per side on CPU (3 -> 108 atoms)")
    p.add_argument("--cells", type=int, default=8, help="fcc cells per side on GPU (8 -> 2048 atoms)")
    p.add_argument("--cpu-repeats", type=int, default=15, help="interleaved timing rounds on CPU")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--data", type=Path, default=Path(os.environ.get("MACE_GAUNT_3BPA", ba.DEFAULT_DATA)))
    p.add_argument("--work-dir", type=Path, default=bc.RESULTS / "tmp" / "sparse")
    p.add_argument("--out", type=Path, default=bc.RESULTS)
    p.add_argument("--render-only", type=Path, default=None, metavar="JSON", help="rewrite the .md of a result JSON")
    args = p.parse_args(argv)
    if args.render_only is not None:
        args.render_only.with_suffix(".md").write_text(render(json.loads(args.render_only.read_text())))
        return
    torch.set_num_threads(args.threads)
    cfg = dict(PRESETS[args.preset], seed=args.seed)
    devices = bc.devices_from_arg(args.device)
    result: dict[str, Any] = {"benchmark": "bench_sparse", "preset": args.preset, "config": cfg, "threads": args.threads, "stamp": bc.machine_stamp(devices)}

    if args.timing_only:
        if args.paths_from is None:
            p.error("--timing-only needs --paths-from RESULT.json")
        result = json.loads(args.paths_from.read_text())
        cfg = result["config"]
        kept_by_s = {float(r["options"]["sparsity"]): r["kept_paths"] for r in result["accuracy"] if r["kept_paths"]}
        name = args.paths_from.stem
        timings = [t for t in result.get("timing", []) if t["device"] not in devices]
    else:
        work = args.work_dir.resolve()
        split = ba.prepare_data(args.data, work, cfg["n_train"], args.seed)
        result["split"] = split
        rows = [train_and_evaluate("e3nn", "e3nn", {}, cfg, work, split["e0s"], args.threads)]
        for s in args.sparsities:
            rows.append(train_and_evaluate(f"sparse_s{s}", "sparse", sparse_options(s, cfg["epochs"]), cfg, work, split["e0s"], args.threads))
        result["accuracy"] = rows
        kept_by_s = {float(r["options"]["sparsity"]): r["kept_paths"] for r in rows if r["kept_paths"]}
        name = f"sparse_{args.preset}"
        timings = []
        result["stamp"]["load_average_after"] = list(os.getloadavg())
    result["timing"] = timings + [time_convs(d, cfg, kept_by_s, args) for d in devices]
    md = render(result)
    paths = bc.write_results(name, result, md, args.out)
    print(md)
    print("wrote", *paths)


if __name__ == "__main__":
    main()

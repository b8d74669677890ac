"""3BPA accuracy study: what each TP backend costs in accuracy for what it buys in speed.

Trains one small MACE model per backend with the plugin's training command
(``python -m mace_gaunt_plugin.train ... --tp-backend NAME``, i.e. ``mace_run_train``),
all with the same architecture, data, seed and hyper-parameters, under two budgets:

* **equal epochs**: every backend trains ``--epochs`` epochs;
* **equal wall-clock time**: every backend gets the training time the reference backend
  (``--time-reference``, default e3nn) needed for those epochs, i.e.
  ``round(budget / its own seconds per epoch)`` epochs (a run is reused when that equals
  ``--epochs``). Seconds per epoch are the mean over epochs of the summed training-step
  times MACE logs (``results/*_train.txt``), so start-up, validation and model compilation
  are excluded.

Data: train on ``train_300K.xyz`` (MACE keeps 10% for validation), test on
``train_mixedT.xyz`` split by temperature. The xyz comment lines carry no temperature;
the file is three contiguous blocks of 167 / 167 / 166 configurations sampled at 300,
600 and 1200 K (the mean potential energy steps up at exactly those indices, about 1:2:4
above the minimum, as equipartition predicts; :func:`temperature_blocks` checks this on
every run). The 300 K block's configurations that also occur in ``train_300K.xyz`` are
dropped from its test set. The official 3BPA test files are not part of the data here.

Errors are total-energy RMSE (meV per configuration) and force-component RMSE (meV/A),
like the published 3BPA tables, which are shown beside ours for context only: they are
for large models trained to convergence, ours are small-budget numbers.

Usage::

    python benchmarks/bench_accuracy.py                 # the CPU study (about 20-25 min, 1 thread per run)
    python benchmarks/bench_accuracy.py --preset tiny   # a smoke test of the whole pipeline
    python benchmarks/bench_accuracy.py --render-only benchmarks/results/accuracy_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "3bpa"
RESULTS = REPO / "benchmarks" / "results"
TEMPERATURES = ("300K", "600K", "1200K")

#: Published 3BPA test RMSEs (meV, meV/A), full training, trained on train_300K
#: (Luo et al., MACE vs MACE-Gaunt; DESIGN.md section 2). Context, not a comparison.
PUBLISHED = {
    "MACE (published)": {"E": {"300K": 3.0, "600K": 9.7, "1200K": 29.8}, "F": {"300K": 8.8, "600K": 21.8, "1200K": 62.0}},
    "MACE-Gaunt (published)": {"E": {"300K": 2.9, "600K": 10.6, "1200K": 30.4}, "F": {"300K": 9.2, "600K": 22.2, "1200K": 63.1}},
}

PRESETS: dict[str, dict[str, Any]] = {
    # The committed CPU study: ~20-25 minutes on 2 cores for e3nn, grid, gaunt, sparse.
    "cpu": dict(epochs=8, n_train=300, channels=16, max_L=1, max_ell=2, correlation=3, r_max=4.5, batch_size=5),
    # The whole pipeline in about a minute per backend: checks the plumbing, not the models.
    "tiny": dict(epochs=3, n_train=20, channels=4, max_L=1, max_ell=1, correlation=2, r_max=3.0, batch_size=5),
}


# --------------------------------------------------------------------------- data


def temperature_blocks(energies: Sequence[float]) -> dict[str, list[int]]:
    """Indices of the 300 / 600 / 1200 K blocks of ``train_mixedT.xyz``.

    The file is three contiguous, equal (up to one) blocks in order of temperature. Raises
    ``ValueError`` when the mean energies of the blocks do not increase (a different file).
    """
    import numpy as np

    idx = np.array_split(np.arange(len(energies)), 3)
    means = [float(np.mean(np.asarray(energies)[i])) for i in idx]
    if not means[0] < means[1] < means[2]:
        raise ValueError(
            f"train_mixedT.xyz: block mean energies {means} do not increase; this is not the 300/600/1200 K "
            "ordering this study assumes. Split the file yourself and pass it as --data."
        )
    return {t: [int(k) for k in i] for t, i in zip(TEMPERATURES, idx)}


def prepare_data(data: Path, work: Path, n_train: Optional[int], seed: int) -> dict[str, Any]:
    """Write ``train.xyz`` and ``test_<T>.xyz`` into ``work``; returns the split description."""
    import ase.io
    import numpy as np

    for name in ("train_300K.xyz", "train_mixedT.xyz", "iso_atoms.xyz"):
        if not (data / name).is_file():
            raise SystemExit(f"3BPA data not found: {data / name} (use --data DIR or MACE_GAUNT_3BPA=DIR)")
    train = ase.io.read(data / "train_300K.xyz", ":")
    if n_train is not None and n_train < len(train):
        order = np.random.default_rng(seed).permutation(len(train))[:n_train]
        train = [train[i] for i in sorted(order)]
    mixed = ase.io.read(data / "train_mixedT.xyz", ":")
    blocks = temperature_blocks([a.get_potential_energy() for a in mixed])
    seen = {a.positions.round(5).tobytes() for a in ase.io.read(data / "train_300K.xyz", ":")}
    work.mkdir(parents=True, exist_ok=True)
    ase.io.write(work / "train.xyz", train)
    tests, dropped = {}, {}
    for t, idx in blocks.items():
        keep = [mixed[i] for i in idx if mixed[i].positions.round(5).tobytes() not in seen]
        dropped[t] = len(idx) - len(keep)
        ase.io.write(work / f"test_{t}.xyz", keep)
        tests[t] = len(keep)
    e0s = {int(a.numbers[0]): float(a.get_potential_energy()) for a in ase.io.read(data / "iso_atoms.xyz", ":")}
    return {
        "train": f"train_300K.xyz ({len(train)} configurations, 10% of them MACE's validation set)",
        "test": "train_mixedT.xyz split into its contiguous 300/600/1200 K blocks (indices 0-166, 167-333, 334-499); "
        "configurations also in train_300K.xyz removed",
        "n_test": tests,
        "dropped_as_in_train": dropped,
        "e0s": e0s,
    }


# --------------------------------------------------------------------------- training


def train_command(backend: str, options: dict[str, str], epochs: int, cfg: dict[str, Any], run_dir: Path, train_file: Path, e0s: dict[int, float]) -> list[str]:
    """The ``python -m mace_gaunt_plugin.train`` command line of one run (named after ``run_dir``).

    ``--save_all_checkpoints`` makes the saved model the last epoch's for every backend
    (stock MACE saves the best validation epoch): the budget is the same for all, and a
    ``sparse`` model is saved frozen and compact."""
    cmd = [sys.executable, "-m", "mace_gaunt_plugin.train",
           "--name", run_dir.name, "--work_dir", str(run_dir), "--train_file", str(train_file),
           "--valid_fraction", "0.1", "--energy_key", "energy", "--forces_key", "forces", "--E0s", repr(e0s),
           "--model", "ScaleShiftMACE", "--num_channels", str(cfg["channels"]), "--max_L", str(cfg["max_L"]),
           "--max_ell", str(cfg["max_ell"]), "--correlation", str(cfg["correlation"]), "--num_interactions", "2",
           "--r_max", str(cfg["r_max"]), "--batch_size", str(cfg["batch_size"]), "--valid_batch_size", "20",
           "--max_num_epochs", str(epochs), "--patience", str(10**6), "--lr", "0.01",
           "--energy_weight", "1", "--forces_weight", "100", "--ema", "--ema_decay", "0.99",
           "--scheduler_patience", "5", "--default_dtype", "float64", "--device", "cpu", "--seed", str(cfg["seed"]),
           "--save_all_checkpoints", "--tp-backend", backend]  # fmt: skip
    for key, value in sorted(options.items()):
        cmd += ["--tp-option", f"{key}={value}"]
    return cmd


def read_train_log(path: Path) -> dict[str, Any]:
    """Per-epoch training time (sum of MACE's logged step times) and validation force
    RMSE per epoch from MACE's ``results/*_train.txt``."""
    step_time: dict[int, float] = {}
    valid_f: dict[int, float] = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("mode") == "opt":
            step_time[int(rec["epoch"])] = step_time.get(int(rec["epoch"]), 0.0) + float(rec["time"])
        elif rec.get("mode") == "eval" and rec.get("epoch") is not None:
            valid_f[int(rec["epoch"])] = 1000.0 * float(rec["rmse_f"])
    epochs = sorted(step_time)
    return {
        "epoch_seconds": [step_time[e] for e in epochs],
        "valid_rmse_f": [valid_f.get(e) for e in epochs],
    }


def evaluate(model_path: Path, work: Path, threads: int) -> tuple[dict[str, Any], int]:
    """Total-energy RMSE (meV) and force RMSE (meV/A) per test temperature, and the
    model's parameter count."""
    import ase.io
    import numpy as np
    import torch

    from mace_gaunt_plugin.testing import atoms_to_batch

    torch.set_num_threads(threads)
    torch.set_default_dtype(torch.float64)
    model = torch.load(model_path, map_location="cpu", weights_only=False).double().eval()
    z = [int(v) for v in model.atomic_numbers]
    r_max = float(model.r_max)
    out: dict[str, Any] = {"E": {}, "F": {}}
    for t in TEMPERATURES:
        frames = ase.io.read(work / f"test_{t}.xyz", ":")
        de, df = [], []
        for start in range(0, len(frames), 25):
            chunk = frames[start : start + 25]
            batch = atoms_to_batch(chunk, z, r_max)
            pred = model(batch, training=False, compute_force=True)
            de.append(pred["energy"].detach().numpy() - np.array([a.get_potential_energy() for a in chunk]))
            df.append(pred["forces"].detach().numpy() - np.concatenate([a.get_forces() for a in chunk]))
        out["E"][t] = 1000.0 * float(np.sqrt(np.mean(np.concatenate(de) ** 2)))
        out["F"][t] = 1000.0 * float(np.sqrt(np.mean(np.concatenate(df) ** 2)))
    n_params = int(sum(p.numel() for p in model.parameters()))
    return out, n_params


def run_training(cmd: list[str], name: str, work: Path, threads: int) -> tuple[dict[str, Any], float]:
    """Run one ``mace_run_train`` command (``--name name``, output in ``work/name``, console
    in ``work/name.log``) with ``threads`` CPU threads; its learning curve and wall time."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.perf_counter()
    with open(work / f"{name}.log", "w") as log:
        proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (work / f"{name}.log").read_text().splitlines()[-15:]
        raise RuntimeError(f"training {name} failed (exit {proc.returncode}):\n  " + shlex.join(cmd) + "\n" + "\n".join(tail))
    results = work / name / "results"
    logs = sorted(results.glob(f"{name}_run-*_train.txt"))
    if not logs:
        raise RuntimeError(f"no MACE training log under {results}")
    return read_train_log(logs[0]), wall


def run_one(backend: str, options: dict[str, str], epochs: int, cfg: dict[str, Any], work: Path, e0s: dict[int, float], threads: int) -> dict[str, Any]:
    """Train, read the log, evaluate; one result row (without its budget label)."""
    name = f"{backend}_e{epochs}"
    run_dir = work / name
    cmd = train_command(backend, options, epochs, cfg, run_dir, work / "train.xyz", e0s)
    print(f"[accuracy] {backend}: training {epochs} epochs ...", flush=True)
    curve, wall = run_training(cmd, name, work, threads)
    errors, n_params = evaluate(run_dir / f"{name}.model", work, threads)
    row = {
        "backend": backend,
        "options": options,
        "epochs": epochs,
        "params": n_params,
        "s_per_epoch": sum(curve["epoch_seconds"]) / len(curve["epoch_seconds"]),
        "s_per_epoch_median": statistics.median(curve["epoch_seconds"]),
        "train_seconds": sum(curve["epoch_seconds"]),
        "run_wall_seconds": wall,
        "curve": curve,
        **errors,
    }
    print(
        f"[accuracy] {backend}: {epochs} ep, {row['s_per_epoch']:.1f} s/epoch, {n_params} params, "
        + " ".join(f"{t}: E {row['E'][t]:.1f} F {row['F'][t]:.1f}" for t in TEMPERATURES)
        + f" (run {wall:.0f} s)",
        flush=True,
    )
    return row


def default_options(backend: str, epochs: int) -> dict[str, str]:
    """Study-wide backend options: the sparse schedule scaled to the epoch budget
    (a third random, a third gated, the rest frozen)."""
    if backend == "sparse":
        third = max(1, epochs // 3)
        return {"random_epochs": str(third), "gated_epochs": str(third)}
    return {}


# --------------------------------------------------------------------------- report


def _fmt(value: Optional[float], digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary_markdown(result: dict[str, Any]) -> str:
    """The README's summary: the result table with a one-line setting."""
    cfg = result["config"]
    table = render_markdown(result).split("\n| model |", 1)[1].split("\n\n", 1)[0]
    return (
        f"ScaleShiftMACE {cfg['channels']} channels, L={cfg['max_L']}, {cfg['n_train']} training configurations, "
        f"{result['epochs']} epochs or {result['time_budget_s']:.0f} s of training each, {result['threads']} CPU thread(s) per run; "
        "E meV, F meV/A; small budget, not converged:\n\n| model |" + table.rstrip("\n") + "\n"
    )


def render_markdown(result: dict[str, Any]) -> str:
    """The study's Markdown table from its JSON (the committed .md is exactly this)."""
    from _common import stamp_line

    cfg, split, stamp = result["config"], result["split"], result["stamp"]
    head = "| model | budget | epochs | params | s/epoch | " + " | ".join(f"E {t}" for t in TEMPERATURES) + " | " + " | ".join(f"F {t}" for t in TEMPERATURES) + " |"
    lines = [
        "# 3BPA accuracy per TP backend (small budget)",
        "",
        f"Stamp: {stamp_line(stamp)}; {result['threads']} threads per training run.",
        "",
        f"Model: ScaleShiftMACE, {cfg['channels']} channels, hidden L={cfg['max_L']}, max_ell={cfg['max_ell']}, correlation "
        f"{cfg['correlation']}, 2 interactions, r_max {cfg['r_max']} A, float64, batch {cfg['batch_size']}, seed {cfg['seed']}. "
        f"Train: {split['train']}. Test: {split['test']}; "
        + ", ".join(f"{split['n_test'][t]} at {t}" for t in TEMPERATURES)
        + ".",
        "",
        f"Budgets: {result['epochs']} epochs each; equal time = {_fmt(result['time_budget_s'])} s of training steps "
        f"(what {result['time_reference']} needed for {result['epochs']} epochs).",
        "",
        "E: total-energy RMSE (meV), F: force RMSE (meV/A). **Small-budget numbers, far from converged**: they "
        "compare backends under one budget; they are not the models' attainable accuracy. The published rows are "
        "large models trained to convergence, for context only.",
        "",
        head,
        "|" + "---|" * (5 + 2 * len(TEMPERATURES)),
    ]
    for row in result["rows"]:
        opts = ", ".join(f"{k}={v}" for k, v in sorted(row["options"].items()))
        label = row["backend"] + (f" ({opts})" if opts else "")
        cells = [label, row["budget"], str(row["epochs"]), str(row["params"]), _fmt(row["s_per_epoch"])]
        cells += [_fmt(row["E"][t]) for t in TEMPERATURES] + [_fmt(row["F"][t]) for t in TEMPERATURES]
        lines.append("| " + " | ".join(cells) + " |")
    for name, pub in PUBLISHED.items():
        cells = [name, "full training", "-", "-", "-"] + [_fmt(pub["E"][t]) for t in TEMPERATURES] + [_fmt(pub["F"][t]) for t in TEMPERATURES]
        lines.append("| " + " | ".join(cells) + " |")
    if result.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in result["skipped"].items())]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """Force RMSE per temperature (both budgets) and validation force RMSE vs training time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4))
    rows = result["rows"]
    width = 0.8 / max(1, len(rows))
    names = list(dict.fromkeys(row["backend"] for row in rows))
    color = {b: f"C{i}" for i, b in enumerate(names)}
    for k, row in enumerate(rows):
        xs = [i + k * width for i in range(len(TEMPERATURES))]
        ax0.bar(xs, [row["F"][t] for t in TEMPERATURES], width, color=color[row["backend"]],
                hatch="//" if row["budget"] == "equal time" else None, label=f"{row['backend']} ({row['budget']})")
    ax0.set_xticks([i + 0.4 - width / 2 for i in range(len(TEMPERATURES))], TEMPERATURES)
    ax0.set_ylabel("test force RMSE (meV/A)")
    ax0.set_title("3BPA held-out, small budget")
    ax0.legend(fontsize=7)
    for row in rows:
        if row["budget"] != "equal time":
            continue
        t = [sum(row["curve"]["epoch_seconds"][: i + 1]) for i in range(len(row["curve"]["epoch_seconds"]))]
        ax1.plot(t, row["curve"]["valid_rmse_f"], marker="o", color=color[row["backend"]], label=row["backend"])
    ax1.set_xlabel("training time (s)")
    ax1.set_ylabel("validation force RMSE (meV/A)")
    ax1.set_yscale("log")
    ax1.set_title("learning curves (equal-time runs)")
    ax1.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(result: dict[str, Any], stem: Path, with_plot: bool = True) -> None:
    """``stem``.json, .md (from the JSON) and .png."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    stem.with_suffix(".md").write_text(render_markdown(json.loads(stem.with_suffix(".json").read_text())))
    if with_plot:
        plot(result, stem.with_suffix(".png"))
    print(f"[accuracy] wrote {stem}.json/.md" + ("/.png" if with_plot else ""), flush=True)


# --------------------------------------------------------------------------- main


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="model size and budget")
    p.add_argument("--backends", default=None, help="comma-separated; default: every registered backend")
    p.add_argument("--epochs", type=int, default=None, help="override the preset's epoch budget")
    p.add_argument("--n-train", type=int, default=None, help="override: configurations drawn from train_300K.xyz")
    p.add_argument("--channels", type=int, default=None, help="override the preset's channels")
    p.add_argument("--time-reference", default="e3nn", help="backend whose time for --epochs sets the equal-time budget")
    p.add_argument("--tp-option", action="append", default=[], metavar="BACKEND:KEY=VALUE", help="backend option (repeatable)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (OMP_NUM_THREADS) per run; 1 keeps timings stable on a shared machine, where "
                   "2 threads per process oversubscribe the cores and step times scatter by 10x")
    p.add_argument("--data", type=Path, default=Path(os.environ.get("MACE_GAUNT_3BPA", DEFAULT_DATA)))
    p.add_argument("--work-dir", type=Path, default=RESULTS / "tmp" / "accuracy", help="scratch: splits, runs, logs")
    p.add_argument("--out", type=Path, default=None, help="output stem (default benchmarks/results/accuracy_<preset>)")
    p.add_argument("--render-only", type=Path, default=None, metavar="JSON", help="regenerate .md/.png from a result JSON")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    if args.render_only is not None:
        write_outputs(json.loads(args.render_only.read_text()), args.render_only.with_suffix(""))
        return
    import mace  # noqa: F401  (sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD before e3nn loads)

    from _common import machine_stamp

    import mace_gaunt_plugin as mgp

    cfg = dict(PRESETS[args.preset], seed=args.seed)
    for key in ("epochs", "n_train", "channels"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    backends = args.backends.split(",") if args.backends else mgp.available_backends()
    for b in backends:
        mgp.get_backend(b)  # unknown names fail now, with the list of known ones
    extra: dict[str, dict[str, str]] = {}
    for item in args.tp_option:
        b, sep, kv = item.partition(":")
        key, sep2, value = kv.partition("=")
        if not (sep and sep2):
            raise SystemExit(f"--tp-option expects BACKEND:KEY=VALUE, got {item!r}")
        extra.setdefault(b, {})[key] = value
    reference = args.time_reference if args.time_reference in backends else backends[0]
    backends = [reference] + [b for b in backends if b != reference]

    work = args.work_dir.resolve()
    split = prepare_data(args.data, work, cfg["n_train"], args.seed)
    print(f"[accuracy] data: {split['train']}; test {split['n_test']} (dropped as seen in training: "
          f"{split['dropped_as_in_train']})", flush=True)
    epochs = cfg["epochs"]
    t0 = time.perf_counter()
    runs: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for b in backends:
        opts = {**default_options(b, epochs), **extra.get(b, {})}
        try:
            runs[b] = run_one(b, opts, epochs, cfg, work, split["e0s"], args.threads)
        except RuntimeError as exc:  # recorded; the other backends still run (the reference must not fail)
            if b == reference:
                raise
            skipped[b] = str(exc).splitlines()[0]
            print(f"[accuracy] {b}: {skipped[b]}", flush=True)
    budget = runs[reference]["train_seconds"]
    rows = [dict(runs[b], budget="equal epochs") for b in backends if b in runs]
    for b in [b for b in backends if b in runs]:
        n = max(1, int(round(budget / runs[b]["s_per_epoch"])))
        if n == epochs:
            rows.append(dict(runs[b], budget="equal time"))
            continue
        opts = {**default_options(b, epochs), **extra.get(b, {})}
        try:
            rows.append(dict(run_one(b, opts, n, cfg, work, split["e0s"], args.threads), budget="equal time"))
        except RuntimeError as exc:
            skipped[f"{b} (equal time)"] = str(exc).splitlines()[0]
            print(f"[accuracy] {b}: {skipped[f'{b} (equal time)']}", flush=True)
    result = {
        "study": "accuracy",
        "preset": args.preset,
        "config": cfg,
        "split": {k: v for k, v in split.items() if k != "e0s"},
        "epochs": epochs,
        "time_reference": reference,
        "time_budget_s": budget,
        "threads": args.threads,
        "rows": rows,
        "skipped": skipped,
        "published": PUBLISHED,
        "total_wall_seconds": time.perf_counter() - t0,
        "stamp": machine_stamp(["cpu"]),
    }
    write_outputs(result, args.out or RESULTS / f"accuracy_{args.preset}")
    print(render_markdown(result))


if __name__ == "__main__":
    main()

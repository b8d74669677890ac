"""3BPA accuracy study: what each TP backend costs in accuracy for what it buys in speed.

Trains one MACE model per variant (``--backends``: ``name[:key=value;key=value]``, e.g.
``grid:product_basis=factors``) and seed (``--seeds``) with the plugin's training command
(``python -m mace_gaunt_plugin.train ... --tp-backend NAME``, i.e. ``mace_run_train``),
all with the same architecture, data and hyper-parameters (MACE's ReduceLROnPlateau
scheduler, EMA), under three budgets:

* **equal epochs**: every variant trains ``--epochs`` epochs;
* **equal wall-clock time**: every variant gets the training time the reference variant
  (``--time-reference``, default e3nn) needed for those epochs (mean over seeds), i.e.
  ``round(budget / its own mean seconds per epoch)`` epochs (the equal-epoch runs are
  reused when that equals ``--epochs``). Seconds per epoch are the mean over epochs of the
  summed training-step times MACE logs (``results/*_train.txt``), so start-up,
  validation and model compilation are excluded;
* **equal parameters** (``--equal-params VARIANT``, repeatable): that variant with the
  channel count whose parameter count is closest to the reference's, at equal epochs.

Each finished run's row is stored as ``<out>_runs/<run>.json`` and read back, not retrained,
when the same command runs again (``--commit`` commits each as it completes), so a study
longer than a session resumes where it stopped.

Tables give the mean and the sample standard deviation over seeds. ``--jobs 2`` runs two
trainings at once (one thread each: one per core on a 2-core machine; timings stay
comparable as long as nothing else runs).

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

    python benchmarks/bench_accuracy.py                 # the small CPU study (about 20-25 min, 1 thread per run)
    python benchmarks/bench_accuracy.py --preset tiny   # a smoke test of the whole pipeline
    python benchmarks/bench_accuracy.py --preset study --seeds 1,2,3 --jobs 2 \
        --backends e3nn,grid,grid:product_basis=factors,sparse:sparsity=0.5 --equal-params grid
        # the issue-13 study (32 channels, max_ell 3; many CPU hours: see benchmarks/README.md)
    python benchmarks/bench_accuracy.py --render-only benchmarks/results/accuracy_cpu.json
    python benchmarks/bench_accuracy.py --until-converged --preset study --channels 16 --max-L 1 \
        --backends e3nn,grid --seeds 1,2,3 --max-epochs 200 --jobs 2 --commit
        # the converged study (issue 22; resumable, one JSON per finished run: benchmarks/_converged.py;
        # --jobs 2: two runs at once, one per core)
    python benchmarks/bench_accuracy.py --until-converged --timing-epochs 4 --preset study --channels 16 --max-L 1 --backends e3nn,grid
        # its quiet timing run of a variant (seconds per epoch for "training time to convergence",
        # and ms per LAMMPS MD step of a 3BPA box on one core: benchmarks/_md_step.py)
    python benchmarks/bench_accuracy.py --render-only benchmarks/results/accuracy_converged_cpu
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional, Sequence

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
    # Issue 13's study: errors that mean something (32 channels, max_ell 3, correlation 3, all 500
    # configurations, enough epochs for the validation loss to flatten; L=2 with --max-L 2).
    "study": dict(epochs=60, n_train=None, channels=32, max_L=1, max_ell=3, correlation=3, r_max=5.0, batch_size=5),
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


#: The budget study's scheduler: MACE's ReduceLROnPlateau with patience 5 instead of 50.
PLATEAU = ("--scheduler", "ReduceLROnPlateau", "--scheduler_patience", "5")


def train_command(backend: str, options: dict[str, str], epochs: int, cfg: dict[str, Any], run_dir: Path, train_file: Path, e0s: dict[int, float],
                  restart: bool = False, scheduler: Sequence[str] = PLATEAU, stage_two: Optional[dict[str, Any]] = None) -> list[str]:
    """The ``python -m mace_gaunt_plugin.train`` command line of one run (named after ``run_dir``).

    ``scheduler``: MACE's scheduler arguments. ``stage_two``: MACE's stage two (``--swa``)
    from epoch index ``start`` with learning rate ``lr`` and the loss weights
    ``energy_weight`` / ``forces_weight``.

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
           *scheduler, "--default_dtype", "float64", "--device", "cpu", "--seed", str(cfg["seed"]),
           "--save_all_checkpoints", "--tp-backend", backend]  # fmt: skip
    for key, value in sorted(options.items()):
        cmd += ["--tp-option", f"{key}={value}"]
    if restart:
        cmd.append("--restart_latest")
    if stage_two is not None:
        cmd += ["--swa", "--start_swa", str(stage_two["start"]), "--swa_lr", repr(float(stage_two["lr"])),
                "--swa_energy_weight", str(stage_two["energy_weight"]), "--swa_forces_weight", str(stage_two["forces_weight"])]  # fmt: skip
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


_EVALUATING = threading.Lock()


class Variant(NamedTuple):
    """One model of the study: a backend with options, at ``channels`` (``None``: the preset's)."""

    label: str
    backend: str
    options: tuple[tuple[str, str], ...] = ()
    channels: Optional[int] = None

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9]+", "_", self.label).strip("_")


def run_name(variant: Variant, seed: int, epochs: int) -> str:
    """The name of one training run (its work directory, log and cached row)."""
    return f"{variant.slug}_s{seed}_e{epochs}"


def run_one(variant: Variant, seed: int, epochs: int, cfg: dict[str, Any], work: Path, e0s: dict[int, float], threads: int) -> dict[str, Any]:
    """Train, read the log, evaluate; one result row (without its budget label)."""
    cfg = dict(cfg, seed=seed, channels=variant.channels or cfg["channels"])
    options = {**default_options(variant.backend, epochs), **dict(variant.options)}
    name = run_name(variant, seed, epochs)
    run_dir = work / name
    cmd = train_command(variant.backend, options, epochs, cfg, run_dir, work / "train.xyz", e0s)
    print(f"[accuracy] {variant.label} seed {seed}: training {epochs} epochs ...", flush=True)
    curve, wall = run_training(cmd, name, work, threads)
    with _EVALUATING:  # unpickling e3nn modules re-traces torch.fx graphs, which is not thread-safe
        errors, n_params = evaluate(run_dir / f"{name}.model", work, threads)
    row = {
        "label": variant.label,
        "backend": variant.backend,
        "options": options,
        "channels": cfg["channels"],
        "seed": seed,
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
        f"[accuracy] {variant.label} seed {seed}: {epochs} ep, {row['s_per_epoch']:.1f} s/epoch, {n_params} params, "
        + " ".join(f"{t}: E {row['E'][t]:.1f} F {row['F'][t]:.1f}" for t in TEMPERATURES)
        + f" (run {wall:.0f} s)",
        flush=True,
    )
    return row


def cached_run(runs_dir: Path, name: str, setting: dict[str, Any], train: Callable[[], dict[str, Any]],
               on_new: Callable[[Path], None] = lambda path: None) -> dict[str, Any]:
    """The row of run ``name``: read from ``runs_dir/name.json`` if an earlier invocation
    finished it with the same ``setting``, else ``train()``'s, written there (then
    ``on_new(path)``, e.g. to commit it). A study that spans sessions resumes this way.

    Raises ``SystemExit`` when the stored run was made with another setting (nothing is
    silently mixed: delete the file or choose another ``--out``)."""
    path = runs_dir / f"{name}.json"
    if path.is_file():
        row = json.loads(path.read_text())
        if row.get("setting") != setting:
            raise SystemExit(f"{path} was trained with another setting ({row.get('setting')} != {setting}); "
                             "delete it or choose another --out")  # fmt: skip
        print(f"[accuracy] {name}: finished earlier, read from {path}", flush=True)
        return row
    row = dict(train(), setting=setting)
    runs_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(row, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)
    on_new(path)
    return row


def _outcomes(tasks: Sequence[tuple[Any, ...]], jobs: int, fn: Callable[..., Any], catch: type[BaseException]) -> list[Any]:
    """``fn(*task)`` for every task, ``jobs`` at a time, in task order: each result, or the
    ``catch`` exception the task raised (one failure does not stop the others)."""
    from concurrent.futures import ThreadPoolExecutor

    def attempt(task: tuple[Any, ...]) -> Any:
        try:
            return fn(*task)
        except catch as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(attempt, tasks))


def run_many(tasks: list[tuple[Variant, int, int]], jobs: int, run: Callable[[Variant, int, int], dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """``run(variant, seed, epochs)`` for every task, ``jobs`` at a time; rows in task order
    and the failures (``"label seed S, E epochs" -> first line of the error``)."""
    rows, failed = [], {}
    for (variant, seed, epochs), outcome in zip(tasks, _outcomes(tasks, jobs, run, RuntimeError)):
        if isinstance(outcome, Exception):
            failed[f"{variant.label} seed {seed}, {epochs} epochs"] = str(outcome).splitlines()[0]
        else:
            rows.append(outcome)
    return rows, failed


def run_parallel(tasks: Sequence[tuple[Any, ...]], jobs: int, fn: Callable[..., None]) -> None:
    """``fn(*task)`` for every task, ``jobs`` at a time; a failed task does not stop the others,
    and all failures are reported together at the end (``SystemExit``)."""
    outcomes = _outcomes(tasks, jobs, fn, Exception)
    failed = [f"{task[:2]}: {type(exc).__name__}: {exc}" for task, exc in zip(tasks, outcomes) if isinstance(exc, Exception)]
    if failed:
        raise SystemExit(f"{len(failed)} of {len(tasks)} runs failed:\n" + "\n".join(failed))


def mace_kwargs(cfg: dict[str, Any], channels: int) -> dict[str, Any]:
    """The ScaleShiftMACE arguments ``mace_run_train`` builds from :func:`train_command`'s
    line (MACE 0.3.16 defaults for everything not given), for counting parameters."""
    from e3nn import o3
    from mace import modules
    import numpy as np
    import torch

    hidden = " + ".join(f"{channels}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(cfg["max_L"] + 1))
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    return dict(
        r_max=cfg["r_max"], num_bessel=8, num_polynomial_cutoff=5, max_ell=cfg["max_ell"], interaction_cls=block,
        interaction_cls_first=block, num_interactions=2, num_elements=4, hidden_irreps=o3.Irreps(hidden),
        MLP_irreps=o3.Irreps("16x0e"), gate=torch.nn.functional.silu, atomic_energies=np.zeros(4), avg_num_neighbors=10.0,
        atomic_numbers=[1, 6, 7, 8], correlation=cfg["correlation"], radial_MLP=[64, 64, 64], atomic_inter_scale=1.0,
        atomic_inter_shift=0.0,
    )  # fmt: skip


def matched_channels(variant: Variant, reference: Variant, cfg: dict[str, Any]) -> int:
    """The channel count (a multiple of 4, up to 4x the preset's) at which ``variant`` has
    the parameter count closest to ``reference`` at the preset's channels."""
    from mace_gaunt_plugin.params import count_parameters

    def total(v: Variant, channels: int) -> int:
        return count_parameters(v.backend, dict(v.options), **mace_kwargs(cfg, channels))["total"]

    target = total(reference, cfg["channels"])
    candidates = range(4, 4 * cfg["channels"] + 1, 4)
    return min(candidates, key=lambda c: (abs(total(variant, c) - target), c))


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


def row_label(row: dict[str, Any]) -> str:
    """A row's variant label (rows of results before variants existed: backend and options)."""
    if "label" in row:
        return str(row["label"])
    opts = ", ".join(f"{k}={v}" for k, v in sorted(row["options"].items()))
    return row["backend"] + (f" ({opts})" if opts else "")


def aggregate(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows grouped by (variant, budget) in first-seen order: per-seed values in lists."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row_label(row), row["budget"])
        g = groups.setdefault(key, {"label": key[0], "budget": key[1], "rows": []})
        g["rows"].append(row)
    for g in groups.values():
        rs = g["rows"]
        g["epochs"] = sorted({int(r["epochs"]) for r in rs})
        g["params"] = sorted({int(r["params"]) for r in rs})
        g["s_per_epoch"] = statistics.mean(float(r["s_per_epoch"]) for r in rs)
        g["train_seconds"] = [float(r.get("train_seconds", r["s_per_epoch"] * r["epochs"])) for r in rs]
        g["E"] = {t: [float(r["E"][t]) for r in rs] for t in TEMPERATURES}
        g["F"] = {t: [float(r["F"][t]) for r in rs] for t in TEMPERATURES}
        g["valid_change"] = [c for c in (_valid_change(r) for r in rs) if c is not None]
    return list(groups.values())


#: Epochs over which :func:`_valid_change` measures how flat a learning curve has become.
FLAT_WINDOW = 5


def _valid_change(row: dict[str, Any]) -> Optional[float]:
    """Relative change (%) of the validation force RMSE over a run's last
    :data:`FLAT_WINDOW` epochs (negative: still falling); ``None`` without a long enough curve."""
    curve = [v for v in row.get("curve", {}).get("valid_rmse_f", []) if v is not None]
    if len(curve) <= FLAT_WINDOW:
        return None
    before, last = curve[-1 - FLAT_WINDOW], curve[-1]
    return 100.0 * (last - before) / before


def _stat(values: Sequence[float]) -> str:
    """One value as is; several as mean ± sample standard deviation."""
    if len(values) == 1:
        return _fmt(values[0])
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def _ints(values: Sequence[int]) -> str:
    return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"


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
    seeds = result.get("seeds", [cfg["seed"]])
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))} (mean ± sample SD over seeds)"
    head = (
        "| model | budget | epochs | params | s/epoch | " + " | ".join(f"E {t}" for t in TEMPERATURES) + " | "
        + " | ".join(f"F {t}" for t in TEMPERATURES) + f" | valid F, last {FLAT_WINDOW} ep |"
    )
    title = result.get("title", "3BPA accuracy per TP backend (small budget)")
    caveat = result.get(
        "caveat",
        "**Small-budget numbers, far from converged**: they compare backends under one budget; they are not the "
        "models' attainable accuracy.",
    )
    lines = [
        f"# {title}",
        "",
        f"Stamp: {stamp_line(stamp)}; {result['threads']} threads per training run.",
        "",
        f"Model: ScaleShiftMACE, {cfg['channels']} channels, hidden L={cfg['max_L']}, max_ell={cfg['max_ell']}, correlation "
        f"{cfg['correlation']}, 2 interactions, r_max {cfg['r_max']} A, float64, batch {cfg['batch_size']}, {seed_text}. "
        f"Train: {split['train']}. Test: {split['test']}; "
        + ", ".join(f"{split['n_test'][t]} at {t}" for t in TEMPERATURES)
        + ".",
        "",
        f"Budgets: {result['epochs']} epochs each; equal time = {_fmt(result['time_budget_s'])} s of training steps "
        f"(what {result['time_reference']} needed for {result['epochs']} epochs)"
        + ("." if any(r["budget"] == "equal time" for r in result["rows"]) else "; the equal-time runs are not done yet."),
        "",
        f"E: total-energy RMSE (meV), F: force RMSE (meV/A). {caveat} The published rows are large models trained to "
        f"convergence, for context only. *valid F, last {FLAT_WINDOW} ep*: how much the validation force RMSE changed "
        f"over the last {FLAT_WINDOW} epochs (mean over seeds; near 0 once the learning curve has flattened).",
        "",
    ]
    if result.get("command"):
        lines += [f"Command: `{result['command']}`", ""]
    lines += [head, "|" + "---|" * (6 + 2 * len(TEMPERATURES))]
    for g in aggregate(result["rows"]):
        cells = [g["label"], g["budget"], _ints(g["epochs"]), _ints(g["params"]), _fmt(g["s_per_epoch"])]
        cells += [_stat(g["E"][t]) for t in TEMPERATURES] + [_stat(g["F"][t]) for t in TEMPERATURES]
        cells.append(f"{statistics.mean(g['valid_change']):+.0f}%" if g["valid_change"] else "-")
        lines.append("| " + " | ".join(cells) + " |")
    for name, pub in PUBLISHED.items():
        cells = [name, "full training", "-", "-", "-"] + [_fmt(pub["E"][t]) for t in TEMPERATURES] + [_fmt(pub["F"][t]) for t in TEMPERATURES] + ["-"]
        lines.append("| " + " | ".join(cells) + " |")
    if result.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in result["skipped"].items())]
    return "\n".join(lines) + "\n"


def learning_curves(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every run's validation force RMSE against its cumulative training seconds (the sum of
    MACE's logged step times up to each epoch): ``{"label", "budget", "seed", "seconds",
    "valid_f"}``; epochs without a validation value are left out, runs without a curve too."""
    out = []
    for row in rows:
        curve = row.get("curve") or {}
        seconds, valid = curve.get("epoch_seconds", []), curve.get("valid_rmse_f", [])
        xs, ys, total = [], [], 0.0
        for sec, f in zip(seconds, valid):
            total += float(sec)
            if f is not None:
                xs.append(total)
                ys.append(float(f))
        if xs:
            out.append({"label": row_label(row), "budget": row["budget"], "seed": row.get("seed"), "seconds": xs, "valid_f": ys})
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    """Test force RMSE per temperature (every budget, mean and SD over seeds), the Pareto
    view (300 K and 600 K test force RMSE against training time) and every run's learning
    curve (:func:`learning_curves`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax0, ax1, ax2) = plt.subplots(1, 3, figsize=(18, 4.5))
    groups = aggregate(result["rows"])
    width = 0.8 / max(1, len(groups))
    labels = list(dict.fromkeys(g["label"] for g in groups))
    color = {b: f"C{i % 10}" for i, b in enumerate(labels)}
    hatch = {"equal epochs": None, "equal time": "//", "equal params": ".."}
    for k, g in enumerate(groups):
        xs = [i + k * width for i in range(len(TEMPERATURES))]
        means = [statistics.mean(g["F"][t]) for t in TEMPERATURES]
        sds = [statistics.stdev(g["F"][t]) if len(g["F"][t]) > 1 else 0.0 for t in TEMPERATURES]
        ax0.bar(xs, means, width, yerr=sds, color=color[g["label"]], hatch=hatch.get(g["budget"]), label=f"{g['label']} ({g['budget']})")
    ax0.set_xticks([i + 0.4 - width / 2 for i in range(len(TEMPERATURES))], TEMPERATURES)
    ax0.set_ylabel("test force RMSE (meV/A)")
    ax0.set_title("3BPA held-out test sets")
    ax0.legend(fontsize=6)
    for g in groups:
        t = statistics.mean(g["train_seconds"])
        for temp, marker in (("300K", "o"), ("600K", "s")):
            f = g["F"][temp]
            ax1.errorbar([t], [statistics.mean(f)], yerr=[statistics.stdev(f) if len(f) > 1 else 0.0], marker=marker,
                         color=color[g["label"]], linestyle="none", capsize=3)  # fmt: skip
        ax1.annotate(f"{g['label']} ({g['budget']})", (t, statistics.mean(g["F"]["300K"])), fontsize=6)
    ax1.set_xlabel("training time (s, sum of training steps)")
    ax1.set_ylabel("test force RMSE (meV/A): o 300 K, s 600 K")
    ax1.set_title("accuracy against training time (lower left is better)")
    style = {"equal epochs": "-", "equal time": "--", "equal params": ":"}
    for c in learning_curves(result["rows"]):
        ax2.plot(c["seconds"], c["valid_f"], style.get(c["budget"], "-"), color=color[c["label"]], linewidth=0.8)
    ax2.set_yscale("log")
    ax2.set_xlabel("training time (s, sum of training steps)")
    ax2.set_ylabel("validation force RMSE (meV/A)")
    ax2.set_title("every run's learning curve (solid: equal epochs, dashed: equal time)")
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
    from _common import comma_list

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="model size and budget")
    p.add_argument("--backends", default=None,
                   help="comma-separated variants name[:key=value;key=value]; default: every registered backend")
    p.add_argument("--epochs", type=int, default=None, help="override the preset's epoch budget")
    p.add_argument("--n-train", type=int, default=None, help="override: configurations drawn from train_300K.xyz")
    p.add_argument("--channels", type=int, default=None, help="override the preset's channels")
    p.add_argument("--max-L", type=int, default=None, help="override the preset's hidden L")
    p.add_argument("--time-reference", default="e3nn", help="variant whose time for --epochs sets the equal-time budget")
    p.add_argument("--equal-epochs-only", action="store_true",
                   help="train the equal-epoch (and equal-parameter) runs only; the same command without it adds the "
                   "equal-time runs later, reusing these")
    p.add_argument("--equal-params", action="append", default=[], metavar="VARIANT",
                   help="also train this variant (one of --backends) with the channels that match the reference's "
                   "parameter count (repeatable)")
    p.add_argument("--tp-option", action="append", default=[], metavar="BACKEND:KEY=VALUE",
                   help="backend option for every variant of BACKEND (repeatable)")
    p.add_argument("--seeds", type=comma_list(int), default=None, help="training seeds (default: --seed)")
    p.add_argument("--seed", type=int, default=1, help="the training seed, and always the seed of the data split")
    p.add_argument("--jobs", type=int, default=1,
                   help="trainings at once (each with --threads threads); the converged study's timing runs are always "
                   "one at a time")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (OMP_NUM_THREADS) per run; 1 keeps timings stable on a shared machine, where "
                   "2 threads per process oversubscribe the cores and step times scatter by 10x")
    p.add_argument("--data", type=Path, default=Path(os.environ.get("MACE_GAUNT_3BPA", DEFAULT_DATA)))
    p.add_argument("--work-dir", type=Path, default=RESULTS / "tmp" / "accuracy", help="scratch: splits, runs, logs")
    p.add_argument("--out", type=Path, default=None, help="output stem (default benchmarks/results/accuracy_<preset>)")
    p.add_argument("--render-only", type=Path, default=None, metavar="JSON",
                   help="regenerate .md/.png from a result JSON, or table.md/curves.png of a converged study's directory")
    c = p.add_argument_group("converged study (benchmarks/_converged.py)")
    c.add_argument("--until-converged", action="store_true",
                   help="train each run (variant, --max-L, seed) in chunks until the convergence rule holds or "
                   "--max-epochs, then stage two; resumable; results in --out (default results/accuracy_converged_cpu)")
    c.add_argument("--max-epochs", type=int, default=200, help="stage-one epoch cap")
    c.add_argument("--chunk-epochs", type=int, default=10,
                   help="epochs per mace_run_train call (the rule is checked between; each restart costs about a minute "
                   "and skips one lr step)")
    c.add_argument("--timing-epochs", type=int, default=None, metavar="N",
                   help="instead of the study: a timing run of N epochs per variant (seconds per epoch, first epoch excluded)")
    c.add_argument("--timing-md-steps", type=int, default=20, metavar="N",
                   help="with --timing-epochs: also time N LAMMPS MD steps of a 729-atom 3BPA box on one core with the "
                   "timing run's model (benchmarks/_md_step.py; 0: skip)")
    c.add_argument("--stop-file", type=Path, default=None,
                   help="when this file exists, each run stops before its next chunk, state stored (default: "
                   "WORK_DIR/STOP; removed at start): end a session without losing a chunk")
    c.add_argument("--commit", action="store_true",
                   help="git-commit each finished run as it completes (budget study: OUT_runs/RUN.json; converged "
                   "study: --out, and the checkpoints every --commit-every chunks)")
    c.add_argument("--commit-every", type=int, default=6,
                   help="chunks between commits of the unfinished run's checkpoint (8 MB at 16 channels, L=1; 0: never)")
    return p.parse_args(argv)


def variants_of(args: argparse.Namespace, available: Sequence[str]) -> list[Variant]:
    """The variants of ``--backends`` with ``--tp-option`` merged in, reference first."""
    from _common import parse_backend_specs

    extra: dict[str, dict[str, str]] = {}
    for item in args.tp_option:
        b, sep, kv = item.partition(":")
        key, sep2, value = kv.partition("=")
        if not (sep and sep2):
            raise SystemExit(f"--tp-option expects BACKEND:KEY=VALUE, got {item!r}")
        extra.setdefault(b, {})[key] = value
    specs = parse_backend_specs(args.backends or ",".join(available))
    variants = []
    for spec in specs:
        options = {**spec.options, **extra.get(spec.name, {})}
        label = spec.label if not extra.get(spec.name) else spec.name + ":" + ";".join(f"{k}={v}" for k, v in sorted(options.items()))
        variants.append(Variant(label, spec.name, tuple(sorted(options.items()))))
    labels = [v.label for v in variants]
    if len(set(labels)) != len(labels):
        raise SystemExit(f"--backends names a variant twice: {labels}")
    reference = next((v for v in variants if v.label == args.time_reference), variants[0])
    return [reference] + [v for v in variants if v is not reference]


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    if args.render_only is not None and args.render_only.is_dir():
        import _converged

        _converged.write_outputs(args.render_only)
        return
    if args.render_only is not None:
        write_outputs(json.loads(args.render_only.read_text()), args.render_only.with_suffix(""))
        return
    import mace  # noqa: F401  (sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD before e3nn loads)

    from _common import machine_stamp

    import mace_gaunt_plugin as mgp

    cfg = dict(PRESETS[args.preset], seed=args.seed)
    for key, arg in (("epochs", "epochs"), ("n_train", "n_train"), ("channels", "channels"), ("max_L", "max_L")):
        if getattr(args, arg) is not None:
            cfg[key] = getattr(args, arg)
    seeds = args.seeds or [args.seed]
    variants = variants_of(args, mgp.available_backends())
    if args.until_converged:
        converged_main(args, argv, cfg, seeds, variants)
        return
    reference = variants[0]
    by_label = {v.label: v for v in variants}
    unknown = [name for name in args.equal_params if name not in by_label]
    if unknown:
        raise SystemExit(f"--equal-params {unknown} must be among --backends {list(by_label)}")
    matched = []
    for name in args.equal_params:
        channels = matched_channels(by_label[name], reference, cfg)
        matched.append(Variant(f"{name} @ {channels} channels", by_label[name].backend, by_label[name].options, channels))
        print(f"[accuracy] equal parameters: {name} at {channels} channels", flush=True)

    work = args.work_dir.resolve()
    split = prepare_data(args.data, work, cfg["n_train"], args.seed)
    print(f"[accuracy] data: {split['train']}; test {split['n_test']} (dropped as seen in training: "
          f"{split['dropped_as_in_train']})", flush=True)
    epochs = cfg["epochs"]
    t0 = time.perf_counter()

    out_stem = args.out or RESULTS / f"accuracy_{args.preset}"
    runs_dir = out_stem.with_name(out_stem.name + "_runs")
    setting = {"config": cfg, "threads": args.threads, "jobs": args.jobs, "train": split["train"], "n_test": split["n_test"]}
    committing = threading.Lock()

    def commit(path: Path) -> None:
        if args.commit:
            with committing:
                _git_commit([path], f"accuracy study {out_stem.name}: finished run {path.stem}")

    def run(variant: Variant, seed: int, n_epochs: int) -> dict[str, Any]:
        train = lambda: run_one(variant, seed, n_epochs, cfg, work, split["e0s"], args.threads)  # noqa: E731
        return cached_run(runs_dir, run_name(variant, seed, n_epochs), setting, train, commit)

    # a matched variant at the preset's channels is its base variant: its runs are reused
    to_run = [m for m in matched if m.channels != cfg["channels"]]
    first, skipped = run_many([(v, seed, epochs) for v in variants + to_run for seed in seeds], args.jobs, run)
    if any(k.startswith(f"{reference.label} seed") for k in skipped):
        raise SystemExit(f"the reference variant {reference.label!r} failed: {skipped}")
    for m in matched:
        if m not in to_run:
            base = next(v for v in variants if (v.backend, v.options) == (m.backend, m.options))
            first += [dict(r, label=m.label) for r in first if r["label"] == base.label]
    rows = [dict(r, budget="equal params" if r["label"] in {m.label for m in matched} else "equal epochs") for r in first]
    budget = statistics.mean(r["train_seconds"] for r in first if r["label"] == reference.label)
    second_tasks = []
    for v in [] if args.equal_epochs_only else variants:
        mine = [r for r in first if r["label"] == v.label]
        if not mine:
            continue
        n = max(1, int(round(budget / statistics.mean(r["s_per_epoch"] for r in mine))))
        if n == epochs:
            rows += [dict(r, budget="equal time") for r in mine]
        else:
            second_tasks += [(v, r["seed"], n) for r in mine]
    second, failed = run_many(second_tasks, args.jobs, run)
    skipped.update(failed)
    rows += [dict(r, budget="equal time") for r in second]
    order = {"equal epochs": 0, "equal params": 1, "equal time": 2}
    labels = [v.label for v in variants + matched]
    rows.sort(key=lambda r: (order[r["budget"]], labels.index(r["label"]), r["seed"]))
    result = {
        "study": "accuracy",
        "preset": args.preset,
        "config": cfg,
        "seeds": seeds,
        "split": {k: v for k, v in split.items() if k != "e0s"},
        "epochs": epochs,
        "time_reference": reference.label,
        "time_budget_s": budget,
        "threads": args.threads,
        "jobs": args.jobs,
        "command": "python benchmarks/bench_accuracy.py " + shlex.join(sys.argv[1:] if argv is None else list(argv)),
        "rows": rows,
        "skipped": skipped,
        "published": PUBLISHED,
        "total_wall_seconds": time.perf_counter() - t0,
        "stamp": machine_stamp(["cpu"]),
    }
    write_outputs(result, out_stem)
    print(render_markdown(result))


def _git_commit(paths: Sequence[Path], message: str) -> None:
    """Commit ``paths`` (only them) in the repository; a failure (e.g. a held index lock) is
    reported and the next commit picks the files up."""
    rel = [str(p.resolve().relative_to(REPO)) for p in paths]
    add = subprocess.run(["git", "add", "-A", "--", *rel], cwd=REPO, capture_output=True, text=True)
    done = add.returncode == 0 and subprocess.run(["git", "commit", "-q", "-m", message, "--", *rel], cwd=REPO, capture_output=True, text=True).returncode == 0
    print(f"[accuracy] git commit {'done' if done else 'FAILED (left for the next commit)'}: {message}", flush=True)


def converged_main(args: argparse.Namespace, argv: Optional[Sequence[str]], cfg: dict[str, Any], seeds: Sequence[int], variants: Sequence[Variant]) -> None:
    """``--until-converged``: each (variant, seed) at ``cfg["max_L"]`` trained to convergence,
    ``--jobs`` runs at a time (``benchmarks/_converged.py``); or, with ``--timing-epochs``, the
    quiet timing runs, one at a time."""
    import _converged
    from _common import machine_stamp

    out = (args.out or RESULTS / "accuracy_converged_cpu").resolve()
    work = (args.work_dir if args.work_dir != RESULTS / "tmp" / "accuracy" else RESULTS / "tmp" / "accuracy_converged").resolve()
    split = prepare_data(args.data, work, cfg["n_train"], args.seed)
    command = "python benchmarks/bench_accuracy.py " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    setting = (f"ScaleShiftMACE, {cfg['channels']} channels, max_ell {cfg['max_ell']}, correlation {cfg['correlation']}, 2 "
               f"interactions, r_max {cfg['r_max']} A, float64, batch {cfg['batch_size']}, {args.threads} thread(s) per run; "
               f"train {split['train']}; test {split['test']}: " + ", ".join(f"{split['n_test'][t]} at {t}" for t in TEMPERATURES))  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    study_file = out / "study.json"
    study = json.loads(study_file.read_text()) if study_file.is_file() else {}
    if args.timing_epochs is None:
        _converged.check_protocol(study, out, args.chunk_epochs, args.max_epochs)
        study.update(**_converged.protocol(args.chunk_epochs, args.max_epochs), setting=setting,
                     command=" ; ".join(dict.fromkeys([*filter(None, study.get("command", "").split(" ; ")), command])))  # fmt: skip
        study_file.write_text(json.dumps(study, indent=1, sort_keys=True) + "\n")

    def evaluate_model(path: Path) -> tuple[dict[str, Any], int]:
        if not path.is_file():
            raise RuntimeError(f"{path} missing: MACE did not write the model (see {work}/*.log)")
        with _EVALUATING:  # in this process: one model at a time
            return evaluate(path, work, args.threads)

    tasks: list[tuple[Variant, int, int, dict[str, Any]]] = []
    for variant in variants:
        ch = variant.channels or cfg["channels"]
        options = {**default_options(variant.backend, args.max_epochs), **dict(variant.options)}
        if args.timing_epochs is not None:
            key = _converged.timing_key(variant.label, cfg["max_L"])
            name = f"timing_{key}"
            shutil_rm(work / name)
            run_cfg = dict(cfg, seed=seeds[0], channels=ch)
            cmd = train_command(variant.backend, options, args.timing_epochs, run_cfg, work / name, work / "train.xyz",
                                split["e0s"], scheduler=_converged.scheduler_args())  # fmt: skip
            print(f"[accuracy] timing {variant.label} L={cfg['max_L']}: {args.timing_epochs} epochs ...", flush=True)
            curve, wall = run_training(cmd, name, work, args.threads)
            sec = curve["epoch_seconds"][1:] or curve["epoch_seconds"]
            timing = {"label": variant.label, "max_L": cfg["max_L"], "channels": ch, "epochs": args.timing_epochs,
                      "epoch_seconds": curve["epoch_seconds"], "s_per_epoch": statistics.median(sec),
                      "note": "median over epochs (the first excluded) of the summed training-step times MACE logs",
                      "command": command, "stamp": machine_stamp(["cpu"])}  # fmt: skip
            if args.timing_md_steps > 0:
                from _md_step import md_step_ms

                print(f"[accuracy] timing {variant.label} L={cfg['max_L']}: MD in LAMMPS, {args.timing_md_steps} steps ...", flush=True)
                timing.update(md_step_ms(work / name / f"{name}.model", args.data, steps=args.timing_md_steps))
            (out / "timing").mkdir(exist_ok=True)
            (out / "timing" / f"{key}.json").write_text(json.dumps(timing, indent=1, sort_keys=True) + "\n")
            print(f"[accuracy] timing {key}: {timing['s_per_epoch']:.1f} s/epoch"
                  + (f", {timing['md_ms_per_step']:.1f} ms per MD step" if "md_ms_per_step" in timing else ""), flush=True)
            continue
        tasks += [(variant, seed, ch, options) for seed in seeds]

    reporting = threading.Lock()  # table, plots (matplotlib) and git, one thread at a time
    stop_file = (args.stop_file or work / "STOP").resolve()
    if stop_file.exists():
        print(f"[accuracy] removing an old stop file {stop_file}", flush=True)
        stop_file.unlink()
    if tasks:
        print(f"[accuracy] to stop every run after its current chunk (resumable): touch {stop_file}", flush=True)

    def train_to_convergence(variant: Variant, seed: int, ch: int, options: dict[str, Any]) -> None:
        name = f"{variant.slug}_L{cfg['max_L']}_seed{seed}"
        run_cfg = dict(cfg, seed=seed, channels=ch)
        run_dir = work / name
        chunks = [0]

        def build(max_num_epochs: int, restart: bool, start_swa: Optional[int]) -> list[str]:
            stage_two = None if start_swa is None else {**_converged.RECIPE["stage_two"], "start": start_swa}
            return train_command(variant.backend, options, max_num_epochs, run_cfg, run_dir, work / "train.xyz", split["e0s"],
                                 restart=restart, scheduler=_converged.scheduler_args(), stage_two=stage_two)  # fmt: skip

        def train(cmd: list[str]) -> None:
            print(f"[accuracy] {name}: " + " ".join(cmd[cmd.index("--max_num_epochs") : cmd.index("--max_num_epochs") + 2])
                  + (" (restart)" if "--restart_latest" in cmd else "") + (" stage two" if "--swa" in cmd else ""), flush=True)  # fmt: skip
            run_training(cmd, name, work, args.threads)

        def on_chunk(run: str) -> None:
            chunks[0] += 1
            if args.commit and args.commit_every > 0 and chunks[0] % args.commit_every == 0:
                with reporting:
                    _converged.write_outputs(out, with_plot=False)
                    _git_commit([out], f"converged study: {run} checkpoint ({_converged.load_dir(out)['pending'][run]['epochs']} epochs)")

        row = _converged.run_until_converged(name, out, run_dir, build, train, evaluate_model, args.max_epochs,
                                             args.chunk_epochs, on_chunk, stop_file.exists)  # fmt: skip
        if row is None:
            pending = _converged.load_dir(out)["pending"].get(name) if args.commit and stop_file.exists() else None
            if pending is not None:
                with reporting:
                    _converged.write_outputs(out, with_plot=False)
                    _git_commit([out], f"converged study: {name} checkpoint, stopped ({pending['epochs']} epochs)")
            return
        row.update(label=variant.label, backend=variant.backend, options=options, channels=ch, max_L=cfg["max_L"],
                   seed=seed, config=run_cfg, split={k: v for k, v in split.items() if k != "e0s"},
                   recipe=_converged.RECIPE, rule=_converged.RULE, chunk=args.chunk_epochs, max_epochs=args.max_epochs,
                   command=command, stamp=machine_stamp(["cpu"]))  # fmt: skip
        with reporting:
            (out / "runs").mkdir(exist_ok=True)
            (out / "runs" / f"{name}.json").write_text(json.dumps(row, indent=1, sort_keys=True) + "\n")
            shutil_rm(out / "checkpoints" / name)
            _converged.write_outputs(out)
            print(f"[accuracy] {name}: finished, " + " ".join(f"F {t} {row['F'][t]:.1f}" for t in TEMPERATURES), flush=True)
            if args.commit:
                _git_commit([out], f"converged study: {name} finished")

    run_parallel(tasks, args.jobs, train_to_convergence)
    _converged.write_outputs(out)


def shutil_rm(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()

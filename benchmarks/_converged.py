"""The converged 3BPA study (``bench_accuracy.py --until-converged``): train each run in
chunks of epochs until a stated convergence rule holds or an epoch cap, resumable across
sessions from a small committed checkpoint, one JSON per finished run.

Why chunks: ``mace_run_train`` stops only on its own patience rule. Each chunk is one
``mace_run_train --restart_latest`` call with a larger ``--max_num_epochs``; between chunks the
rule is checked on MACE's own log (``results/*_train.txt``) and the latest checkpoint (its
learning rate). What MACE 0.3.16 restores on ``--restart_latest`` (``tools/checkpoint.py``,
``cli/run_train.py``): the model weights (saved *with the EMA weights swapped in*), the
optimizer state (AMSGrad moments, learning rate) and the scheduler's state; the epoch
counter comes from the checkpoint's file name. It does *not* restore the EMA shadow (a new
EMA starts from the restored, already averaged, weights) nor the stage-two averaged model
(unused for the saved model anyway), and it re-runs the checkpoint's own epoch index, so an
epoch index appears twice in a resumed log: epochs are counted here as the validation
records in log order, not by their index. MACE does not step the scheduler on the first
epoch of a (re)start, so ReduceLROnPlateau misses one validation loss per chunk.

Why committed checkpoints: sessions start on fresh machines with only the git repository.
After each chunk the latest checkpoint and the log are copied to
``<out>/checkpoints/<run>/`` (a few MB at 16 channels); the next session restores them
into the work directory before ``--restart_latest``. A finished run writes
``<out>/runs/<run>.json`` and its checkpoint folder is deleted.

The rule, the recipe and how training time to convergence is reported are in
:data:`RULE`, :data:`RECIPE` and :func:`render_markdown`.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

TEMPERATURES = ("300K", "600K", "1200K")

#: Stage one stops when, after at least ``min_lr_reductions`` learning-rate reductions and
#: ``min_epochs`` epochs, the best validation force RMSE improved by less than
#: ``max_improvement_pct`` over the last ``window_fraction`` of the epochs trained so far.
#: Checked at chunk ends only, so epochs to convergence are multiples of the chunk size.
RULE: dict[str, Any] = {"max_improvement_pct": 2.0, "window_fraction": 0.2, "min_lr_reductions": 2, "min_epochs": 20}

#: MACE's documented 3BPA recipe (MACE paper and README: lr 0.01, batch 5, AMSGrad,
#: ReduceLROnPlateau factor 0.8, EMA 0.99, energy / force weights 1 / 100, then stage two
#: with energy weight 1000, force weight 100, lr 1e-3 from 75% of the epochs) scaled down:
#: ReduceLROnPlateau patience 5 instead of MACE's default 50, stage one ends on :data:`RULE`
#: (or the cap) instead of a fixed 75% of a fixed epoch count, and stage two lasts a third of
#: stage one's epochs (MACE's 3:1 split).
#:
#: At 16 channels the rule does not hold within a 200-epoch cap: the EMA model's validation
#: loss keeps falling slowly, so the lr is never reduced, and the runs still improve about 5%
#: per 40 epochs at the cap. Annealing the lr instead (ExponentialLR, gamma 0.98 per epoch,
#: ``results/accuracy_converged_cpu_annealed_probe/``) made the rule hold (grid, after 150
#: epochs) but slowed the learning: that run ended 30% above this recipe's 300 K force RMSE.
#: The study therefore keeps MACE's scheduler and an equal 200-epoch budget for every run.
RECIPE: dict[str, Any] = {
    "lr": 0.01, "batch_size": 5, "optimizer": "adam + amsgrad (MACE default)", "scheduler": "ReduceLROnPlateau",
    "lr_factor": 0.8, "scheduler_patience": 5, "ema_decay": 0.99, "energy_weight": 1.0, "forces_weight": 100.0,
    "stage_two": {"energy_weight": 1000.0, "forces_weight": 100.0, "lr": 1e-3, "epochs": "ceil(stage-one epochs / 3)"},
    "changed_from_mace": "scheduler patience 5 (MACE default 50); stage one stops on the convergence rule or the cap "
    "instead of at 75% of a fixed 1500-2000 epochs; 16 channels and max_ell 3 instead of 256 channels (see config)",
}  # fmt: skip


def scheduler_args(recipe: dict[str, Any] = RECIPE) -> list[str]:
    """``mace_run_train``'s scheduler arguments for ``recipe``."""
    return ["--scheduler", recipe["scheduler"], "--lr_factor", repr(float(recipe["lr_factor"])),
            "--scheduler_patience", str(recipe["scheduler_patience"])]  # fmt: skip


# --------------------------------------------------------------------------- rule


def protocol(chunk: int, max_epochs: int) -> dict[str, Any]:
    """What every run of one study shares: the recipe, the rule, the chunk (a restart skips
    one scheduler step) and the epoch cap."""
    return json.loads(json.dumps({"recipe": RECIPE, "rule": RULE, "chunk": chunk, "max_epochs": max_epochs}))


def check_protocol(study: dict[str, Any], out: Path, chunk: int, max_epochs: int) -> None:
    """Refuse to add runs to the study directory ``out`` whose record (``study.json``) holds
    another :func:`protocol`: its finished runs would not be comparable with the new ones."""
    for key, mine in protocol(chunk, max_epochs).items():
        theirs = study.get(key)
        if theirs is not None and theirs != mine:
            raise SystemExit(f"{out} was trained with another {key} ({json.dumps(theirs, sort_keys=True)}; here: "
                             f"{json.dumps(mine, sort_keys=True)}): resume it with its own settings or choose a new --out")  # fmt: skip


def lr_reductions(lr: float, lr0: float = RECIPE["lr"], factor: float = RECIPE["lr_factor"]) -> int:
    """How many times ReduceLROnPlateau has multiplied ``lr0`` by ``factor`` to reach ``lr``."""
    return max(0, int(round(math.log(lr / lr0) / math.log(factor))))


def convergence(curve: Sequence[float], n_reductions: int, rule: dict[str, Any] = RULE) -> dict[str, Any]:
    """Whether ``rule`` holds for a validation force RMSE ``curve`` (one value per epoch) after
    ``n_reductions`` learning-rate reductions: ``{"converged", "improvement_pct", "window"}``.

    The improvement is that of the running best: ``100 * (best before the window - best
    overall) / best before the window`` (0 when the window brought nothing new)."""
    n = len(curve)
    window = max(1, math.ceil(rule["window_fraction"] * n))
    if n <= window:
        return {"converged": False, "improvement_pct": None, "window": window}
    before = min(curve[: n - window])
    improvement = 100.0 * (before - min(curve)) / before
    ok = n >= rule["min_epochs"] and n_reductions >= rule["min_lr_reductions"] and improvement < rule["max_improvement_pct"]
    return {"converged": bool(ok), "improvement_pct": improvement, "window": window}


def describe_rule(rule: dict[str, Any]) -> str:
    """``rule``'s learning-rate clause in words (the annealed probe's rule bounds the lr instead)."""
    epochs = f"{rule['min_epochs']} epochs"
    if "max_lr_fraction" in rule:
        return f"once the learning rate has fallen to at most {rule['max_lr_fraction']:g} of its start and after {epochs}"
    return f"after at least {rule['min_lr_reductions']} learning-rate reductions and {epochs}"


def read_log(path: Path) -> dict[str, list[float]]:
    """Per trained epoch, in log order (a resumed log repeats epoch indices): the summed
    training-step seconds and the validation force RMSE (meV/A)."""
    seconds, valid, pending = [], [], 0.0
    if path.is_file():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("mode") == "opt":
                pending += float(rec["time"])
            elif rec.get("mode") == "eval" and rec.get("epoch") is not None:
                seconds.append(pending)
                valid.append(1000.0 * float(rec["rmse_f"]))
                pending = 0.0
    return {"epoch_seconds": seconds, "valid_rmse_f": valid}


# --------------------------------------------------------------------------- checkpoints


def _index(path: Path) -> int:
    return int(path.name.rsplit("_epoch-", 1)[1].split(".")[0].removesuffix("_swa"))


def latest_checkpoints(ckpt_dir: Path) -> dict[str, Path]:
    """The latest stage-one (``"one"``) and stage-two (``"two"``) checkpoint in ``ckpt_dir``."""
    found: dict[str, Path] = {}
    for p in ckpt_dir.glob("*_epoch-*.pt"):
        kind = "two" if p.name.endswith("_swa.pt") else "one"
        if kind not in found or _index(p) > _index(found[kind]):
            found[kind] = p
    return found


def latest_index(ckpt_dir: Path) -> Optional[int]:
    """MACE's epoch index of the newest checkpoint (``None``: none yet)."""
    found = latest_checkpoints(ckpt_dir)
    return max((_index(p) for p in found.values()), default=None)


def prune(ckpt_dir: Path) -> None:
    """Delete every checkpoint but the latest of each stage (``--save_all_checkpoints`` keeps all)."""
    keep = set(latest_checkpoints(ckpt_dir).values())
    for p in ckpt_dir.glob("*_epoch-*.pt"):
        if p not in keep:
            p.unlink()


def enter_stage_two(ckpt_dir: Path, swa_lr: float) -> None:
    """Write the latest stage-one checkpoint again as a stage-two one (``..._swa.pt``, same
    epoch index) whose optimizer groups carry ``swa_lr``.

    Why: MACE 0.3.16 builds its stage-two scheduler (torch's SWALR, which adds ``swa_lr`` to
    the optimizer's groups) *before* ``--restart_latest`` loads the optimizer state, so a
    restart into stage two from a stage-one checkpoint fails at the next epoch with
    ``KeyError: 'swa_lr'``. Resuming from this copy instead gives the groups the key.

    The stage-one checkpoint stays, because MACE writes the final stage-one model from it,
    but without the optimizer's moments (``state``: a quarter of the file each), which
    nothing reads again: the committed copy of a run in stage two stays near one checkpoint's
    size."""
    two = latest_checkpoints(ckpt_dir)
    one = two["one"]
    if "two" not in two:  # (a rerun after an interruption keeps the copy it made)
        ckpt = _read(one)
        for group in ckpt["optimizer"]["param_groups"]:
            group["swa_lr"] = swa_lr
        _write(ckpt, one.with_name(one.stem + "_swa.pt"))
    ckpt = _read(one)
    ckpt["optimizer"]["state"] = {}
    _write(ckpt, one)


def _read(path: Path) -> dict[str, Any]:
    from mace_gaunt_plugin.mace import read_checkpoint  # plugin checkpoints are guarded against stock MACE

    return read_checkpoint(str(path))


def _write(ckpt: dict[str, Any], path: Path) -> None:
    """Save ``ckpt`` (as read by :func:`_read`) with the plugin's guard and backend record back in place."""
    import torch

    from mace_gaunt_plugin.mace._checkpoint import CHECKPOINT_KEY, GUARD_KEY, guarded

    body = {k: v for k, v in ckpt.items() if k not in (GUARD_KEY, CHECKPOINT_KEY)}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(guarded(body, ckpt[CHECKPOINT_KEY]) if CHECKPOINT_KEY in ckpt else body, tmp)
    tmp.replace(path)


def save_state(run_dir: Path, store: Path, state: dict[str, Any], models: Sequence[Path] = ()) -> None:
    """Copy the latest checkpoints, the training log and ``state`` into the committed ``store``,
    and the final ``models`` once training is over (``state["trained"]``): a session that ends
    between the last chunk and the evaluation resumes with them."""
    tmp = store.with_name(store.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "checkpoints").mkdir(parents=True)
    (tmp / "results").mkdir()
    for p in latest_checkpoints(run_dir / "checkpoints").values():
        shutil.copy2(p, tmp / "checkpoints" / p.name)
    for p in (run_dir / "results").glob("*_train.txt"):
        shutil.copy2(p, tmp / "results" / p.name)
    if state.get("trained"):
        (tmp / "models").mkdir()
        for p in models:
            shutil.copy2(p, tmp / "models" / p.name)
    (tmp / "state.json").write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")
    shutil.rmtree(store, ignore_errors=True)
    tmp.rename(store)


def restore_state(store: Path, run_dir: Path) -> Optional[dict[str, Any]]:
    """Copy a committed ``store`` into ``run_dir`` when it is further along than the work
    directory (a fresh machine); the run's state (``None``: nothing stored)."""
    if not (store / "state.json").is_file():
        return None
    state = json.loads((store / "state.json").read_text())
    mine = latest_index(run_dir / "checkpoints")
    theirs = latest_index(store / "checkpoints")
    if theirs is not None and (mine is None or theirs > mine):
        shutil.rmtree(run_dir, ignore_errors=True)
        for sub in ("checkpoints", "results"):
            shutil.copytree(store / sub, run_dir / sub)
        for p in (store / "models").glob("*.model"):
            shutil.copy2(p, run_dir / p.name)
    return state


# --------------------------------------------------------------------------- driver


def run_until_converged(
    name: str,
    out: Path,
    run_dir: Path,
    command: Callable[[int, Optional[int], bool], list[str]],
    train: Callable[[list[str]], None],
    evaluate: Callable[[Path], tuple[dict[str, Any], int]],
    max_epochs: int,
    chunk: int,
    on_chunk: Callable[[str], None] = lambda name: None,
    stop: Callable[[], bool] = lambda: False,
) -> Optional[dict[str, Any]]:
    """Train run ``name`` chunk by chunk until :data:`RULE` holds (or ``max_epochs``), then
    stage two; the finished run's fields (``None`` if ``out/runs/name.json`` already exists, or
    when ``stop()`` said to stop before a chunk: the stored state resumes it).

    ``command(max_num_epochs, restart, start_swa)`` builds a ``mace_run_train`` line (``start_swa``:
    ``None`` in stage one, else the epoch index where stage two starts),
    ``train`` runs it, ``evaluate(model_file)`` gives test errors and the parameter count;
    ``on_chunk(name)`` is called after each chunk's state is stored (e.g. to commit it)."""
    if (out / "runs" / f"{name}.json").is_file():
        print(f"[accuracy] {name}: already finished", flush=True)
        return None
    store = out / "checkpoints" / name
    state = restore_state(store, run_dir) or {"stage": 1}
    ckpts = run_dir / "checkpoints"
    log = lambda: read_log(next(iter(sorted((run_dir / "results").glob("*_train.txt"))), Path("/nonexistent")))  # noqa: E731
    while True:
        if stop():
            print(f"[accuracy] {name}: stopped before its next chunk (stop file); resumable", flush=True)
            return None
        curve = log()["valid_rmse_f"]
        last = latest_index(ckpts)
        if state["stage"] == 1:
            check = _stage_one_status(state, ckpts, curve)
            if check["converged"] or len(curve) >= max_epochs:
                state.update(stage=2, stage_one_epochs=len(curve), converged=check["converged"],
                             stage_two_epochs=math.ceil(len(curve) / 3), start_swa=last, curve=curve)  # fmt: skip
                enter_stage_two(ckpts, RECIPE["stage_two"]["lr"])
                save_state(run_dir, store, state)
                continue
            target = min(len(curve) + chunk, max_epochs) - len(curve)
            cmd = command(target if last is None else last + target, last is not None, None)
        else:
            remaining = state["stage_one_epochs"] + state["stage_two_epochs"] - len(curve)
            if remaining <= 0:
                break
            cmd = command(last + min(chunk, remaining), True, state["start_swa"])
        train(cmd)
        prune(ckpts)
        curve = log()["valid_rmse_f"]
        state.update(epochs=len(curve), curve=curve)
        if state["stage"] == 1:
            _stage_one_status(state, ckpts, curve)  # what the stored state and the table show
        else:
            state["trained"] = state["epochs"] >= state["stage_one_epochs"] + state["stage_two_epochs"]
        save_state(run_dir, store, state, models=[run_dir / f"{name}.model", run_dir / f"{name}_stagetwo.model"])
        on_chunk(name)
    # the last stage-two call saved both: {name}.model from the last stage-one checkpoint, and stage two's
    stage_one, _ = evaluate(run_dir / f"{name}.model")
    errors, n_params = evaluate(run_dir / f"{name}_stagetwo.model")
    state.pop("curve", None)
    return {**state, "params": n_params, "curve": log(), "stage_one_test": stage_one, **errors}


def _stage_one_status(state: dict[str, Any], ckpts: Path, curve: list[float]) -> dict[str, Any]:
    """Update ``state`` with the epochs, learning rate (and its reductions) and
    :func:`convergence` verdict of a stage-one run; the verdict."""
    lr = _checkpoint_lr(latest_checkpoints(ckpts).get("one"))
    n_reductions = lr_reductions(lr)
    check = convergence(curve, n_reductions)
    state.update(epochs=len(curve), lr=lr, lr_reductions=n_reductions, check=check)
    return check


def _checkpoint_lr(path: Optional[Path]) -> float:
    """The learning rate a stage-one checkpoint resumes with (the start before the first)."""
    if path is None:
        return float(RECIPE["lr"])
    return float(_read(path)["optimizer"]["param_groups"][0]["lr"])


# --------------------------------------------------------------------------- report


def load_dir(out: Path) -> dict[str, Any]:
    """Finished runs, unfinished runs' states and timing runs of a study directory."""
    read = lambda d: {p.stem: json.loads(p.read_text()) for p in sorted((out / d).glob("*.json"))}  # noqa: E731
    pending = {p.parent.name: json.loads(p.read_text()) for p in sorted((out / "checkpoints").glob("*/state.json"))}
    return {"runs": read("runs"), "timing": read("timing"), "pending": pending,
            "study": json.loads((out / "study.json").read_text()) if (out / "study.json").is_file() else {}}  # fmt: skip


def _mean_sd(values: Sequence[float], digits: int = 1) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def timing_key(label: str, max_L: int) -> str:
    """The file stem of a variant's timing run."""
    import re

    return re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_") + f"_L{max_L}"


def render_markdown(data: dict[str, Any]) -> str:
    """The study's table from :func:`load_dir`'s data: one row per variant and hidden L over the
    finished seeds, then the runs still in progress."""
    study, runs, timing = data["study"], data["runs"], data["timing"]
    recipe, rule = study.get("recipe", RECIPE), study.get("rule", RULE)
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in runs.values():
        groups.setdefault((r["label"], int(r["max_L"])), []).append(r)
    lines = [
        "# 3BPA accuracy, trained to convergence (CPU)",
        "",
        *([study["note"], ""] if study.get("note") else []),
        f"Command: `{study.get('command', 'python benchmarks/bench_accuracy.py --until-converged ...')}`",
        "",
        f"Model and data: {study.get('setting', '-')}",
        "",
        f"Recipe: {json.dumps(recipe, sort_keys=True)}",
        "",
        f"Convergence rule: {describe_rule(rule)}, the best validation force RMSE improved by less than "
        f"{rule['max_improvement_pct']:g}% over the last {rule['window_fraction']:.0%} of the epochs trained (checked every "
        f"{study.get('chunk', '?')} epochs), or the cap of {study.get('max_epochs', '?')} stage-one epochs; then stage two. "
        f"*converged*: runs where the rule held / runs. *last {rule['window_fraction']:.0%}*: how much the best validation "
        f"force RMSE improved over the last {rule['window_fraction']:.0%} of stage one, when it ended "
        f"(below {rule['max_improvement_pct']:g}%: flat by the rule; above: still learning when the cap stopped it).",
        "",
        "*epochs*: stage-one epochs to convergence (+ stage two). *train h*: training time to convergence = "
        "(stage one + stage two epochs) x the seconds per epoch of a separate quiet timing run of the variant (a few "
        "epochs, same settings, 1 thread; `timing/`), because the study's runs share the machine and their logged "
        "times are not comparable. *MD ms/step*: LAMMPS on one CPU core, a periodic box of 27 3BPA molecules (729 "
        "atoms), the timing run's model (`benchmarks/_md_step.py`). E: total-energy RMSE (meV), F: force RMSE "
        "(meV/A), after stage two; mean ± sample SD over seeds.",
        "",
        f"| model | L | seeds | converged | last {rule['window_fraction']:.0%} | params | epochs | s/epoch | train h | MD ms/step | "
        + " | ".join(f"E {t}" for t in TEMPERATURES) + " | " + " | ".join(f"F {t}" for t in TEMPERATURES) + " |",
        "|" + "---|" * (10 + 2 * len(TEMPERATURES)),
    ]  # fmt: skip
    for (label, max_L), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0] != "e3nn", kv[0][0])):
        rs = sorted(rs, key=lambda r: r["seed"])
        t = timing.get(timing_key(label, max_L), {}).get("s_per_epoch")
        md = timing.get(timing_key(label, max_L), {}).get("md_ms_per_step")
        epochs = [r["stage_one_epochs"] + r["stage_two_epochs"] for r in rs]
        hours = [e * t / 3600.0 for e in epochs] if t else []
        drops = [r["check"]["improvement_pct"] for r in rs if (r.get("check") or {}).get("improvement_pct") is not None]
        cells = [label, str(max_L), ",".join(str(r["seed"]) for r in rs), f"{sum(r['converged'] for r in rs)}/{len(rs)}",
                 _mean_sd(drops) + "%" if drops else "-", str(rs[0]["params"]), _mean_sd([r["stage_one_epochs"] for r in rs], 0) + " (+" + _mean_sd([r["stage_two_epochs"] for r in rs], 0) + ")",
                 f"{t:.1f}" if t else "-", _mean_sd(hours, 2), f"{md:.1f}" if md else "-"]  # fmt: skip
        cells += [_mean_sd([r["E"][k] for r in rs]) for k in TEMPERATURES] + [_mean_sd([r["F"][k] for r in rs]) for k in TEMPERATURES]
        lines.append("| " + " | ".join(cells) + " |")
    if data["pending"]:
        lines += ["", "In progress (resumable from `checkpoints/<run>/`):", ""]
        for name, s in data["pending"].items():
            check = s.get("check") or {}
            imp = check.get("improvement_pct")
            lines.append(f"- {name}: stage {s['stage']}, {s.get('epochs', 0)} epochs" + (f", lr {s['lr']:.2g}" if "lr" in s else "")
                         + (f", best valid F improved {imp:.1f}% over the last {check['window']} epochs" if imp is not None else ""))  # fmt: skip
    return "\n".join(lines) + "\n"


def plot_curves(data: dict[str, Any], path: Path) -> None:
    """Validation force RMSE against epoch, one line per run (finished: solid, in progress:
    dotted), with the end of stage one marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for k, (name, r) in enumerate(data["runs"].items()):
        f = r["curve"]["valid_rmse_f"]
        ax.plot(range(1, len(f) + 1), f, color=f"C{k % 10}", label=name, lw=1)
        n1 = int(r["stage_one_epochs"])
        if 0 < n1 <= len(f):
            ax.plot([n1], [f[n1 - 1]], "o" if r["converged"] else "x", color=f"C{k % 10}")
    for name, s in data["pending"].items():
        ax.plot(range(1, len(s.get("curve", [])) + 1), s.get("curve", []), ":", label=f"{name} (running)", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation force RMSE (meV/A, EMA model)")
    ax.set_title("3BPA learning curves (o: stage one converged, x: stage one hit the cap; stage two after)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pareto_points(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One point per variant and hidden L with finished runs: mean force RMSE per
    temperature, mean training hours to convergence and MD ms per step (``None`` without a
    timing run)."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in data["runs"].values():
        groups.setdefault((r["label"], int(r["max_L"])), []).append(r)
    points = []
    for (label, max_L), rs in sorted(groups.items()):
        timing = data["timing"].get(timing_key(label, max_L), {})
        t = timing.get("s_per_epoch")
        hours = statistics.mean((r["stage_one_epochs"] + r["stage_two_epochs"]) * t / 3600.0 for r in rs) if t else None
        points.append({"label": label, "max_L": max_L, "seeds": len(rs), "train_h": hours,
                       "md_ms_per_step": timing.get("md_ms_per_step"),
                       "F": {k: statistics.mean(r["F"][k] for r in rs) for k in TEMPERATURES}})  # fmt: skip
    return points


def plot_pareto(data: dict[str, Any], path: Path) -> bool:
    """Converged force RMSE (300 K and 600 K) against training time to convergence and
    against MD time per step, one point per variant and L; ``False`` (nothing written)
    when no finished run has a timing run."""
    points = [p for p in pareto_points(data) if p["train_h"] is not None or p["md_ms_per_step"] is not None]
    if not points:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), sharey=True)
    for ax, key, xlabel in ((axes[0], "train_h", "training time to convergence (h, 1 core)"),
                            (axes[1], "md_ms_per_step", "LAMMPS MD, ms per step (729-atom 3BPA box, 1 core)")):  # fmt: skip
        for k, p in enumerate(points):
            if p[key] is None:
                continue
            for temp, marker in (("300K", "o"), ("600K", "s")):
                ax.plot([p[key]], [p["F"][temp]], marker, color=f"C{k % 10}",
                        label=f"{p['label']} L={p['max_L']} ({temp})" if ax is axes[0] else None)  # fmt: skip
            ax.annotate(f"{p['label']} L={p['max_L']}", (p[key], p["F"]["300K"]), fontsize=6)
        ax.set_xlabel(xlabel)
        ax.set_xscale("log")
    axes[0].set_ylabel("test force RMSE (meV/A), mean over seeds")
    axes[0].legend(fontsize=6)
    fig.suptitle("3BPA, converged: accuracy against cost (o 300 K, s 600 K); lower left is better")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_outputs(out: Path, with_plot: bool = True) -> None:
    """``out``/table.md (exactly :func:`render_markdown` of the directory), curves.png and,
    once finished runs have timing runs, pareto.png."""
    data = load_dir(out)
    (out / "table.md").write_text(render_markdown(data))
    wrote = ["table.md"]
    if with_plot:
        plot_curves(data, out / "curves.png")
        wrote.append("curves.png")
        if plot_pareto(data, out / "pareto.png"):
            wrote.append("pareto.png")
    print(f"[accuracy] wrote {out}/" + ", ".join(wrote), flush=True)

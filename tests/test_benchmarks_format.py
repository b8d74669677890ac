"""The committed benchmark tables are exactly what their JSON renders to, and the renderers
compute ratios and labels correctly (no benchmark is run here)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
RESULTS = BENCH / "results"
STUDIES = {"model": "bench_model.py", "accuracy": "bench_accuracy.py", "triton": "triton_compile.py"}


def _load_file(name: str):
    """The module of ``benchmarks/<name>`` (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"_bench_{Path(name).stem}", BENCH / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load(study: str):
    return _load_file(STUDIES[study])


def _committed() -> list[Path]:
    return sorted(p for study in STUDIES for p in RESULTS.glob(f"{study}_*.json"))


@pytest.mark.parametrize("path", _committed(), ids=lambda p: p.name)
def test_committed_markdown_matches_json(path: Path) -> None:
    module = _load(path.name.split("_", 1)[0])
    md = path.with_suffix(".md")
    assert md.is_file(), f"{md.name} missing: run the study's --render-only {path}"
    assert md.read_text() == module.render_markdown(json.loads(path.read_text())), (
        f"{md.name} does not match {path.name}: regenerate it with benchmarks/{module.__file__.rsplit('/', 1)[-1]} --render-only {path}"
    )


STAMP = {"date": "2026-01-01T00:00:00+00:00", "cpu": "cpu", "cpu_count": 2, "torch_threads": 2, "load_average_1_5_15": [0, 0, 0],
         "python": "3", "torch": "2", "e3nn": "0.4.4", "mace": "0.3.16", "mace_gaunt_plugin": "0.1.0", "commit": "abc"}  # fmt: skip


def _timing(ms: float) -> dict:
    return {"median_ms": ms, "q1_ms": ms, "q3_ms": ms, "min_ms": ms, "repeats": 3, "peak_gb": 1.5}


def test_model_table_speedups_and_oom() -> None:
    module = _load("model")
    case = {"L": 1, "channels": 8, "cells": 2, "atoms": 32, "edges": 100, "scans": ["L"], "results": {
        "e3nn": {"params": 10, "infer": _timing(30.0), "train": _timing(90.0)},
        "grid": {"params": 8, "infer": _timing(10.0), "train": {"status": "out of memory"}},
    }}  # fmt: skip
    result = {"device": "cuda", "dtype": "float32", "stamp": dict(STAMP, gpu="GPU"), "model": "m", "repeats": 3, "warmup": 1,
              "skipped": {"cueq": "not installed"}, "scan_order": ["L"], "scans": {"L": [0, 1]}, "base": {"L": 1, "channels": 8, "cells": 2},
              "backends": ["e3nn", "grid"], "cases": [case]}  # fmt: skip
    text = module.render_markdown(result)
    assert "| 1 | 8 | 32 | 100 | grid | 8 | 10.0 | OOM | 3.00 | - | 1.50 | - |" in text
    assert "cueq: not installed" in text
    assert "**Not run** (1 of 2 cases" in text and "L=0 C=8 cells=2" in text
    assert module.speedup(case, "grid", "infer") == pytest.approx(3.0)


def test_model_cases_are_unique_and_cover_every_scan() -> None:
    module = _load("model")
    cases = module.cases_of({"L": 1, "channels": 8, "cells": 2}, {"L": [0, 1], "channels": [8, 16], "cells": [2, 3]}, ["L", "channels", "cells"])
    keys = [(c["L"], c["channels"], c["cells"]) for c in cases]
    assert len(keys) == len(set(keys)) == 4
    base = next(c for c in cases if (c["L"], c["channels"], c["cells"]) == (1, 8, 2))
    assert sorted(base["scans"]) == ["L", "cells", "channels"]


def test_accuracy_table_has_budgets_and_published_rows() -> None:
    module = _load("accuracy")
    errs = {"E": {t: 1.0 for t in module.TEMPERATURES}, "F": {t: 2.0 for t in module.TEMPERATURES}}
    row = {"backend": "sparse", "options": {"gated_epochs": "1"}, "epochs": 3, "params": 5, "s_per_epoch": 1.25, **errs}
    result = {"config": {"channels": 4, "max_L": 1, "max_ell": 1, "correlation": 2, "r_max": 3.0, "batch_size": 5, "seed": 1},
              "split": {"train": "t", "test": "s", "n_test": {t: 1 for t in module.TEMPERATURES}}, "stamp": STAMP,
              "threads": 2, "epochs": 3, "time_budget_s": 9.0, "time_reference": "e3nn",
              "rows": [dict(row, budget="equal epochs"), dict(row, budget="equal time")]}  # fmt: skip
    text = module.render_markdown(result)
    assert "| sparse (gated_epochs=1) | equal time | 3 | 5 | 1.2 | 1.0 | 1.0 | 1.0 | 2.0 | 2.0 | 2.0 |" in text
    assert "| MACE-Gaunt (published) | full training | - | - | - | 2.9 | 10.6 | 30.4 | 9.2 | 22.2 | 63.1 |" in text


def test_accuracy_table_gives_mean_and_spread_over_seeds() -> None:
    module = _load("accuracy")
    def row(seed: int, f: float, label: str = "grid:product_basis=factors", budget: str = "equal epochs") -> dict:
        return {"label": label, "backend": "grid", "options": {"product_basis": "factors"}, "seed": seed, "epochs": 4,
                "params": 7, "s_per_epoch": 2.0, "train_seconds": 8.0, "budget": budget,
                "E": {t: 10.0 * seed for t in module.TEMPERATURES}, "F": {t: f for t in module.TEMPERATURES}}  # fmt: skip
    rows = [row(1, 1.0), row(2, 2.0), row(3, 6.0), row(1, 5.0, "grid @ 8 channels", "equal params")]
    groups = module.aggregate(rows)
    assert [(g["label"], g["budget"], len(g["rows"])) for g in groups] == [
        ("grid:product_basis=factors", "equal epochs", 3), ("grid @ 8 channels", "equal params", 1)]
    result = {"config": {"channels": 4, "max_L": 1, "max_ell": 1, "correlation": 2, "r_max": 3.0, "batch_size": 5, "seed": 1},
              "seeds": [1, 2, 3], "split": {"train": "t", "test": "s", "n_test": {t: 1 for t in module.TEMPERATURES}},
              "stamp": STAMP, "threads": 1, "epochs": 4, "time_budget_s": 8.0, "time_reference": "e3nn", "rows": rows,
              "command": "python benchmarks/bench_accuracy.py --seeds 1,2,3"}  # fmt: skip
    text = module.render_markdown(result)
    # mean 3.0, sample SD sqrt(((1-3)^2 + (2-3)^2 + (6-3)^2) / 2) = sqrt(7)
    assert "| grid:product_basis=factors | equal epochs | 4 | 7 | 2.0 | 20.0 ± 10.0 | 20.0 ± 10.0 | 20.0 ± 10.0 | 3.0 ± 2.6 |" in text
    assert "| grid @ 8 channels | equal params | 4 | 7 | 2.0 | 10.0 | 10.0 | 10.0 | 5.0 | 5.0 | 5.0 |" in text
    assert "seeds 1, 2, 3 (mean ± sample SD over seeds)" in text and "Command: `python benchmarks/bench_accuracy.py --seeds 1,2,3`" in text


def test_temperature_blocks_refuse_unordered_energies() -> None:
    module = _load("accuracy")
    blocks = module.temperature_blocks([0.0] * 3 + [1.0] * 3 + [2.0] * 2)
    assert [len(v) for v in blocks.values()] == [3, 3, 2]
    with pytest.raises(ValueError, match="do not increase"):
        module.temperature_blocks([2.0] * 3 + [1.0] * 3 + [0.0] * 2)


def test_finished_runs_are_read_back_not_retrained_and_other_settings_refused(tmp_path: Path) -> None:
    module = _load("accuracy")
    trained, committed = [], []

    def train() -> dict:
        trained.append(1)
        return {"label": "grid", "seed": 1, "F": {"300K": 5.0}}

    setting = {"config": {"channels": 16, "epochs": 25}, "threads": 1}
    first = module.cached_run(tmp_path / "runs", "grid_s1_e25", setting, train, committed.append)
    again = module.cached_run(tmp_path / "runs", "grid_s1_e25", setting, train, committed.append)
    assert first == again == {"label": "grid", "seed": 1, "F": {"300K": 5.0}, "setting": setting}
    assert len(trained) == 1 and committed == [tmp_path / "runs" / "grid_s1_e25.json"]
    other = {"config": {"channels": 32, "epochs": 25}, "threads": 1}
    with pytest.raises(SystemExit, match="another setting"):
        module.cached_run(tmp_path / "runs", "grid_s1_e25", other, train)
    assert len(trained) == 1


def test_learning_curves_accumulate_training_seconds_and_skip_missing_validation() -> None:
    module = _load("accuracy")
    rows = [
        {"label": "grid", "budget": "equal time", "seed": 2, "curve": {"epoch_seconds": [10.0, 12.0, 11.0], "valid_rmse_f": [90.0, None, 70.0]}},
        {"label": "e3nn", "budget": "equal epochs", "seed": 1},  # an old row without a curve
    ]
    (curve,) = module.learning_curves(rows)
    assert curve == {"label": "grid", "budget": "equal time", "seed": 2, "seconds": [10.0, 33.0], "valid_f": [90.0, 70.0]}


def test_parallel_runs_respect_jobs_and_report_every_failure_after_the_rest_ran() -> None:
    import threading
    import time

    module = _load("accuracy")
    lock, running, peak, done = threading.Condition(), [0], [0], []

    def run(name: str, seed: int) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            lock.notify_all()
            lock.wait_for(lambda: peak[0] >= 2, timeout=5.0)  # the first task waits for a second one to start
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        if seed == 2:
            raise RuntimeError(f"{name} seed {seed} diverged")
        done.append((name, seed))

    tasks = [("e3nn", 1), ("e3nn", 2), ("grid", 1), ("grid", 2), ("grid", 3)]
    with pytest.raises(SystemExit) as err:
        module.run_parallel(tasks, 2, run)
    assert sorted(done) == [("e3nn", 1), ("grid", 1), ("grid", 3)] and peak[0] == 2
    assert "2 of 5 runs failed" in str(err.value) and "e3nn seed 2 diverged" in str(err.value) and "grid seed 2 diverged" in str(err.value)
    done.clear()
    module.run_parallel([("e3nn", 1), ("grid", 3)], 1, run)  # no failure: returns
    assert done == [("e3nn", 1), ("grid", 3)]


def test_readme_summaries_match_json() -> None:
    spec = importlib.util.spec_from_file_location("_bench_update_readme", BENCH / "update_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = module.README.read_text()
    assert module.render(text) == text, "benchmarks/README.md summaries are stale: run python benchmarks/update_readme.py"


def _converged_module():
    import sys

    sys.path.insert(0, str(BENCH))
    return _load_file("_converged.py")


def test_convergence_rule_needs_a_flat_window_and_two_lr_reductions() -> None:
    conv = _converged_module()
    falling = [100.0 * 0.97**k for k in range(30)]  # 3% better every epoch
    flat = [100.0 * 0.97**k for k in range(25)] + [100.0 * 0.97**24 * (1 + 0.001 * (k % 2)) for k in range(15)]
    assert not conv.convergence(falling, n_reductions=5)["converged"]
    verdict = conv.convergence(flat, n_reductions=2)
    assert verdict["converged"] and verdict["window"] == 8 and verdict["improvement_pct"] == pytest.approx(0.0)
    assert not conv.convergence(flat, n_reductions=1)["converged"]  # the lr has not come down twice
    assert not conv.convergence(flat[:10], n_reductions=3)["converged"]  # fewer than min_epochs
    # the best value before the window is 100, the best overall 98.5: 1.5% < 2%
    assert conv.convergence([100.0] * 16 + [99.0, 98.5, 99.0, 99.5], n_reductions=2)["improvement_pct"] == pytest.approx(1.5)
    assert [conv.lr_reductions(0.01 * 0.8**k) for k in (0, 1, 2, 7)] == [0, 1, 2, 7]


def test_a_study_refuses_runs_under_another_protocol(tmp_path: Path) -> None:
    conv = _converged_module()
    conv.check_protocol({}, tmp_path, 20, 200)  # a new study
    study = {**conv.protocol(20, 200), "command": "python benchmarks/bench_accuracy.py --until-converged"}
    conv.check_protocol(study, tmp_path, 20, 200)  # the same study, resumed
    for chunk, cap in ((10, 200), (20, 400)):
        with pytest.raises(SystemExit, match="another (chunk|max_epochs)"):
            conv.check_protocol(study, tmp_path, chunk, cap)
    annealed = dict(study, recipe=dict(conv.RECIPE, scheduler="ExponentialLR"))
    with pytest.raises(SystemExit, match="another recipe"):
        conv.check_protocol(annealed, tmp_path, 20, 200)


def test_resumed_mace_log_counts_repeated_epoch_indices_once_each(tmp_path: Path) -> None:
    conv = _converged_module()
    recs = [{"mode": "eval", "epoch": None, "rmse_f": 1.0}]
    for epoch, f in ((0, 0.5), (1, 0.4), (1, 0.35), (2, 0.3)):  # a restart from epoch 1 re-runs index 1
        recs += [{"mode": "opt", "epoch": epoch, "time": 2.0}, {"mode": "opt", "epoch": epoch, "time": 1.0},
                 {"mode": "eval", "epoch": epoch, "rmse_f": f}]  # fmt: skip
    (tmp_path / "log.txt").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    log = conv.read_log(tmp_path / "log.txt")
    assert log == {"epoch_seconds": [3.0] * 4, "valid_rmse_f": [500.0, 400.0, 350.0, 300.0]}


def _finished_run(conv, label: str, max_L: int, seed: int, f: float) -> dict:
    errs = {"E": {t: 1.0 for t in conv.TEMPERATURES}, "F": {t: f for t in conv.TEMPERATURES}}
    return {"label": label, "max_L": max_L, "seed": seed, "converged": seed != 3, "params": 1234, "stage_one_epochs": 60,
            "stage_two_epochs": 20, "check": {"improvement_pct": 1.0 + seed, "window": 12}, "curve": {"valid_rmse_f": [3.0, 2.0, 1.0]}, **errs}  # fmt: skip


def test_converged_table_renders_a_directory_of_partial_results(tmp_path: Path) -> None:
    conv = _converged_module()
    (tmp_path / "runs").mkdir()
    for seed, f in ((1, 10.0), (2, 12.0)):
        (tmp_path / "runs" / f"e3nn_L1_seed{seed}.json").write_text(json.dumps(_finished_run(conv, "e3nn", 1, seed, f)))
    (tmp_path / "timing").mkdir()
    (tmp_path / "timing" / "e3nn_L1.json").write_text(json.dumps({"s_per_epoch": 36.0, "md_ms_per_step": 41.25}))
    pending = tmp_path / "checkpoints" / "e3nn_L1_seed3"
    pending.mkdir(parents=True)
    (pending / "state.json").write_text(json.dumps({"stage": 1, "epochs": 40, "lr": 0.0045, "curve": [2.0, 1.0],
                                                    "check": {"improvement_pct": 4.25, "window": 8}}))  # fmt: skip
    (tmp_path / "study.json").write_text(json.dumps({"command": "python benchmarks/bench_accuracy.py --until-converged", "chunk": 10, "max_epochs": 300}))
    text = conv.render_markdown(conv.load_dir(tmp_path))
    # 80 epochs x 36 s = 0.80 h; F mean 11.0, sample SD sqrt(2) = 1.4
    # the best valid F improved 2% and 3% over the last 20% of stage one: mean 2.5, SD 0.7
    assert "| e3nn | 1 | 1,2 | 2/2 | 2.5 ± 0.7% | 1234 | 60 ± 0 (+20 ± 0) | 36.0 | 0.80 ± 0.00 | 41.2 | 1.0 ± 0.0 | 1.0 ± 0.0 | 1.0 ± 0.0 | 11.0 ± 1.4 |" in text
    assert "- e3nn_L1_seed3: stage 1, 40 epochs, lr 0.0045, best valid F improved 4.2% over the last 8 epochs" in text
    assert "checked every 10 epochs), or the cap of 300 stage-one epochs" in text
    assert "after at least 2 learning-rate reductions and 20 epochs" in text and '"scheduler": "ReduceLROnPlateau"' in text
    # a directory records its own protocol, and a note; it renders with them, not with this code's
    probe_rule = {"max_improvement_pct": 2.0, "window_fraction": 0.25, "max_lr_fraction": 0.1, "min_epochs": 20}
    study = {"recipe": {"scheduler": "ExponentialLR"}, "rule": probe_rule, "note": "**Probe.**"}
    probe = conv.render_markdown(dict(conv.load_dir(tmp_path), study=study))
    assert "\n**Probe.**\n" in probe and '"scheduler": "ExponentialLR"' in probe and "ReduceLROnPlateau" not in probe
    assert "at most 0.1 of its start and after 20 epochs" in probe and "| last 25% |" in probe
    conv.write_outputs(tmp_path, with_plot=False)
    assert (tmp_path / "table.md").read_text() == text
    (point,) = conv.pareto_points(conv.load_dir(tmp_path))
    assert point["label"] == "e3nn" and point["seeds"] == 2 and point["md_ms_per_step"] == 41.25
    assert point["train_h"] == pytest.approx(0.8) and point["F"]["300K"] == pytest.approx(11.0)
    assert conv.plot_pareto(conv.load_dir(tmp_path), tmp_path / "pareto.png") and (tmp_path / "pareto.png").stat().st_size > 0


@pytest.mark.parametrize("name", ["accuracy_converged_cpu", "accuracy_converged_cpu_annealed_probe"])
def test_committed_converged_table_matches_its_directory(name: str) -> None:
    out = RESULTS / name
    if not (out / "table.md").is_file():
        pytest.skip(f"no {name} committed yet")
    conv = _converged_module()
    assert (out / "table.md").read_text() == conv.render_markdown(conv.load_dir(out)), (
        f"table.md does not match: python benchmarks/bench_accuracy.py --render-only benchmarks/results/{name}")


def test_md_box_is_periodic_copies_a_gap_apart() -> None:
    import numpy as np
    from ase.build import molecule

    md = _load_file("_md_step.py")
    mol = molecule("CH3CH2OH")
    box = md.bpa_box(mol, copies=3, gap=3.0)
    extent = float((mol.positions - mol.positions.min(axis=0)).max())
    assert len(box) == 27 * len(mol) and box.pbc.all()
    assert np.allclose(np.asarray(box.cell), np.eye(3) * 3 * (extent + 3.0))
    # every atom of one copy is at least the gap from every atom of every other copy (periodic images included)
    d = box.get_all_distances(mic=True)
    copy = np.repeat(np.arange(27), len(mol))
    assert d[copy[:, None] != copy[None, :]].min() >= 3.0 - 1e-9

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


def _load(study: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{study}", BENCH / STUDIES[study])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def test_readme_summaries_match_json() -> None:
    spec = importlib.util.spec_from_file_location("_bench_update_readme", BENCH / "update_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = module.README.read_text()
    assert module.render(text) == text, "benchmarks/README.md summaries are stale: run python benchmarks/update_readme.py"

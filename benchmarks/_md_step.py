"""Inference cost as users pay it: milliseconds per MD step of a periodic 3BPA box in LAMMPS
on one CPU core, for the converged study's Pareto view (``bench_accuracy.py
--until-converged --timing-epochs N``).

The box: ``copies**3`` copies of one 3BPA configuration on a cubic lattice whose spacing is
the molecule's largest extent plus ``gap`` A, periodic (27 molecules, 729 atoms by default;
with r_max 5 A each molecule sees a few atoms of its neighbours). The model is exported for
``pair_style mliap unified`` (TorchScript core, the model's dtype), then LAMMPS runs 1 fs
NVE from 300 K velocities: ``warmup`` steps, then ``steps`` timed ones; the figure is LAMMPS'
loop time of the timed run per step. Speed does not depend on the weights, so the quiet
timing run's model stands for every seed of its variant.

Run as a script in a child process (``OMP_NUM_THREADS=1``): ``python benchmarks/_md_step.py
--model M.model --data DIR --out result.json``; :func:`md_step_ms` does that.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

#: The elements of 3BPA, as LAMMPS types 1-4.
ELEMENTS = ("H", "C", "N", "O")


def bpa_box(molecule: Any, copies: int = 3, gap: float = 3.0) -> Any:
    """``copies**3`` copies of ``molecule`` (an ``ase.Atoms``) on a periodic cubic lattice,
    ``gap`` A apart at their closest extents."""
    one = molecule.copy()
    one.positions = one.positions - one.positions.min(axis=0)
    one.cell = [float(one.positions.max()) + gap] * 3
    one.pbc = True
    return one.repeat(copies)


DECK = """\
units metal
atom_style atomic
boundary p p p
read_data {data}
{attach}
pair_style mliap unified {model} 0
pair_coeff * * {elements}
velocity all create 300.0 4928459 mom yes rot yes dist gaussian
timestep 0.001
fix nve all nve
thermo {steps}
run {warmup}
run {steps}
"""


def measure(model: Path, data: Path, work: Path, steps: int, warmup: int, dtype: str = "float64") -> dict[str, Any]:
    """Export ``model`` (``dtype``), write the box of the first configuration of
    ``data/train_300K.xyz`` and time LAMMPS on it (with this process's threads: run it with
    ``OMP_NUM_THREADS=1``)."""
    import ase.io

    from lammps_interface import INPUT_DECK_LINES, export_model, harness

    lmp = harness.find_lmp()
    if lmp is None:
        raise SystemExit("no lmp executable: run lammps_interface/build_lammps.sh first")
    box = bpa_box(ase.io.read(data / "train_300K.xyz", 0))
    work.mkdir(parents=True, exist_ok=True)
    ase.io.write(work / "box.data", box, format="lammps-data", specorder=list(ELEMENTS), masses=True)
    mfile = export_model(str(model), str(work / "model.mliap"), dtype, "cpu", engine="torchscript")
    (work / "in.md").write_text(DECK.format(data=work / "box.data", attach=INPUT_DECK_LINES, model=mfile,
                                            elements=" ".join(ELEMENTS), steps=steps, warmup=warmup))  # fmt: skip
    res = subprocess.run([lmp, "-in", str(work / "in.md"), "-log", "none", "-nocite"], cwd=work, env=harness.lmp_env(),
                         capture_output=True, text=True)  # fmt: skip
    loops = re.findall(r"Loop time of ([0-9.eE+-]+) on (\d+) procs for (\d+) steps with (\d+) atoms", res.stdout)
    if res.returncode != 0 or len(loops) < 2:
        raise SystemExit(f"LAMMPS failed (exit {res.returncode}):\n{res.stdout[-3000:]}{res.stderr[-3000:]}")
    seconds, procs, n_steps, atoms = loops[-1]
    return {"md_ms_per_step": 1000.0 * float(seconds) / int(n_steps), "md_atoms": int(atoms), "md_steps": int(n_steps),
            "md_warmup": warmup, "md_procs": int(procs), "md_threads": os.environ.get("OMP_NUM_THREADS"), "md_dtype": dtype,
            "md_box": f"{len(box)} atoms: 27 copies of train_300K.xyz's first configuration, 3 A apart, periodic; "
                      "1 fs NVE from 300 K, TorchScript core"}  # fmt: skip


def md_step_ms(model: Path, data: Path, steps: int = 20, warmup: int = 3) -> dict[str, Any]:
    """:func:`measure` in a child process with one thread (one CPU core)."""
    with tempfile.TemporaryDirectory(prefix="mgp_md_step_") as tmp:
        out = Path(tmp) / "result.json"
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        cmd = [sys.executable, __file__, "--model", str(model), "--data", str(data), "--out", str(out),
               "--steps", str(steps), "--warmup", str(warmup), "--work", tmp]  # fmt: skip
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"MD timing of {model} failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
        return json.loads(out.read_text())


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="the 3BPA folder (train_300K.xyz)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--work", type=Path, required=True)
    args = p.parse_args(argv)
    import mace  # noqa: F401  (sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD before e3nn loads)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    args.out.write_text(json.dumps(measure(args.model, args.data, args.work, args.steps, args.warmup), indent=1))


if __name__ == "__main__":
    main()

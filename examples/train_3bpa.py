"""Train a small MACE model with a plugin TP backend on 3BPA, test it, run MD with it.

Steps (defaults: about 15 minutes on 2 CPU cores, most of it training):

1. Split ``train_mixedT.xyz`` (500 configurations at 300, 600 and 1200 K): a held-out
   test set (``--num-test``, default 100) and a training set (``--num-train``, default
   200; MACE keeps 10% of it for validation). The official 3BPA test files are not
   part of the data here, so test errors are on this held-out part. The reference
   energies and forces are written as ``REF_energy``/``REF_forces``, the keys MACE
   recommends (``energy``/``forces`` clash with what ASE calculators store).
2. Train with MACE's own command, ``mace_run_train ... --tp-backend grid`` (or
   ``python -m mace_gaunt_plugin.train``, ``--via module``), E0s from ``iso_atoms.xyz``.
3. Energy and force RMSE on the held-out set through ASE's ``MACECalculator``.
4. 100 steps of Langevin MD (300 K, 0.5 fs) with ``MACECalculator`` from a held-out
   geometry: speed and total-energy drift, then 100 NVE steps from the end state as an
   energy-conservation check.

Usage::

    python examples/train_3bpa.py                       # grid backend, small and fast
    python examples/train_3bpa.py --tp-backend e3nn     # the same with stock MACE
    python examples/train_3bpa.py --num-train 450 --num-test 50 --epochs 200 --channels 64 --max-L 2

The data directory is ``--data``, else ``$MACE_GAUNT_3BPA``, else ``../shared/data/3bpa``
relative to the repository root.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "3bpa"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", type=Path, default=Path(os.environ.get("MACE_GAUNT_3BPA", DEFAULT_DATA)), help="3BPA directory (or $MACE_GAUNT_3BPA)")
    p.add_argument("--workdir", type=Path, default=Path("3bpa_run"), help="where data splits, logs and models go")
    p.add_argument("--tp-backend", default="grid", help="TP backend to train with")
    p.add_argument("--tp-option", action="append", default=[], metavar="KEY=VALUE", help="backend option (repeatable)")
    p.add_argument("--via", choices=("mace_run_train", "module"), default="mace_run_train",
                   help="train with the mace_run_train console script (start-up hook) or python -m mace_gaunt_plugin.train")
    p.add_argument("--num-train", type=int, default=200, help="training + validation configurations")
    p.add_argument("--num-test", type=int, default=100, help="held-out test configurations")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--max-L", type=int, default=1, help="degree of the hidden features")
    p.add_argument("--max-ell", type=int, default=2, help="degree of the edge spherical harmonics")
    p.add_argument("--correlation", type=int, default=3)
    p.add_argument("--r-max", type=float, default=4.5)
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    p.add_argument("--device", default="cpu")
    p.add_argument("--md-steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    return p.parse_args(argv)


def _with_reference_keys(atoms: object) -> object:
    """A copy holding the reference energy and forces as ``REF_energy``/``REF_forces``, no calculator."""
    ref = atoms.copy()
    ref.calc = None
    ref.info["REF_energy"] = float(atoms.get_potential_energy())
    ref.arrays["REF_forces"] = np.asarray(atoms.get_forces(), dtype=float)
    return ref


def split_data(args: argparse.Namespace) -> tuple[Path, Path, dict[int, float]]:
    import ase.io

    source = args.data / "train_mixedT.xyz"
    if not source.is_file():
        raise SystemExit(f"3BPA data not found: {source} (use --data DIR or MACE_GAUNT_3BPA=DIR)")
    frames = ase.io.read(source, ":")
    if args.num_train + args.num_test > len(frames):
        raise SystemExit(f"--num-train + --num-test must be <= {len(frames)}")
    order = np.random.default_rng(args.seed).permutation(len(frames))
    test = [frames[i] for i in order[: args.num_test]]
    train = [frames[i] for i in order[args.num_test : args.num_test + args.num_train]]
    args.workdir.mkdir(parents=True, exist_ok=True)
    train_path, test_path = args.workdir / "train.xyz", args.workdir / "test.xyz"
    ase.io.write(train_path, [_with_reference_keys(a) for a in train])
    ase.io.write(test_path, [_with_reference_keys(a) for a in test])
    e0s = {int(a.numbers[0]): float(a.get_potential_energy()) for a in ase.io.read(args.data / "iso_atoms.xyz", ":")}
    print(f"[data] {source}: {len(frames)} configurations (300/600/1200 K); held out {len(test)} as the test set, "
          f"training on {len(train)} (10% of them for validation). The official 3BPA test files are not used.")
    return train_path, test_path, e0s


def train(args: argparse.Namespace, train_path: Path, e0s: dict[int, float]) -> Path:
    if args.via == "mace_run_train":
        script = Path(sys.executable).with_name("mace_run_train")
        command = [str(script) if script.exists() else "mace_run_train"]
    else:
        command = [sys.executable, "-m", "mace_gaunt_plugin.train"]
    command += [
        "--name", "bpa",
        "--work_dir", str(args.workdir),
        "--train_file", str(train_path),
        "--valid_fraction", "0.1",
        "--energy_key", "REF_energy",
        "--forces_key", "REF_forces",
        "--E0s", repr(e0s),
        "--model", "ScaleShiftMACE",
        "--num_channels", str(args.channels),
        "--max_L", str(args.max_L),
        "--max_ell", str(args.max_ell),
        "--correlation", str(args.correlation),
        "--num_interactions", "2",
        "--r_max", str(args.r_max),
        "--batch_size", str(args.batch_size),
        "--valid_batch_size", "20",
        "--max_num_epochs", str(args.epochs),
        "--lr", "0.01",
        "--energy_weight", "1",
        "--forces_weight", "100",
        "--ema", "--ema_decay", "0.99",
        "--scheduler_patience", "5",
        "--default_dtype", args.dtype,
        "--device", args.device,
        "--seed", str(args.seed),
        "--tp-backend", args.tp_backend,
    ]
    for option in args.tp_option:
        command += ["--tp-option", option]
    print("[train] " + shlex.join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    print(f"[train] done in {time.perf_counter() - start:.0f} s; log: {args.workdir / 'logs'}")
    return args.workdir / "bpa.model"


def test_errors(args: argparse.Namespace, model_path: Path, test_path: Path) -> None:
    import ase.io
    from mace.calculators import MACECalculator

    import mace_gaunt_plugin as mgp

    calc = MACECalculator(model_paths=str(model_path), device=args.device, default_dtype=args.dtype)
    print(f"[test] {model_path}: TP backend {mgp.backend_of(calc.models[0])!r} {mgp.backend_options_of(calc.models[0])}")
    de, df, n_atoms = [], [], []
    for atoms in ase.io.read(test_path, ":"):
        e_ref, f_ref = atoms.info["REF_energy"], atoms.arrays["REF_forces"]
        atoms.calc = calc
        de.append(atoms.get_potential_energy() - e_ref)
        df.append(atoms.get_forces() - f_ref)
        n_atoms.append(len(atoms))
    de, n = np.array(de), np.array(n_atoms)
    rmse_e = 1000 * np.sqrt(np.mean(de**2))
    rmse_e_atom = 1000 * np.sqrt(np.mean((de / n) ** 2))
    rmse_f = 1000 * np.sqrt(np.mean(np.concatenate(df) ** 2))
    print(f"[test] held-out part of train_mixedT.xyz ({len(de)} configurations): "
          f"energy RMSE {rmse_e:.1f} meV ({rmse_e_atom:.2f} meV/atom), force RMSE {rmse_f:.1f} meV/A")


def _thermalize() -> object:
    """ASE's Maxwell-Boltzmann momenta: ``thermalize_momenta`` (ASE >= 3.29), else its
    older name ``MaxwellBoltzmannDistribution`` (deprecated from 3.29 on)."""
    from ase.md import velocitydistribution

    return getattr(velocitydistribution, "thermalize_momenta", None) or velocitydistribution.MaxwellBoltzmannDistribution


def molecular_dynamics(args: argparse.Namespace, model_path: Path, test_path: Path) -> None:
    import ase.io
    from ase import units
    from ase.md.langevin import Langevin
    from ase.constraints import FixCom
    from ase.md.velocitydistribution import Stationary, ZeroRotation
    from ase.md.verlet import VelocityVerlet
    from mace.calculators import MACECalculator

    atoms = ase.io.read(test_path, "0")
    atoms.calc = MACECalculator(model_paths=str(model_path), device=args.device, default_dtype=args.dtype)
    _thermalize()(atoms, temperature_K=300, rng=np.random.default_rng(args.seed))
    Stationary(atoms)
    ZeroRotation(atoms)
    atoms.get_potential_energy()  # warm-up outside the timing

    def run(dyn: object, label: str, note: str) -> None:
        etot = [atoms.get_total_energy()]
        dyn.attach(lambda: etot.append(atoms.get_total_energy()), interval=1)
        start = time.perf_counter()
        dyn.run(args.md_steps)
        elapsed = time.perf_counter() - start
        e = np.array(etot) / len(atoms)
        t_ps = np.arange(len(e)) * 0.5e-3
        drift = np.polyfit(t_ps, e, 1)[0] * 1000
        print(f"[md] {label}: {args.md_steps} steps in {elapsed:.1f} s ({args.md_steps / elapsed:.1f} steps/s), "
              f"T_end {atoms.get_temperature():.0f} K; total energy: drift {drift:+.2f} meV/atom/ps, "
              f"max |E_tot - E_tot(0)| {1000 * np.max(np.abs(e - e[0])):.2f} meV/atom ({note})")

    atoms.set_constraint(FixCom())  # the molecule's centre of mass stays put (ASE's advice over Langevin's fixcm)
    langevin = Langevin(atoms, 0.5 * units.fs, temperature_K=300, friction=0.01 / units.fs, fixcm=False,
                        rng=np.random.default_rng(args.seed))  # fmt: skip
    run(langevin, "Langevin 300 K, 0.5 fs", "the thermostat exchanges energy, so it is not conserved")
    run(VelocityVerlet(atoms, 0.5 * units.fs), "NVE, 0.5 fs, from the Langevin end state", "energy conservation check")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import mace  # noqa: F401  (sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD before e3nn loads)

    train_path, test_path, e0s = split_data(args)
    model_path = train(args, train_path, e0s)
    test_errors(args, model_path, test_path)
    molecular_dynamics(args, model_path, test_path)


if __name__ == "__main__":
    main()

"""LAMMPS MD throughput of MACE models with several TP backends (``python -m
lammps_interface.md_benchmark``), plus an exactness check of the same LAMMPS path on a
small float64 system.

For each backend: build a random-weight model (DESIGN.md section 5: fcc Cu, r_max 5,
128 channels, max_ell 3, hidden L=1, correlation 3, two layers by default), export it
with ``--device``/``--dtype``, run a standalone ``lmp -in`` NVE run on an N x N x N
cubic fcc box, and read ns/day from LAMMPS' own ``Performance:`` line of the timed run
(after a warm-up run). Results go to ``OUT/lammps_md_benchmark.json`` and a table on
stdout. ``--ranks N [M ..]`` runs ``lmp`` under ``mpirun -np N`` (the several-ranks
route: ghost neighbour lists and a ghost shell of 2 x r_max plus the 2 A skin), once per
rank count given, so one command compares them;
``--plain-path ghosts`` takes that route on one rank too (to compare it with the
atom-ID route, ``ids``, which one rank uses by default). ``--engine`` names one or more
export engines (``torchscript``, ``eager``, ``aotinductor``): one export and one LAMMPS
run each, per backend, so their ratios come from one command.

The step split comes from the same run: LAMMPS runs with ``MGP_LAMMPS_TIMING`` set, so
the wrapper records each force call's wall time and its model call's
(``lammps_interface/_timing.py``); over the timed steps, ``model_ms_per_call``,
``wrapper_host_ms_per_call`` (graph building and copies around the model) and
``step_overhead_ms`` = LAMMPS' ms/step minus the model call (wrapper plus LAMMPS' own
neighbour lists, communication and integration) go into the JSON, with the nodes and
edges each interaction layer evaluated on each rank in the last step
(``layer_counts_per_rank``: per rank, per layer, [nodes read, nodes updated, edges]).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._malloc import malloc_mode
from ._timing import TIMING_ENV, read_layer_counts, read_timings

DECK = """\
units metal
atom_style atomic
boundary p p p
lattice fcc 3.61
region box block 0 {cells} 0 {cells} 0 {cells}
create_box 1 box
create_atoms 1 box
mass 1 63.546
{comm}
{attach}
pair_style mliap unified {model} {ghosts}
pair_coeff * * Cu
velocity all create 300.0 4928459 mom yes rot yes dist gaussian
timestep 0.001
fix nve all nve
thermo_style custom step temp pe etotal press
thermo_modify format float %.12g
thermo {thermo}
run {warmup}
run {steps}
"""


def _model(backend: str, args: argparse.Namespace, channels: int, path: Path) -> None:
    import torch

    import mace_gaunt_plugin as mgp
    from mace_gaunt_plugin.testing import small_mace_config

    hidden = " + ".join(f"{channels}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(args.hidden_l + 1))
    torch.manual_seed(0)
    cfg = small_mace_config(
        hidden_irreps=hidden,
        max_ell=args.max_ell,
        correlation=3,
        num_interactions=2,
        atomic_numbers=(29,),
        r_max=args.r_max,
        radial_MLP=[64, 64, 64],
        avg_num_neighbors=43.0,
        atomic_energies=[-3.7],
    )
    model = mgp.build_model(backend, **cfg)
    torch.save(model, path)


def _exactness(backend: str, engine: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """LAMMPS (model on args.device, float64) vs ASE on CPU for a small displaced Cu box."""
    import torch
    from ase.build import bulk

    from mace_gaunt_plugin.testing import default_dtype

    from . import harness
    from .export import export_model

    with default_dtype(torch.float64):
        _model(backend, args, 8, out / f"{backend}_small.model")
    mfile = export_model(str(out / f"{backend}_small.model"), str(out / f"{backend}_small_{engine}.mliap"), "float64", args.device, engine=engine)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.rattle(0.08, seed=3)
    atoms.wrap()
    got = harness.single_point(mfile, atoms, ["Cu"])
    ref = harness.ase_reference(str(out / f"{backend}_small.model"), atoms)
    return {k: harness.max_relative_error(got[k], ref[k]) for k in ("energy", "forces", "virial")}


def _md(backend: str, engine: str, ranks: int, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from . import harness
    from .export import export_model
    from .mliap_unified import INPUT_DECK_LINES

    model_path = out / f"{backend}.model"
    t0 = time.perf_counter()
    _model(backend, args, args.channels, model_path)
    mfile = export_model(str(model_path), str(out / f"{backend}_{engine}.mliap"), args.dtype, args.device, engine=engine)
    export_s = time.perf_counter() - t0
    run = f"{backend}_{engine}_ranks{ranks}"
    deck = out / f"in.{run}"
    ghosts = ranks > 1 or args.plain_path == "ghosts"
    deck.write_text(
        DECK.format(
            cells=args.cells, attach=INPUT_DECK_LINES, model=mfile, warmup=args.warmup, steps=args.steps,
            thermo=max(1, args.steps // 5), ghosts=int(ghosts),
            comm=f"comm_modify cutoff {2 * args.r_max + 2.0!r}" if ghosts else "",  # 2 layers x r_max + skin
        )
    )
    lmp = harness.find_lmp()
    if lmp is None:
        raise SystemExit("no lmp executable: run lammps_interface/build_lammps.sh first")
    log = out / f"log.{run}"
    cmd = [lmp, "-in", str(deck), "-log", str(log), "-nocite"]
    if ranks > 1:
        cmd = harness.mpirun_command(ranks) + cmd
    timing = out / f"timing.{run}"
    env = harness.lmp_env({"MGP_LAMMPS_PLAIN_PATH": args.plain_path, TIMING_ENV: str(timing)})
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    (out / f"stdout.{run}").write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        sys.stdout.write(res.stdout[-4000:] + res.stderr[-4000:])
        raise SystemExit(f"lmp failed for backend {backend}, engine {engine} (exit {res.returncode})")
    perf = re.findall(r"Performance: ([0-9.eE+-]+) ns/day, [0-9.eE+-]+ hours/ns, ([0-9.eE+-]+) timesteps/s", res.stdout)
    loops = re.findall(r"Loop time of ([0-9.eE+-]+) on \d+ procs for (\d+) steps with (\d+) atoms", res.stdout)
    num = r"[-+0-9.eE]+"
    rows = re.findall(rf"^\s*\d+\s+{num}\s+{num}\s+({num})\s+{num}\s*$", res.stdout, flags=re.M)
    etot = [float(m) for m in rows]
    if len(perf) < 2 or len(loops) < 2:
        raise SystemExit(f"could not read LAMMPS timings for {run}; see {out}/stdout.{run}")
    natoms = int(loops[-1][2])
    ms_per_step = 1000.0 * float(loops[-1][0]) / int(loops[-1][1])
    return {
        "backend": backend,
        "engine": engine,
        "ranks": ranks,
        "plain_path": args.plain_path,
        "atoms": natoms,
        "ns_per_day": float(perf[-1][0]),
        "timesteps_per_s": float(perf[-1][1]),
        "ms_per_step": ms_per_step,
        **_step_split(timing, ranks, int(loops[-1][1]), ms_per_step),
        "warmup_loop_s": float(loops[0][0]),
        "timed_steps": int(loops[-1][1]),
        "etotal_drift_ev_per_atom": (abs(etot[-1] - etot[0]) / natoms) if len(etot) > 1 else None,
        "export_s": round(export_s, 1),
        "lmp_wall_s": round(wall, 1),
    }


def _step_split(timing: Path, ranks: int, steps: int, ms_per_step: float) -> dict[str, Any]:
    """What the wrapper's per-call timer (``MGP_LAMMPS_TIMING``) measured over the timed
    run's ``steps`` force calls (its last ones), next to LAMMPS' own ms/step from the
    same run: the model call, the wrapper's host work around it, and the step overhead
    (ms/step minus the model call: wrapper plus LAMMPS' neighbour lists, communication
    and integration). Several ranks: the slowest rank's model time (the others wait)."""
    files = [timing] if ranks == 1 else [Path(f"{timing}.rank{r}") for r in range(ranks)]
    model, host, counts = [], [], []
    for f in files:
        counts.append([list(layer) for layer in read_layer_counts(f)[-1]])
        calls = read_timings(f)[-steps:]
        if len(calls) < steps:
            raise SystemExit(f"{f} holds {len(calls)} force calls, fewer than the {steps} timed steps")
        model.append(1000.0 * sum(m for _, m in calls) / steps)
        host.append(1000.0 * sum(t - m for t, m in calls) / steps)
    worst = max(range(len(files)), key=lambda r: model[r])
    overhead = ms_per_step - model[worst]
    return {
        "model_ms_per_call": round(model[worst], 3),
        "wrapper_host_ms_per_call": round(host[worst], 3),
        "step_overhead_ms": round(overhead, 3),
        "step_overhead_fraction": round(overhead / ms_per_step, 4),
        "model_ms_per_rank": [round(v, 3) for v in model],
        "layer_counts_per_rank": counts,
    }


def _core_split(args: argparse.Namespace, model_path: Path, model_file: Path | None, repeats: int = 20) -> dict[str, float]:
    """Milliseconds per call of the model core alone, as TorchScript and in eager mode,
    and as the compiled package of an aotinductor export ``model_file`` (if given),
    on graphs of the benchmark's box: LAMMPS' ms/step minus these is what the wrapper and
    LAMMPS add. Three rattled copies are cycled so that the edge count changes between
    calls, as it does in MD."""
    import torch
    from ase.build import bulk
    from ase.neighborlist import neighbor_list

    from ._core import MACEEdgeCore, full_graph_sizes, script_core

    dev = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    model = torch.load(model_path, map_location="cpu", weights_only=False).to(dtype).eval()
    scripted = script_core(copy.deepcopy(model)).to(dev)  # what the export writes
    eager = MACEEdgeCore(model).to(dev).eval()
    graphs = []
    for seed in range(3):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(args.cells)
        atoms.rattle(0.05, seed=seed)
        i, j, d = neighbor_list("ijD", atoms, args.r_max)
        graphs.append((
            torch.as_tensor(d, dtype=torch.float64, device=dev),
            torch.as_tensor(np.stack([i, j]), dtype=torch.int64, device=dev),
            torch.zeros(len(atoms), dtype=torch.int64, device=dev),
            *full_graph_sizes(int(model.num_interactions), len(atoms), len(i)),
        ))  # fmt: skip

    def per_call_ms(core: Any) -> float:
        for k in range(6):  # TorchScript's profiling executor specialises over the first calls
            core(*graphs[k % 3])
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for k in range(repeats):
            core(*graphs[k % 3])
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return 1000.0 * (time.perf_counter() - t0) / repeats

    times = {"scripted": round(per_call_ms(scripted), 3), "eager": round(per_call_ms(eager), 3)}
    if model_file is not None:
        from .mliap_unified import load_model_file

        times["aotinductor"] = round(per_call_ms(load_model_file(str(model_file))._core.to(dev)), 3)
    return times


def main(argv: list[str] | None = None) -> int:
    from .mliap_unified import ENGINES

    p = argparse.ArgumentParser(prog="python -m lammps_interface.md_benchmark", description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", nargs="+", default=["e3nn", "grid"])
    p.add_argument("--cells", type=int, default=8, help="fcc cubic cells per side (8: 2048 atoms)")
    p.add_argument("--channels", type=int, default=128)
    p.add_argument("--max-ell", type=int, default=3)
    p.add_argument("--hidden-l", type=int, default=1)
    p.add_argument("--r-max", type=float, default=5.0)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--no-exactness", action="store_true", help="skip the float64 LAMMPS-vs-ASE check")
    p.add_argument("--engine", nargs="+", choices=ENGINES, default=["torchscript"],
                   help="how LAMMPS runs the core; several: one LAMMPS run each, in this order, per backend")
    p.add_argument("--no-core-split", action="store_true",
                   help="skip timing the model core alone (scripted, eager and with --engine aotinductor compiled)")
    p.add_argument("--ranks", type=int, nargs="+", default=[1],
                   help="MPI ranks (mpirun -np RANKS lmp ...); several: one LAMMPS run each, in this order")
    p.add_argument("--plain-path", choices=("auto", "ids", "ghosts"), default="auto",
                   help="MGP_LAMMPS_PLAIN_PATH: the one-rank atom-ID route or the several-ranks ghost route")
    p.add_argument("--out", default="lammps_md_benchmark")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    import torch

    import mace_gaunt_plugin as mgp

    missing = [b for b in args.backends if b not in mgp.available_backends()]
    if missing:
        raise SystemExit(f"backends {missing} are not registered here (have {mgp.available_backends()})")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no CUDA GPU")
    info: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "lammps_malloc": malloc_mode(),  # MGP_LAMMPS_MALLOC in the LAMMPS runs (lammps_interface._malloc)
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "results": [],
        "exactness_float64": {},
    }
    for backend in args.backends:
        for engine in args.engine:
            if not args.no_exactness:
                err = _exactness(backend, engine, args, out)
                info["exactness_float64"][f"{backend}/{engine}"] = err
                print(f"[{backend}/{engine}] LAMMPS vs ASE (float64, model on {args.device}): {err}", flush=True)
            for ranks in args.ranks:
                r = _md(backend, engine, ranks, args, out)
                info["results"].append(r)
                print(f"[{backend}/{engine}/{ranks} ranks] {r}", flush=True)
                (out / "lammps_md_benchmark.json").write_text(json.dumps(info, indent=2))
        if not args.no_core_split:
            aot = out / f"{backend}_aotinductor.mliap" if "aotinductor" in args.engine else None
            split = _core_split(args, out / f"{backend}.model", aot)
            for r in info["results"]:
                if r["backend"] == backend:
                    r["core_ms"] = split
            print(f"[{backend}] model core alone, ms per call: {split}", flush=True)
            (out / "lammps_md_benchmark.json").write_text(json.dumps(info, indent=2))
    print(f"\nLAMMPS MD, {info['device']}, {args.dtype}, model on {args.device}, "
          f"{args.channels} channels, hidden L={args.hidden_l}, max_ell {args.max_ell}, r_max {args.r_max}")
    print(f"plain path {args.plain_path}")
    print(f"{'backend':8s} {'engine':12s} {'ranks':>5s} {'atoms':>6s} {'ns/day':>9s} {'ms/step':>9s} {'model ms':>9s} {'overhead':>9s} "
          f"{'drift eV/atom':>14s} {'core ms (script)':>17s} {'core ms (eager)':>16s} {'core ms (aot)':>14s}")
    for r in info["results"]:
        drift = "-" if r["etotal_drift_ev_per_atom"] is None else f"{r['etotal_drift_ev_per_atom']:.2e}"
        core = r.get("core_ms", {})
        print(f"{r['backend']:8s} {r['engine']:12s} {r['ranks']:5d} {r['atoms']:6d} {r['ns_per_day']:9.4f} {r['ms_per_step']:9.2f} "
              f"{r['model_ms_per_call']:9.2f} {100 * r['step_overhead_fraction']:8.1f}% {drift:>14s} "
              f"{core.get('scripted', float('nan')):17.2f} {core.get('eager', float('nan')):16.2f} "
              f"{core.get('aotinductor', float('nan')):14.2f}")
    for r in info["results"]:
        layers = "; ".join(f"rank {k}: " + " ".join("{}/{}/{}".format(*c) for c in rank) for k, rank in enumerate(r["layer_counts_per_rank"]))
        print(f"{r['backend']:8s} {r['engine']:12s} {r['ranks']:5d} per layer, nodes read/updated/edges: {layers}")
    worst = max((max(v.values()) for v in info["exactness_float64"].values()), default=0.0)
    if worst > 1e-8:
        print(f"EXACTNESS CHECK FAILED: max relative deviation {worst:.2e} > 1e-8")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The lean conv's Triton kernels compiled for real GPUs, without one: registers, spills,
shared memory and the occupancy they allow.

Which launches: the Gaunt-family conv (``grid`` and ``gaunt`` engines) is built for each
model configuration with ``kernel="torch"`` and run on a tiny graph through a forward, a
first derivative kept differentiable (forces) and a second derivative (force training)
while a ``TorchDispatchMode`` records every ``mace_gaunt::quad_*`` call; the Triton family
takes the same calls with the same shapes, and
:func:`mace_gaunt_plugin.backends._conv_triton.launch_config` (the launcher's own choice of
blocks and warps) turns each into the kernel specialisation a GPU would compile. A MACE
model's convs take node features of degrees ``0`` (first interaction) and ``0..L`` (later
ones) and edge harmonics ``0..max_ell``.

How: ``triton.compile(ASTSource(kernel, signature, constexprs), target=GPUTarget("cuda",
arch, 32))`` with Triton's bundled ``ptxas`` (no GPU, no CUDA toolkit), pointers marked
16-byte aligned as torch allocates them (the JIT adds the same hint; it adds one for
``C``/``P`` divisible by 16 too, which is left out here). Registers and spills come from
``ptxas -v`` (the log Triton's compile writes with ``dump_ptxas_log``), shared memory from
the kernel's metadata. Occupancy per SM from the per-SM limits below (registers allocated
per warp in units of 256, shared memory with 1 KB reserved per block).

Presets: ``gpu`` is ``bench_model.py --preset gpu`` (its hidden L and channel cases, read
from that script, ``max_ell`` 3, the default ``conv_weights="l2"``); ``supported`` adds
``l1l2``, ``path`` and ``node_path`` and ``max_ell`` 1-3 at 128 channels (hundreds of compiles).

Usage::

    python benchmarks/triton_compile.py                       # --preset gpu, ~2 min on one core
    python benchmarks/triton_compile.py --preset supported --archs 90 --dtypes float64
    python benchmarks/triton_compile.py --render-only benchmarks/results/triton_compile.json
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULTS = Path(__file__).resolve().parent / "results"
ARCHS = (80, 90)
DTYPES = ("float32", "float64")
BACKENDS = ("grid", "gaunt")

#: per-SM limits: registers, shared memory per SM and per block (bytes), warps, blocks
SM_LIMITS: dict[int, dict[str, int]] = {
    80: dict(regs=65536, smem=167936, smem_block=166912, warps=64, blocks=32),  # A100
    90: dict(regs=65536, smem=233472, smem_block=232448, warps=64, blocks=32),  # H100 / H200
}
GPU_NAMES = {80: "A100", 90: "H100/H200"}
SMEM_RESERVED = 1024  # per block, sm_80 and sm_90


# --------------------------------------------------------------------------- which launches


def gpu_preset_models() -> list[dict[str, Any]]:
    """The conv configurations of ``bench_model.py --preset gpu`` (read from that script)."""
    spec = importlib.util.spec_from_file_location("_bench_model_for_triton", Path(__file__).resolve().parent / "bench_model.py")
    bm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bm)
    preset = bm.PRESETS["gpu"]
    cases = bm.cases_of(preset["base"], preset["scans"], bm.SCAN_KEYS)
    max_ell = bm.model_config(dict(preset["base"]), 1.0)["max_ell"]
    pairs = sorted({(c["L"], c["channels"]) for c in cases})
    return [dict(backend=b, mode="l2", L=L, max_ell=max_ell, channels=c) for b in BACKENDS for L, c in pairs]


def supported_models(channels: Sequence[int] = (128,)) -> list[dict[str, Any]]:
    """Hidden L 0-3, max_ell 1-3, every ``conv_weights``, both engines."""
    from mace_gaunt_plugin.backends._sphere_sites import CONV_WEIGHTS

    return [dict(backend=b, mode=m, L=L, max_ell=e, channels=c)
            for b in BACKENDS for m in CONV_WEIGHTS for L in range(4) for e in (1, 2, 3) for c in channels]  # fmt: skip


PRESETS = {"gpu": gpu_preset_models, "supported": supported_models}


def _conv(backend: str, mode: str, node_l: int, max_ell: int, channels: int) -> Any:
    from e3nn import o3

    import mace_gaunt_plugin as mgp

    be = mgp.get_backend(backend)
    opts = be.resolve_options({"conv_weights": mode, "kernel": "torch"})
    node = o3.Irreps([(channels, (l, (-1) ** l)) for l in range(node_l + 1)])
    edge = o3.Irreps.spherical_harmonics(max_ell)
    target = o3.Irreps([(channels, (l, (-1) ** l)) for l in range(max_ell + 1)])
    return be.build_conv(node, edge, be.conv_irreps_out(node, edge, target, opts), None, opts), node, edge


def recorded_calls(backend: str, mode: str, node_l: int, max_ell: int, channels: int) -> set[tuple[str, tuple, int]]:
    """``(op, shapes of the first three tensors, j_out)`` of every ``quad_*`` call of one
    conv's forward, forces and force training (second derivative), on a 3-node graph."""
    import torch
    from e3nn import o3
    from torch.utils._python_dispatch import TorchDispatchMode

    calls: set[tuple[str, tuple, int]] = set()

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            name = func.name()
            if name.startswith("mace_gaunt::quad_"):
                tensors = [a for a in args if isinstance(a, torch.Tensor)]
                assert all(t.dtype == torch.long for t in tensors[3:5]), "edge indices are int64 (the compile signature says so)"
                j_out = int(args[5]) if len(args) > 5 else 1
                calls.add((name.split("::")[1], tuple(tuple(t.shape) for t in tensors[:3]), j_out))
            return func(*args, **(kwargs or {}))

    with torch.random.fork_rng():
        torch.manual_seed(0)
        conv, node, edge = _conv(backend, mode, node_l, max_ell, channels)
        edge_index = torch.tensor([[0, 1, 2, 0], [1, 2, 0, 0]])
        x1 = torch.randn(3, node.dim, requires_grad=True)
        vec = torch.randn(4, 3, requires_grad=True)
        w = torch.randn(4, conv.weight_numel, requires_grad=True)
        with Record():
            x2 = o3.spherical_harmonics(edge, vec, normalize=True, normalization="component")
            y = conv(x1, x2, w, edge_index)
            grads = torch.autograd.grad((y**2).sum(), [x1, vec, w], create_graph=True)
            torch.autograd.grad(sum((g**2).sum() for g in grads), [x1, vec, w])
    return calls


def model_launches(models: Iterable[dict[str, Any]]) -> dict[Any, list[str]]:
    """``{Launch: [model labels]}`` for these model configurations (node degrees 0 and 0..L)."""
    from mace_gaunt_plugin.backends._conv_triton import launch_config

    out: dict[Any, list[str]] = {}
    for m in models:
        label = f"{m['backend']} {m['mode']} L={m['L']} max_ell={m['max_ell']} C={m['channels']}"
        for node_l in sorted({0, m["L"]}):
            for op, shapes, j_out in recorded_calls(m["backend"], m["mode"], node_l, m["max_ell"], m["channels"]):
                labels = out.setdefault(launch_config(op, shapes, j_out), [])
                if label not in labels:
                    labels.append(label)
    return out


# --------------------------------------------------------------------------- compile


def signature(kernel: str, dtype: str) -> dict[str, str]:
    """The ``triton.compile`` signature of ``kernel`` (constexprs added by the caller)."""
    from mace_gaunt_plugin.backends._conv_triton import KERNEL_ARGS

    ptr = {"float32": "*fp32", "float64": "*fp64"}[dtype]
    sig = {name: (ptr if role == "f" else "*i64") for name, role in KERNEL_ARGS[kernel]}
    return dict(sig, C="i32", P="i32")


def occupancy(arch: int, regs: int, warps: int, shared: int) -> dict[str, Any]:
    """Resident blocks and warps per SM these resources allow, and what limits them."""
    lim = SM_LIMITS[arch]
    per_warp = -(-regs * 32 // 256) * 256
    by = {
        "registers": lim["regs"] // (per_warp * warps) if regs else lim["blocks"],
        "shared": lim["smem"] // (shared + SMEM_RESERVED) if shared <= lim["smem_block"] else 0,
        "warps": lim["warps"] // warps,
        "blocks": lim["blocks"],
    }
    blocks = min(by.values())
    return dict(blocks_per_sm=blocks, warps_per_sm=blocks * warps, limited_by=min(by, key=lambda k: by[k]))


def compile_launch(launch: Any, dtype: str, arch: int) -> dict[str, Any]:
    """Compile one launch for ``sm_<arch>``; raises what Triton or ptxas raise."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from mace_gaunt_plugin.backends._conv_triton import KERNEL_ARGS, jit_kernels

    fn = jit_kernels()[launch.kernel]
    constexprs = dict(launch.constexprs)
    sig = dict(signature(launch.kernel, dtype), **{k: "constexpr" for k in constexprs})
    attrs = {(i,): [["tt.divisibility", 16]] for i in range(len(KERNEL_ARGS[launch.kernel]))}  # torch's allocations are aligned
    src = ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs)
    log = io.StringIO()
    t0 = time.perf_counter()
    with triton.knobs.nvidia.scope(), triton.knobs.compilation.scope(), contextlib.redirect_stdout(log):
        triton.knobs.nvidia.dump_ptxas_log = True  # ptxas -v: registers and spills
        triton.knobs.compilation.always_compile = True  # a cache hit would skip ptxas and its log
        kernel = triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": launch.num_warps})
    text = log.getvalue()
    regs = re.search(r"Used (\d+) registers", text)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    stack = re.search(r"(\d+) bytes stack frame", text)
    if regs is None or spills is None:
        raise RuntimeError(f"no ptxas -v figures in the compile log of {launch}:\n{text}")
    row = dict(
        kernel=launch.kernel, constexprs=constexprs, num_warps=launch.num_warps, arch=arch, dtype=dtype,
        registers=int(regs.group(1)), spill_stores=int(spills.group(1)), spill_loads=int(spills.group(2)),
        stack_bytes=int(stack.group(1)) if stack else 0, shared_bytes=int(kernel.metadata.shared),
        compile_seconds=round(time.perf_counter() - t0, 2),
    )  # fmt: skip
    row.update(occupancy(arch, row["registers"], launch.num_warps, row["shared_bytes"]))
    return row


# --------------------------------------------------------------------------- study


def run(preset: str, archs: Sequence[int], dtypes: Sequence[str], log: bool = True) -> dict[str, Any]:
    import torch
    import triton

    from _common import machine_stamp

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    models = PRESETS[preset]()
    launches = model_launches(models)
    if log:
        print(f"[triton_compile] {len(models)} model configurations -> {len(launches)} launches; "
              f"{len(launches) * len(archs) * len(dtypes)} compiles", flush=True)  # fmt: skip
    rows = []
    order = sorted(launches, key=lambda l: (l.kernel, l.constexprs))
    for arch in archs:
        for dtype in dtypes:
            for launch in order:
                row = compile_launch(launch, dtype, arch)
                row["models"] = launches[launch]
                rows.append(row)
            if log:
                print(f"[triton_compile {time.perf_counter() - t0:5.0f}s] sm_{arch} {dtype} done", flush=True)
    return {
        "study": "triton_compile",
        "preset": preset,
        "models": models,
        "archs": list(archs),
        "dtypes": list(dtypes),
        "triton": triton.__version__,
        "rows": rows,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "stamp": machine_stamp(["cpu"]),
    }


def _cx(constexprs: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in constexprs.items())


def render_markdown(result: dict[str, Any]) -> str:
    """The committed table, from the JSON."""
    from _common import stamp_line

    rows = result["rows"]
    lines = [
        f"# Triton conv kernels compiled for GPUs (preset {result['preset']}, Triton {result['triton']})",
        "",
        f"Stamp: {stamp_line(result['stamp'])}. Compiled on the CPU with Triton's bundled ptxas (no GPU); "
        f"{len(result['models'])} model configurations, {len(rows)} compiles in {result['wall_seconds']:.0f} s.",
        "",
        "Registers per thread and spills from `ptxas -v`, shared memory from the compiled kernel's metadata. "
        "Occupancy: resident blocks (and warps) per SM the kernel's registers, shared memory and warps allow "
        "(sm_80: A100; sm_90: H100/H200, 65536 registers, 228 KB shared memory, 64 warps, 32 blocks per SM). "
        "Command: `python benchmarks/triton_compile.py --preset " + result["preset"] + "`.",
        "",
        "## Summary per target and kernel",
        "",
        "| target | dtype | kernel | launches | max registers | max spill stores (B) | max shared (B) | min blocks/SM | min warps/SM |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["arch"], r["dtype"], r["kernel"]) for r in rows})
    for arch, dtype, kernel in keys:
        sel = [r for r in rows if (r["arch"], r["dtype"], r["kernel"]) == (arch, dtype, kernel)]
        lines.append(
            f"| sm_{arch} ({GPU_NAMES[arch]}) | {dtype} | {kernel} | {len(sel)} | {max(r['registers'] for r in sel)} | "
            f"{max(r['spill_stores'] for r in sel)} | {max(r['shared_bytes'] for r in sel)} | "
            f"{min(r['blocks_per_sm'] for r in sel)} | {min(r['warps_per_sm'] for r in sel)} |"
        )
    lines += ["", "## Every launch", "",
              "| target | dtype | kernel | constexprs | warps | registers | spill stores / loads (B) | shared (B) | blocks/SM | warps/SM | limited by | used by |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        used = r["models"][0] + (f" (+{len(r['models']) - 1})" if len(r["models"]) > 1 else "")
        lines.append(
            f"| sm_{r['arch']} | {r['dtype']} | {r['kernel']} | {_cx(r['constexprs'])} | {r['num_warps']} | {r['registers']} | "
            f"{r['spill_stores']} / {r['spill_loads']} | {r['shared_bytes']} | {r['blocks_per_sm']} | {r['warps_per_sm']} | "
            f"{r['limited_by']} | {used} |"
        )
    return "\n".join(lines) + "\n"


def write_outputs(result: dict[str, Any], stem: Path) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1, sort_keys=True, default=str) + "\n")
    stem.with_suffix(".md").write_text(render_markdown(json.loads(stem.with_suffix(".json").read_text())))
    print(f"[triton_compile] wrote {stem}.json/.md", flush=True)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="gpu")
    p.add_argument("--archs", default="80,90", help="compute capabilities, e.g. 80,90")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--out", type=Path, default=None, help="output stem (default benchmarks/results/triton_compile[_<preset>])")
    p.add_argument("--render-only", type=Path, default=None, metavar="JSON", help="regenerate the .md from a result JSON")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    if args.render_only is not None:
        write_outputs(json.loads(args.render_only.read_text()), args.render_only.with_suffix(""))
        return
    archs = [int(a) for a in args.archs.split(",")]
    dtypes = args.dtypes.split(",")
    bad = [a for a in archs if a not in SM_LIMITS] + [d for d in dtypes if d not in DTYPES]
    if bad:
        raise SystemExit(f"unsupported --archs/--dtypes values {bad} (archs {sorted(SM_LIMITS)}, dtypes {DTYPES})")
    result = run(args.preset, archs, dtypes)
    write_outputs(result, args.out or RESULTS / ("triton_compile" if args.preset == "gpu" else f"triton_compile_{args.preset}"))


if __name__ == "__main__":
    main()

"""Where does the 2D-Fourier Gaunt product (backend ``gaunt``) pay off?

Part 1, the raw product: ``C`` channels of ``x, y`` (degrees ``0..L``) to their product
(degrees ``0..L``), ``--samples`` rows of ``C`` channels each, for L = 1..8, timed forward
and forward+backward (gradients w.r.t. ``x`` and ``y``) in the same run for

* ``gaunt``: :class:`~mace_gaunt_plugin.backends._fourier_ops.FourierGauntProduct` as the
  ``gaunt`` backend's engine runs it (sparse change of basis as a GEMM, inverse FFTs,
  pointwise product on the ``theta <= pi`` half of the torus, FFTs, half-range projection);
* ``grid``: the ``grid`` backend's engine (Gauss-Legendre x uniform-phi grid, three GEMMs);
* ``e3nn``: ``o3.TensorProduct`` with channelwise ``uuu`` instructions for every Gaunt path
  (``l1 + l2 + l3`` even, triangle rule; no weights), i.e. the same products with
  Clebsch-Gordan coefficients, in e3nn's ``mul_ir`` layout.

All three compute a channelwise product of natural-parity features; ``gaunt`` and ``grid``
compute exactly the same numbers (checked here), e3nn differs by a constant per path.

Part 2, the MACE sites: ``bench_sites.py`` (conv and product blocks on fcc Cu) with
``--backends e3nn,grid,gaunt``, same run.

Usage::

    python benchmarks/bench_fourier.py                    # CPU (+ CUDA when present)
    python benchmarks/bench_fourier.py --device cuda --skip-sites
    python benchmarks/bench_fourier.py --L 1,2,3 --samples 16 --skip-sites   # a quick look

Results: ``benchmarks/results/fourier_raw_{device}.json``/``.md`` and, from part 2,
``fourier_sites_{device}.json``/``.md``.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as bc  # noqa: E402  (imports mace before e3nn)
import torch  # noqa: E402
from e3nn import o3  # noqa: E402

from mace_gaunt_plugin.backends._fourier_ops import FourierGauntProduct  # noqa: E402
from mace_gaunt_plugin.backends._sphere_sites import EngineSpec  # noqa: E402
from mace_gaunt_plugin.backends.grid_backend import GridEngine  # noqa: E402

RAW_BACKENDS = ("e3nn", "grid", "gaunt")


class GridProduct(torch.nn.Module):
    """The grid engine's product of two degree-``<= L`` functions, projected to ``<= L``."""

    def __init__(self, lmax: int) -> None:
        super().__init__()
        degrees = tuple(range(lmax + 1))
        self.engine = GridEngine(EngineSpec(degrees, degrees, degrees, 2 * lmax))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.engine.from_points(self.engine.to_points(x) * self.engine.to_points(y))


def e3nn_product(lmax: int, channels: int) -> o3.TensorProduct:
    """Channelwise CG product over the Gaunt paths (natural parity in and out)."""
    irreps = o3.Irreps([(channels, (l, (-1) ** l)) for l in range(lmax + 1)])
    paths = [
        (i, j, k, "uuu", False)
        for i in range(lmax + 1)
        for j in range(lmax + 1)
        for k in range(lmax + 1)
        if abs(i - j) <= k <= i + j and (i + j + k) % 2 == 0
    ]
    return o3.TensorProduct(irreps, irreps, irreps, paths)


def raw_inputs(name: str, samples: int, channels: int, lmax: int, device: str, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    k = (lmax + 1) ** 2
    shape = (samples, channels * k) if name == "e3nn" else (samples, channels, k)
    dtype = torch.get_default_dtype()
    x = torch.randn(*shape, generator=gen, dtype=dtype).to(device).requires_grad_()
    y = torch.randn(*shape, generator=gen, dtype=dtype).to(device).requires_grad_()
    return x, y


def build_raw(name: str, lmax: int, channels: int) -> torch.nn.Module:
    if name == "gaunt":
        return FourierGauntProduct(lmax, lmax, lmax, half=True)
    if name == "grid":
        return GridProduct(lmax)
    return e3nn_product(lmax, channels)


def check_gaunt_equals_grid(device: str) -> float:
    """Largest difference between the two engines' products (float64, L = 3)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        gen = torch.Generator().manual_seed(0)
        x, y = (torch.randn(4, 8, 16, generator=gen, dtype=torch.float64).to(device) for _ in range(2))
        a = FourierGauntProduct(3, 3, 3, half=True).to(device)(x, y)
        b = GridProduct(3).to(device)(x, y)
        return float((a - b).abs().max())
    finally:
        torch.set_default_dtype(old)


def run_raw(args: argparse.Namespace, device: str) -> dict[str, Any]:
    cpu = device == "cpu"
    samples = args.cpu_samples if cpu else args.samples
    repeats = args.cpu_repeats if cpu else args.repeats
    warmup = args.cpu_warmup if cpu else args.warmup
    print(f"[{device}] raw product: {samples} samples x {args.channels} channels; repeats {repeats}, warmup {warmup}", flush=True)
    diff = check_gaunt_equals_grid(device)
    if diff > 1e-10:
        raise SystemExit(f"gaunt and grid products differ by {diff:.2e} on {device}: not benchmarking a wrong kernel")
    records = []
    for lmax in args.L:
        for name in args.raw_backends:
            gen = torch.Generator().manual_seed(lmax)
            module = build_raw(name, lmax, args.channels).to(device)
            x, y = raw_inputs(name, samples, args.channels, lmax, device, gen)
            cot = torch.randn(module(x, y).shape, generator=gen, dtype=x.dtype).to(device)

            def run(backward: bool, module: Callable = module, x: torch.Tensor = x, y: torch.Tensor = y, cot: torch.Tensor = cot) -> Any:
                out = module(x, y)
                return torch.autograd.grad(out, (x, y), cot) if backward else out

            for backward in (False, True):
                rec: dict[str, Any] = {"device": device, "L": lmax, "backend": name, "pass": "fwd+bwd" if backward else "fwd", "samples": samples}
                try:
                    rec.update(bc.time_fn(lambda: run(backward), device, warmup=warmup, repeats=repeats))
                except torch.cuda.OutOfMemoryError:
                    rec["error"] = "OOM"
                records.append(rec)
                shown = f"{rec['median_ms']:.2f} ms" if "median_ms" in rec else rec["error"]
                print(f"  L={lmax} {name:>6} {rec['pass']:>7}: {shown}", flush=True)
            del module, x, y, cot
            gc.collect()
            if not cpu:
                torch.cuda.empty_cache()
    return {"samples": samples, "repeats": repeats, "warmup": warmup, "gaunt_minus_grid_max_abs": diff, "records": records}


def render_raw(device: str, result: dict[str, Any], stamp: dict[str, Any], args: argparse.Namespace) -> str:
    rows: dict[int, dict[str, Any]] = {}
    for r in result["records"]:
        row = rows.setdefault(r["L"], {"L": r["L"]})
        row[f"{r['backend']} {r['pass']}"] = r.get("median_ms", r.get("error"))
    for row in rows.values():
        for p in ("fwd", "fwd+bwd"):
            times = {b: row.get(f"{b} {p}") for b in args.raw_backends}
            valid = {b: t for b, t in times.items() if isinstance(t, float)}
            if valid:
                row[f"fastest {p}"] = min(valid, key=valid.get)
        g, e = row.get("gaunt fwd+bwd"), row.get("e3nn fwd+bwd")
        if isinstance(g, float) and isinstance(e, float):
            row["e3nn/gaunt"] = e / g
        g2 = row.get("grid fwd+bwd")
        if isinstance(g, float) and isinstance(g2, float):
            row["gaunt/grid"] = g / g2
    cols = [("L", "L")]
    for p in ("fwd", "fwd+bwd"):
        cols += [(f"{b} {p}", f"{b} {p} ms") for b in args.raw_backends]
    cols += [("fastest fwd+bwd", "fastest (fwd+bwd)"), ("e3nn/gaunt", "e3nn / gaunt"), ("gaunt/grid", "gaunt / grid")]
    head = [
        f"# Raw Gaunt product on {device}",
        "",
        f"{result['samples']} samples x {args.channels} channels, degrees 0..L times 0..L -> 0..L, {args.dtype}; "
        f"median of {result['repeats']} after {result['warmup']} warm-up; ms. fwd+bwd = gradients w.r.t. both inputs. "
        "gaunt = 2D Fourier route with torch.fft (half torus), grid = Gauss-Legendre grid GEMMs, "
        "e3nn = o3.TensorProduct, channelwise 'uuu' over the Gaunt paths (CG coefficients). "
        f"gaunt and grid outputs agree to {result['gaunt_minus_grid_max_abs']:.1e} (float64, L = 3).",
        "",
        f"Machine: {bc.stamp_line(stamp)}",
        "",
    ]
    return "\n".join(head) + bc.markdown_table([rows[k] for k in sorted(rows)], cols) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    bc.add_timing_arguments(p)
    p.add_argument("--L", type=bc.comma_list(int), default=list(range(1, 9)))
    p.add_argument("--raw-backends", type=bc.comma_list(choices=RAW_BACKENDS), default=list(RAW_BACKENDS))
    p.add_argument("--channels", type=int, default=128)
    p.add_argument("--samples", type=int, default=512, help="rows of C channels on GPU")
    p.add_argument("--cpu-samples", type=int, default=32, help="rows of C channels on CPU")
    p.add_argument("--skip-sites", action="store_true", help="only the raw product")
    p.add_argument("--sites-args", default="", help="extra arguments for bench_sites.py, e.g. '--hidden-L 1,2 --cpu-cells 3'")
    args = p.parse_args(argv)
    bc.apply_torch_settings(args)
    devices = bc.devices_from_arg(args.device)
    for device in devices:
        stamp = bc.machine_stamp([device])
        result = run_raw(args, device)
        stamp["load_average_after"] = list(bc.os.getloadavg())
        payload = {"benchmark": "bench_fourier raw product", "device": device, "args": vars(args) | {"out": str(args.out)}, "machine": stamp, **result}
        md = render_raw(device, result, stamp, args)
        paths = bc.write_results(f"fourier_raw_{device}", payload, md, args.out)
        print(md)
        print("wrote", *paths, flush=True)
    if not args.skip_sites:
        import bench_sites

        sites_argv = ["--backends", "e3nn,grid,gaunt", "--name", "fourier_sites", "--device", ",".join(devices), "--dtype", args.dtype, "--out", str(args.out)]
        if args.threads:
            sites_argv += ["--threads", str(args.threads)]
        bench_sites.main(sites_argv + args.sites_args.split())


if __name__ == "__main__":
    main()

"""Time the two TP sites (conv, many-body product) of real MACE blocks, per backend.

For each device (CPU, and CUDA when present), hidden L and backend, builds MACE's
``RealAgnosticResidualInteractionBlock`` (the layer-1 conv: hidden irreps x edge
harmonics -> ``C x (0e..max_ell)``) and ``EquivariantProductBasisBlock`` (layer 0:
``C x (0e..max_ell)`` -> hidden irreps) with ``use_backend(name, **options)``, on the real
edges of fcc Cu (DESIGN.md section 5: 8x8x8 cubic cells = 2048 atoms, r_max 5, 128
channels, max_ell 3, correlation 3, fp32), and times

* ``conv``: the conv op with its gather and scatter (MACE's unfused
  ``conv_tp(x[sender]) + scatter_sum``, or the backend's fused call);
* ``conv block``: the whole interaction block (linear_up, radial MLP, conv, linear);
* ``product``: the product op (symmetric contraction or its replacement);
* ``product block``: the whole product block (product + linear);

forward (autograd recording, as in an energy+forces run) and forward+backward (gradients
of a fixed random cotangent w.r.t. the inputs, i.e. node features, edge harmonics and
conv weights, and the block's parameters).
Medians of ``--repeats`` after ``--warmup``; peak GPU memory of one call.

Usage::

    python benchmarks/bench_sites.py                                   # CPU (+ CUDA if present)
    python benchmarks/bench_sites.py --backends e3nn,grid,gaunt --device cuda
    python benchmarks/bench_sites.py --backends e3nn,grid:conv_weights=l1l2 --cpu-cells 3
    python benchmarks/bench_sites.py --backends grid,grid:conv_weights=node_path --baseline grid --sites conv

The CPU run uses ``--cpu-cells`` (default 4: 256 atoms) and ``--cpu-repeats``; the output
says so. Results: ``benchmarks/results/{--name}_{device}.json`` and ``.md``.
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

import mace_gaunt_plugin as mgp  # noqa: E402
from mace_gaunt_plugin.testing import atoms_to_batch  # noqa: E402

SITES = ("conv", "conv block", "product", "product block")


def _hidden(channels: int, lmax: int) -> o3.Irreps:
    return o3.Irreps([(channels, (l, (-1) ** l)) for l in range(lmax + 1)])


def make_system(cells: int, r_max: float, device: str, rattle: float = 0.05, num_bessel: int = 8) -> dict[str, Any]:
    """Real fcc-Cu edges: edge_index, component-normalised SH input, radial features."""
    from mace.modules.radial import BesselBasis, PolynomialCutoff
    from mace.modules.utils import get_edge_vectors_and_lengths

    atoms = bc.fcc_copper(cells, rattle=rattle)
    batch = atoms_to_batch([atoms], [29], r_max, device=device)
    vectors, lengths = get_edge_vectors_and_lengths(batch["positions"], batch["edge_index"], batch["shifts"])
    radial = BesselBasis(r_max, num_bessel).to(device)(lengths) * PolynomialCutoff(r_max, 5).to(device)(lengths)
    return {
        "n_atoms": len(atoms),
        "edge_index": batch["edge_index"],
        "vectors": vectors.detach(),
        "edge_feats": radial.detach(),
        "node_attrs": batch["node_attrs"],
    }


def build_blocks(spec: bc.BackendSpec, hidden: o3.Irreps, max_ell: int, correlation: int, avg_nb: float, num_bessel: int) -> tuple[Any, Any]:
    from mace import modules

    sh = o3.Irreps.spherical_harmonics(max_ell)
    channels = hidden[0].mul
    target = (sh * channels).sort()[0].simplify()
    with mgp.use_backend(spec.name, **spec.options):
        inter = modules.interaction_classes["RealAgnosticResidualInteractionBlock"](
            node_attrs_irreps=o3.Irreps("1x0e"),
            node_feats_irreps=hidden,
            edge_attrs_irreps=sh,
            edge_feats_irreps=o3.Irreps(f"{num_bessel}x0e"),
            target_irreps=target,
            hidden_irreps=hidden,
            avg_num_neighbors=avg_nb,
            radial_MLP=[64, 64, 64],
        )
        prod = modules.EquivariantProductBasisBlock(
            node_feats_irreps=target, target_irreps=hidden, correlation=correlation, num_elements=1, use_sc=True
        )
    return inter, prod


def site_callables(inter: Any, prod: Any, system: dict[str, Any], hidden: o3.Irreps, max_ell: int, seed: int = 0) -> dict[str, Callable[[bool], Any]]:
    """``{site: fn(backward)}``; each call runs the site once, with backward if asked."""
    from mace.tools.scatter import scatter_sum

    device = system["edge_index"].device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    n = system["n_atoms"]
    ei = system["edge_index"]
    dtype = torch.get_default_dtype()
    rnd = lambda *shape: torch.randn(*shape, generator=gen, dtype=dtype).to(device)  # noqa: E731
    sh_mod = o3.SphericalHarmonics(o3.Irreps.spherical_harmonics(max_ell), normalize=True, normalization="component").to(device)
    edge_attrs = sh_mod(system["vectors"]).detach().requires_grad_()
    node_feats = rnd(n, hidden.dim).requires_grad_()
    with torch.no_grad():
        x = inter.linear_up(node_feats)
        w = inter.conv_tp_weights(system["edge_feats"])
    x.requires_grad_()
    w.requires_grad_()
    fused = hasattr(inter, "conv_fusion")
    channels = hidden[0].mul
    a_feats = rnd(n, channels, (max_ell + 1) ** 2).requires_grad_()
    attrs = system["node_attrs"]

    def conv() -> torch.Tensor:
        if fused:
            return inter.conv_tp(x, edge_attrs, w, ei)
        return scatter_sum(inter.conv_tp(x[ei[0]], edge_attrs, w), ei[1], dim=0, dim_size=n)

    def conv_block() -> torch.Tensor:
        return inter(attrs, node_feats, edge_attrs, system["edge_feats"], ei)[0]

    def product() -> torch.Tensor:
        return prod.symmetric_contractions(a_feats, attrs)

    def product_block() -> torch.Tensor:
        return prod(a_feats, None, attrs)

    params = lambda m: [q for q in m.parameters() if q.requires_grad]  # noqa: E731
    grads_wrt = {  # inputs (forces) and parameters (training)
        "conv": [x, edge_attrs, w],
        "conv block": [node_feats, edge_attrs] + params(inter),
        "product": [a_feats] + params(prod.symmetric_contractions),
        "product block": [a_feats] + params(prod),
    }
    fns = {"conv": conv, "conv block": conv_block, "product": product, "product block": product_block}
    cotangent: dict[str, torch.Tensor] = {}

    def runner(site: str) -> Callable[[bool], Any]:
        def run(backward: bool) -> Any:
            out = fns[site]()
            if backward:
                if site not in cotangent:
                    cotangent[site] = rnd(*out.shape)
                return torch.autograd.grad(out, grads_wrt[site], cotangent[site], allow_unused=True)
            return out

        return run

    return {site: runner(site) for site in SITES}


def run_device(args: argparse.Namespace, device: str, specs: list[bc.BackendSpec]) -> dict[str, Any]:
    cpu = device == "cpu"
    cells = args.cpu_cells if cpu else args.cells
    repeats = args.cpu_repeats if cpu else args.repeats
    warmup = args.cpu_warmup if cpu else args.warmup
    system = make_system(cells, args.r_max, device, args.rattle)
    n_edges = int(system["edge_index"].shape[1])
    avg_nb = n_edges / system["n_atoms"]
    print(f"[{device}] fcc Cu {cells}^3 cubic cells: {system['n_atoms']} atoms, {n_edges} edges; repeats {repeats}, warmup {warmup}", flush=True)
    records = []
    for lmax in args.hidden_L:
        hidden = _hidden(args.channels, lmax)
        for spec in specs:
            torch.manual_seed(0)
            inter, prod = build_blocks(spec, hidden, args.max_ell, args.correlation, avg_nb, 8)
            inter, prod = inter.to(device), prod.to(device)
            fns = site_callables(inter, prod, system, hidden, args.max_ell)
            for site in args.sites:
                for backward in (False, True):
                    rec = {
                        "device": device,
                        "atoms": system["n_atoms"],
                        "edges": n_edges,
                        "hidden_L": lmax,
                        "backend": spec.label,
                        "site": site,
                        "pass": "fwd+bwd" if backward else "fwd",
                    }
                    try:
                        rec.update(bc.time_fn(lambda: fns[site](backward), device, warmup=warmup, repeats=repeats))
                    except torch.cuda.OutOfMemoryError:
                        rec["error"] = "OOM"
                    records.append(rec)
                    shown = f"{rec['median_ms']:.2f} ms" if "median_ms" in rec else rec["error"]
                    print(f"  L={lmax} {spec.label:>24} {site:>13} {rec['pass']:>7}: {shown}", flush=True)
            del inter, prod, fns
            gc.collect()
            if not cpu:
                torch.cuda.empty_cache()
    return {"system": {"cells": cells, "atoms": system["n_atoms"], "edges": n_edges, "repeats": repeats, "warmup": warmup}, "records": records}


def render(device: str, result: dict[str, Any], stamp: dict[str, Any], args: argparse.Namespace, baseline: str) -> str:
    by_key: dict[tuple, dict[str, Any]] = {}
    for r in result["records"]:
        key = (r["hidden_L"], r["site"], r["backend"])
        row = by_key.setdefault(key, {"hidden_L": r["hidden_L"], "site": r["site"], "backend": r["backend"]})
        row[r["pass"]] = r.get("median_ms", r.get("error"))
        if r["pass"] == "fwd+bwd":
            row["peak_gb"] = r.get("peak_gb")
    rows = list(by_key.values())
    for row in rows:
        base = by_key.get((row["hidden_L"], row["site"], baseline))
        if base and isinstance(base.get("fwd+bwd"), float) and isinstance(row.get("fwd+bwd"), float):
            row["speedup"] = base["fwd+bwd"] / row["fwd+bwd"]
    s = result["system"]
    head = [
        f"# TP site timings on {device}",
        "",
        f"fcc Cu {s['cells']}^3 cubic cells rattled by {args.rattle} A: {s['atoms']} atoms, {s['edges']} edges (r_max {args.r_max}), "
        f"{args.channels} channels, max_ell {args.max_ell}, correlation {args.correlation}, {args.dtype}; "
        f"median of {s['repeats']} after {s['warmup']} warm-up; ms.",
    ]
    if device == "cpu" and s["cells"] != args.cells:
        head.append(f"CPU run shrunk to {s['atoms']} atoms (DESIGN.md section 5's system is {4 * args.cells ** 3} atoms).")
    head += [
        "",
        f"Machine: {bc.stamp_line(stamp)}",
        "",
        "conv = layer-1 conv op incl. gather/scatter; conv block = whole RealAgnosticResidualInteractionBlock; "
        "product = layer-0 product op; product block = product + linear. "
        f"speedup = {baseline} fwd+bwd / this fwd+bwd.",
        "",
    ]
    cols = [("hidden_L", "hidden L"), ("site", "site"), ("backend", "backend"), ("fwd", "fwd ms"), ("fwd+bwd", "fwd+bwd ms"), ("speedup", "speedup"), ("peak_gb", "peak GB")]
    return "\n".join(head) + bc.markdown_table(rows, cols) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default="e3nn,grid", help="comma list of name[:key=value;key=value] (registered backends)")
    bc.add_timing_arguments(p)
    p.add_argument("--hidden-L", type=bc.comma_list(int), default=[1, 2, 3])
    p.add_argument("--sites", type=bc.comma_list(choices=SITES), default=list(SITES), help=f"subset of {','.join(SITES)}")
    p.add_argument("--cells", type=int, default=8, help="fcc cubic cells per side on GPU (8 -> 2048 atoms)")
    p.add_argument("--cpu-cells", type=int, default=4, help="cells per side on CPU (4 -> 256 atoms)")
    p.add_argument("--channels", type=int, default=128)
    p.add_argument("--max-ell", type=int, default=3)
    p.add_argument("--correlation", type=int, default=3)
    p.add_argument("--r-max", type=float, default=5.0)
    p.add_argument("--rattle", type=float, default=0.05, help="Gaussian displacement of the atoms (A); 0.05 gives DESIGN.md's edge count")
    p.add_argument("--name", default="sites", help="result files: results/{name}_{device}.json/.md")
    p.add_argument("--baseline", default=None, help="backend label the speedup column divides by (default: e3nn if listed, else the first)")
    args = p.parse_args(argv)
    bc.apply_torch_settings(args)
    specs = bc.parse_backend_specs(args.backends)
    baseline = "e3nn" if any(s.label == "e3nn" for s in specs) else specs[0].label
    if args.baseline is not None:
        if args.baseline not in [s.label for s in specs]:
            p.error(f"--baseline {args.baseline!r} is not one of the --backends labels {[s.label for s in specs]}")
        baseline = args.baseline
    devices = bc.devices_from_arg(args.device)
    for device in devices:
        stamp = bc.machine_stamp([device])
        result = run_device(args, device, specs)
        stamp["load_average_after"] = list(bc.os.getloadavg())
        payload = {"benchmark": "bench_sites", "device": device, "args": vars(args) | {"out": str(args.out)}, "machine": stamp, **result}
        md = render(device, result, stamp, args, baseline)
        paths = bc.write_results(f"{args.name}_{device}", payload, md, args.out)
        print(md)
        print("wrote", *paths)


if __name__ == "__main__":
    main()

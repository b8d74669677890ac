"""How much of MACE's symmetric contraction each Gaunt product basis can represent.

Fits the Gaunt-family product site (``power``, ``factors``, ``cp`` at several
``product_rank``) to MACE's own ``SymmetricContraction`` with random weights (one
element, ``--channels`` independent channels, ``A`` of degrees 0..``--lmax-in`` with
``A_lm ~ N(0, 1)``, output degrees 0..``--lmax-out``, ``--correlation``), by full-batch
Adam on ``--samples`` nodes, and reports the relative RMS error on as many held-out nodes
(per output degree and in all; median over ``--seeds`` target draws). The residual that
no rank removes is the part of MACE's class that pointwise (Gaunt) products cannot reach
(couplings through odd intermediate degrees, DESIGN.md 8.3); the ranks in between show
how fast ``cp`` closes the rest, which is how ``product_rank``'s default was chosen.

Usage::

    python benchmarks/bench_product_rank.py                     # ranks 1,2,4,8,16
    python benchmarks/bench_product_rank.py --ranks 1,4 --steps 500

Results: ``benchmarks/results/{--name}.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as bc  # noqa: E402  (imports mace before e3nn)
import torch  # noqa: E402
from e3nn import o3  # noqa: E402

import mace_gaunt_plugin as mgp  # noqa: E402


def _irreps(channels: int, lmax: int) -> o3.Irreps:
    return o3.Irreps([(channels, (l, (-1) ** l)) for l in range(lmax + 1)])


def _per_degree_error(pred: torch.Tensor, target: torch.Tensor, irreps: o3.Irreps) -> dict[str, float]:
    out, off = {}, 0
    for mul, ir in irreps:
        width = mul * ir.dim
        p, t = pred[:, off : off + width], target[:, off : off + width]
        out[f"L={ir.l}"] = float((p - t).norm() / t.norm())
        off += width
    out["all"] = float((pred - target).norm() / target.norm())
    return out


def fit(basis: str, rank: int, target: torch.nn.Module, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """Fit one product site to ``target``; returns held-out relative errors and the fit time."""
    irreps_in, irreps_out = _irreps(args.channels, args.lmax_in), _irreps(args.channels, args.lmax_out)
    backend = mgp.get_backend("grid")
    torch.manual_seed(seed)
    prod = backend.build_product(irreps_in, irreps_out, args.correlation, 1, backend.resolve_options({"product_basis": basis, "product_rank": rank}))
    gen = torch.Generator().manual_seed(1000 + seed)
    k_in = (args.lmax_in + 1) ** 2
    x_train, x_test = (torch.randn(args.samples, args.channels, k_in, generator=gen) for _ in range(2))
    attrs = torch.ones(args.samples, 1)
    with torch.no_grad():
        y_train, y_test = target(x_train, attrs), target(x_test, attrs)
    opt = torch.optim.Adam(prod.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    start = time.perf_counter()
    for _ in range(args.steps):
        opt.zero_grad()
        loss = ((prod(x_train, attrs) - y_train) ** 2).mean()
        loss.backward()
        opt.step()
        sched.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        test = _per_degree_error(prod(x_test, attrs), y_test, irreps_out)
        train = _per_degree_error(prod(x_train, attrs), y_train, irreps_out)["all"]
    n_params = sum(p.numel() for p in prod.parameters())
    return {"basis": basis, "rank": rank, "seed": seed, "test": test, "train_all": train, "params_per_channel": n_params // args.channels, "fit_s": seconds}


def render(rows: list[dict[str, Any]], stamp: dict[str, Any], args: argparse.Namespace, command: str) -> str:
    degrees = [f"L={l}" for l in range(args.lmax_out + 1)] + ["all"]
    table = []
    for label in dict.fromkeys(r["label"] for r in rows):
        mine = [r for r in rows if r["label"] == label]
        row = {"label": label, "params": mine[0]["params_per_channel"]}
        for d in degrees:
            row[d] = statistics.median(r["test"][d] for r in mine)
        row["train"] = statistics.median(r["train_all"] for r in mine)
        table.append(row)
    cols = [("label", "product basis"), ("params", "weights per channel")] + [(d, f"test rel. err {d}") for d in degrees] + [("train", "train rel. err")]
    head = [
        "# Gaunt product bases fitted to MACE's symmetric contraction",
        "",
        f"Target: MACE's `SymmetricContraction` (random weights, 1 element), A of degrees 0..{args.lmax_in} "
        f"(A_lm ~ N(0, 1)), output degrees 0..{args.lmax_out}, correlation {args.correlation}, {args.channels} channels; "
        f"fitted by full-batch Adam (lr {args.lr}, cosine, {args.steps} steps) on {args.samples} nodes, relative RMS error "
        f"on {args.samples} held-out nodes, median over {len(args.seeds)} target draws (seeds {args.seeds}). float64.",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {bc.stamp_line(stamp)}",
        "",
    ]
    return "\n".join(head) + bc.markdown_table(table, cols) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", type=bc.comma_list(int), default=[1, 2, 4, 8, 16])
    p.add_argument("--channels", type=int, default=4)
    p.add_argument("--lmax-in", type=int, default=3)
    p.add_argument("--lmax-out", type=int, default=1)
    p.add_argument("--correlation", type=int, default=3)
    p.add_argument("--samples", type=int, default=512)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--seeds", type=bc.comma_list(int), default=[0, 1, 2])
    p.add_argument("--name", default="product_rank_cpu")
    p.add_argument("--out", type=Path, default=bc.RESULTS)
    args = p.parse_args(argv)
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    command = "python benchmarks/bench_product_rank.py " + " ".join(argv if argv is not None else sys.argv[1:])
    from mace.modules.symmetric_contraction import SymmetricContraction

    variants = [("power", 1), ("factors", 1)] + [("cp", r) for r in args.ranks]
    rows = []
    for seed in args.seeds:
        torch.manual_seed(seed)
        target = SymmetricContraction(_irreps(args.channels, args.lmax_in), _irreps(args.channels, args.lmax_out), args.correlation, num_elements=1)
        for basis, rank in variants:
            r = fit(basis, rank, target, args, seed)
            r["label"] = basis if basis != "cp" else f"cp R={rank}"
            rows.append(r)
            print(f"seed {seed} {r['label']:>8}: test {r['test']['all']:.3f} train {r['train_all']:.3f} ({r['fit_s']:.0f} s)", flush=True)
    stamp = bc.machine_stamp(["cpu"])
    payload = {"benchmark": "bench_product_rank", "command": command, "args": vars(args) | {"out": str(args.out)}, "machine": stamp, "records": rows}
    md = render(rows, stamp, args, command)
    paths = bc.write_results(args.name, payload, md, args.out)
    print(md)
    print("wrote", *paths)


if __name__ == "__main__":
    main()

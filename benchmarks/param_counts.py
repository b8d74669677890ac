"""Free parameters per backend / parametrisation for DESIGN.md section 5's MACE config
(128 channels, max_ell 3, correlation 3, 2 interactions, radial MLP [64, 64, 64]) at
hidden L = 0..3. Writes ``benchmarks/results/param_counts.{json,md}``.

Usage::

    python benchmarks/param_counts.py [--backends e3nn,grid,grid:conv_weights=l1l2] [--elements 1]

(the default lists every conv parametrisation and product basis; ``cp`` at its default rank 4 and at 8)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as bc  # noqa: E402

from mace_gaunt_plugin.params import count_parameters  # noqa: E402
from mace_gaunt_plugin.testing import small_mace_config  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", default="e3nn,grid,grid:conv_weights=l1l2,grid:conv_weights=node_path,grid:conv_weights=path,grid:product_basis=factors,grid:product_basis=cp,grid:product_basis=cp;product_rank=8")
    p.add_argument("--hidden-L", type=bc.comma_list(int), default=[0, 1, 2, 3])
    p.add_argument("--channels", type=int, default=128)
    p.add_argument("--elements", type=int, default=1, help="number of chemical elements (product weights scale with it)")
    p.add_argument("--out", type=Path, default=bc.RESULTS)
    args = p.parse_args(argv)
    specs = bc.parse_backend_specs(args.backends)
    z = [29, 1, 6, 7, 8, 9, 13, 14][: args.elements]
    rows = []
    for lmax in args.hidden_L:
        hidden = "+".join(f"{args.channels}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(lmax + 1))
        cfg = small_mace_config(hidden_irreps=hidden, atomic_numbers=z, radial_MLP=[64, 64, 64])
        e3nn_total = None
        for spec in specs:
            c = count_parameters(spec.name, spec.options, **cfg)
            if spec.name == "e3nn":
                e3nn_total = c["total"]
            rows.append({"hidden_L": lmax, "model": spec.label, **c, "vs_e3nn": (c["total"] / e3nn_total) if e3nn_total else None})
            print(rows[-1], flush=True)
    cols = [("hidden_L", "hidden L"), ("model", "backend"), ("conv", "conv (MLP+TP+linear)"), ("product", "product (+linear)"), ("other", "other"), ("total", "total"), ("vs_e3nn", "total / e3nn")]
    md = "\n".join(
        [
            "# Free parameters per backend",
            "",
            f"ScaleShiftMACE, {args.channels} channels, max_ell 3, correlation 3, 2 interactions, radial MLP [64, 64, 64], "
            f"{args.elements} element(s). conv = radial MLPs + conv modules + the linear after each conv, summed over layers; "
            "product = product weights + the linear after it.",
            "",
            "Command: `python benchmarks/param_counts.py " + " ".join(argv if argv is not None else sys.argv[1:]) + "`",
            "",
            bc.markdown_table(rows, cols),
        ]
    )
    paths = bc.write_results("param_counts", {"benchmark": "param_counts", "args": vars(args) | {"out": str(args.out)}, "rows": rows}, md, args.out)
    print(md)
    print("wrote", *paths)


if __name__ == "__main__":
    main()

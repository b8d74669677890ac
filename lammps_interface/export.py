"""``mace_gaunt_create_lammps_model``: write a MACE model (any TP backend) as a file for
``pair_style mliap unified FILE 0``.

The file is a pickle of :class:`~lammps_interface.mliap_unified.MACEGauntMLIAP` holding
the model core in TorchScript and the eager model (for the KOKKOS exchange path, and for
``--engine eager``, which runs the core without TorchScript). Its
name must not end in ``.pt``/``.pth``: LAMMPS reads those with ``torch.load``, which on
torch >= 2.6 refuses pickled classes unless ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` is set
in the LAMMPS process; any other name is read with plain ``pickle``.

Example::

    mace_gaunt_create_lammps_model my.model -o my.mliap --dtype float64 --device cpu
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from ._errors import LAMMPSInterfaceError

__all__ = ["export_model", "main", "default_output"]

_DTYPES = ("float64", "float32")


def default_output(model_path: str) -> str:
    """``my.model`` -> ``my-mliap_lammps.pkl`` (next to the model)."""
    stem = model_path[: -len(".model")] if model_path.endswith(".model") else model_path
    return stem + "-mliap_lammps.pkl"


def export_model(
    model_path: str,
    output: Optional[str] = None,
    dtype: str = "float64",
    device: str = "cpu",
    head: Optional[str] = None,
    engine: str = "torchscript",
) -> str:
    """Export the MACE model saved at ``model_path``; returns the path written. ``engine``
    (``torchscript`` or ``eager``) picks how LAMMPS runs the model core."""
    import pickle

    import torch

    import mace  # noqa: F401  (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD for e3nn, before torch.load)

    from .mliap_unified import ENGINES, MACEGauntMLIAP

    output = output or default_output(model_path)
    if output.endswith((".pt", ".pth")):
        raise LAMMPSInterfaceError(
            f"output {output!r} ends in .pt/.pth, which LAMMPS reads with torch.load (refuses pickled "
            "classes on torch >= 2.6); choose another name, e.g. model.mliap or model.pkl"
        )
    if dtype not in _DTYPES:
        raise LAMMPSInterfaceError(f"dtype must be one of {_DTYPES}, not {dtype!r}")
    if engine not in ENGINES:
        raise LAMMPSInterfaceError(f"engine must be one of {ENGINES}, not {engine!r}")
    if not os.path.isfile(model_path):
        raise LAMMPSInterfaceError(f"model file {model_path!r} does not exist")
    try:
        model = torch.load(model_path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise LAMMPSInterfaceError(
            f"could not read {model_path!r} as a saved MACE model ({type(exc).__name__}: {exc}); give the "
            "eager .model file (torch.save of the module), not *_compiled.model"
        ) from exc
    if not isinstance(model, torch.nn.Module) or isinstance(model, torch.jit.ScriptModule):
        raise LAMMPSInterfaceError(
            f"{model_path!r} holds a {type(model).__name__}; give the eager .model file, not *_compiled.model"
        )
    wrapper = MACEGauntMLIAP.from_model(model, dtype=getattr(torch, dtype), device=device, head=head, engine=engine)
    tmp = output + ".tmp"
    with open(tmp, "wb") as f:
        pickle.dump(wrapper, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, output)
    return output


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point."""
    parser = argparse.ArgumentParser(
        prog="mace_gaunt_create_lammps_model",
        description="Write a MACE model (any mace-gaunt-plugin TP backend) for LAMMPS' pair_style mliap unified.",
    )
    parser.add_argument("model", help="eager MACE model file (as saved by mace_run_train)")
    parser.add_argument("-o", "--output", help="output file (default: MODEL without .model + '-mliap_lammps.pkl')")
    parser.add_argument("--dtype", choices=_DTYPES, default="float64", help="precision of the exported model")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the model runs in LAMMPS")
    parser.add_argument("--head", default=None, help="head of a multi-head model (default: the last)")
    parser.add_argument("--engine", choices=("torchscript", "eager"), default="torchscript",
                        help="run the model core as TorchScript (default) or as the eager module (needs this plugin "
                             "in LAMMPS' Python either way)")
    args = parser.parse_args(argv)
    try:
        out = export_model(args.model, args.output, dtype=args.dtype, device=args.device, head=args.head,
                           engine=args.engine)
    except LAMMPSInterfaceError as exc:
        print(f"mace_gaunt_create_lammps_model: error: {exc}", file=sys.stderr)
        return 2
    from .mliap_unified import INPUT_DECK_LINES, load_model_file

    wrapper = load_model_file(out)
    elements = " ".join(wrapper.model_elements)
    print(f"wrote {out}: {wrapper!r}")
    print("In the LAMMPS input (units metal, one MPI rank):")
    print(INPUT_DECK_LINES + f"pair_style mliap unified {out} 0\npair_coeff * * {elements}  # one element per atom type")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

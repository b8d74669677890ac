"""``mace_gaunt_create_lammps_model``: write a MACE model (any TP backend) as a file for
``pair_style mliap unified FILE 0``.

The file is a pickle of :class:`~lammps_interface.mliap_unified.MACEGauntMLIAP` holding
the model core in TorchScript and the eager model (for the KOKKOS exchange path, and for
``--engine eager``, which runs the core without TorchScript); with ``--engine
aotinductor`` also the core compiled by torch.export + AOTInductor. Its
name must not end in ``.pt``/``.pth``: LAMMPS reads those with ``torch.load``, which on
torch >= 2.6 refuses pickled classes unless ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` is set
in the LAMMPS process; any other name is read with plain ``pickle``.

The input is either a pickled ``.model`` (unpickled: load only files you trust) or a safe
model file (``*.safetensors`` from :func:`mace_gaunt_plugin.save_model`,
``mace_run_train`` or ``mace_gaunt_convert_model``; read without unpickling). The output
is written through a temporary file created exclusively in the output's folder, then
renamed. A safe model file can also be loaded by the LAMMPS deck itself, with no export
step and no pickle (:func:`lammps_interface.mliap_unified.safe_deck_lines`).

Example::

    mace_gaunt_create_lammps_model my.model -o my.mliap --dtype float64 --device cpu --types C,H,N,O
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Optional, Sequence

from ._errors import LAMMPSInterfaceError

__all__ = ["export_model", "main", "default_output", "pair_coeff_hint"]

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
    """Export the MACE model saved at ``model_path`` (a pickled ``.model`` or a safe model
    file); returns the path written. ``engine`` (``torchscript``, ``eager`` or
    ``aotinductor``) picks how LAMMPS runs the model core."""
    return _export(model_path, output, dtype, device, head, engine)[0]


def _read_model(model_path: str, dtype: str) -> Any:
    """The eager model at ``model_path``: a ``*.safetensors`` file is rebuilt from data and
    never unpickled; anything else is read as the pickled ``.model`` the user named
    (weights_only=False: a pickled module needs it), after a look at its first bytes
    that names what it is if it is not one."""
    from mace_gaunt_plugin.mace._safe_file import SAFE_SUFFIX, SafeModelFileError, is_safe_model_file, load_model

    if model_path.endswith(SAFE_SUFFIX):  # by name, so that a file named *.safetensors is never unpickled
        if not is_safe_model_file(model_path):
            raise LAMMPSInterfaceError(
                f"{model_path!r} is named like a safe model file but is not one (a pickle renamed?); it was not opened "
                "as a pickle. Get the real file, or convert a trusted .model with mace_gaunt_convert_model"
            )
        try:
            return load_model(model_path, dtype=dtype)
        except SafeModelFileError as exc:
            raise LAMMPSInterfaceError(str(exc)) from None
    from mace_gaunt_plugin.mace._model_file import ModelInputError, read_pickled_model

    try:
        return read_pickled_model(model_path, "mace_gaunt_create_lammps_model")
    except ModelInputError as exc:
        raise LAMMPSInterfaceError(str(exc)) from None


def _model_elements(model: Any) -> list[str]:
    """Element symbols of the model's atomic numbers, in the model's order."""
    from ase.data import chemical_symbols

    return [chemical_symbols[int(z)] for z in model.atomic_numbers]


def _check_output(model_path: str, output: str) -> None:
    """Refuse an output that is the input, that is named like a model file (it will hold a
    pickled ML-IAP wrapper) or that cannot be written."""
    from mace_gaunt_plugin.mace._model_file import ModelInputError, check_output

    try:
        check_output(model_path, output, suffixes=(), refused=(".safetensors", ".model"),
                     what="a pickled ML-IAP wrapper for LAMMPS (not a safe model file or a MACE .model); name it e.g. "
                          "model.mliap or model.pkl")  # fmt: skip
    except ModelInputError as exc:
        raise LAMMPSInterfaceError(str(exc)) from None


def _export(
    model_path: str,
    output: Optional[str],
    dtype: str,
    device: str,
    head: Optional[str],
    engine: str,
    types: Optional[Sequence[str]] = None,
) -> tuple[str, Any]:
    """:func:`export_model`, also returning the wrapper written; ``types`` (the element of
    each LAMMPS atom type) is checked against the model's elements before the export."""
    import pickle

    import torch

    from mace_gaunt_plugin._atomic_write import write_atomically

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
    _check_output(model_path, output)
    model = _read_model(model_path, dtype)
    if types is not None:  # before the (slow) export and before anything is written
        pair_coeff_hint(_model_elements(model), types)
    wrapper = MACEGauntMLIAP.from_model(model, dtype=getattr(torch, dtype), device=device, head=head, engine=engine)
    write_atomically(output, lambda f: pickle.dump(wrapper, f, protocol=pickle.HIGHEST_PROTOCOL))
    return output, wrapper


def pair_coeff_hint(model_elements: Sequence[str], types: Optional[Sequence[str]] = None) -> str:
    """The ``pair_coeff`` line for the deck. With ``types`` (the element of atom type 1, 2,
    ... of the deck's data) it is that line, checked against the model's elements; without,
    a template that says the order is the data's type order, not the model's.

    >>> print(pair_coeff_hint(["H", "C"], ["C", "H"]))
    pair_coeff * * C H  # atom type 1 = C, 2 = H
    """
    known = list(model_elements)
    if types is None:
        return (
            "pair_coeff * * ELEMENT_OF_TYPE_1 ELEMENT_OF_TYPE_2 ...\n"
            "# List one element per atom type IN THE ORDER OF YOUR DATA FILE'S TYPES (type 1 first), not in the\n"
            f"# model's order: a wrong order silently gives wrong energies. This model knows {' '.join(known)}\n"
            "# (its element order: " + ", ".join(f"{k} = {e}" for k, e in enumerate(known)) + ").\n"
            "# Pass --types (e.g. --types C,H,N,O) to have the line written for your data."
        )
    unknown = [t for t in types if t not in known]
    if unknown:
        raise LAMMPSInterfaceError(
            f"--types names element(s) {', '.join(unknown)} that this model does not know; its elements are {', '.join(known)}"
        )
    listed = ", ".join(f"{k} = {e}" for k, e in enumerate(types, start=1))
    return f"pair_coeff * * {' '.join(types)}  # atom type {listed}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point."""
    from .mliap_unified import ENGINES

    parser = argparse.ArgumentParser(
        prog="mace_gaunt_create_lammps_model",
        description="Write a MACE model (any mace-gaunt-plugin TP backend) for LAMMPS' pair_style mliap unified.",
    )
    parser.add_argument("model", help="eager MACE model file (as saved by mace_run_train)")
    parser.add_argument("-o", "--output", help="output file (default: MODEL without .model + '-mliap_lammps.pkl')")
    parser.add_argument("--dtype", choices=_DTYPES, default="float64", help="precision of the exported model")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the model runs in LAMMPS")
    parser.add_argument("--head", default=None, help="head of a multi-head model (default: the last)")
    parser.add_argument("--engine", choices=ENGINES, default="torchscript",
                        help="run the model core as TorchScript (default), as the eager module, or compiled ahead of "
                             "time by torch.export + AOTInductor (a minute or more at export; native code for this "
                             "torch version and device). LAMMPS' Python needs this plugin in every case")
    parser.add_argument("--types", type=_element_list, default=None, metavar="EL1,EL2,...",
                        help="the element of each atom type of your LAMMPS data, in type order (type 1 first), for "
                             "the printed pair_coeff line; without it the line is a template")
    args = parser.parse_args(argv)
    try:
        out, wrapper = _export(args.model, args.output, args.dtype, args.device, args.head, args.engine, args.types)
        pair_coeff = pair_coeff_hint(wrapper.model_elements, args.types)
    except LAMMPSInterfaceError as exc:
        print(f"mace_gaunt_create_lammps_model: error: {exc}", file=sys.stderr)
        return 2
    from .mliap_unified import INPUT_DECK_LINES

    print(f"wrote {out}: {wrapper!r}")
    print("In the LAMMPS input (units metal, one MPI rank):")
    print(INPUT_DECK_LINES + f"pair_style mliap unified {out} 0\n{pair_coeff}")
    return 0


def _element_list(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",")] if "," in text else text.split()
    if not items or any(not t for t in items):
        raise argparse.ArgumentTypeError(f"{text!r}: give one element per atom type, none empty, e.g. C,H,N,O")
    return items


if __name__ == "__main__":
    raise SystemExit(main())

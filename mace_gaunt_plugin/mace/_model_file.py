"""The files the converter and the exporter are given and write, checked with messages
that say what a file is and what to do, before any work is done.

:func:`read_pickled_model` reads the pickled ``NAME.model`` a user named (it UNPICKLES
the file: trusted files only) and tells apart what users give by mistake: a safe model
file, a structure file (``.xyz``), an ML-IAP export (``.mliap``, a plain pickle), a
TorchScript archive (``*_compiled.model``) and a training checkpoint (whose guard would
otherwise print "resume with --restart_latest", the wrong advice here).

:func:`check_output` refuses an output that is the input (same file, also through a
symlink or another spelling of the path), whose name contradicts what is written, or
that cannot be written (missing folder, not writable, a folder).
"""

from __future__ import annotations

import os
import zipfile
from typing import Any, Sequence

from ..errors import BackendError

__all__ = ["ModelInputError", "read_pickled_model", "check_output", "describe"]


class ModelInputError(BackendError, ValueError):
    """A model input or output path the converter or the exporter cannot use (the message says why)."""


def _head(path: str, n: int = 64) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _zip_names(path: str) -> list[str]:
    if not zipfile.is_zipfile(path):
        return []
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


def describe(path: str) -> str:
    """What ``path`` holds, judged from its first bytes and its name without unpickling:
    ``'safe'``, ``'torchscript'``, ``'torch'`` (a ``torch.save`` zip: a model or a
    checkpoint), ``'pickle'`` (plain pickle, e.g. a ``.mliap``), ``'text'`` or ``'binary'``."""
    from ._safe_file import is_safe_model_file

    if is_safe_model_file(path):
        return "safe"
    names = _zip_names(path)
    if names:
        if any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names):
            return "torchscript"
        return "torch"
    head = _head(path)
    if head[:1] == b"\x80":
        return "pickle"
    try:
        head.decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "binary"


def _what_to_do(path: str, kind: str, tool: str) -> str:
    convert = "mace_gaunt_convert_model NAME.model -o NAME.safetensors"
    if kind == "safe":
        if tool == "mace_gaunt_convert_model":
            return (f"{path!r} is already a safe model file: there is nothing to convert. Load it with "
                    "mace_gaunt_plugin.load_model, or export it for LAMMPS with mace_gaunt_create_lammps_model")  # fmt: skip
        return (f"{path!r} is a safe model file but is not named *.safetensors (the suffix says how it is read); "
                "rename it to end in .safetensors")  # fmt: skip
    if kind == "torchscript":
        return f"{path!r} is a TorchScript archive; give the eager .model file, not *_compiled.model"
    if kind == "pickle":
        return (f"{path!r} is a plain pickle, not a saved MACE model: a .mliap/.pkl from mace_gaunt_create_lammps_model "
                "is an export for LAMMPS and cannot be converted or exported again. Give the NAME.model that "
                "mace_run_train wrote, or the NAME.safetensors next to it")  # fmt: skip
    what = "a text file (a structure file such as .xyz?)" if kind == "text" else "neither a torch.save archive nor a safe model file"
    return (f"{path!r} is {what}, not a MACE model. Give the NAME.model that mace_run_train wrote (or, for the "
            f"exporter, a NAME.safetensors; make one with {convert})")  # fmt: skip


def _is_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and "model" in obj and ("optimizer" in obj or "lr_scheduler" in obj)


def read_pickled_model(path: str, tool: str) -> Any:
    """The eager MACE model in the pickled ``.model`` at ``path`` (UNPICKLED: trusted files
    only); :class:`ModelInputError` naming what the file is otherwise."""
    import torch

    from ._checkpoint import _PICKLE

    if not os.path.isfile(path):
        raise ModelInputError(f"model file {path!r} does not exist")
    kind = describe(path)
    if kind != "torch":
        raise ModelInputError(_what_to_do(path, kind, tool))
    try:
        # the plugin's checkpoint reader: a training checkpoint's guard reads back as its message
        obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_PICKLE)
    except Exception as exc:  # noqa: BLE001  (any reason: the message names the file)
        raise ModelInputError(
            f"could not read {path!r} as a saved MACE model ({type(exc).__name__}: {exc}); give the eager .model "
            "file that mace_run_train wrote"
        ) from None
    if _is_checkpoint(obj):
        raise ModelInputError(
            f"{path!r} is a training checkpoint (model weights with optimizer state, from checkpoints/), not a saved "
            "model. Give the NAME.model that mace_run_train wrote at the end of training (in --model_dir, by "
            "default the work directory), not a file from checkpoints/"
        )
    if isinstance(obj, torch.jit.ScriptModule):
        raise ModelInputError(_what_to_do(path, "torchscript", tool))
    if not isinstance(obj, torch.nn.Module):
        raise ModelInputError(f"{path!r} holds a {type(obj).__name__}; give the eager .model file, not *_compiled.model")
    return obj


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output(source: str, output: str, suffixes: Sequence[str], refused: Sequence[str], what: str) -> None:
    """Refuse, before any work, an ``output`` that is ``source``, whose name ends in one of
    ``refused`` or (with ``suffixes``) in none of ``suffixes``, or that cannot be written.
    ``what`` names what is written, for the messages."""
    if _same_file(source, output):
        raise ModelInputError(f"the output {output!r} is the input file itself; writing it would destroy the input. Choose another -o")
    lower = output.lower()
    bad = next((s for s in refused if lower.endswith(s)), None)
    if bad is not None or (suffixes and not lower.endswith(tuple(suffixes))):
        want = f"; name it *{suffixes[0]}" if suffixes else ""
        raise ModelInputError(f"the output {output!r} would hold {what}, which its name contradicts{want}")
    if os.path.isdir(output):
        raise ModelInputError(f"the output {output!r} is a directory; give a file name")
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise ModelInputError(f"cannot write {output!r}: the directory {folder!r} does not exist (create it first)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ModelInputError(f"cannot write {output!r}: the directory {folder!r} is not writable")

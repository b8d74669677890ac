"""Training checkpoints that stock MACE cannot silently misread.

A checkpoint of a plugin run holds MACE's usual entries plus the backend record
(``tp_backend``). Stock MACE 0.3.16 resumes ``--restart_latest`` inside ``except
Exception``: a checkpoint it cannot load (other parameter names, another optimizer
layout, a class it cannot import) is skipped without a word, a new e3nn model trains from
epoch 0, and the plugin run's checkpoints and ``NAME.model`` are overwritten.

So every plugin checkpoint also holds a *guard*, pickled as a call of the standard
library's ``exit`` (``_sitebuiltins.Quitter``) with a message. Any process that unpickles
the file without the plugin's reader (stock MACE with the plugin disabled or not
installed, or ``torch.load`` by hand) raises ``SystemExit`` with that message, which
MACE's ``except Exception`` does not catch: the run stops before anything is written,
saying why and how to resume. :func:`read_checkpoint` maps the guard back to its message.
``torch.load(path, weights_only=True)`` refuses the file ("Unsupported global"): use
:func:`read_checkpoint`. Checkpoints of plugin versions before the guard have no guard.
"""

from __future__ import annotations

import _sitebuiltins
import pickle
import types
from typing import Any, Mapping

__all__ = ["CHECKPOINT_KEY", "GUARD_KEY", "guarded", "read_checkpoint", "stop_message"]

#: Key of the backend record ({"name", "options", "plugin_version"}).
CHECKPOINT_KEY = "tp_backend"
#: Key of the guard that stops a process reading the file without the plugin.
GUARD_KEY = "mace_gaunt_plugin_guard"


def stop_message(record: Mapping[str, Any]) -> str:
    """What a process that reads a plugin checkpoint without the plugin prints before it stops."""
    options = ", ".join(f"{k}={v}" for k, v in sorted(dict(record.get("options", {})).items())) or "no options"
    return (
        f"This MACE checkpoint was written by mace-gaunt-plugin {record.get('plugin_version', '?')} with TP backend "
        f"{record['name']!r} ({options}). Stock MACE cannot resume it: it would skip it and train a new model "
        "from epoch 0 over this run's files, so the run stops here and nothing was written. Resume with the "
        "plugin active: `mace_run_train ... --restart_latest` or `python -m mace.cli.run_train ...` with "
        "mace-gaunt-plugin installed and MACE_GAUNT_PLUGIN_DISABLE unset. In Python, read the file with "
        "mace_gaunt_plugin.mace.read_checkpoint(path)."
    )


class _StopStockReader:
    """Pickles as ``exit(message)``: unpickling it outside :func:`read_checkpoint` ends the process."""

    def __init__(self, message: str) -> None:
        self.message = message

    def __reduce__(self) -> tuple:
        return (_sitebuiltins.Quitter("exit", "Ctrl-D (i.e. EOF)"), (self.message,))


def guarded(checkpoint: Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, Any]:
    """``checkpoint`` with the guard first (a reader stops before loading any tensor) and
    the backend record last."""
    return {GUARD_KEY: _StopStockReader(stop_message(record)), **checkpoint, CHECKPOINT_KEY: dict(record)}


class _GuardMessage:
    """Stands in for ``_sitebuiltins.Quitter`` when the plugin reads: calling it gives the message back."""

    def __call__(self, message: str) -> str:
        return message


class _PluginUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_sitebuiltins", "Quitter"):
            return _GuardMessage
        return super().find_class(module, name)


_PICKLE = types.ModuleType("mace_gaunt_plugin_checkpoint_pickle")
_PICKLE.Unpickler = _PluginUnpickler  # type: ignore[attr-defined]
_PICKLE.load = lambda file, **kwargs: _PluginUnpickler(file, **kwargs).load()  # type: ignore[attr-defined]


def read_checkpoint(path: str, map_location: Any = "cpu", mmap: bool = False) -> dict[str, Any]:
    """A training checkpoint, plugin-written (guarded) or stock, as a dict.

    Reads the file as MACE does (a full unpickle, ``weights_only=False``: open only
    checkpoints you trust, such as your own runs'), with the guard read back as its
    message under :data:`GUARD_KEY`.
    """
    import torch

    return torch.load(path, map_location=map_location, weights_only=False, pickle_module=_PICKLE, mmap=mmap)

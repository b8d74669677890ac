"""The backend registry: names -> backends, filled from the entry-point group
``mace_gaunt_plugin.backends``. The built-in backends register through the same group
(see pyproject.toml), so third-party packages add backends with no edit here.

An entry point may name a :class:`~mace_gaunt_plugin.backends.base.TPBackend` instance,
or a class / zero-argument factory returning one.
"""

from __future__ import annotations

import warnings
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from .errors import UnknownBackendError

if TYPE_CHECKING:
    from .backends.base import TPBackend

ENTRY_POINT_GROUP = "mace_gaunt_plugin.backends"

_BACKENDS: dict[str, "TPBackend"] = {}
_BROKEN: dict[str, str] = {}  # name -> "module:attr (error)" for entry points that failed
_LOADED = False


def _load(force: bool = False) -> None:
    global _LOADED
    if _LOADED and not force:
        return
    from .backends.base import TPBackend

    found: dict[str, "TPBackend"] = {}
    broken: dict[str, str] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found:
            continue  # first distribution on sys.path wins, like importlib itself
        try:
            obj = ep.load()
            backend = obj if isinstance(obj, TPBackend) else obj()
            if not isinstance(backend, TPBackend):
                raise TypeError(f"{ep.value} gave {type(backend).__name__}, not a TPBackend")
            if backend.name != ep.name:
                raise ValueError(f"{ep.value} calls itself {backend.name!r}, registered as {ep.name!r}")
        except Exception as exc:  # a broken third-party plugin must not break the others
            broken[ep.name] = f"{ep.value} ({type(exc).__name__}: {exc})"
            warnings.warn(
                f"mace_gaunt_plugin: TP backend entry point {ep.name!r} = {ep.value} failed to load "
                f"and is unavailable: {type(exc).__name__}: {exc}",
                RuntimeWarning,
                stacklevel=3,
            )
            continue
        found[ep.name] = backend
    _BACKENDS.clear()
    _BACKENDS.update(found)
    _BROKEN.clear()
    _BROKEN.update(broken)
    _LOADED = True


def refresh() -> None:
    """Re-read the entry points (after installing a package in a running process)."""
    _load(force=True)


def available_backends() -> list[str]:
    """Names of the backends that loaded, sorted.

    >>> "e3nn" in available_backends()
    True
    """
    _load()
    return sorted(_BACKENDS)


def get_backend(name: str) -> "TPBackend":
    """The backend registered as ``name``; :class:`UnknownBackendError` lists the others."""
    _load()
    if name in _BACKENDS:
        return _BACKENDS[name]
    hint = ""
    if name in _BROKEN:
        hint = f"Its entry point is installed but failed to load: {_BROKEN[name]}"
    raise UnknownBackendError(name, available_backends(), hint)

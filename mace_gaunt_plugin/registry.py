"""The backend registry: names -> backends, filled from the entry-point group
``mace_gaunt_plugin.backends``. The built-in backends register through the same group
(see pyproject.toml), so third-party packages add backends with no edit here.

An entry point may name a :class:`~mace_gaunt_plugin.backends.base.TPBackend` instance,
or a class / zero-argument factory returning one. :func:`register_backend` adds one in
the running process only (to try a backend before packaging it); this mapping is the
only global state of the plugin.
"""

from __future__ import annotations

import warnings
from importlib.metadata import entry_points
from types import TracebackType
from typing import TYPE_CHECKING, Optional

from .errors import UnknownBackendError

if TYPE_CHECKING:
    from .backends.base import TPBackend

ENTRY_POINT_GROUP = "mace_gaunt_plugin.backends"

_BACKENDS: dict[str, "TPBackend"] = {}
_BROKEN: dict[str, str] = {}  # name -> "module:attr (error)" for entry points that failed
_LOADED = False
_IN_PROCESS: dict[str, "TPBackend"] = {}  # register_backend(): kept across refresh()


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
    _BACKENDS.update(_IN_PROCESS)
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


class Registration:
    """What :func:`register_backend` returns: the backend is registered already; leaving
    a ``with`` block on it (or calling :meth:`close`) unregisters it again."""

    def __init__(self, backend: "TPBackend") -> None:
        self.backend = backend

    def close(self) -> None:
        """Unregister the backend (a no-op if it was unregistered already)."""
        if _IN_PROCESS.get(self.backend.name) is self.backend:
            del _IN_PROCESS[self.backend.name]
            _BACKENDS.pop(self.backend.name, None)

    def __enter__(self) -> "TPBackend":
        return self.backend

    def __exit__(self, exc_type: Optional[type], exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.close()


def register_backend(backend: "TPBackend") -> Registration:
    """Register ``backend`` under ``backend.name`` in this process, without installing a
    package: for trying a backend (e.g. with
    :func:`mace_gaunt_plugin.testing.check_backend`) before it has an entry point.

    Use it as a function (registered until :meth:`Registration.close` or the end of the
    process) or as a context manager (unregistered on exit). A name that is registered
    already (built-in, installed or in-process) is refused with
    :class:`~mace_gaunt_plugin.errors.BackendError`: unregister the other one first.

    Models built with an in-process backend pickle like any plugin model, but only a
    process that registers the same backend can load them.

    >>> from mace_gaunt_plugin.backends.base import TPBackend
    >>> with register_backend(TPBackend(name="mine")):
    ...     "mine" in available_backends()
    True
    >>> "mine" in available_backends()
    False
    """
    from .backends.base import TPBackend
    from .errors import BackendError

    if not isinstance(backend, TPBackend):
        raise TypeError(f"register_backend needs a TPBackend, got {type(backend).__name__}")
    if not backend.name or not isinstance(backend.name, str):
        raise BackendError(f"a backend needs a non-empty name, got {backend.name!r}")
    _load()
    if backend.name in _BACKENDS:
        where = "in this process" if backend.name in _IN_PROCESS else "by an installed entry point"
        raise BackendError(f"TP backend {backend.name!r} is registered already ({where}); choose another name")
    _IN_PROCESS[backend.name] = backend
    _BACKENDS[backend.name] = backend
    return Registration(backend)

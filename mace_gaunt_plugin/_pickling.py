"""How plugin modules are pickled, so a saved model says which package it needs.

MACE saves models as pickles (``torch.save(model)``). A pickle names the class of every
module, so loading one needs the backend's Python module. When that module is missing,
plain pickle says only ``No module named 'x'``. Plugin modules therefore pickle through
:func:`restore_backend_module` (a name in this package that stays stable), with the
backend's name and the distribution (pip package) and version that provided it; a load
that cannot import the backend raises :class:`~mace_gaunt_plugin.errors.BackendNotInstalledError`
saying what to install. Saved models load exactly as before when everything is installed.

No torch import here: this module is imported when a model is loaded.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any, Optional

__all__ = ["reduce_backend_module", "restore_backend_module", "provider_of"]


@functools.lru_cache(maxsize=None)
def _top_level_to_distribution() -> dict[str, tuple[str, str]]:
    """Top-level import name -> (distribution, version). Backend entry points first (they
    also cover editable installs, whose file lists do not name the package), then every
    installed distribution's file list."""
    from importlib.metadata import distribution, entry_points, packages_distributions

    from .registry import ENTRY_POINT_GROUP

    out: dict[str, tuple[str, str]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        if dist is not None:
            out.setdefault(ep.module.partition(".")[0], (dist.metadata["Name"], dist.version))
    for top, dists in packages_distributions().items():
        if dists and top not in out:
            try:
                out[top] = (dists[0], distribution(dists[0]).version)
            except Exception:  # noqa: BLE001  (a broken dist-info must not break saving)
                out[top] = (dists[0], "")
    return out


def provider_of(module: str) -> tuple[Optional[str], Optional[str]]:
    """``(distribution name, version)`` of the installed package that provides ``module``,
    or ``(None, None)`` when no installed distribution does (a script, a test file)."""
    found = _top_level_to_distribution().get(module.partition(".")[0])
    return found if found is not None else (None, None)


def reduce_backend_module(module: Any) -> tuple:
    """``__reduce_ex__`` of a :class:`~mace_gaunt_plugin.backends.base.BackendModule`:
    reconstruct through :func:`restore_backend_module`, then restore the state as usual."""
    cls = type(module)
    package, version = provider_of(cls.__module__)
    info = {
        "module": cls.__module__,
        "qualname": cls.__qualname__,
        "backend": str(getattr(module, "backend_name", "")),
        "package": package,
        "version": version,
    }
    getstate = getattr(module, "__getstate__", None)
    state = getstate() if getstate is not None else module.__dict__
    return restore_backend_module, (info,), state


def _install_hint(info: dict) -> str:
    package, version = info.get("package"), info.get("version")
    if not package:
        return f"It was defined in {info.get('module')!r}, which no installed package provides; make that module importable."
    pin = f"=={version}" if version else ""
    return f"It is provided by the package {package!r} (version {version or 'unknown'} saved the model): pip install '{package}{pin}'."


def restore_backend_module(info: dict) -> Any:
    """Create an empty plugin module of the recorded class (pickle then sets its state).

    Raises
    ------
    BackendNotInstalledError
        The class cannot be imported: the message names the backend and the package.
    """
    from .errors import BackendNotInstalledError

    module_name, qualname = info["module"], info["qualname"]
    what = f"This model uses the TP backend {info.get('backend') or '?'!r}"
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendNotInstalledError(
            f"{what}, whose module {module_name!r} cannot be imported ({exc}). {_install_hint(info)}"
        ) from exc
    try:
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except AttributeError as exc:
        raise BackendNotInstalledError(
            f"{what}, whose class {module_name}.{qualname} does not exist in the installed code "
            f"(another version?). {_install_hint(info)}"
        ) from exc
    return obj.__new__(obj)

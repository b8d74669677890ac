"""Build MACE models with a backend, and read back which backend a model uses."""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional

import torch

from ..errors import BackendMismatchError
from ._hook import use_backend

__all__ = ["build_model", "backend_of", "backend_options_of"]


def build_model(
    backend: str,
    model_cls: Optional[type] = None,
    backend_options: Optional[Mapping[str, Any]] = None,
    **mace_kwargs: Any,
) -> torch.nn.Module:
    """Construct ``model_cls(**mace_kwargs)`` (default ``mace.modules.ScaleShiftMACE``)
    with the TP backend ``backend``.

    >>> # model = build_model("grid", **mace_config)
    """
    if model_cls is None:
        from mace.modules import ScaleShiftMACE

        model_cls = ScaleShiftMACE
    with use_backend(backend, **dict(backend_options or {})) as be:
        be.check_model_config(be.resolve_options(dict(backend_options or {})), mace_kwargs)
        return model_cls(**mace_kwargs)


def _plugin_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if hasattr(m, "backend_name") and hasattr(m, "backend_options")]


def backend_of(model: torch.nn.Module) -> str:
    """Name of the TP backend a model (eager or TorchScript) was built with; ``"e3nn"``
    for a stock MACE model."""
    names = {str(m.backend_name) for m in _plugin_modules(model)}
    if not names:
        return "e3nn"
    if len(names) > 1:
        raise BackendMismatchError(f"model mixes TP backends {sorted(names)}")
    return names.pop()


def backend_options_of(model: torch.nn.Module) -> dict[str, Any]:
    """The backend options a model was built with (``{}`` for stock MACE)."""
    found = {str(m.backend_options) for m in _plugin_modules(model)}
    if not found:
        return {}
    if len(found) > 1:
        raise BackendMismatchError(f"model's plugin modules disagree on backend options: {sorted(found)}")
    return json.loads(found.pop())

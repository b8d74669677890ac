"""``switch_backend``: move a model between backends that compute the same function.

Two backends with the same ``function_family`` (e.g. ``grid`` and ``gaunt``) build site
modules with the same parameters that compute the same function; only how it is computed
differs. Switching rebuilds every plugin module of a copy of the model with the target
backend (from the module's irreps and the model's backend options, as
:func:`use_backend` would) and copies the parameters over. Anything else would silently
change what the weights mean, so it is refused with
:class:`~mace_gaunt_plugin.errors.BackendMismatchError`.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterator, Mapping, Optional

import torch

from ..backends.base import BackendModule, TPBackend
from ..errors import BackendMismatchError
from ..registry import available_backends, get_backend
from ._build import backend_of, backend_options_of

__all__ = ["switch_backend"]


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _float_tensor(module: torch.nn.Module) -> Optional[torch.Tensor]:
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point():
            return t
    return None


def _attr(module: torch.nn.Module, name: str, what: str) -> Any:
    if not hasattr(module, name):
        raise BackendMismatchError(
            f"cannot rebuild {type(module).__name__} ({what} site of backend {module.backend_name!r}): it does not "
            f"expose {name!r}, which switch_backend needs to rebuild it"
        )
    return getattr(module, name)


def _rebuild(target: TPBackend, module: BackendModule, options: Mapping[str, Any]) -> torch.nn.Module:
    site = str(module.site)
    if site == "conv":
        built = target.build_conv(
            _attr(module, "irreps_in1", site), _attr(module, "irreps_in2", site), _attr(module, "irreps_out", site), None, options
        )
    elif site == "product":
        built = target.build_product(
            _attr(module, "irreps_in", site),
            _attr(module, "irreps_out", site),
            int(_attr(module, "correlation", site)),
            int(_attr(module, "num_elements", site)),
            options,
        )
    else:
        raise BackendMismatchError(f"cannot rebuild a plugin module for unknown site {site!r}")
    if built is None:
        raise BackendMismatchError(
            f"backend {target.name!r} leaves the {site} site to MACE's stock code, but this model has a "
            f"{module.backend_name!r} module there; switch_backend only rebuilds plugin modules into plugin modules"
        )
    return built


def _copy_parameters(source: torch.nn.Module, target: torch.nn.Module, where: str) -> None:
    src = dict(source.named_parameters())
    dst = dict(target.named_parameters())
    src_shapes = {k: tuple(v.shape) for k, v in src.items()}
    dst_shapes = {k: tuple(v.shape) for k, v in dst.items()}
    if src_shapes != dst_shapes:
        raise BackendMismatchError(
            f"{where}: the rebuilt module's parameters {dst_shapes} differ from the original's {src_shapes}; "
            "the two backends do not share a parametrisation"
        )
    with torch.no_grad():
        for name, p in dst.items():
            p.copy_(src[name])
            p.requires_grad_(src[name].requires_grad)


def switch_backend(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """A copy of ``model`` computing the same function with the TP backend ``name``.

    Allowed only between backends of the same ``function_family`` (``grid`` <-> ``gaunt``);
    the copy keeps the model's backend options, parameters, dtype, device and train/eval
    mode. The original model is not changed.

    Parameters
    ----------
    model : torch.nn.Module
        An eager MACE model built with a plugin backend (switch before compiling).
    name : str
        The target backend.

    Raises
    ------
    BackendMismatchError
        Different function families (e.g. ``grid`` -> ``e3nn``, ``e3nn`` -> ``grid``), a
        TorchScript model, or modules the target cannot rebuild with the same parameters.

    Examples
    --------
    >>> # fast = switch_backend(model_trained_with_grid, "gaunt")
    """
    if isinstance(model, torch.jit.ScriptModule):
        raise BackendMismatchError("switch_backend needs the eager model, not a TorchScript one; switch first, then compile")
    source = get_backend(backend_of(model))
    target = get_backend(name)
    if not source.function_family or source.function_family != target.function_family:
        same = [n for n in available_backends() if source.function_family and get_backend(n).function_family == source.function_family]
        raise BackendMismatchError(
            f"cannot switch a {source.name!r} model to {target.name!r}: they compute different functions (function "
            f"family {source.function_family or 'unset'!r} vs {target.function_family or 'unset'!r}), so the trained "
            f"weights would mean something else. Backends this model can switch to: {', '.join(same) or 'none'}; "
            f"for {target.name!r}, build and train a model with it (--tp-backend {target.name})."
        )
    options = target.resolve_options(backend_options_of(model))
    new = copy.deepcopy(model)
    modules = [(n, m) for n, m in new.named_modules(remove_duplicate=False) if isinstance(m, BackendModule)]
    if not modules and source.name == target.name:
        return new  # a stock model "switched" to itself
    if not modules:
        raise BackendMismatchError(
            f"model has no plugin modules to rebuild (stock {source.name!r} model); build it with "
            f"build_model({target.name!r}, ...) instead"
        )
    rebuilt: dict[int, torch.nn.Module] = {}
    for qualified, module in modules:
        if id(module) not in rebuilt:
            ref = _float_tensor(module)
            dtype = ref.dtype if ref is not None else torch.get_default_dtype()
            with _default_dtype(dtype):
                fresh = _rebuild(target, module, options)
            if ref is not None:
                fresh = fresh.to(device=ref.device)
            if bool(getattr(fresh, "fused", False)) != bool(getattr(module, "fused", False)):
                raise BackendMismatchError(f"{qualified}: the rebuilt module gathers/scatters differently (fused flag)")
            _copy_parameters(module, fresh, qualified)
            fresh.train(module.training)
            rebuilt[id(module)] = fresh
        parent_name, _, attr = qualified.rpartition(".")
        setattr(new.get_submodule(parent_name), attr, rebuilt[id(module)])
    return new

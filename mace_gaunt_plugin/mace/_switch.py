"""``switch_backend``: move a model between backends that compute the same function.

Two backends with the same ``function_family`` (e.g. ``grid`` and ``gaunt``) build site
modules with the same parameters that compute the same function; only how it is computed
differs. Switching rebuilds every plugin module of a copy of the model with the target
backend (from the module's irreps and the model's backend options, as
:func:`use_backend` would) and copies the parameters over. Anything else would silently
change what the weights mean, so it is refused with
:class:`~mace_gaunt_plugin.errors.BackendMismatchError`.

The family is that of the backend *with its options*
(:meth:`~mace_gaunt_plugin.backends.base.TPBackend.function_family_of`): ``grid`` and
``gaunt`` with ``sites=conv, conv_weights=path`` compute stock MACE's (``cg``) function,
so a stock ``e3nn`` model switches to them and back. Their conv has no parameters of its
own (like e3nn's, its weights come from the radial MLP) and takes e3nn's weight layout, so
nothing but the conv modules changes; the interaction block's ``conv_fusion`` flag
follows the new conv.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterator, Mapping, Optional

import torch

from ..backends.base import BackendModule, TPBackend
from ..errors import BackendMismatchError
from ..registry import available_backends, get_backend
from ._build import STOCK_SITE_CLASSES, _class_path, backend_of, backend_options_of, site_modules

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
            f"cannot rebuild {type(module).__name__} ({what} site of backend {getattr(module, 'backend_name', 'e3nn')!r}): it does not "
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


def _stock_conv(module: torch.nn.Module, where: str) -> torch.nn.Module:
    """MACE's own e3nn conv (``uvu``, external weights) for a plugin conv of MACE's layout."""
    from e3nn import o3
    from mace.modules.irreps_tools import tp_out_irreps_with_instructions

    i1, i2, out = (o3.Irreps(_attr(module, n, "conv")) for n in ("irreps_in1", "irreps_in2", "irreps_out"))
    mid, instructions = tp_out_irreps_with_instructions(i1, i2, out.simplify())
    if mid != out:
        raise BackendMismatchError(f"{where}: the conv's output irreps {out} are not MACE's layout {mid}; cannot rebuild e3nn's conv")
    return o3.TensorProduct(i1, i2, mid, instructions, shared_weights=False, internal_weights=False)


def _switch_conv_across(new: torch.nn.Module, target: TPBackend, options: Mapping[str, Any]) -> None:
    """Replace every conv whose kind changes (plugin <-> MACE's stock e3nn), in place, for a
    switch within the ``cg`` family. Neither conv has parameters; the weight counts must agree."""
    for where, site, module in list(site_modules(new)):
        if site != "conv":
            continue
        plugin = isinstance(module, BackendModule)
        if not plugin and _class_path(module) not in STOCK_SITE_CLASSES["conv"]:
            raise BackendMismatchError(
                f"{where}: cannot rebuild a {_class_path(module)} conv (cuEquivariance/OpenEquivariance?); switch a plain e3nn model"
            )
        ref = _float_tensor(module)
        dtype = ref.dtype if ref is not None else torch.get_default_dtype()
        with _default_dtype(dtype):
            irreps = [_attr(module, n, "conv") for n in ("irreps_in1", "irreps_in2", "irreps_out")]
            fresh = target.build_conv(*irreps, None, options)
            if fresh is None and not plugin:
                continue  # stock stays stock
            if fresh is None:
                fresh = _stock_conv(module, where)
        if int(fresh.weight_numel) != int(module.weight_numel) or list(fresh.parameters()) or list(module.parameters()):
            raise BackendMismatchError(f"{where}: the rebuilt conv's weights ({fresh.weight_numel}) differ from the original's ({module.weight_numel})")
        if ref is not None:
            fresh = fresh.to(device=ref.device)
        fresh.train(module.training)
        block = new.get_submodule(where.rpartition(".")[0])
        block.conv_tp = fresh
        if isinstance(fresh, BackendModule) and bool(getattr(fresh, "fused", False)):
            block.conv_fusion = True  # MACE's flag (tested with hasattr): the conv gathers and scatters itself
        elif hasattr(block, "conv_fusion"):
            del block.conv_fusion


def _target_options(model: torch.nn.Module, target: TPBackend, given: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """The model's backend options the target knows, updated with ``given``, resolved."""
    known = {opt.name for opt in target.options}
    base = {k: v for k, v in backend_options_of(model).items() if k in known}
    return target.resolve_options({**base, **dict(given or {})})


def switch_backend(model: torch.nn.Module, name: str, options: Optional[Mapping[str, Any]] = None) -> torch.nn.Module:
    """A copy of ``model`` computing the same function with the TP backend ``name``.

    Allowed only between backends of the same function family with their options
    (``grid`` <-> ``gaunt``; stock ``e3nn`` <-> ``grid``/``gaunt`` with ``sites=conv,
    conv_weights=path``); the copy keeps the model's backend options (those the target
    takes, updated with ``options``), parameters, dtype, device and train/eval mode. The
    original model is not changed.

    Parameters
    ----------
    model : torch.nn.Module
        An eager MACE model (switch before compiling).
    name : str
        The target backend.
    options : mapping, optional
        Target backend options overriding the model's, e.g. ``{"sites": "conv",
        "conv_weights": "path"}`` to switch a stock model to ``grid``.

    Raises
    ------
    BackendMismatchError
        Different function families (e.g. a default ``grid`` model -> ``e3nn``, ``e3nn`` ->
        ``grid`` without ``sites=conv, conv_weights=path``), a TorchScript model, or
        modules the target cannot rebuild with the same parameters.

    Examples
    --------
    >>> # fast = switch_backend(model_trained_with_grid, "gaunt")
    >>> # exact = switch_backend(stock_model, "grid", {"sites": "conv", "conv_weights": "path"})
    """
    if isinstance(model, torch.jit.ScriptModule):
        raise BackendMismatchError("switch_backend needs the eager model, not a TorchScript one; switch first, then compile")
    source = get_backend(backend_of(model))
    target = get_backend(name)
    options = _target_options(model, target, options)
    src_family = source.function_family_of(source.resolve_options(backend_options_of(model)))
    dst_family = target.function_family_of(options)
    if not src_family or src_family != dst_family:
        same = [n for n in available_backends() if src_family and get_backend(n).function_family == src_family]
        if src_family == "cg":
            same += ["grid/gaunt with options sites=conv, conv_weights=path"]
        raise BackendMismatchError(
            f"cannot switch a {source.name!r} model to {target.name!r}: they compute different functions (function "
            f"family {src_family or 'unset'!r} vs {dst_family or 'unset'!r}), so the trained "
            f"weights would mean something else. Backends this model can switch to: {', '.join(same) or 'none'}; "
            f"for {target.name!r}, build and train a model with it (--tp-backend {target.name})."
        )
    new = copy.deepcopy(model)
    if "e3nn" in (source.name, target.name) and source.name != target.name:
        _switch_conv_across(new, target, options)
        return new
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

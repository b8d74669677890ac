"""Build MACE models with a backend, and read back which backend a model uses.

How a model is accounted for
----------------------------
A MACE model has two TP sites per layer: ``interactions[i].conv_tp`` (``conv``) and
``products[i].symmetric_contractions`` (``product``). :func:`backend_of` looks at every
one of them (eager or TorchScript) and accepts exactly two kinds of module:

* a plugin module: it carries ``backend_name`` and ``backend_options``
  (:class:`~mace_gaunt_plugin.backends.base.BackendModule`);
* MACE's stock module for that site, matched by exact class: e3nn's
  ``o3.TensorProduct`` for ``conv`` and MACE's ``SymmetricContraction`` for ``product``,
  or a module of cuEquivariance / OpenEquivariance, which MACE itself puts there with
  ``--enable_cueq`` / ``--enable_oeq`` (the ``e3nn`` backend's accelerators).

Anything else (a model without those sites, a plain ``nn.Module`` at a site, a subclass
of the stock classes) is not accounted for and raises
:class:`~mace_gaunt_plugin.errors.BackendMismatchError`: the plugin cannot say what such
a model computes. A model whose sites are all stock is ``"e3nn"``; otherwise all plugin
modules must name one backend (sites the backend leaves to MACE stay stock).
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterator, Mapping, Optional

import torch

from ..errors import BackendMismatchError, UnsupportedIrrepsError
from ._hook import use_backend

__all__ = ["build_model", "backend_of", "backend_options_of", "check_model_config", "site_modules"]

#: Exact classes of MACE's own site modules (``module.Class`` paths).
STOCK_SITE_CLASSES = {
    "conv": ("e3nn.o3._tensor_product._tensor_product.TensorProduct",),
    "product": ("mace.modules.symmetric_contraction.SymmetricContraction",),
}
#: Packages whose modules MACE itself puts at the sites when asked for acceleration.
ACCELERATOR_PACKAGES = ("cuequivariance_torch", "openequivariance")


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
        options = be.resolve_options(dict(backend_options or {}))
        check_model_config(be, options, mace_kwargs)
        model = model_cls(**mace_kwargs)
    verify_backend(model, be.name, options)
    return model


def check_model_config(backend: Any, options: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """Refuse, before anything is built or written, a MACE config that cannot be built:
    the backend's own :meth:`~mace_gaunt_plugin.backends.base.TPBackend.check_model_config`,
    then what no backend can build. ``config`` holds MACE constructor arguments (missing
    ones are not checked). ``mace_run_train``'s preflight and :func:`build_model` run it.

    The structural check: the first interaction's node features are products of at most
    ``correlation`` edge harmonics of degree ``<= max_ell`` (the node embedding is
    scalar), so with more than one interaction the hidden irreps cannot have a degree
    above ``correlation * max_ell`` (``max_ell 0`` only makes scalars)."""
    backend.check_model_config(options, config)
    from e3nn import o3

    hidden, max_ell, correlation = config.get("hidden_irreps"), config.get("max_ell"), config.get("correlation")
    if hidden is None or max_ell is None or correlation is None or int(config.get("num_interactions") or 2) < 2:
        return
    lmax = o3.Irreps(hidden).lmax
    orders = correlation if isinstance(correlation, (list, tuple)) else [correlation]
    reach = int(max(orders)) * int(max_ell)
    if lmax > reach:
        need = -(-lmax // int(max(orders)))
        raise UnsupportedIrrepsError(
            backend.name,
            str(o3.Irreps(hidden)),
            f"max_ell={max_ell} with correlation={max(orders)}: the first interaction's node features are products of "
            f"at most {max(orders)} edge spherical harmonics of degree <= {max_ell}, which reach degree {reach} only, "
            f"below the hidden irreps' degree {lmax}",
            f"Use --max_ell {need} or more (MACE's default is 3), or hidden irreps up to degree {reach} "
            f"(--max_L {reach}).",
        )


def verify_backend(model: torch.nn.Module, name: str, options: Mapping[str, Any]) -> None:
    """Raise :class:`BackendMismatchError` unless ``model`` accounts as built with backend
    ``name`` and ``options`` (for ``"e3nn"``: a stock model). Run after every build."""
    found = backend_of(model)
    found_options = backend_options_of(model) if found != "e3nn" else {}
    expected = dict(options) if name != "e3nn" else {}
    if (found, found_options) != (name, expected):
        raise BackendMismatchError(
            f"TP backend {name!r}: the {type(model).__name__} built uses {found!r} with options {found_options}; "
            "this model type does not build its tensor products through the sites the plugin replaces "
            "(MACE's TensorProduct and SymmetricContractionWrapper in mace.modules.blocks). Use another "
            "model class or the 'e3nn' backend."
        )


def _class_path(module: torch.nn.Module) -> str:
    """``package.module.Class`` of an eager module, or of the class a TorchScript module was scripted from."""
    if isinstance(module, torch.jit.ScriptModule):
        name = module._c._type().qualified_name()
        return re.sub(r"___torch_mangle_\d+\.", "", name).removeprefix("__torch__.")
    return f"{type(module).__module__}.{type(module).__qualname__}"


def site_modules(model: torch.nn.Module) -> Iterator[tuple[str, str, torch.nn.Module]]:
    """``(where, site, module)`` for every TP site of a MACE model (``where`` is the
    attribute path, e.g. ``interactions.0.conv_tp``)."""
    interactions = getattr(model, "interactions", None)
    products = getattr(model, "products", None)
    if interactions is None or products is None:
        raise BackendMismatchError(
            f"{type(model).__name__} is not a MACE model (no 'interactions' and 'products' blocks): "
            "cannot tell which TP backend it uses"
        )
    # named_children, not iteration: a ModuleList loaded with torch.jit.load cannot be iterated
    for i, block in interactions.named_children():
        yield f"interactions.{i}.conv_tp", "conv", getattr(block, "conv_tp")
    for i, block in products.named_children():
        yield f"products.{i}.symmetric_contractions", "product", getattr(block, "symmetric_contractions")


def _is_plugin(module: torch.nn.Module) -> bool:
    return hasattr(module, "backend_name") and hasattr(module, "backend_options")


def _is_stock(site: str, module: torch.nn.Module) -> bool:
    path = _class_path(module)
    return path in STOCK_SITE_CLASSES[site] or path.split(".")[0] in ACCELERATOR_PACKAGES


def _plugin_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if hasattr(m, "backend_name") and hasattr(m, "backend_options")]


def backend_of(model: torch.nn.Module) -> str:
    """Name of the TP backend a MACE model (eager or TorchScript) was built with;
    ``"e3nn"`` for a stock MACE model.

    Raises
    ------
    BackendMismatchError
        A model this module's docstring does not account for (no MACE sites, a site
        holding neither a plugin module nor MACE's own), or plugin modules of several
        backends.
    """
    for where, site, module in site_modules(model):
        if not (_is_plugin(module) or _is_stock(site, module)):
            raise BackendMismatchError(
                f"cannot tell which TP backend this {type(model).__name__} uses: its {site} site {where} holds a "
                f"{_class_path(module)}, which is neither a plugin module (mace_gaunt_plugin BackendModule) nor "
                f"MACE's own ({', '.join(STOCK_SITE_CLASSES[site])})"
            )
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

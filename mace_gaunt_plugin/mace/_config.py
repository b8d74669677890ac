"""Model configs that keep the TP backend: read one from a model, build a model from one.

MACE's ``extract_config_mace_model`` returns constructor arguments that rebuild a *stock*
model; for a plugin model :func:`extract_config` adds ``tp_backend`` and
``tp_backend_options``, and :func:`model_from_config` builds with that backend again.
Handing such a config to MACE's own constructors fails loudly (unknown keyword) instead
of silently building a different model.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from ._build import backend_of, backend_options_of, build_model

__all__ = ["extract_config", "model_from_config", "BACKEND_KEY", "OPTIONS_KEY"]

BACKEND_KEY = "tp_backend"
OPTIONS_KEY = "tp_backend_options"


def _plugin_product(model: torch.nn.Module) -> Any:
    from ..backends.base import BackendModule

    products = getattr(model, "products", None)
    if not products:
        return None
    contraction = getattr(products[0], "symmetric_contractions", None)
    return contraction if isinstance(contraction, BackendModule) else None


def extract_config(model: torch.nn.Module) -> dict[str, Any]:
    """``mace.tools.scripts_utils.extract_config_mace_model(model)``, plus the backend.

    Parameters
    ----------
    model : torch.nn.Module
        A MACE model (``ScaleShiftMACE``, ...), stock or built with a plugin backend.

    Returns
    -------
    dict
        MACE constructor arguments; for a plugin model also ``tp_backend`` (name) and
        ``tp_backend_options`` (dict).
    """
    from ._seam import stock_model_config

    config = stock_model_config(model, _plugin_product(model))
    name = backend_of(model)
    if name != "e3nn":
        config[BACKEND_KEY] = name
        config[OPTIONS_KEY] = backend_options_of(model)
    return config


def model_from_config(config: Mapping[str, Any], model_cls: Any = None) -> torch.nn.Module:
    """A new model (fresh weights) from :func:`extract_config`'s output, with its backend.

    >>> # twin = model_from_config(extract_config(model)); twin.load_state_dict(model.state_dict())
    """
    kwargs = dict(config)
    if isinstance(kwargs.get("atomic_numbers"), torch.Tensor):  # MACE's config holds the model's buffer
        kwargs["atomic_numbers"] = [int(z) for z in kwargs["atomic_numbers"].tolist()]
    name = kwargs.pop(BACKEND_KEY, "e3nn")
    options = kwargs.pop(OPTIONS_KEY, {})
    return build_model(name, model_cls=model_cls, backend_options=options, **kwargs)

"""mace-gaunt-plugin: fast equivariant tensor-product backends for MACE.

Pick how the tensor products inside a MACE model are computed, keep that choice wherever
the model goes. Heavy imports (torch, mace) happen on first use of an attribute, so
importing this package is cheap.

>>> import mace_gaunt_plugin as mgp
>>> "e3nn" in mgp.available_backends()
True
"""

from __future__ import annotations

from ._lazy import lazy_attributes

__version__ = "0.1.0"

_LAZY = {
    "available_backends": ".registry",
    "get_backend": ".registry",
    "use_backend": ".mace",
    "build_model": ".mace",
    "backend_of": ".mace",
    "backend_options_of": ".mace",
    "switch_backend": ".mace",
    "read_checkpoint": ".mace",
    "kept_paths": ".backends.sparse_backend",
    "save_model": ".mace._safe_file",
    "load_model": ".mace._safe_file",
    "safe_calculator": ".mace._safe_file",
    "SafeModelFileError": ".mace._safe_file",
    "BackendError": ".errors",
    "BackendMismatchError": ".errors",
    "BackendOptionError": ".errors",
    "UnknownBackendError": ".errors",
    "UnsupportedIrrepsError": ".errors",
    "BackendNotInstalledError": ".errors",
    "IncompatibleMaceError": ".errors",
}

__all__ = sorted(_LAZY) + ["__version__"]

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)

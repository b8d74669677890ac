"""Tensor-product backends: one module per backend, all built from irreps alone."""

import mace  # noqa: F401  (sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD, which e3nn 0.4.4 needs on torch >= 2.6)

from .base import BackendModule, Option, TPBackend

__all__ = ["BackendModule", "Option", "TPBackend"]

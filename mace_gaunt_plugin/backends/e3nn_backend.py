"""The ``e3nn`` backend: MACE exactly as shipped (e3nn Clebsch-Gordan tensor products)."""

from __future__ import annotations

from .base import TPBackend

E3NN_BACKEND = TPBackend(
    name="e3nn",
    description="stock MACE: e3nn Clebsch-Gordan tensor product and symmetric contraction",
    function_family="cg",
)

"""Everything that touches MACE internals: building models with a backend, reading a
model's backend, switching between equivalent backends."""

from ._build import backend_of, backend_options_of, build_model
from ._hook import use_backend

__all__ = ["backend_of", "backend_options_of", "build_model", "use_backend"]

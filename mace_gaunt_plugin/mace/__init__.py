"""Everything that touches MACE internals: building models with a backend, reading a
model's backend, switching between equivalent backends."""

from ._build import backend_of, backend_options_of, build_model
from ._hook import use_backend
from ._switch import switch_backend

__all__ = ["backend_of", "backend_options_of", "build_model", "switch_backend", "use_backend"]

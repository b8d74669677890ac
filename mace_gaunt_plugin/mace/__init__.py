"""The MACE glue: building models with a backend, reading a model's backend, switching
between equivalent backends, reading plugin training checkpoints. Every substitution into
MACE or e3nn goes through :mod:`._seam`."""

from ._build import backend_of, backend_options_of, build_model
from ._checkpoint import read_checkpoint
from ._hook import use_backend
from ._switch import switch_backend

__all__ = ["backend_of", "backend_options_of", "build_model", "read_checkpoint", "switch_backend", "use_backend"]

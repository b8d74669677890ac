"""Errors of the LAMMPS interface; each says what went wrong and what to change."""

from __future__ import annotations

from mace_gaunt_plugin.errors import BackendError

__all__ = ["LAMMPSInterfaceError", "ModelFileError"]


class LAMMPSInterfaceError(BackendError, RuntimeError):
    """A LAMMPS run the wrapper cannot compute exactly, or a bad export request."""


class ModelFileError(LAMMPSInterfaceError):
    """A model file that is missing, corrupt, or of another format version."""

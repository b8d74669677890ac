"""Errors raised by the plugin. Each says what went wrong and how to fix it."""

from __future__ import annotations


class BackendError(Exception):
    """Base class of every error the plugin raises on purpose."""


class UnknownBackendError(BackendError, ValueError):
    """A backend name that no installed package registers."""

    def __init__(self, name: str, available: list[str], hint: str = "") -> None:
        self.name = name
        self.available = available
        msg = f"unknown TP backend {name!r}; available backends: {', '.join(available) or '(none)'}"
        if hint:
            msg += f". {hint}"
        super().__init__(msg)


class BackendOptionError(BackendError, ValueError):
    """An option a backend does not take, or a value it cannot use."""


class UnsupportedIrrepsError(BackendError, ValueError):
    """A model configuration the backend cannot represent (refused at build time)."""

    def __init__(self, backend: str, irreps: str, reason: str, fix: str = "") -> None:
        self.backend = backend
        self.irreps = irreps
        msg = f"TP backend {backend!r} cannot handle irreps {irreps}: {reason}"
        if fix:
            msg += f". {fix}"
        super().__init__(msg)


class BackendMismatchError(BackendError, ValueError):
    """An operation that would silently change which function a model computes."""


class BackendNotInstalledError(BackendError, ImportError):
    """A saved model needs a TP backend whose package is not installed (the message names it)."""


class IncompatibleMaceError(BackendError, ImportError):
    """The installed MACE differs from what the plugin's seam to MACE relies on (the message lists how)."""

    def __init__(self, installed: str, tested: str, problems: list[str]) -> None:
        self.installed = installed
        self.problems = problems
        listed = "; ".join(problems)
        super().__init__(
            f"mace-gaunt-plugin cannot hook into the installed mace-torch {installed} (it was written for {tested}): "
            f"{listed}. Install mace-torch=={tested}, or set MACE_GAUNT_PLUGIN_DISABLE=1 to run stock MACE."
        )

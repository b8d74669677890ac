"""Root pytest configuration: the package's doctests are collected too (pyproject.toml)."""

import contextlib
import io

# mace.modules prints a banner on its first import when cuequivariance is missing; a
# doctest whose example happens to import it first would see that line as output.
with contextlib.redirect_stdout(io.StringIO()):
    import mace.modules  # noqa: F401

"""Write a file so that readers see the old content or the new one, never half of it,
and never through a path someone else planted.

The bytes go to a temporary file created exclusively (``O_EXCL``, by
:func:`tempfile.mkstemp`) in the target's folder, which is then renamed over the target
with :func:`os.replace`. A symlink planted at any predictable name (``OUTPUT.tmp``) is
never followed; a symlink at the target itself is replaced, not written through. The file
gets the permissions a plain ``open(path, "wb")`` would give (0666 less the umask), not
``mkstemp``'s owner-only 0600, so shared model files stay readable as before.
"""

from __future__ import annotations

import os
import tempfile
from typing import BinaryIO, Callable

__all__ = ["write_atomically"]


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it back at once
    os.umask(mask)
    return mask


def write_atomically(path: str, write: Callable[[BinaryIO], None]) -> str:
    """Call ``write(f)`` on a fresh temporary file next to ``path``, then rename it to
    ``path``; on any error the temporary file is removed. Returns ``path``.

    >>> import os, tempfile
    >>> target = os.path.join(tempfile.mkdtemp(), "out.bin")
    >>> write_atomically(target, lambda f: f.write(b"data")) == target and open(target, "rb").read()
    b'data'
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    return path

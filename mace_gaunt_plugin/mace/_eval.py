"""``mace_eval_configs`` given a safe model file: a message that says what to do.

MACE's ``mace_eval_configs`` reads its ``--model`` with ``torch.load``; given a
``*.safetensors`` file it fails with "'dict' object has no attribute 'to'". The start-up
hook (``_mace_gaunt_plugin_startup.py``) calls :func:`install` when
``mace.cli.eval_configs`` is imported; :func:`install` makes the module's ``main`` parse
the arguments as MACE's does, refuse a safe model file (exit status 2, one line) and
otherwise call MACE's own ``run(args)``. No ``forward`` and no other MACE code is touched.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Optional

__all__ = ["install", "safe_file_message"]


def safe_file_message(path: str) -> Optional[str]:
    """Why ``mace_eval_configs`` cannot read ``path`` and what to do, or ``None`` if it is
    not a safe model file."""
    from ._safe_file import SAFE_SUFFIX, is_safe_model_file

    if not (str(path).endswith(SAFE_SUFFIX) or is_safe_model_file(path)):
        return None
    return (
        f"{path} is a safe model file (data only), which mace_eval_configs cannot read: it reads pickled .model "
        "files. Give it the NAME.model the safe file was written from, or evaluate the safe file without "
        "unpickling in Python: atoms.calc = mace_gaunt_plugin.safe_calculator(PATH, device='cpu', "
        "default_dtype='float64')"
    )


def _main_for(module: Any) -> Callable[[], None]:
    def main() -> None:
        args = module.parse_args()
        why = safe_file_message(os.fspath(args.model))
        if why is not None:
            print(f"mace_eval_configs: error: {why}", file=sys.stderr)
            raise SystemExit(2)
        module.run(args)

    main._mace_gaunt_plugin = True  # type: ignore[attr-defined]
    return main


def install(module: Any) -> None:
    """Make ``mace.cli.eval_configs.main`` refuse safe model files (called by the start-up
    hook; idempotent). Left alone if MACE's module no longer has ``parse_args`` and ``run``."""
    from . import _seam

    if callable(getattr(module, "parse_args", None)) and callable(getattr(module, "run", None)):
        _seam.install_main(module, _main_for(module))

"""Start-up hook of mace-gaunt-plugin: adds ``--tp-backend`` to MACE's ``mace_run_train``.

mace-torch 0.3.16 has no plugin mechanism, so the wheel installs
``mace_gaunt_plugin_startup.pth`` into site-packages; its one line imports this module
when Python starts. This module only puts a small finder at the front of
``sys.meta_path``. It imports nothing else (no torch, no mace, not even
``mace_gaunt_plugin``) and costs microseconds.

When, and only when, ``mace.cli.run_train`` is imported, the finder lets the normal
import run and then calls ``mace_gaunt_plugin.mace._train.install(module)``, which
replaces the module's ``main`` (what the ``mace_run_train`` console script calls) by one
that understands ``--tp-backend`` and ``--tp-option``. Likewise for
``mace.cli.eval_configs`` (``mace_eval_configs``), whose ``main`` then refuses a safe
model file with a message saying what to do (``mace_gaunt_plugin.mace._eval``). Nothing
else in MACE is touched.

``python -m mace.cli.run_train`` does not import the module: runpy asks the loader for
its code and runs that as ``__main__``. While the interpreter is locating a ``-m``
module, ``sys.argv[0]`` is ``"-m"`` (documented for ``-m``); only then does the loader
hand out, instead of run_train's code, two lines that import ``mace.cli.run_train`` (so
through the finder above) and call its ``main``: the same command as ``mace_run_train``.
``python .../mace/cli/run_train.py`` (by path) runs the file before any hook can act;
it is stock MACE, and a plugin checkpoint stops it with a message (see
``mace_gaunt_plugin/mace/_checkpoint.py``).

Switch it off with the environment variable ``MACE_GAUNT_PLUGIN_DISABLE=1``
(``mace_run_train`` is then exactly stock; ``python -m mace_gaunt_plugin.train`` still
works, it needs no start-up hook).
"""

from __future__ import annotations

import os
import sys

TARGET = "mace.cli.run_train"
#: MACE modules the finder answers for, and the plugin module whose ``install(module)``
#: is called once each is imported (``mace_eval_configs`` only gets a clear refusal of
#: safe model files, which it cannot read).
TARGETS = {TARGET: "mace_gaunt_plugin.mace._train", "mace.cli.eval_configs": "mace_gaunt_plugin.mace._eval"}
DISABLE_ENV = "MACE_GAUNT_PLUGIN_DISABLE"


def disabled() -> bool:
    """True when ``MACE_GAUNT_PLUGIN_DISABLE`` is set to anything but '', '0', 'false', 'no'."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


class _PatchingLoader:
    """Delegates to the real loader, then hands the executed module to the plugin."""

    def __init__(self, loader: object) -> None:
        self._loader = loader

    def __getattr__(self, name: str) -> object:  # get_code, get_source, is_package, ...
        return getattr(self._loader, name)

    def get_code(self, fullname: str) -> object:
        if sys.argv[:1] == ["-m"]:  # runpy is locating ``python -m mace.cli.run_train``
            source = f"import {fullname} as _target\n_target.main()\n"
            return compile(source, self._loader.get_filename(fullname), "exec")  # type: ignore[attr-defined]
        return self._loader.get_code(fullname)  # type: ignore[attr-defined]

    def create_module(self, spec: object) -> object:
        return self._loader.create_module(spec)  # type: ignore[attr-defined]

    def exec_module(self, module: object) -> None:
        self._loader.exec_module(module)  # type: ignore[attr-defined]
        import importlib

        importlib.import_module(TARGETS[module.__name__]).install(module)  # type: ignore[attr-defined]


class RunTrainFinder:
    """Meta-path finder that answers for the modules in :data:`TARGETS` only."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> object:
        if fullname not in TARGETS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once), unless switched off."""
    if disabled() or any(isinstance(f, RunTrainFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, RunTrainFinder())


install()

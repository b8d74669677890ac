"""``python -m mace_gaunt_plugin.train ARGS``: MACE's ``mace_run_train`` with
``--tp-backend`` and ``--tp-option``, the same arguments and behaviour as the console
script after the start-up hook, without needing that hook (see
:mod:`mace_gaunt_plugin.mace._train`).

>>> # python -m mace_gaunt_plugin.train --name demo --train_file train.xyz --tp-backend grid ...
"""

from __future__ import annotations


def main() -> None:
    """Run ``mace_run_train`` with the plugin's options."""
    from .mace._train import main as train_main

    train_main(prog="python -m mace_gaunt_plugin.train")


if __name__ == "__main__":
    main()

"""LAMMPS interface of mace-gaunt-plugin: run MACE models with any TP backend through
``pair_style mliap unified``.

* ``mace_gaunt_create_lammps_model`` (:mod:`lammps_interface.export`) writes the file;
* :mod:`lammps_interface.mliap_unified` is the ML-IAP model LAMMPS runs;
* ``build_lammps.sh`` builds a LAMMPS that can run it, ``prune_lammps_source.sh`` makes a
  small source tarball for machines without network.

Heavy imports (torch, mace, lammps) happen on first use of an attribute.
"""

from __future__ import annotations

from mace_gaunt_plugin._lazy import lazy_attributes

_LAZY = {
    "attach_lammps": ".mliap_unified",
    "load_model_file": ".mliap_unified",
    "MACEGauntMLIAP": ".mliap_unified",
    "INPUT_DECK_LINES": ".mliap_unified",
    "export_model": ".export",
    "LAMMPSInterfaceError": "._errors",
    "ModelFileError": "._errors",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)

"""Do the atom types' masses fit the elements ``pair_coeff`` maps them to?

``pair_coeff * * H C N O`` for a data file whose ``Masses`` are C, H, N, O runs the model
on the wrong elements and gives wrong energies without a word (LAMMPS maps types to
elements by position only). The masses tell: a type whose mass is not within
:data:`MASS_TOLERANCE` of its element's standard mass (``ase.data.atomic_masses``), or
that is closer in mass to another element of the model, stops the run with the
``pair_coeff`` line the masses suggest. Unusual masses on purpose (deuterium, mass
scaling) pass with ``MGP_LAMMPS_ALLOW_MASS_MISMATCH=1``. Knows nothing of LAMMPS: the
wrapper hands it plain arrays.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

#: A type's mass may differ from its element's standard mass by this fraction (1%: covers
#: rounded masses such as 1.0 for H or 56 for Fe; two elements of a model closer than
#: that in mass are told apart by the nearest-element rule instead).
MASS_TOLERANCE = 0.01

#: Environment variable that turns the check off (``1``) for masses set on purpose.
ALLOW_ENV = "MGP_LAMMPS_ALLOW_MASS_MISMATCH"


def mass_check_enabled() -> bool:
    """False when ``MGP_LAMMPS_ALLOW_MASS_MISMATCH=1``; anything but 0/1/unset is refused."""
    value = os.environ.get(ALLOW_ENV, "0").strip()
    if value not in ("0", "1", ""):
        raise ValueError(f"{ALLOW_ENV} must be 1 (allow masses that do not fit the elements) or 0, not {value!r}")
    return value != "1"


def _symbol(z: int) -> str:
    from ase.data import chemical_symbols

    return chemical_symbols[z]


def _nearest(mass: float, model_numbers: Sequence[int]) -> Optional[int]:
    """The model element (atomic number) whose standard mass is nearest ``mass``, if it is
    within the tolerance; else None."""
    from ase.data import atomic_masses

    std = np.array([atomic_masses[z] for z in model_numbers])
    k = int(np.abs(std - mass).argmin())
    return int(model_numbers[k]) if abs(std[k] - mass) <= MASS_TOLERANCE * std[k] else None


def mass_mismatch(
    rows: Sequence[tuple[int, float, int]], type_masses: np.ndarray, model_numbers: Sequence[int]
) -> Optional[str]:
    """Why the masses do not fit the elements, or None.

    ``rows``: (atom type, mass, atomic number that ``pair_coeff`` maps the type to), one
    per type that has atoms (per-atom masses: one per distinct mass); ``type_masses[t]``:
    a mass of type t (index 0 unused), for the suggested ``pair_coeff`` line;
    ``model_numbers``: the model's elements.
    """
    from ase.data import atomic_masses

    wrong = []
    for t, mass, z in sorted(rows):
        std = float(atomic_masses[z])
        near = _nearest(mass, model_numbers)
        if abs(mass - std) > MASS_TOLERANCE * std or (near is not None and near != z):
            wrong.append(f"atom type {t} has mass {mass:g} but pair_coeff maps it to {_symbol(z)} (standard mass {std:g})")
    if not wrong:
        return None
    ntypes = len(type_masses) - 1
    masses = [float(type_masses[t]) for t in range(1, ntypes + 1)]  # NaN: not known here
    guess = [None if np.isnan(m) else _nearest(m, model_numbers) for m in masses]
    unmatched = [str(t) for t, m, g in zip(range(1, ntypes + 1), masses, guess) if g is None and not np.isnan(m)]
    if unmatched:
        advice = (
            f"no element of the model ({', '.join(_symbol(z) for z in model_numbers)}) fits the mass of atom "
            f"type(s) {', '.join(unmatched)}"
        )
    else:
        advice = "the masses fit 'pair_coeff * * " + " ".join("?" if g is None else _symbol(g) for g in guess) + "'"
    return (
        "; ".join(wrong) + f": pair_coeff names the elements in atom-type order; {advice}. If these masses are "
        f"intended (isotopes, mass scaling), run with {ALLOW_ENV}=1 in the environment (every rank's)"
    )

"""The mass check behind the ``pair_coeff`` element list (lammps_interface._type_masses),
without LAMMPS: which masses pass, which stop, and what the message advises."""

from __future__ import annotations

import numpy as np
import pytest
from ase.data import atomic_masses

from lammps_interface._type_masses import ALLOW_ENV, MASS_TOLERANCE, mass_check_enabled, mass_mismatch

MODEL = [1, 6, 7, 8, 29]  # H C N O Cu
CHNO = np.array([0.0, atomic_masses[6], atomic_masses[1], atomic_masses[7], atomic_masses[8]])


def _rows(masses: np.ndarray, numbers: list[int]) -> list[tuple[int, float, int]]:
    return [(t, float(masses[t]), z) for t, z in enumerate(numbers, start=1)]


def test_standard_and_rounded_masses_pass() -> None:
    assert mass_mismatch(_rows(CHNO, [6, 1, 7, 8]), CHNO, MODEL) is None
    rounded = np.array([0.0, 12.0, 1.0, 14.0, 16.0])
    assert mass_mismatch(_rows(rounded, [6, 1, 7, 8]), rounded, MODEL) is None
    fe = np.array([0.0, 56.0])  # 0.3% off iron's 55.845
    assert mass_mismatch(_rows(fe, [26]), fe, [26, 29]) is None


def test_permutation_names_the_right_line() -> None:
    msg = mass_mismatch(_rows(CHNO, [1, 6, 7, 8]), CHNO, MODEL)
    assert msg is not None
    assert "atom type 1 has mass 12.011 but pair_coeff maps it to H" in msg
    assert "atom type 2 has mass 1.008 but pair_coeff maps it to C" in msg
    assert "'pair_coeff * * C H N O'" in msg and ALLOW_ENV in msg
    assert "type 3" not in msg and "type 4" not in msg


def test_tolerance_and_nearest_element() -> None:
    cu = atomic_masses[29]
    inside, outside = np.array([0.0, cu * (1 + 0.9 * MASS_TOLERANCE)]), np.array([0.0, cu * (1 + 1.1 * MASS_TOLERANCE)])
    assert mass_mismatch(_rows(inside, [29]), inside, MODEL) is None
    assert mass_mismatch(_rows(outside, [29]), outside, MODEL) is not None
    # cobalt and nickel differ by 0.4% in mass: the nearer element decides
    co_ni = np.array([0.0, atomic_masses[27], atomic_masses[28]])
    assert mass_mismatch(_rows(co_ni, [27, 28]), co_ni, [27, 28]) is None
    msg = mass_mismatch(_rows(co_ni, [28, 27]), co_ni, [27, 28])
    assert msg is not None and "'pair_coeff * * Co Ni'" in msg


def test_unusual_masses_say_no_element_fits() -> None:
    deuterium = np.array([0.0, 2.014, atomic_masses[8]])
    msg = mass_mismatch(_rows(deuterium, [1, 8]), deuterium, MODEL)
    assert msg is not None and "fits the mass of atom type(s) 1" in msg and ALLOW_ENV in msg


def test_types_of_unknown_mass_are_question_marks() -> None:
    masses = np.array([0.0, atomic_masses[6], np.nan])  # type 2 has no atoms on this rank (per-atom masses)
    msg = mass_mismatch([(1, float(masses[1]), 1)], masses, MODEL)
    assert msg is not None and "'pair_coeff * * C ?'" in msg


def test_opt_out_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    assert mass_check_enabled()
    monkeypatch.setenv(ALLOW_ENV, "1")
    assert not mass_check_enabled()
    monkeypatch.setenv(ALLOW_ENV, "0")
    assert mass_check_enabled()
    monkeypatch.setenv(ALLOW_ENV, "yes")
    with pytest.raises(ValueError, match="must be 1"):
        mass_check_enabled()

"""``pair_coeff * *`` mistakes stop the run with a message instead of crashing or giving
wrong energies: fewer element names than atom types (LAMMPS read past its arguments and
crashed with exit 139), more names than types (ignored), and a permuted list whose
elements do not fit the types' masses (wrong energies without a word); the mass check's
opt-out ``MGP_LAMMPS_ALLOW_MASS_MISMATCH=1`` lets a run with intended masses go on.

Needs the LAMMPS built by ``lammps_interface/build_lammps.sh`` (the count check is its
patch to ``pair_mliap.cpp``); in CI a missing module is an error."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

try:
    from lammps import lammps, mliap  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    if os.environ.get("CI"):
        raise RuntimeError("CI is set but the LAMMPS Python module is missing: run build_lammps.sh first") from exc
    pytest.skip(f"LAMMPS Python module not installed ({exc}); build it with bash lammps_interface/build_lammps.sh",
                allow_module_level=True)  # fmt: skip

from _lammps_models import exported_model  # noqa: E402
from lammps_interface import INPUT_DECK_LINES, harness  # noqa: E402

pytestmark = pytest.mark.lammps

# four atom types whose masses are C, H, N, O (the order ASE writes 3BPA's data file in)
DATA = """\
LAMMPS data file: four atoms, types C H N O

4 atoms
4 atom types

0.0 12.0 xlo xhi
0.0 12.0 ylo yhi
0.0 12.0 zlo zhi

Masses

1 12.011
2 1.008
3 14.007
4 15.999

Atoms # atomic

1 1 5.0 5.0 5.0
2 2 6.1 5.0 5.0
3 3 5.0 6.4 5.0
4 4 5.0 5.0 6.3
"""

DECK = """\
units metal
atom_style atomic
boundary p p p
read_data data.cnho
{extra}{attach}pair_style mliap unified {model} 0
pair_coeff * * {elements}
run 0
print "MGP_PE $(pe:%.16e)"
"""


def _run(tmp_path: Path, elements: str, env_extra: dict | None = None, extra: str = "") -> subprocess.CompletedProcess:
    lmp = harness.find_lmp()
    if lmp is None:
        pytest.fail("no lmp executable: build_lammps.sh links it next to this Python")
    _, model_file = exported_model("e3nn")
    (tmp_path / "data.cnho").write_text(DATA)
    (tmp_path / "in.deck").write_text(DECK.format(attach=INPUT_DECK_LINES, model=model_file, elements=elements, extra=extra))
    env = harness.lmp_env()
    env.pop("MGP_LAMMPS_ALLOW_MASS_MISMATCH", None)
    env.update(env_extra or {})
    return subprocess.run(
        [lmp, "-in", "in.deck", "-log", "none", "-nocite"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )


def _energy(res: subprocess.CompletedProcess) -> float:
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return float(next(line.split()[1] for line in res.stdout.splitlines() if line.startswith("MGP_PE")))


def _assert_stops(res: subprocess.CompletedProcess, *needles: str) -> None:
    out = res.stdout + res.stderr
    assert res.returncode > 0, f"exit {res.returncode} (negative: killed by a signal):\n{out[-3000:]}"
    assert "ERROR" in out, out[-3000:]
    for needle in needles:
        assert needle in out, f"{needle!r} not in output:\n{out[-3000:]}"


def test_matching_element_list_runs(tmp_path: Path) -> None:
    _energy(_run(tmp_path, "C H N O"))


def test_fewer_elements_than_types_stop(tmp_path: Path) -> None:
    """Stock LAMMPS reads past the argument list here (segfault, exit 139)."""
    _assert_stops(_run(tmp_path, "C H N"), "names 3 element(s) for 4 atom type(s)", "one element name (or NULL) per atom type")


def test_more_elements_than_types_stop(tmp_path: Path) -> None:
    """Stock LAMMPS ignores the extra name."""
    _assert_stops(_run(tmp_path, "C H N O Cu"), "names 5 element(s) for 4 atom type(s)")


def test_permuted_elements_stop_with_the_line_to_write(tmp_path: Path) -> None:
    """H C N O for types whose masses are C H N O: the run stops and names the right line."""
    _assert_stops(
        _run(tmp_path, "H C N O"),
        "atom type 1 has mass 12.011 but pair_coeff maps it to H",
        "atom type 2 has mass 1.008 but pair_coeff maps it to C",
        "pair_coeff * * C H N O",
        "MGP_LAMMPS_ALLOW_MASS_MISMATCH=1",
    )


def test_mass_check_opt_out(tmp_path: Path) -> None:
    """With the opt-out the permuted list runs, and gives another energy than the right one."""
    right = _energy(_run(tmp_path, "C H N O"))
    permuted = _energy(_run(tmp_path, "H C N O", {"MGP_LAMMPS_ALLOW_MASS_MISMATCH": "1"}))
    assert permuted != right
    _assert_stops(_run(tmp_path, "C H N O", {"MGP_LAMMPS_ALLOW_MASS_MISMATCH": "yes"}), "must be 1")


def test_per_atom_masses_are_checked_too(tmp_path: Path) -> None:
    """With per-atom masses (``rmass``), each distinct mass of a type is checked."""
    rmass = "fix mgp_rmass all property/atom rmass\n" + "".join(
        f"set type {t} mass {m}\n" for t, m in ((1, 12.011), (2, 1.008), (3, 14.007), (4, 15.999))
    )
    _energy(_run(tmp_path, "C H N O", extra=rmass))
    _assert_stops(_run(tmp_path, "H C N O", extra=rmass), "atom type 1 has mass 12.011", "pair_coeff * * C H N O")

"""The shell pieces of the LAMMPS build that need no LAMMPS: finding the tree in a tarball
with or without a top folder (Debian's 4 Jul 2026 tarball has none), the release table,
and the source patch (applied once, idempotent, refusing a file it does not know)."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "lammps_interface"
COEFF = """\
void PairMLIAP::coeff(int narg, char **arg)
{
  if (narg < 3) error->all(FLERR,"Incorrect args for pair coefficients");
  if (!allocated) allocate();

  char** elemtypes = &arg[2];
}
"""


def _bash(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f"set -euo pipefail\nsource {SCRIPTS}/lammps_releases.sh\n{script}"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def _tree(root: Path) -> Path:
    for sub in ("src", "cmake", "python", "doc"):
        (root / sub).mkdir(parents=True)
    (root / "src" / "version.h").write_text('#define LAMMPS_VERSION "4 Jul 2026"\n')
    (root / "cmake" / "CMakeLists.txt").write_text("")
    return root


@pytest.mark.parametrize("top", ["", "lammps-4Feb2025/"])
def test_tarball_with_or_without_top_folder(tmp_path: Path, top: str) -> None:
    src = _tree(tmp_path / "t")
    tarball = tmp_path / "l.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for sub in ("doc", "cmake", "python", "src"):  # src last, as in Debian's tarball
            tar.add(src / sub, arcname=top + sub)
    dest = tmp_path / "out"
    dest.mkdir()
    res = _bash(f'p="$(lammps_tar_prefix {tarball})"; echo "[$p]"; lammps_tar_extract {tarball} "$p" {dest} src cmake python')
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"[{top}]"
    assert (dest / "src" / "version.h").is_file() and (dest / "cmake").is_dir() and not (dest / "doc").exists()
    no_tree = tmp_path / "x.tar.gz"
    with tarfile.open(no_tree, "w:gz") as tar:
        tar.add(src / "doc", arcname="doc")
    assert _bash(f"lammps_tar_prefix {no_tree}").returncode != 0


def test_release_table() -> None:
    res = _bash('for r in $LAMMPS_RELEASES; do lammps_release_info "$r"; echo "$r $DEBIAN_SUITE $DEBIAN_TARBALL $KOKKOS_MIN"; done')
    assert res.returncode == 0, res.stderr
    lines = res.stdout.split("\n")
    assert lines[0] == "20260704 sid lammps_20260704+dfsg.orig.tar.gz 5.1.0"
    assert lines[1] == "20250204 trixie lammps_20250204+dfsg.1.orig.tar.xz 4.5.01"
    assert _bash('lammps_release_info 20240207').returncode != 0
    assert "20260704" in _bash('echo "$LAMMPS_DEFAULT_RELEASE"').stdout


def test_patch_applies_once_and_refuses_unknown_sources(tmp_path: Path) -> None:
    ml = tmp_path / "src" / "ML-IAP"
    ml.mkdir(parents=True)
    (ml / "pair_mliap.cpp").write_text(COEFF)
    run = ["bash", str(SCRIPTS / "patch_lammps_source.sh"), str(tmp_path)]
    for _ in range(2):  # idempotent
        res = subprocess.run(run, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
    lines = (ml / "pair_mliap.cpp").read_text().splitlines()
    check = [i for i, line in enumerate(lines) if "narg != 2 + atom->ntypes" in line]
    assert len(check) == 1 and lines[check[0] + 1] == "  char** elemtypes = &arg[2];"
    (ml / "pair_mliap.cpp").write_text(COEFF.replace("char** elemtypes", "char **elemtypes"))
    res = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "0 times" in res.stderr

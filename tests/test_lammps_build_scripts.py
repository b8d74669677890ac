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

#: the lines of ML-IAP's MLIAPData (4 Jul 2026) that patch 2 anchors on, in their order
DATA_H = """\
  int nneigh_max;                // number of ij neighbors allocated
  int npairs;                    // number of ij neighbor pairs
  int **lmp_firstneigh;          // copy of list->firstneigh for external evaluators
"""
DATA_CPP = """\
  nneigh_max = 0;
  nmax = 0;
  if (natomneigh_max < natomneigh) {
    memory->grow(lmp_firstneigh, natomneigh, nneigh_max, "MLIAPData:lmp_firstneigh");
  }
  int nneigh = 0;
  for (int ii = 0; ii < natomneigh; ii++) {
    nneigh += ninside;
  }

  if (nneigh_max < nneigh) {
    memory->grow(lmp_firstneigh, natomneigh, nneigh, "MLIAPData:lmp_firstneigh");
  }
  bytes += (double) nneigh_max * natomneigh_max * sizeof(int);    // lmp_firstneigh
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


def test_firstneigh_patch_sizes_rows_by_the_most_pairs_of_one_atom(tmp_path: Path) -> None:
    ml = tmp_path / "src" / "ML-IAP"
    ml.mkdir(parents=True)
    (ml / "pair_mliap.cpp").write_text(COEFF)
    (ml / "mliap_data.h").write_text(DATA_H)
    (ml / "mliap_data.cpp").write_text(DATA_CPP)
    run = ["bash", str(SCRIPTS / "patch_lammps_source.sh"), str(tmp_path)]
    for _ in range(2):  # idempotent
        res = subprocess.run(run, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
    cpp = (ml / "mliap_data.cpp").read_text()
    assert "memory->grow(lmp_firstneigh" not in cpp  # neither (atoms x all pairs) growth is left
    assert cpp.count('memory->create(lmp_firstneigh, firstneigh_rows, firstneigh_width, "MLIAPData:lmp_firstneigh");') == 1
    lines = cpp.splitlines()
    # the widest row is counted in the loop over atoms, before the array is sized
    assert lines.index("    if (ninside > width) width = ninside;") == lines.index("    nneigh += ninside;") + 1
    assert lines.index("  int nneigh = 0, width = 1;") < lines.index("  if (firstneigh_rows < natomneigh || firstneigh_width < width) {")
    assert lines.index("  firstneigh_rows = firstneigh_width = 0;") == lines.index("  nmax = 0;") - 1
    assert "bytes += (double) firstneigh_rows * firstneigh_width * sizeof(int);" in cpp
    assert "nneigh_max * natomneigh_max" not in cpp
    assert (ml / "mliap_data.h").read_text().count("int firstneigh_rows, firstneigh_width;") == 1
    # a release without lmp_firstneigh (4 Feb 2025) is left as it is; an unknown one stops
    old = tmp_path / "old"
    (old / "src" / "ML-IAP").mkdir(parents=True)
    (old / "src" / "ML-IAP" / "pair_mliap.cpp").write_text(COEFF)
    without = DATA_CPP.replace("lmp_firstneigh", "other_array")
    (old / "src" / "ML-IAP" / "mliap_data.cpp").write_text(without)
    res = subprocess.run(["bash", str(SCRIPTS / "patch_lammps_source.sh"), str(old)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert (old / "src" / "ML-IAP" / "mliap_data.cpp").read_text() == without
    (ml / "mliap_data.h").write_text(DATA_H)
    unknown = DATA_CPP.replace("  int nneigh = 0;\n", "")
    (ml / "mliap_data.cpp").write_text(unknown)
    res = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "0 times" in res.stderr
    assert (ml / "mliap_data.h").read_text() == DATA_H and (ml / "mliap_data.cpp").read_text() == unknown  # untouched

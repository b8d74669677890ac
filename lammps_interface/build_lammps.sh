#!/usr/bin/env bash
# Build LAMMPS for `pair_style mliap unified` and install its Python module into the
# active Python environment.
#
# Packages: ML-IAP + ML-SNAP + PYTHON (with MLIAP_ENABLE_PYTHON), OPENMP, shared library,
# MPI (Debian's OpenMPI: libopenmpi-dev + openmpi-bin, installed with apt-get when mpicxx or
# mpirun is missing), or serial with --serial.  KOKKOS with CUDA only with --kokkos-cuda ARCH.
# One MPI build serves one-rank runs too (plain `lmp` or `mpirun -np 1`).  As root, OpenMPI's
# mpirun needs --allow-run-as-root (or OMPI_ALLOW_RUN_AS_ROOT=1 and
# OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1), and --oversubscribe for more ranks than cores.
#
# Source, in this order:
#   1. LAMMPS_SRC: a LAMMPS source tree (directory) or a tarball of one (for example the
#      pruned tarball made by prune_lammps_source.sh, for machines without network);
#   2. else Debian's source package of the release asked for (lammps_releases.sh), fetched
#      through this machine's own apt mirror (the `URIs:` line of
#      /etc/apt/sources.list.d/debian.sources) with a scratch apt configuration that leaves
#      the system's apt alone; sha256-checked.  Releases: 20260704 ("4 Jul 2026", Debian
#      sid; the default) and 20250204 ("4 Feb 2025", Debian trixie).
#
# The build is cached in ${MGP_LAMMPS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mace-gaunt-plugin}
# under lammps-<version>-<hash of release, source and options>; a rerun only re-installs
# the Python module.  `lmp` is linked into the environment's bin/ folder.
#
# Usage: bash lammps_interface/build_lammps.sh [--release YYYYMMDD] [--kokkos-cuda ARCH]
#                                              [--jobs N] [--serial] [--no-openmp] [--force]
#                                              [--print-dir] [--offline]
#   --release: 20260704 (default; or set MGP_LAMMPS_RELEASE) or 20250204.  With LAMMPS_SRC,
#   the source must be that release (checked against its src/version.h).
#   --serial: no MPI (LAMMPS's own MPI stub library); a separate cache entry.
#   --offline: install the Python module with the environment's own setuptools instead of
#   the install-python target (which makes a fresh venv and fetches pip/build/wheel).
#   ARCH is a Kokkos architecture name such as HOPPER90, AMPERE80, ADA89. KOKKOS needs
#   Kokkos sources (>= 5.1.0 for 20260704, >= 4.5.01 for 20250204): lib/kokkos of the
#   LAMMPS tree, or KOKKOS_SRC (Debian's tarballs have none).
set -euo pipefail
trap 'echo "build_lammps.sh: error: line $LINENO: \"$BASH_COMMAND\" failed" >&2' ERR

# Everything runs inside main(), so bash has parsed the whole file before it starts:
# editing this file while a build runs cannot derail that build.
main() {
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lammps_releases.sh
source "$HERE/lammps_releases.sh"
PATCHER="$HERE/patch_lammps_source.sh"   # our patches to the LAMMPS source (see that file)
RELEASE="${MGP_LAMMPS_RELEASE:-}"

KOKKOS_CUDA_ARCH=""
JOBS="$(nproc 2>/dev/null || echo 2)"
OPENMP=on
MPI=on
FORCE=0
PRINT_DIR=0
OFFLINE=0

die() { echo "build_lammps.sh: error: $*" >&2; exit 1; }
log() { echo "build_lammps.sh: $*" >&2; }
# Every minute, the build's progress from its log: ninja's "[n/N]" or make's "[ p%]".
report_progress() {
    local logfile=$1 minutes=0 step pause=
    trap 'kill "$pause" 2>/dev/null; exit 0' TERM  # also ends the pending sleep, which holds stderr
    while :; do
        sleep "${PROGRESS_EVERY:-60}" &
        pause=$!
        wait "$pause"
        minutes=$((minutes + 1))
        step=$(grep -oE '^\[ *[0-9]+(/[0-9]+|%)\]' "$logfile" 2>/dev/null | tail -1 | tr -d '[] ')
        log "  ... building, ${minutes} min: step ${step:-?}"
    done
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --release)     [[ $# -ge 2 ]] || die "--release needs a release date (one of: $LAMMPS_RELEASES)"
                       RELEASE="$2"; shift 2 ;;
        --kokkos-cuda) [[ $# -ge 2 ]] || die "--kokkos-cuda needs an architecture (e.g. HOPPER90)"
                       KOKKOS_CUDA_ARCH="$2"; shift 2 ;;
        --jobs|-j)     [[ $# -ge 2 ]] || die "--jobs needs a number"; JOBS="$2"; shift 2 ;;
        --no-openmp)   OPENMP=off; shift ;;
        --serial)      MPI=off; shift ;;
        --force)       FORCE=1; shift ;;
        --print-dir)   PRINT_DIR=1; shift ;;
        --offline)     OFFLINE=1; shift ;;
        -h|--help)     sed -n '2,35p' "$0"; exit 0 ;;
        *)             die "unknown argument '$1' (see --help)" ;;
    esac
done
RELEASE_ASKED="$RELEASE"   # empty: any release will do for LAMMPS_SRC
RELEASE="${RELEASE:-$LAMMPS_DEFAULT_RELEASE}"
lammps_release_info "$RELEASE" || die "unknown LAMMPS release '$RELEASE' (known: $LAMMPS_RELEASES)"

# --------------------------------------------------------------------------- python
PY="${PYTHON:-$(command -v python || command -v python3 || true)}"
[[ -n "$PY" ]] || die "no python on PATH: activate the environment to install into"
PY="$(command -v "$PY")"
"$PY" - <<'EOF' || die "the LAMMPS Python module needs numpy in $PY's environment"
import numpy
EOF
PY_ID="$("$PY" -c 'import sys, sysconfig; print(sys.version.split()[0], sys.base_prefix, sysconfig.get_config_var("LDLIBRARY"))')"
PY_BIN_DIR="$("$PY" -c 'import sys, sysconfig; print(sysconfig.get_path("scripts"))')"
if ! "$PY" -c 'import Cython' 2>/dev/null; then
    log "installing cython into $PY's environment (needed by MLIAP_ENABLE_PYTHON)"
    "$PY" -m pip install -q cython || die "could not install cython; install it yourself"
fi

# ------------------------------------------------------------------- build tools
need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
command -v g++ >/dev/null || need_apt+=(g++)
command -v ninja >/dev/null || command -v make >/dev/null || need_apt+=(ninja-build)
command -v xz >/dev/null || need_apt+=(xz-utils)
if [[ "$MPI" == on ]]; then
    command -v mpicxx >/dev/null || need_apt+=(libopenmpi-dev)
    command -v mpirun >/dev/null || need_apt+=(openmpi-bin)
fi
if [[ ${#need_apt[@]} -gt 0 ]]; then
    log "installing build tools with apt-get: ${need_apt[*]}"
    command -v apt-get >/dev/null || die "missing ${need_apt[*]} and no apt-get to install them"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${need_apt[@]}" >/dev/null \
        || die "apt-get install ${need_apt[*]} failed"
fi

GENERATOR=Ninja
command -v ninja >/dev/null || GENERATOR="Unix Makefiles"
"$PY" - <<'EOF' || die "$PY cannot be embedded in LAMMPS (PYTHON package): it needs Python.h and a shared libpython"
import os, sys, sysconfig
inc = sysconfig.get_paths()["include"]
if not os.path.exists(os.path.join(inc, "Python.h")):
    sys.exit(f"no Python.h in {inc} (install the Python development headers)")
if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
    sys.exit("this Python has no shared libpython (built without --enable-shared)")
EOF

# ------------------------------------------------------------------------ cache
CACHE_ROOT="${MGP_LAMMPS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mace-gaunt-plugin}"
mkdir -p "$CACHE_ROOT/downloads"
exec 9>"$CACHE_ROOT/.lock"
flock 9   # one build at a time per cache

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# Find the package mirror in the machine's apt configuration (never hard-coded).
debian_mirror() {
    if [[ -n "${DEBIAN_MIRROR:-}" ]]; then echo "$DEBIAN_MIRROR"; return; fi
    local f=/etc/apt/sources.list.d/debian.sources uri
    if [[ -f "$f" ]]; then
        uri="$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /-security\/?$/) { print $i; exit } }' "$f")"
        [[ -n "$uri" ]] && { echo "$uri"; return; }
    fi
    if [[ -f /etc/apt/sources.list ]]; then
        uri="$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { if ($i !~ /-security\/?$/) { print $i; exit } } }' /etc/apt/sources.list)"
        [[ -n "$uri" ]] && { echo "$uri"; return; }
    fi
    die "no Debian mirror found in /etc/apt (set DEBIAN_MIRROR or LAMMPS_SRC)"
}

fetch_debian_tarball() {
    local dest="$CACHE_ROOT/downloads/$DEBIAN_TARBALL"
    if [[ -f "$dest" && "$(sha256_of "$dest")" == "$DEBIAN_SHA256" ]]; then
        echo "$dest"; return
    fi
    command -v apt-get >/dev/null || die "no apt-get: set LAMMPS_SRC to a LAMMPS source tree or tarball"
    local mirror scratch
    mirror="$(debian_mirror)"
    scratch="$(mktemp -d)"
    mkdir -p "$scratch/sources.list.d" "$scratch/preferences.d" "$scratch/state/lists/partial" \
             "$scratch/cache/archives/partial" "$scratch/dl"
    echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $DEBIAN_SUITE main" \
        > "$scratch/sources.list"
    local opts=(-o "Dir::Etc::sourcelist=$scratch/sources.list"
                -o "Dir::Etc::sourceparts=$scratch/sources.list.d"
                -o "Dir::Etc::preferencesparts=$scratch/preferences.d"
                -o "Dir::State=$scratch/state" -o "Dir::Cache=$scratch/cache"
                -o "APT::Sandbox::User=root")
    log "fetching Debian $DEBIAN_SUITE's LAMMPS $RELEASE source package (~$DEBIAN_SIZE_MB MB) through the apt mirror"
    apt-get -qq "${opts[@]}" update >&2 || die "apt-get update with the scratch configuration failed"
    # The .dsc is not needed (and may answer 404): only the upstream tarball.
    (cd "$scratch/dl" && apt-get -qq "${opts[@]}" source --download-only --tar-only lammps >&2) \
        || die "apt-get source lammps failed"
    [[ -f "$scratch/dl/$DEBIAN_TARBALL" ]] \
        || die "expected $DEBIAN_TARBALL from Debian $DEBIAN_SUITE, got: $(ls "$scratch/dl") (the suite has moved on: set LAMMPS_SRC, or add that release to lammps_releases.sh)"
    local got
    got="$(sha256_of "$scratch/dl/$DEBIAN_TARBALL")"
    [[ "$got" == "$DEBIAN_SHA256" ]] || die "sha256 mismatch for $DEBIAN_TARBALL: $got"
    mv "$scratch/dl/$DEBIAN_TARBALL" "$dest"
    rm -rf "$scratch"
    echo "$dest"
}

# -------------------------------------------------------------- source identity
if [[ -n "${LAMMPS_SRC:-}" ]]; then
    [[ -e "$LAMMPS_SRC" ]] || die "LAMMPS_SRC=$LAMMPS_SRC does not exist"
    LAMMPS_SRC="$(realpath "$LAMMPS_SRC")"
    if [[ -d "$LAMMPS_SRC" ]]; then
        [[ -f "$LAMMPS_SRC/src/version.h" && -d "$LAMMPS_SRC/cmake" ]] \
            || die "LAMMPS_SRC=$LAMMPS_SRC is not a LAMMPS tree (needs src/version.h and cmake/)"
        SRC_ID="dir:$LAMMPS_SRC"
    else
        SRC_ID="tar:$(sha256_of "$LAMMPS_SRC")"
    fi
    SRC_KIND=user
    SRC_ID="release:${RELEASE_ASKED:-any} $SRC_ID"
else
    SRC_ID="release:$RELEASE debian:$DEBIAN_SHA256"
    SRC_KIND=debian
fi
if [[ -n "$KOKKOS_CUDA_ARCH" && -n "${KOKKOS_SRC:-}" ]]; then
    SRC_ID="$SRC_ID kokkos:$(realpath "$KOKKOS_SRC")"
fi

CMAKE_OPTS=(
    -D CMAKE_BUILD_TYPE=Release
    -D BUILD_SHARED_LIBS=on
    -D BUILD_MPI="$MPI"
    -D BUILD_OMP="$OPENMP"
    -D PKG_OPENMP="$OPENMP"
    -D PKG_ML-IAP=on
    -D PKG_ML-SNAP=on
    -D PKG_PYTHON=on
    -D MLIAP_ENABLE_PYTHON=on
)
if [[ -n "$KOKKOS_CUDA_ARCH" ]]; then
    [[ "$KOKKOS_CUDA_ARCH" =~ ^[A-Z]+[0-9]+$ ]] \
        || die "--kokkos-cuda wants a Kokkos arch name such as HOPPER90 or AMPERE80, not '$KOKKOS_CUDA_ARCH'"
    CMAKE_OPTS+=(-D PKG_KOKKOS=on -D Kokkos_ENABLE_CUDA=on -D Kokkos_ENABLE_SERIAL=on
                 -D "Kokkos_ARCH_${KOKKOS_CUDA_ARCH}=on" -D Kokkos_ENABLE_OPENMP="$OPENMP")
fi

PATCH_ID="patches:$(sha256_of "$PATCHER")"
KEY="$(printf '%s\n' "$SRC_ID" "$PATCH_ID" "$PY_ID" "${CMAKE_OPTS[@]}" | sha256sum | cut -c1-12)"

# ---------------------------------------------------------------- source tree
unpack_source() {   # $1 tarball, $2 destination: only what a build needs
    local tarball="$1" dest="$2" prefix
    mkdir -p "$dest"
    # with a top folder (lammps-4Feb2025/) or without (Debian's 20260704 tarball)
    prefix="$(lammps_tar_prefix "$tarball")" || die "$tarball holds no LAMMPS tree (no src/version.h)"
    lammps_tar_extract "$tarball" "$prefix" "$dest" src cmake python \
        || die "could not unpack src/, cmake/ and python/ from $tarball"
    if [[ -n "$KOKKOS_CUDA_ARCH" && -z "${KOKKOS_SRC:-}" ]]; then
        lammps_tar_extract "$tarball" "$prefix" "$dest" lib/kokkos 2>/dev/null \
            || die "$tarball has no lib/kokkos (Debian's tarball has none): set KOKKOS_SRC to a Kokkos >= $KOKKOS_MIN source tree"
    fi
}

add_kokkos() {   # $1 LAMMPS tree: put Kokkos into lib/kokkos when KOKKOS is asked for
    [[ -n "$KOKKOS_CUDA_ARCH" ]] || return 0
    if [[ -n "${KOKKOS_SRC:-}" ]]; then
        [[ -f "$KOKKOS_SRC/CMakeLists.txt" ]] || die "KOKKOS_SRC=$KOKKOS_SRC is not a Kokkos source tree"
        mkdir -p "$1/lib" && rm -rf "$1/lib/kokkos" && cp -a "$KOKKOS_SRC" "$1/lib/kokkos"
    fi
    [[ -f "$1/lib/kokkos/CMakeLists.txt" ]] \
        || die "--kokkos-cuda needs Kokkos sources in lib/kokkos: set KOKKOS_SRC to a Kokkos >= $KOKKOS_MIN tree (LAMMPS $RELEASE)"
}

VERSION=""
WORK=""
prepare_tree() {
    local tree="$WORK/lammps"
    rm -rf "$tree"
    if [[ "$SRC_KIND" == user && -d "$LAMMPS_SRC" ]]; then
        mkdir -p "$tree"
        cp -a "$LAMMPS_SRC/src" "$LAMMPS_SRC/cmake" "$LAMMPS_SRC/python" "$tree/"
        if [[ -n "$KOKKOS_CUDA_ARCH" && -z "${KOKKOS_SRC:-}" && -d "$LAMMPS_SRC/lib/kokkos" ]]; then
            mkdir -p "$tree/lib" && cp -a "$LAMMPS_SRC/lib/kokkos" "$tree/lib/"
        fi
    elif [[ "$SRC_KIND" == user ]]; then
        unpack_source "$LAMMPS_SRC" "$tree"
    else
        local tarball
        tarball="$(fetch_debian_tarball)"
        unpack_source "$tarball" "$tree"
    fi
    add_kokkos "$tree"
    bash "$PATCHER" "$tree" || die "patching the LAMMPS source failed"
    # Debian's tarball (dfsg) has dangling symlinks under python/: install-python chokes on them.
    find "$tree/python" -xtype l -delete
}

version_of() {   # "4 Feb 2025" -> 20250204
    local v
    v="$(sed -n 's/^#define LAMMPS_VERSION "\(.*\)"/\1/p' "$1/src/version.h")"
    date -d "$v" +%Y%m%d 2>/dev/null || echo "${v// /}"
}

# Cache directory name needs the version, which needs the source: find an existing one
# by key first, so that a rerun touches no source at all.
existing="$(ls -d "$CACHE_ROOT"/lammps-*-"$KEY" 2>/dev/null | head -1 || true)"
if [[ -n "$existing" && "$FORCE" == 1 ]]; then rm -rf "$existing"; existing=""; fi
if [[ -n "$existing" && -f "$existing/.source-ready" ]]; then
    WORK="$existing"   # built, or a build to continue (ninja picks up where it stopped)
else
    if [[ -n "$existing" ]]; then rm -rf "$existing"; fi
    rm -rf "$CACHE_ROOT"/partial-*   # left by an interrupted run (we hold the lock)
    WORK="$(mktemp -d "$CACHE_ROOT/partial-XXXXXX")"
    prepare_tree
    VERSION="$(version_of "$WORK/lammps")"
    if [[ -n "$RELEASE_ASKED" && "$VERSION" != "$RELEASE" ]]; then
        rm -rf "$WORK"
        die "asked for LAMMPS $RELEASE but the source is $VERSION"
    fi
    touch "$WORK/.source-ready"
    final="$CACHE_ROOT/lammps-$VERSION-$KEY"
    rm -rf "$final"
    mv "$WORK" "$final"
    WORK="$final"
fi
if [[ "$PRINT_DIR" == 1 ]]; then echo "$WORK"; exit 0; fi

BUILD="$WORK/build"
if [[ ! -f "$WORK/.complete" ]]; then
    cxx_opts=()
    if [[ -n "$KOKKOS_CUDA_ARCH" ]]; then
        cxx_opts=(-D "CMAKE_CXX_COMPILER=$WORK/lammps/lib/kokkos/bin/nvcc_wrapper")
    fi
    log "configuring LAMMPS in $BUILD (options key $KEY)"
    cmake -S "$WORK/lammps/cmake" -B "$BUILD" -G "$GENERATOR" "${CMAKE_OPTS[@]}" "${cxx_opts[@]}" \
        -D "Python_EXECUTABLE=$PY" >"$WORK/configure.log" 2>&1 \
        || { tail -40 "$WORK/configure.log" >&2; die "cmake configure failed (log: $WORK/configure.log)"; }
    log "building LAMMPS with $JOBS jobs (about 13 minutes on 2 cores; progress every minute; log: $WORK/build.log)"
    start=$SECONDS
    report_progress "$WORK/build.log" &
    reporter=$!
    build_ok=1
    cmake --build "$BUILD" -j "$JOBS" >"$WORK/build.log" 2>&1 || build_ok=0
    kill "$reporter" 2>/dev/null || true
    wait "$reporter" 2>/dev/null || true
    [[ $build_ok == 1 ]] \
        || { tail -40 "$WORK/build.log" >&2; die "LAMMPS build failed (log: $WORK/build.log; rerun continues it)"; }
    log "LAMMPS built in $((SECONDS - start)) s"
    touch "$WORK/.complete"
fi

# ------------------------------------------------------- python module + lmp
# install-python installs into whatever VIRTUAL_ENV says; unset it so the module goes
# into the environment of $PY (Python_EXECUTABLE), which is the active one.
cached_py="$(sed -n 's/^Python_EXECUTABLE:[A-Z]*=//p' "$BUILD/CMakeCache.txt")"
if [[ "$cached_py" != "$PY" ]]; then
    cmake -S "$WORK/lammps/cmake" -B "$BUILD" -D "Python_EXECUTABLE=$PY" >>"$WORK/configure.log" 2>&1 \
        || die "cmake reconfigure for $PY failed (log: $WORK/configure.log)"
fi
log "installing the lammps Python module into $PY's environment"
if [[ "$OFFLINE" == 1 ]]; then
    # what install.py does, minus its fresh build venv (which needs the network)
    stage="$WORK/python-stage"
    rm -rf "$stage" && cp -a "$WORK/lammps/python" "$stage" && cp "$BUILD/liblammps.so" "$stage/lammps/"
    (cd "$stage" && env -u VIRTUAL_ENV LAMMPS_SHARED_LIB=liblammps.so \
        LAMMPS_VERSION_FILE="$WORK/lammps/src/version.h" \
        "$PY" -m pip install --no-index --no-build-isolation --no-deps --force-reinstall --no-cache-dir . \
        >"$WORK/install-python.log" 2>&1) \
        || { tail -40 "$WORK/install-python.log" >&2; die "offline install of the Python module failed (needs setuptools in $PY's environment; log: $WORK/install-python.log)"; }
else
    env -u VIRTUAL_ENV cmake --build "$BUILD" --target install-python >"$WORK/install-python.log" 2>&1 \
        || { tail -40 "$WORK/install-python.log" >&2; die "install-python failed (log: $WORK/install-python.log)"; }
fi
ln -sf "$BUILD/lmp" "$PY_BIN_DIR/lmp"

MGP_MPI="$MPI" "$PY" - <<'EOF' || die "the installed lammps module does not work"
import os
from lammps import lammps, mliap  # noqa: F401
lmp = lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
for pkg in ("ML-IAP", "PYTHON"):
    if not lmp.has_package(pkg):
        raise SystemExit(f"LAMMPS lacks package {pkg}")
if lmp.has_mpi_support != (os.environ["MGP_MPI"] == "on"):
    raise SystemExit(f"LAMMPS MPI support is {lmp.has_mpi_support}, asked for MPI={os.environ['MGP_MPI']}")
print(f"build_lammps.sh: LAMMPS {lmp.version()} with ML-IAP + PYTHON ready; lmp -> {__import__('shutil').which('lmp')}")
lmp.close()
EOF
}

main "$@"; exit $?

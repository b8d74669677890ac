#!/usr/bin/env bash
# Set up (idempotent, cached) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bash "$repo/scripts/setup.sh"
venv=${MACE_GAUNT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/mace-gaunt-plugin/venv}
# shellcheck disable=SC1091
source "$venv/bin/activate"  # console scripts (mace_run_train, lmp, ...) on PATH, as for users
cd "$repo"
# pytest exits non-zero on any failure and with 5 when it collects nothing
exec python -m pytest -p no:cacheprovider "$@"

#!/usr/bin/env bash
# Set up (idempotent, cached) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bash "$repo/scripts/setup.sh"
venv=${MACE_GAUNT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/mace-gaunt-plugin/venv}
cd "$repo"
# pytest exits non-zero on any failure and with 5 when it collects nothing
exec "$venv/bin/python" -m pytest -p no:cacheprovider "$@"

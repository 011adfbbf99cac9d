#!/usr/bin/env bash
# The README's test command: install what is missing, then run the whole test suite.
# Tests start (and stop) their own SoftHSM tokens, named instances and other daemons.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/scripts/setup.sh"
cd "$repo"
exec "$repo/.venv/bin/python" -m pytest -q -ra "$@"

#!/usr/bin/env bash
# The README's main command with the embedded defaults: a SoftHSM2 token in the state dir, the
# patched BIND 9.18 built once (about 3 minutes the first time), a KSK and a ZSK on the token, and
# named serving a sample zone for $DOMAIN (default example.test) signed inline on 127.0.0.1:5353.
# Run it again: it changes nothing. Stop named with: .venv/bin/bindpkcs11 named stop example.test
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/scripts/setup.sh"
exec "$repo/.venv/bin/bindpkcs11" setup-inline "${DOMAIN:-example.test}" "$@"

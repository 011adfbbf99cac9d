#!/usr/bin/env bash
# The README's main command with the embedded defaults: a SoftHSM2 token in the state dir, a KSK
# and a ZSK generated on it and written as BIND key files, then the token shown.
# Environment: BINDPKCS11_STATE_DIR (default ~/.local/share/bindpkcs11), DOMAIN (example.test).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/scripts/setup.sh"
bp="$repo/.venv/bin/bindpkcs11"
domain="${DOMAIN:-example.test}"
token=bindpkcs11

if ! "$bp" token list --json | grep -q "\"label\": \"$token\""; then
  "$bp" token init --label "$token" --generate-pins
fi
for role in ksk zsk; do
  "$bp" keygen "$domain" --role "$role" --algorithm ECDSAP256SHA256 --token "$token"
done
"$bp" token show --label "$token"

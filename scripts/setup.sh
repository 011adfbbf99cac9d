#!/usr/bin/env bash
# Install, idempotently, everything bindpkcs11 needs on Debian 12 or 13: the Debian packages, then the
# package with its test extras into ./.venv. Safe to run again: it only installs what is missing.
# Every name below exists in both bookworm and trixie (checked with apt-cache policy; docs/devices.md).
# A name that differs between releases is written "A|B": the first one apt knows is installed.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
packages=(
  softhsm2 opensc libp11-kit-dev          # the default token, pkcs11-tool/pkcs11-spy, pkcs11.h for the shim
  p11-kit-modules                         # p11-kit-trust: a real module without key generation (tests)
  bind9-utils bind9-dnsutils bind9        # stock dnssec-* tools, dig, and a stock named (secondary)
  build-essential pkg-config python3-dev python3-venv
  libuv1-dev libssl-dev xz-utils          # building the patched BIND 9.18
  libjemalloc-dev                         # BIND's allocator (as Debian's BIND links it)
  libengine-pkcs11-openssl                # libp11's engine: tests' reference 9.18 engine build (same name on 13)
  liburcu-dev libcap-dev                  # building the patched BIND 9.20 (`bind build --version 9.20`)
  # the tpm2 profile: tpm2-pkcs11 and its store tool, swtpm + tpm2-abrmd on a private dbus for
  # `bindpkcs11 tpm2 simulator`, tpm2-tools for the tests' look at the TPM's lockout counter.
  libtpm2-pkcs11-1 libtpm2-pkcs11-tools tpm2-tools tpm2-abrmd swtpm swtpm-tools dbus
  libtss2-tcti-tabrmd0
  # the opencryptoki profile: libopencryptoki, pkcsslotd, pkcsconf (the sandbox uses util-linux's
  # unshare and mount, always present). The package's own pkcsslotd service is left as it is.
  opencryptoki
  systemd                                 # systemd-analyze verify for `bindpkcs11 systemd install`'s units
  docker.io debootstrap iptables          # tests/test_docker_image.py: a local Debian 12 base, its own dockerd
  vsmartcard-vpcd pcscd iproute2          # the opensc profile: `bindpkcs11 card simulator` (pcscd + vpcd, private netns)
)

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

missing=()
for package in "${packages[@]}"; do
  IFS='|' read -r -a choices <<< "$package"
  found=""
  for choice in "${choices[@]}"; do
    if installed "$choice"; then found=1; fi
  done
  [[ -n "$found" ]] || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: run as root (or install these packages first): ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  names=()
  for package in "${missing[@]}"; do
    IFS='|' read -r -a choices <<< "$package"
    pick="${choices[0]}"
    for choice in "${choices[@]}"; do
      if apt-cache policy "$choice" 2>/dev/null | grep -q "Candidate: [0-9]"; then pick="$choice"; break; fi
    done
    names+=("$pick")
  done
  apt-get install -y -qq --no-install-recommends "${names[@]}" >/dev/null
  # Debian starts named after installing bind9 where it can; bindpkcs11 runs its own instances.
  if command -v systemctl >/dev/null && systemctl is-active -q named 2>/dev/null; then
    systemctl disable --now named >/dev/null 2>&1 || true
  fi
fi

python="${PYTHON:-python3}"
if [[ ! -x "$repo/.venv/bin/python" ]]; then
  echo "setup: creating $repo/.venv"
  "$python" -m venv "$repo/.venv"
fi
stamp="$repo/.venv/.bindpkcs11-installed"
inputs=$(cat "$repo/setup.py" "$repo/pyproject.toml" "$repo/bindpkcs11/shim/bp11.c" "$repo/bindpkcs11/shim/bp11.h" \
  "$repo/bindpkcs11/shim/build_shim.py" | sha256sum | cut -d' ' -f1)
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$inputs" ]]; then
  echo "setup: installing bindpkcs11 and its test extras into .venv"
  "$repo/.venv/bin/python" -m pip install -q --upgrade pip setuptools wheel
  "$repo/.venv/bin/python" -m pip install -q -e "$repo[test]"
  echo "$inputs" > "$stamp"
fi
echo "setup: ready ($("$repo/.venv/bin/bindpkcs11" --version))"

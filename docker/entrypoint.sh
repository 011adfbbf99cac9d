#!/bin/sh
# The container's main job: `bindpkcs11 setup-inline $ZONE` on port 53 with the embedded defaults
# (a SoftHSM2 token in the state volume), then stay in the foreground while named serves; on
# `docker stop` named is stopped cleanly. Arguments replace the job: `docker run IMAGE token show`.
#
# PINs: /run/secrets/token-pin (and token-so-pin) mounted as files are used to create the token
# on the first start and to log in afterwards; without them the PINs are generated and kept 0600
# in the volume. They never pass through the environment or the command line.
set -eu
state="${BINDPKCS11_STATE_DIR:-/var/lib/bindpkcs11}"
zone="${ZONE:-example.test}"
pin=/run/secrets/token-pin
so_pin=/run/secrets/token-so-pin

if [ "$#" -gt 0 ]; then
  exec bindpkcs11 "$@"
fi

set --
if [ -s "$pin" ]; then
  set -- --pin-file "$pin"
  if ! bindpkcs11 token show --label bindpkcs11 --pin-file "$pin" >/dev/null 2>&1; then
    [ -s "$so_pin" ] || { echo "bindpkcs11: error: $pin is mounted but $so_pin is not: both are needed to create the token" >&2; exit 2; }
    bindpkcs11 token init --label bindpkcs11 --pin-file "$pin" --so-pin-file "$so_pin"
  fi
fi

# named listens on the container's own address (what a published port forwards to); LISTEN
# overrides it, e.g. with --network host. (named's "0.0.0.0" would match no interface at all.)
listen="${LISTEN:-$(hostname -i | cut -d' ' -f1)}"
bindpkcs11 "$@" setup-inline "$zone" --listen "$listen" --port 53 --rndc-port 953 ${SETUP_ARGS:-}

pid_file="$state/instances/$zone/named.pid"
stop() {
  bindpkcs11 named stop "$zone" || true
  exit 0
}
trap stop TERM INT
echo "bindpkcs11: serving $zone on port 53 (named pid $(cat "$pid_file"))"
# Wait while named lives; a named that dies ends the container (its restart policy decides).
while kill -0 "$(cat "$pid_file")" 2>/dev/null; do
  sleep 5 &
  wait $! || true
done
echo "bindpkcs11: named for $zone exited; see $state/instances/$zone/named.log" >&2
exit 1

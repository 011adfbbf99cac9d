# bindpkcs11 with systemd as the container's init: the units `bindpkcs11 systemd install` renders
# run as they would on a machine (user bind, the hardening, PINs by LoadCredential=).
# Built on the main image:
#   docker build -f docker/Dockerfile -t bindpkcs11 .
#   docker build -f docker/systemd.Dockerfile --build-arg IMAGE=bindpkcs11 -t bindpkcs11-systemd docker
# and run with what systemd needs in a container (docker/README.md, "With systemd as init").
ARG IMAGE=bindpkcs11
FROM ${IMAGE}

RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends systemd systemd-sysv \
 && apt-get clean && rm -rf /var/lib/apt/lists/* \
 && systemctl mask named.service getty@tty1.service console-getty.service
# Debian's bind9 package brings its own named.service (on port 53): masked, the instance's
# bindpkcs11-named@ZONE.service serves the zone.

# systemd hands LoadCredential= files over by mounting them in a private namespace and moving
# the mount to /run/credentials; it only reaches the service when / is a shared mount. On a
# machine systemd makes it so at boot; inside a container it leaves that to the container
# manager, and docker's / is a slave mount, so the units would find $CREDENTIALS_DIRECTORY empty.
ENTRYPOINT ["/bin/sh", "-c", "mount --make-rshared / && exec /sbin/init"]
STOPSIGNAL SIGRTMIN+3

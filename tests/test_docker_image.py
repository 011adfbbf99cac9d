"""docker/Dockerfile end to end: a local Debian 12 base, the image built, the zone served and validated.

No registry image can be pulled here (facts.md "Containers"): the base is made locally and the
image built by the session's private dockerd (tests/dockerenv.py, shared with
test_docker_systemd.py, stopped at the end pass or fail). The image is then run
with the token PINs as mounted secret files and a volume for the state; the zone served through a
loopback-published port 53 must validate, and a second container on the same volume must sign with
the same keys. Run alone with `pytest -m docker` (it takes minutes: BIND is compiled in the image).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dockerenv import IMAGE, Dockerd
from namedproc import free_port
from test_inline import validated

pytestmark = pytest.mark.docker

ZONE = "example.test"


def serve(dockerd: Dockerd, secrets: Path, port: int, name: str) -> None:
    dockerd.run("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:53/udp", "-p", f"127.0.0.1:{port}:53/tcp",
                "-v", "bp11-state:/var/lib/bindpkcs11",
                "-v", f"{secrets / 'token-pin'}:/run/secrets/token-pin:ro",
                "-v", f"{secrets / 'token-so-pin'}:/run/secrets/token-so-pin:ro", IMAGE)


def validated_within(port: int, dockerd: Dockerd, name: str, timeout: float = 600) -> set[int]:
    """Poll until the served SOA and DNSKEY validate; the DNSKEY RRset's RRSIG tags."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            validated(ZONE, "SOA", port)
            return validated(ZONE, "DNSKEY", port)[1]
        except Exception as error:  # not serving yet: no answer, unsigned, not validating
            last = error
        state = dockerd.run("inspect", "-f", "{{.State.Running}}", name, check=False).stdout.strip()
        if state == "false":
            raise AssertionError(f"container exited: {dockerd.run('logs', name, check=False).stderr[-3000:]}")
        time.sleep(1)
    raise AssertionError(f"zone not validated in {timeout} s ({last}): "
                         f"{dockerd.run('logs', name, check=False).stderr[-3000:]}")


def test_image_serves_the_signed_zone_and_keeps_its_keys_in_the_volume(dockerd, project_image, tmp_path):
    timings = dict(project_image)  # the build (shared with test_docker_systemd.py) is timed once
    started = time.monotonic() - sum(timings.values())
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "token-pin").write_text("docker-user-4711\n")
    (secrets / "token-so-pin").write_text("docker-so-0815x\n")
    for path in secrets.iterdir():
        path.chmod(0o600)  # read by root in the container (no user namespace)
    port = free_port()
    serve(dockerd, secrets, port, "bp11-first")
    first_tags = validated_within(port, dockerd, "bp11-first")
    timings["first start"] = time.monotonic() - started - sum(timings.values())
    # The PIN reached the container as a file, never through its environment.
    env = dockerd.run("inspect", "-f", "{{.Config.Env}}", "bp11-first").stdout
    assert "docker-user-4711" not in env
    dockerd.run("rm", "-f", "bp11-first")
    # A new container on the same volume signs with the same keys (the token lives in the volume).
    port = free_port()
    serve(dockerd, secrets, port, "bp11-second")
    assert validated_within(port, dockerd, "bp11-second") == first_tags
    timings["second start"] = time.monotonic() - started - sum(timings.values())
    dockerd.run("rm", "-f", "bp11-second")
    print("docker timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))

"""Docker for the tests: a private dockerd, a locally made Debian 12 base, the project's image.

No registry image can be pulled here (facts.md "Containers"), so the base is made with debootstrap
(minbase) from this machine's Debian sources and `docker import`ed; the tarball is cached in
.cache/docker between runs. A test session starts at most one dockerd (private data, exec root and
socket) and builds docker/Dockerfile at most once (BIND is compiled in it: about 4 minutes); the
tests that need them share both through the session fixtures in conftest.py, and the daemon is
stopped and cleaned up at the end, pass or fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import REPO

DOCKER = "/usr/bin/docker"  # docker.io's client: its BuildKit needs no buildx plugin
BASE_IMAGE = "localhost/debian12-base"
IMAGE = "localhost/bindpkcs11-test"
BASE_CACHE = REPO / ".cache" / "docker" / "debian12-base.tar"
HOST_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BRIDGE = Path("/sys/class/net/docker0")


def missing() -> str | None:
    """Why docker cannot run here at all, or None."""
    if os.geteuid() != 0:
        return "needs root (dockerd, debootstrap)"
    for tool in ("/usr/sbin/dockerd", DOCKER, "/usr/sbin/debootstrap", "/usr/sbin/iptables"):
        if not Path(tool).exists():
            return f"needs {tool} (Debian docker.io, debootstrap, iptables; scripts/setup.sh)"
    return None


def mirror() -> str:
    """The machine's Debian mirror (deb822 sources, else a one-line sources.list)."""
    if HOST_SOURCES.exists():
        for line in HOST_SOURCES.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    for line in Path("/etc/apt/sources.list").read_text().splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "deb" and words[2] == "bookworm":
            return words[1]
    raise AssertionError("no Debian bookworm mirror in /etc/apt: debootstrap needs one")


def base_tarball() -> Path:
    """A minbase Debian 12 root as a tar, made once per machine (about a minute) and cached."""
    if BASE_CACHE.exists():
        return BASE_CACHE
    root = Path(tempfile.mkdtemp(prefix="bindpkcs11-rootfs-"))
    try:
        subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(root), mirror()],
                       check=True, capture_output=True, timeout=1200)
        if HOST_SOURCES.exists():  # the machine's sources: bookworm, -updates and -security
            (root / "etc/apt/sources.list").unlink(missing_ok=True)
            shutil.copy(HOST_SOURCES, root / "etc/apt/sources.list.d/debian.sources")
        else:
            shutil.copy("/etc/apt/sources.list", root / "etc/apt/sources.list")
        for path in [*root.glob("var/cache/apt/*.bin"), *root.glob("var/lib/apt/lists/*")]:
            if path.is_file():
                path.unlink()
        BASE_CACHE.parent.mkdir(parents=True, exist_ok=True)
        partial = BASE_CACHE.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(root), "-cf", str(partial), "."], check=True, timeout=600)
        partial.rename(BASE_CACHE)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return BASE_CACHE


class Dockerd:
    """A private dockerd: own data, exec root and socket; stopped and cleaned up by stop()."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.socket = base / "docker.sock"
        self.exec_root = base / "exec"
        self.log = base / "dockerd.log"
        self.bridge_existed = BRIDGE.exists()
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                ["/usr/sbin/dockerd", "--data-root", str(base / "data"), "--exec-root", str(self.exec_root),
                 "-H", f"unix://{self.socket}", "--pidfile", str(base / "dockerd.pid")],
                stdout=log, stderr=log, start_new_session=True)
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{self.socket}", DOCKER_BUILDKIT="1")

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.skip(f"docker cannot run here: dockerd exited ({self.log.read_text()[-500:]})")
            if self.run("info", check=False).returncode == 0:
                return
            time.sleep(0.5)
        raise AssertionError(f"dockerd not ready in {timeout} s: {self.log.read_text()[-2000:]}")

    def run(self, *args: str, check: bool = True, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
        result = subprocess.run([DOCKER, *args], capture_output=True, text=True, env=self.env,
                                timeout=timeout, **kwargs)
        if check and result.returncode != 0:
            raise AssertionError(f"docker {args[0]} failed: {result.stdout[-3000:]}{result.stderr[-3000:]}")
        return result

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        netns = self.exec_root / "netns" / "default"
        if netns.exists():
            subprocess.run(["umount", str(netns)], capture_output=True)
        subprocess.run(["umount", "-R", str(self.base / "data")], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)
        # dockerd leaves its bridge behind; remove it when this daemon made it and no other runs.
        others = subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True).returncode == 0
        if not self.bridge_existed and BRIDGE.exists() and not others:
            subprocess.run(["ip", "link", "delete", BRIDGE.name], capture_output=True)


def started_dockerd():
    """Generator behind the session fixture `dockerd`: skips where docker cannot run at all."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    daemon = Dockerd(Path(tempfile.mkdtemp(prefix="bp11d-", dir="/tmp")))
    try:
        daemon.wait_ready()
        yield daemon
    finally:
        daemon.stop()


def build_image(dockerd: Dockerd) -> dict[str, float]:
    """docker/Dockerfile built on the local base as IMAGE; how long each step took (s)."""
    timings = {}
    started = time.monotonic()
    dockerd.run("import", str(base_tarball()), BASE_IMAGE)
    timings["base"] = time.monotonic() - started
    build = ["build", "--build-arg", f"BASE={BASE_IMAGE}", "-f", str(REPO / "docker" / "Dockerfile"),
             "-t", IMAGE]
    if CA_BUNDLE.exists():
        build += ["--secret", f"id=cacert,src={CA_BUNDLE}"]
    dockerd.run(*build, str(REPO), timeout=3600)
    timings["build"] = time.monotonic() - started - timings["base"]
    return timings

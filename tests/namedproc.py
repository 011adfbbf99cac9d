"""A real named on a loopback test port, for tests: start, wait until it answers, always stop.

    with NamedProcess("example.test", zone_file, tmp_path / "named") as named:
        query(..., port=named.port)

`NamedProcess(zone, zone_file, workdir)` serves `zone_file` as a primary for `zone`. Pass
`zone_file=None` and your own zone statement(s) in `extra_config` to run something else, e.g. a
secondary (`zone "example.test" { type secondary; primaries port P { 127.0.0.1; }; file "s.db"; };`):
the server counts as started once `zone`'s SOA is answered authoritatively, so for a secondary that
is after the first transfer. named's log (it runs with -g) is `named.log_path`; a start that fails or
times out raises AssertionError with the log's tail.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype

NAMED = "/usr/sbin/named"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
_POLL_QUERY_TIMEOUT = 0.5


def free_port() -> int:
    """A loopback port that is free for both TCP and UDP right now (named needs both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise AssertionError("no free loopback port for both TCP and UDP")


class NamedProcess:
    """named serving `zone` on 127.0.0.1:`port` from files in `workdir` (created if missing)."""

    def __init__(self, zone: str, zone_file: Path | None, workdir: Path, *, port: int | None = None,
                 named: str = NAMED, extra_config: str = "",
                 start_timeout: float = START_TIMEOUT) -> None:
        self.zone = dns.name.from_text(zone)
        self.zone_file = zone_file
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.named = named
        self.extra_config = extra_config
        self.start_timeout = start_timeout
        self.conf_path = self.workdir / "named.conf"
        self.log_path = self.workdir / "named.log"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "NamedProcess":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def config_text(self) -> str:
        zone_statement = ""
        if self.zone_file is not None:
            zone_statement = (f'zone "{self.zone.to_text()}" {{ type primary; '
                              f'file "{Path(self.zone_file).resolve()}"; }};\n')
        return (
            "options {\n"
            f'  directory "{self.workdir.resolve()}";\n'
            f'  pid-file "{(self.workdir / "named.pid").resolve()}";\n'
            f"  listen-on port {self.port} {{ 127.0.0.1; }};\n"
            "  listen-on-v6 { none; };\n"
            "  dnssec-validation no;\n"
            "  recursion no;\n"
            "  notify no;\n"
            "};\n"
            "controls { };\n"
            + zone_statement + self.extra_config + "\n"
        )

    def start(self) -> None:
        """Write named.conf, start named in the foreground and wait until the zone's SOA answers."""
        assert self.process is None, "already started"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.config_text())
        command = [self.named, "-g", "-c", str(self.conf_path)]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, cwd=self.workdir)
        try:
            self._wait_until_answering()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Terminate named and wait for it; kill it if it does not exit within STOP_TIMEOUT."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)

    def answers(self) -> bool:
        """True if named answers the zone's SOA authoritatively right now."""
        query = dns.message.make_query(self.zone, dns.rdatatype.SOA)
        try:
            response = dns.query.udp(query, "127.0.0.1", timeout=_POLL_QUERY_TIMEOUT, port=self.port)
        except (dns.exception.DNSException, OSError):
            return False
        return (response.rcode() == dns.rcode.NOERROR and bool(response.flags & dns.flags.AA)
                and bool(response.answer))

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _wait_until_answering(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"named exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.answers():
                return
        raise AssertionError(f"named did not answer {self.zone} SOA on port {self.port} within "
                             f"{self.start_timeout:g} s:\n{self.log_tail()}")


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return status != "Z"


def instance_nameds(state_dir: Path, zone: str | None = None) -> list[int]:
    """Every named process whose command line names a named.conf of this state dir's instances
    (of `zone` only, when given). Found through /proc, not named.pid: a named that died before
    writing it, or one a failed run left behind, is found too. named-checkconf names the same
    file and is not named itself, so the program name must be `named`."""
    instances = state_dir / "instances"
    wanted = str(instances / zone / "named.conf") if zone else str(instances) + "/"
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"/named") and any(wanted.encode() in arg for arg in argv[1:]):
            pids.append(int(proc.name))
    return pids


def kill_instance_nameds(state_dir: Path) -> None:
    """A test's teardown: SIGKILL every named of the state dir's instances, and wait until gone."""
    import os
    import signal
    pids = instance_nameds(state_dir)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + STOP_TIMEOUT
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)

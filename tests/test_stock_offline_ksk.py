"""Offline KSK on BIND 9.20: the SKR `ksk presign --skr` writes is imported into a stock named
9.20 running an `offline-ksk yes` dnssec-policy (`rndc skr -import`), which then serves the
DNSKEY RRset with the ceremony's KSK signature and signs the zone with the software ZSK; delv
with the KSK as trust anchor validates it. The KSK's private half stays on the token (the online
named has only its .key). The second test does this for a KSK roll's SKR (`rollover ksk
--ksk-dir`, then one ceremony with both KSKs): named switches bundles on the SKR's own times and
serves the roll's CDNSKEY and CDS with the ceremony's signatures, valid from the old and from
the new DS."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import dns.dnssec
import dns.message
import dns.name
import dns.query
import dns.rrset

from bindpkcs11.dnssec.keyfile import read_key_pair
from conftest import Cli, clean_env, poll
from namedproc import free_port
from test_inline import ZONE, validated
from test_stock_inline import delv_anchor, stock_bind  # noqa: F401 (fixture)
from test_tpm2_inline import delv

DEADLINE = 30.0
SECRET = "c2VjcmV0LWZvci10aGUtdGVzdC1ybmRjLWtleS0zMmI="


def _dnskey_signed(port: int, tag: int) -> bool:
    try:
        response = dns.query.udp(dns.message.make_query(ZONE, "DNSKEY", want_dnssec=True),
                                 "127.0.0.1", port=port, timeout=1)
    except Exception:  # noqa: BLE001 - not answering yet
        return False
    return any(rrset.rdtype == 46 and any(sig.key_tag == tag for sig in rrset)
               for rrset in response.answer)


def _served(port: int, rdtype: str) -> tuple[dns.rrset.RRset | None, dns.rrset.RRset | None]:
    """The apex RRset of `rdtype` and its RRSIGs as named serves them (None when absent)."""
    response = dns.query.udp(dns.message.make_query(ZONE, rdtype, want_dnssec=True), "127.0.0.1",
                             port=port, timeout=2)
    kind = dns.rdatatype.from_text(rdtype)
    rrset = next((r for r in response.answer if r.rdtype == kind), None)
    sigs = next((r for r in response.answer if r.rdtype == 46 and r.covers == kind), None)
    return rrset, sigs


def _dnskey_signed(port: int, tags: set[int]) -> bool:
    """named serves a DNSKEY RRset signed by exactly the KSKs `tags` (false while not answering)."""
    try:
        _, sigs = _served(port, "DNSKEY")
    except Exception:  # noqa: BLE001 - not answering yet
        return False
    return sigs is not None and {sig.key_tag for sig in sigs} == tags


def _ceremony_signatures(skr: Path, rdtype: str) -> set[str]:
    """The base64 signatures of the SKR's RRSIGs over `rdtype` (the ceremony made them all)."""
    return {"".join(line.split()[12:]) for line in skr.read_text().splitlines()
            if f" RRSIG {rdtype} " in line}


@dataclass
class OnlineNamed:
    """The stock named of a test: its DNS port, and rndc on its control channel."""

    port: int
    rndc: Callable[..., subprocess.CompletedProcess]


@contextmanager
def _online_named(cli: Cli, online: Path, skr: Path, policy: str = "") -> Iterator[OnlineNamed]:
    """A stock named 9.20 serving ZONE from `online` (zone.db, keys/) under an `offline-ksk yes`
    policy (`policy` adds clauses to it), with `skr` imported; stopped at the end."""
    (online / "zone.db").write_text("$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 86400 300\n"
                                    "@ NS ns1\nns1 A 127.0.0.1\nwww A 127.0.0.2\n")
    port, rndc_port = free_port(), free_port()
    key = f'key "rk" {{ algorithm hmac-sha256; secret "{SECRET}"; }};\n'
    (online / "named.conf").write_text(
        f'options {{ directory "{online}"; pid-file "{online}/named.pid"; '
        f'listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }}; recursion no; '
        f'dnssec-validation no; notify no; }};\n{key}'
        f'controls {{ inet 127.0.0.1 port {rndc_port} allow {{ 127.0.0.1; }} keys {{ "rk"; }}; }};\n'
        f'dnssec-policy "offline" {{ offline-ksk yes; {policy or "dnskey-ttl 3600;"} keys {{\n'
        '  ksk key-directory lifetime unlimited algorithm 13;\n'
        '  zsk key-directory lifetime unlimited algorithm 13; }; };\n'
        f'zone "{ZONE}" {{ type primary; file "{online}/zone.db"; key-directory "{online}/keys"; '
        'inline-signing yes; dnssec-policy "offline"; };\n')
    (online / "rndc.conf").write_text(f'{key}options {{ default-key "rk"; default-server 127.0.0.1; '
                                      f'default-port {rndc_port}; }};\n')
    env = json.loads(cli("bind", "env", "--bind", "stock", "--json").stdout)["variables"]
    env = clean_env() | {k: v for k, v in env.items() if k in ("PATH", "LD_LIBRARY_PATH")}

    def rndc(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["rndc", "-c", str(online / "rndc.conf"), *args], env=env,
                              capture_output=True, text=True, timeout=20)

    named = subprocess.Popen(["named", "-g", "-c", str(online / "named.conf")], env=env,
                             cwd=online, stdout=open(online / "named.log", "wb"),
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        poll(lambda: named.poll() is None and (online / "named.pid").exists(), DEADLINE,
             "named to start")
        poll(lambda: rndc("skr", "-import", str(skr), ZONE).returncode == 0, DEADLINE,
             "rndc skr -import")
        yield OnlineNamed(port, rndc)
        # named cannot sign the DNSKEY RRset (no KSK .private): it says so once per key event,
        # and thousands of times a second when it re-signs in a loop (bundle signatures expiring
        # within signatures-refresh, see dnssec/skr.py)
        complaints = (online / "named.log").read_text().count("error reading")
        assert complaints < 50, f"named re-signed in a loop: {complaints} complaints"
    finally:
        named.terminate()
        named.wait(timeout=20)


def _online_keys(online: Path, public: list[str], pairs: list[str]) -> None:
    """The online side's key directory: the KSKs' public halves only, the ZSK's two files."""
    (online / "keys").mkdir(parents=True)
    for path in public + pairs:
        shutil.copy(path, online / "keys")


def test_skr_from_the_ceremony_is_imported_by_a_stock_920_offline_ksk_policy(stock_bind, tmp_path):
    cli = Cli(tmp_path / "state", clean_env() | {"BINDPKCS11_STOCK_DIR": str(stock_bind)})
    cli("token", "init", "--label", "bindpkcs11", "--generate-pins")
    keys = tmp_path / "keys"
    ksk = cli.json("keygen", ZONE, "--role", "ksk", "--algorithm", "13", "--key-dir", str(keys),
                   "--no-backup")
    start = time.strftime("%Y%m%d%H%M%S", time.gmtime(time.time() - 3600))
    zsk = cli.json("keygen", ZONE, "--role", "zsk", "--algorithm", "13", "--software",
                   "--key-dir", str(keys), "--publish", start, "--activate", start)
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("a passphrase for the test bundles\n")
    passphrase.chmod(0o600)
    skr = tmp_path / "example.skr"
    cli("ksk", "presign", ZONE, "--ksk", ksk["key_file"], "--zsk-dir", str(keys), "--start", start,
        "--periods", "3", "--period", "1w", "--overlap", "1w", "--out", str(tmp_path / "bundles"),
        "--skr", str(skr), "--passphrase-file", str(passphrase), "--yes")
    online = tmp_path / "online"
    _online_keys(online, [ksk["key_file"]], [zsk["key_file"], zsk["private_file"]])
    with _online_named(cli, online, skr) as named:
        port = named.port
        poll(lambda: _dnskey_signed(port, {ksk["tag"]}), DEADLINE,
             "the DNSKEY RRset signed by the KSK")
        _, dnskey_tags = validated(ZONE, "DNSKEY", port)
        _, soa_tags = validated(ZONE, "SOA", port)
        assert dnskey_tags == {ksk["tag"]} and soa_tags == {zsk["tag"]}
        anchors = tmp_path / "anchors.conf"
        anchors.write_text(delv_anchor(Path(ksk["key_file"])))
        checked = delv(anchors, port, f"www.{ZONE}", "A")
        assert "; fully validated" in checked.stdout, checked.stdout + checked.stderr
        # The served DNSKEY RRSIG is one the ceremony made: named had no KSK private key.
        _, sigs = _served(port, "DNSKEY")
        served = {base64.b64encode(sig.signature).decode() for sig in sigs}
        assert served and served <= _ceremony_signatures(skr, "DNSKEY")
        assert not (online / "keys" / Path(ksk["private_file"]).name).exists()


ROLL_PERIOD = 20  # seconds: the roll's three bundles pass in a minute
ROLL_TTL = 10     # DNSKEY TTL; with a 5 s propagation delay the CDS comes one period after Publish
# named 9.20 re-signs an RRset whose RRSIG expires within signatures-refresh (default 5 days),
# and cannot re-sign the DNSKEY RRset here: with bundle signatures of a minute it would loop
# (measured: 106,638 "error reading K...private" log lines and a 47 MB journal in a minute).
ROLL_POLICY = f"dnskey-ttl {ROLL_TTL}; signatures-refresh 5s;"


def _wait_for_bundle(named: OnlineNamed, inception: int) -> None:
    """Have named take the bundle that starts at `inception` once that time has come.

    named 9.20 forgets the next bundle's inception as its next key event (zone.c zone_rekey
    sets it, then keymgr.c dns_keymgr_offline resets it to 0), so it moves to a new bundle at
    its next key event, at the latest dnssec-loadkeys-interval (default 60 minutes) later;
    `rndc loadkeys` is that timer firing now."""
    poll(lambda: time.time() >= inception + 1, inception + 1 - time.time() + DEADLINE,
         f"the clock to pass {inception}")
    loaded = named.rndc("loadkeys", ZONE)
    assert loaded.returncode == 0, loaded.stderr


def test_skr_of_a_ksk_roll_is_served_by_a_stock_920_offline_ksk_policy(stock_bind, tmp_path):
    cli = Cli(tmp_path / "state", clean_env() | {"BINDPKCS11_STOCK_DIR": str(stock_bind)})
    cli("token", "init", "--label", "bindpkcs11", "--generate-pins")
    ksk_dir, zsk_dir = tmp_path / "ksks", tmp_path / "zsks"
    early = str(int(time.time()) - 3600)
    old = cli.json("keygen", ZONE, "--role", "ksk", "--algorithm", "13", "--key-dir", str(ksk_dir),
                   "--no-backup", "--publish", early, "--activate", early)
    zsk = cli.json("keygen", ZONE, "--role", "zsk", "--algorithm", "13", "--software",
                   "--key-dir", str(zsk_dir), "--publish", early, "--activate", early)
    # Bundle 0 (from 10 s on, time for the set-up below): the old KSK; 1: both KSKs; 2: both,
    # CDS/CDNSKEY for the new one.
    start = int(time.time()) + 10
    timings = ["--period", str(ROLL_PERIOD), "--dnskey-ttl", str(ROLL_TTL),
               "--propagation-delay", "5"]
    roll = cli.json("rollover", "ksk", ZONE, "--ksk-dir", str(ksk_dir), "--at",
                    str(start + ROLL_PERIOD), *timings)
    assert roll["sync"] == start + 2 * ROLL_PERIOD, roll
    o, n = old["tag"], roll["successor"]
    new_key = next(ksk_dir.glob(f"K{ZONE}.+013+{n:05d}.key"))
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("a passphrase for the test bundles\n")
    passphrase.chmod(0o600)
    skr = tmp_path / "roll.skr"
    cli("ksk", "presign", ZONE, "--ksk", old["key_file"], "--ksk", str(new_key), "--zsk-dir",
        str(zsk_dir), "--start", str(start), "--periods", "3", *timings, "--overlap",
        str(2 * ROLL_PERIOD), "--out", str(tmp_path / "bundles"), "--skr", str(skr),
        "--passphrase-file", str(passphrase), "--yes")
    online = tmp_path / "online"
    _online_keys(online, [old["key_file"], str(new_key)], [zsk["key_file"], zsk["private_file"]])
    origin = dns.name.from_text(ZONE)
    with _online_named(cli, online, skr, ROLL_POLICY) as named:
        _wait_for_bundle(named, start + ROLL_PERIOD)
        assert time.time() < start + 2 * ROLL_PERIOD - 5, "the set-up outlasted bundle 1"
        poll(lambda: _dnskey_signed(named.port, {o, n}), DEADLINE,
             "the DNSKEY RRset with both KSKs, signed by both")
        assert _served(named.port, "CDS")[0] is None, "CDS before the new DNSKEY is cached"
        _wait_for_bundle(named, start + 2 * ROLL_PERIOD)
        poll(lambda: _served(named.port, "CDS")[0] is not None, DEADLINE, "the roll's CDS")
        dnskeys, dnskey_sigs = _served(named.port, "DNSKEY")
        assert {dns.dnssec.key_id(k) for k in dnskeys if k.flags == 257} == {o, n}
        for anchor_file in (old["key_file"], new_key):  # a resolver holding the old DS, the new DS
            anchor = dns.rrset.from_rdata(origin, ROLL_TTL,
                                          read_key_pair(Path(anchor_file)).dnskey)
            dns.dnssec.validate(dnskeys, dnskey_sigs, {origin: anchor})
        for rdtype in ("CDNSKEY", "CDS"):
            rrset, sigs = _served(named.port, rdtype)
            assert rrset is not None and sigs is not None, f"no signed {rdtype} served"
            dns.dnssec.validate(rrset, sigs, {origin: dnskeys})
            assert {sig.key_tag for sig in sigs} == {o, n}, rdtype
            served = {base64.b64encode(sig.signature).decode() for sig in sigs}
            assert served <= _ceremony_signatures(skr, rdtype), f"{rdtype}: not the ceremony's"
        assert {r.key_tag for r in _served(named.port, "CDS")[0]} == {n}
        assert {dns.dnssec.key_id(k) for k in _served(named.port, "CDNSKEY")[0]} == {n}
        anchors = tmp_path / "new-anchor.conf"
        anchors.write_text(delv_anchor(new_key))
        checked = delv(anchors, named.port, ZONE, "CDS")
        assert "; fully validated" in checked.stdout, checked.stdout + checked.stderr

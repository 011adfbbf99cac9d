"""`rollover zsk|ksk` on a BIND 9.20 instance: named's own key manager rolls, the successor on
the token, watched through DNS. Each test runs on both 9.20 routes:
- stock: 9.20 + pkcs11-provider, named creates the successor inside the token (key-store);
- patched920: the patched 9.20 (no provider), bindpkcs11 makes the successor on the token first
  as an unused key and named's key manager selects it (tokensuccessor.py).

Real SoftHSM token, the privately extracted 9.20.23 and pkcs11-provider (tests/bindtools.py) or
the patched 9.20 build, a real named on loopback high ports, nothing mocked. The instance is set
up with --test-timings, whose policy (bind/config.py STOCK_TEST_TIMINGS) has a 15 s DNSKEY TTL
and 5 s delays, so named activates the successor about 25 s after publishing it. A watcher reads
the key directory all along: no key without a token label may appear in it at any time. A poller validates
every answer (DNSKEY against the KSK alone, SOA and www/A against that DNSKEY set); delv with the
KSK as trust anchor validates at each phase. The old DNSKEY's removal comes after named's
signature delay (validity - refresh = 10 min) + max zone TTL: longer than a test should wait,
so the test checks that named's schedule (its .state files, `status --json`) says when, and
that the old key is still served before then.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import dns.dnssec
import dns.name
import dns.rdatatype
import dns.rrset
import pytest

from dnspoller import ValidatingPoller
from test_inline import ZONE, inline_cli, poll, setup, validated  # noqa: F401 - fixture
from test_rollover import Observation, Poller, delv_validates
from test_stock_inline import delv_anchor, stock_bind, stock_cli  # noqa: F401 - fixtures

PHASE_SLACK = 25.0
ORIGIN = dns.name.from_text(ZONE)
# setup-inline's options for each route that rolls by named's key manager.
ROUTES = {"stock": ("--bind", "stock"), "patched920": ("--bind-version", "9.20")}


@pytest.fixture(params=sorted(ROUTES))
def named920_cli(request):
    """A CLI for one 9.20 route (the fixture of that route: it stops every named after);
    `cli.route` names it, `cli.setup_route` is setup-inline's options for it."""
    if request.param == "stock":
        cli = request.getfixturevalue("stock_cli")
    else:
        request.getfixturevalue("patched_bind_920")
        cli = request.getfixturevalue("inline_cli")
    cli.route, cli.setup_route = request.param, ROUTES[request.param]
    return cli


@dataclass
class KeyDirWatcher(ValidatingPoller):
    """Reads every .private file of the key directory each poll: one without a Label (a key
    named made in software) is a failure; records when each key file was first seen."""

    key_dir: Path
    first_seen: dict[int, float] = field(default_factory=dict)

    def once(self) -> None:
        for private in self.key_dir.glob("K*.private"):
            text = private.read_text()
            tag = int(private.name.rsplit("+", 1)[1].split(".")[0])
            self.first_seen.setdefault(tag, time.time())
            if "Label:" not in text or "PrivateKey" in text:
                raise AssertionError(f"{private.name} is not a token key: {text[:200]!r}")
        self.seen.append(time.time())


def watching(watcher: ValidatingPoller) -> threading.Thread:
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    return thread


def successor_log_line(cli, new: int, role: str) -> str:
    """named's log line for the successor: 'created' by named in the token (stock), 'selected'
    from the key directory where bindpkcs11 made it (patched 9.20)."""
    how = "created" if cli.route == "stock" else "selected"
    return f"DNSKEY {ZONE}/ECDSAP256SHA256/{new} ({role}) {how} for policy"


def ksk_rrset(key_file: Path) -> dns.rrset.RRset:
    """The KSK's DNSKEY from a 9.20 key file (named rewrites it with a TTL field)."""
    record = [line for line in key_file.read_text().splitlines() if not line.startswith(";")][0]
    fields = record.split()
    at = [f.upper() for f in fields].index("DNSKEY")
    return dns.rrset.from_text(fields[0], 3600, "IN", "DNSKEY", " ".join(fields[at + 1:]))


def private_labels(cli) -> set[str]:
    shown = cli.json("token", "show", "--label", "bindpkcs11")
    return {o["object"]["label"] for o in shown["objects"]
            if o["object"]["object_class"] == "private"}


def status_matches_dns(cli, observation: Observation) -> dict:
    """What status says named does is what DNS shows: the DNSKEY set is the keys published,
    active or inactive (not yet removed); the SOA is signed by the active ZSKs (those whose
    zone RRSIGs named's key manager keeps: rumoured or omnipresent); every key's object is on
    the token."""
    status = cli.json("status", ZONE)
    by_tag = {k["tag"]: k for k in status["keys"]}
    published = {t for t, k in by_tag.items() if k["state"] in ("published", "active", "inactive")}
    assert published == set(observation.dnskeys), (status, observation)
    active = {t for t, k in by_tag.items() if k["role"] == "zsk" and k["state"] == "active"}
    assert active == set(observation.soa_signers), (status, observation)
    assert all(k["named"]["zone_rrsig"] in ("rumoured", "omnipresent")
               for t, k in by_tag.items() if t in active)
    assert all(k["token_object"] == "present" and k["location"] == "token"
               for k in status["keys"])
    return by_tag


def test_920_zsk_rollover_is_done_by_named_with_a_token_successor(named920_cli, tmp_path):
    cli = named920_cli
    zone_file = tmp_path / f"{ZONE}.zone"
    zone_file.write_text("$TTL 300\n@ IN SOA ns1 hostmaster 10 3600 600 1209600 300\n@ IN NS ns1\n"
                         "ns1 IN A 127.0.0.1\nwww IN A 127.0.0.2\n")
    started = time.monotonic()
    report = json.loads(setup(cli, *cli.setup_route, "--test-timings", "--zone-file",
                              str(zone_file), "--json").stdout)
    port = cli.ports[0]
    tags = {key["role"]: key["tag"] for key in report["keys"]}
    old = tags["zsk"]
    instance = Path(report["instance_dir"])
    ksk_file = next(instance.glob(f"keys/K{ZONE}.+013+{tags['ksk']:05d}.key"))
    anchors = tmp_path / "anchors.conf"
    anchors.write_text(delv_anchor(ksk_file))
    zone_conf = (instance / "zone.conf").read_text()
    assert "dnskey-ttl PT15S;" in zone_conf and "zone-propagation-delay PT5S;" in zone_conf
    labels_before = private_labels(cli)

    poller = Poller(port, ksk_rrset(ksk_file))
    thread = watching(poller)
    watcher = KeyDirWatcher(instance / "keys")
    watcher_thread = watching(watcher)
    try:
        before = poller.latest()
        assert before.dnskeys == {tags["ksk"], old} and before.soa_signers == {old}

        rolled = cli.json("rollover", "zsk", ZONE)
        new = rolled["successor"]
        assert rolled["predecessor"] == old and new not in (old, tags["ksk"])
        assert rolled["rndc_commands"] == [f"rndc dnssec -rollover -key {old} {ZONE}."]
        assert f"key: {new} (ECDSAP256SHA256), ZSK" in rolled["named_status"]
        # named made the successor inside the token: a new private key object, named by the
        # successor's key file, which holds a Label and no private key material.
        labels_after = private_labels(cli)
        assert len(labels_after - labels_before) == 1 and labels_before <= labels_after
        assert rolled["uri"].startswith("pkcs11:token=bindpkcs11;object=")
        assert rolled["uri"].split("object=")[1] in labels_after - labels_before
        private = next(instance.glob(f"keys/K{ZONE}.+013+{new:05d}.private")).read_text()
        assert "Label:" in private and "PrivateKey" not in private
        assert cli.pin() not in private
        log = (instance / "named.log").read_text()
        assert successor_log_line(cli, new, "ZSK") in log
        assert "created for policy" not in log or cli.route == "stock"
        # The successor's key file (its object already on the token) was in the key directory
        # before named served its DNSKEY.
        assert watcher.first_seen[new] < poller.first(lambda o: new in o.dnskeys).at

        # The command returned once the new DNSKEY was served beside the old one.
        published = poller.latest()
        assert published.dnskeys == {tags["ksk"], old, new}
        schedule = {event: when for when, event in rolled["schedule"]}
        activate = schedule[f"ZSK {new} active"]
        removal = schedule[f"ZSK {old} removed"]
        assert schedule[f"ZSK {old} retired"] == activate
        # RFC 7583 pre-publication in named: Activate = Publish + DNSKEY TTL + publish-safety +
        # propagation delay (15 + 5 + 5 s); removal after the signatures are replaced.
        assert activate - schedule[f"ZSK {new} published"] == 25
        assert removal > activate + 600
        status_matches_dns(cli, published)
        delv_validates(anchors, port, ZONE, "DNSKEY")

        # named 9.20.23 signs with the successor from its publication on (its zone RRSIG state
        # goes rumoured at once, see status), always beside the old ZSK: double signatures, so a
        # resolver still caching the old DNSKEY set validates. The new DNSKEY is never missing
        # from an answer whose SOA it signs.
        poll(lambda: new in poller.seen[-1].soa_signers, PHASE_SLACK,
             "the SOA signed by the new ZSK")
        switched = poller.first(lambda o: new in o.soa_signers)
        assert poller.first(lambda o: new in o.dnskeys).at <= switched.at
        assert all(old in o.soa_signers for o in poller.seen if new in o.soa_signers)
        # At Activate (named's schedule) the new ZSK is active and the old one is retiring
        # (goal hidden), still signing: named keeps its signatures until the new ones are in
        # every cache (its signature delay), then removes its DNSKEY.
        poll(lambda: time.time() > activate + 1, activate - time.time() + PHASE_SLACK,
             "named's Activate time")
        now = poller.latest()
        by_tag = status_matches_dns(cli, now)
        assert by_tag[new]["state"] == "active" and by_tag[new]["named"]["goal"] == "omnipresent"
        assert by_tag[old]["state"] == "active" and by_tag[old]["named"]["goal"] == "hidden"
        assert by_tag[old]["next_event"] == {"event": "delete", "time": removal}
        for name, rdtype in ((ZONE, "SOA"), (f"www.{ZONE}", "A")):
            delv_validates(anchors, port, name, rdtype)
        # Data added now is signed by the new ZSK, and by the old one as long as named keeps
        # its zone RRSIGs (until the new ones are everywhere: named's signature delay).
        zone_file.write_text(zone_file.read_text() + "added IN A 127.0.0.99\n")
        cli("named", "reload", ZONE)
        active = {t for t, k in by_tag.items() if k["role"] == "zsk" and k["state"] == "active"}
        assert validated(ZONE, "A", port, f"added.{ZONE}")[1] == active == {old, new}
        # Before named's removal time the old DNSKEY is still served; a second roll of the ZSK
        # is refused while named retires the first.
        assert removal > time.time() and old in poller.latest().dnskeys
        error = cli("rollover", "zsk", ZONE, check=False)
        assert error.returncode != 0 and "rollover is under way" in error.stderr
    finally:
        for watch, its_thread in ((poller, thread), (watcher, watcher_thread)):
            watch.stop.set()
            its_thread.join(timeout=10)
    assert not poller.failures, poller.failures[:5]
    assert not watcher.failures, watcher.failures[:5]
    assert len(poller.seen) > 50 and len(watcher.seen) > 50
    assert all(old in o.soa_signers for o in poller.seen)  # removal is after the watch
    print(f"\n[{cli.route}] ZSK roll watched for {time.monotonic() - started:.1f} s "
          f"(setup included): {len(poller.seen)} polls validated, "
          f"{len(watcher.seen)} key-directory reads")


@dataclass
class KskObservation:
    at: float
    anchor: int
    dnskeys: frozenset[int]
    dnskey_signers: frozenset[int]
    cds: frozenset[int]


@dataclass
class KskPoller(ValidatingPoller):
    """Validates the DNSKEY RRset against the trust anchor of the moment (the KSK whose DS the
    pretend parent serves: `anchor`, switched by the test with the DS), the SOA against that
    DNSKEY set, and the CDS RRset too; keeps the CDS key tags."""

    port: int
    anchor: dns.rrset.RRset

    def once(self) -> None:
        anchor = self.anchor
        keys, key_sigs = Poller.ask(self, ZONE, dns.rdatatype.DNSKEY)  # type: ignore[arg-type]
        # (Poller.ask needs only `port`: the same query and RRSIG lookup as the ZSK test's)
        dns.dnssec.validate(keys, key_sigs, {ORIGIN: anchor})
        for rdtype in (dns.rdatatype.SOA, dns.rdatatype.CDS):
            rrset, sigs = Poller.ask(self, ZONE, rdtype)  # type: ignore[arg-type]
            dns.dnssec.validate(rrset, sigs, {ORIGIN: keys})
            if rdtype == dns.rdatatype.CDS:
                cds = frozenset(rd.key_tag for rd in rrset)
        self.seen.append(KskObservation(
            time.time(), dns.dnssec.key_id(anchor[0]),
            frozenset(dns.dnssec.key_id(k) for k in keys),
            frozenset(sig.key_tag for sig in key_sigs), cds))


def test_920_ksk_rollover_by_named_with_ds_published(named920_cli, tmp_path):
    """named rolls the KSK inside the token; `--ds-published` is refused until named publishes
    the new CDS, then tells named (checkds) and the CDS, status's DS and the trust anchor
    follow. The old KSK's removal (named's schedule, minutes later) is asserted, not awaited."""
    cli = named920_cli
    started = time.monotonic()
    report = json.loads(setup(cli, *cli.setup_route, "--test-timings",
                              "--json").stdout)
    port = cli.ports[0]
    old = next(k["tag"] for k in report["keys"] if k["role"] == "ksk")
    instance = Path(report["instance_dir"])
    old_file = next(instance.glob(f"keys/K{ZONE}.+013+{old:05d}.key"))
    labels_before = private_labels(cli)
    poller = KskPoller(port, ksk_rrset(old_file))
    thread = watching(poller)
    watcher = KeyDirWatcher(instance / "keys")
    watcher_thread = watching(watcher)
    try:
        assert poller.latest().cds == {old}
        rolled = cli.json("rollover", "ksk", ZONE)
        new = rolled["successor"]
        assert rolled["predecessor"] == old and rolled["step"] == "rolling"
        assert rolled["rndc_commands"] == [f"rndc dnssec -rollover -key {old} {ZONE}."]
        assert rolled["new_ds"].startswith(f"{ZONE}. IN DS {new} 13 2 ")
        assert rolled["uri"].split("object=")[1] in private_labels(cli) - labels_before
        assert successor_log_line(cli, new, "KSK") in (instance / "named.log").read_text()
        seen = poller.latest()
        assert {old, new} <= seen.dnskeys and {old, new} <= seen.dnskey_signers
        schedule = {event: when for when, event in rolled["schedule"]}
        cds_time = schedule[f"KSK {new} CDS/CDNSKEY published"]

        # Too early: named has not published the new CDS; named is told nothing.
        error = cli("rollover", "ksk", ZONE, "--ds-published", check=False)
        assert error.returncode != 0 and "has not published the CDS of KSK" in error.stderr
        assert "checkds" not in (instance / "named.log").read_text()

        poll(lambda: new in poller.seen[-1].cds, cds_time - time.time() + PHASE_SLACK,
             "the new KSK's CDS")
        assert poller.first(lambda o: new in o.cds).at >= cds_time - 1
        status = cli.json("status", ZONE)
        # named's DS states: the old DS stays, the new one is on its way (named expects the
        # parent to take it from the CDS): status offers both until --ds-published.
        assert {line.split()[3] for line in status["ds"]} == {str(old), str(new)}
        assert {k["tag"]: k["named"]["ds"] for k in status["keys"] if k["role"] == "ksk"} == \
            {old: "rumoured", new: "rumoured"}

        # The pretend parent now serves the new DS: the trust anchor follows it.
        poller.anchor = ksk_rrset(next(instance.glob(f"keys/K{ZONE}.+013+{new:05d}.key")))
        switched = cli.json("rollover", "ksk", ZONE, "--ds-published")
        assert switched["step"] == "DS switched"
        assert switched["rndc_commands"] == [
            f"rndc dnssec -checkds -key {new} published {ZONE}.",
            f"rndc dnssec -checkds -key {old} withdrawn {ZONE}."]
        poll(lambda: poller.seen[-1].cds == {new}, PHASE_SLACK, "the old CDS withdrawn")
        status = cli.json("status", ZONE)
        assert [line.split()[3] for line in status["ds"]] == [str(new)]
        by_tag = {k["tag"]: k for k in status["keys"]}
        assert by_tag[new]["cds"] is True and by_tag[old]["cds"] is False
        assert by_tag[old]["named"]["goal"] == "hidden" and by_tag[old]["named"]["ds"] in (
            "unretentive", "hidden")
        # named's schedule: the old KSK is removed later (its times, as status reports them).
        assert by_tag[old]["times"]["delete"] >= by_tag[old]["times"]["inactive"]
        assert old in poller.latest().dnskeys or by_tag[old]["state"] == "removed"
        delv_validates_with(tmp_path, poller.anchor, port)
    finally:
        for watch, its_thread in ((poller, thread), (watcher, watcher_thread)):
            watch.stop.set()
            its_thread.join(timeout=10)
    assert not poller.failures, poller.failures[:5]
    assert not watcher.failures, watcher.failures[:5]
    assert all(o.dnskey_signers >= {o.anchor} for o in poller.seen)
    print(f"\n[{cli.route}] KSK roll watched for {time.monotonic() - started:.1f} s "
          f"(setup included): {len(poller.seen)} polls validated")


def delv_validates_with(tmp_path: Path, anchor: dns.rrset.RRset, port: int) -> None:
    """delv with `anchor` (the KSK the parent's DS names now) validates the DNSKEY RRset."""
    key = anchor[0].to_text().split(None, 3)
    anchors = tmp_path / "anchors-now.conf"
    anchors.write_text(f'trust-anchors {{ {ZONE}. static-key {key[0]} {key[1]} {key[2]} '
                       f'"{"".join(key[3].split())}"; }};\n')
    delv_validates(anchors, port, ZONE, "DNSKEY")

"""setup-inline's zone timing rule (SOA EXPIRE + max TTL < the re-sign margin in zone.conf) and
the CDS/CDNSKEY named publishes for the active KSK (issue 12)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import dns.dnssec

from test_inline import ZONE, inline_cli, setup, validated  # noqa: F401 - fixture


def test_sample_zone_passes_the_timing_rule_and_its_cds_is_the_ksk_ds(inline_cli):
    report = json.loads(setup(inline_cli, "--json").stdout)
    port = inline_cli.ports[0]
    zone_conf = (Path(report["instance_dir"]) / "zone.conf").read_text()
    validity, refresh = map(int, re.search(r"sig-validity-interval (\d+) (\d+);", zone_conf).groups())
    zone_text = (Path(report["instance_dir"]) / "zones" / f"{ZONE}.db").read_text()
    expire = int(re.search(r"SOA \S+ \S+ \d+ \d+ \d+ (\d+) ", zone_text).group(1))
    assert expire + 300 < refresh * 86400 < validity * 86400  # the rule, as rendered
    ksk = next(k for k in report["keys"] if k["role"] == "ksk")
    cds, cds_signers = validated(ZONE, "CDS", port)
    cdnskey, cdnskey_signers = validated(ZONE, "CDNSKEY", port)
    ds = report["ds"].split(" IN DS ", 1)[1].split()
    assert len(cds) == 1 and cds[0].key_tag == ksk["tag"] == int(ds[0])
    assert (cds[0].algorithm, cds[0].digest_type, cds[0].digest.hex().upper()) == (
        int(ds[1]), int(ds[2]), ds[3])
    keys, _ = validated(ZONE, "DNSKEY", port)
    ksk_key = next(k for k in keys if dns.dnssec.key_id(k) == ksk["tag"])
    assert [(k.flags, k.protocol, k.algorithm, k.key) for k in cdnskey] == [
        (ksk_key.flags, ksk_key.protocol, ksk_key.algorithm, ksk_key.key)]
    assert ksk["tag"] in cds_signers and ksk["tag"] in cdnskey_signers
    status = inline_cli.json("status", ZONE)
    assert status["ds"] == [report["ds"]]

"""Offline KSK on BIND 9.20: the SKR `ksk presign --skr` writes is imported into a stock named
9.20 running an `offline-ksk yes` dnssec-policy (`rndc skr -import`), which then serves the
DNSKEY RRset with the ceremony's KSK signature and signs the zone with the software ZSK; delv
with the KSK as trust anchor validates it. The KSK's private half stays on the token (the online
named has only its .key)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from pathlib import Path

import dns.message
import dns.query

from conftest import Cli, clean_env, poll
from namedproc import free_port
from test_inline import ZONE, validated
from test_stock_inline import delv_anchor, stock_bind  # noqa: F401 (fixture)
from test_tpm2_inline import delv

DEADLINE = 30.0




def _dnskey_signed(port: int, tag: int) -> bool:
    try:
        response = dns.query.udp(dns.message.make_query(ZONE, "DNSKEY", want_dnssec=True),
                                 "127.0.0.1", port=port, timeout=1)
    except Exception:  # noqa: BLE001 - not answering yet
        return False
    return any(rrset.rdtype == 46 and any(sig.key_tag == tag for sig in rrset)
               for rrset in response.answer)


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
        "--periods", "3", "--period", "1d", "--overlap", "1d", "--out", str(tmp_path / "bundles"),
        "--skr", str(skr), "--passphrase-file", str(passphrase), "--yes")
    # The online side: the KSK's public half only, the software ZSK, BIND 9.20's own policy.
    online = tmp_path / "online"
    (online / "keys").mkdir(parents=True)
    shutil.copy(ksk["key_file"], online / "keys")
    for path in (zsk["key_file"], zsk["private_file"]):
        shutil.copy(path, online / "keys")
    (online / "zone.db").write_text("$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 86400 300\n"
                                    "@ NS ns1\nns1 A 127.0.0.1\nwww A 127.0.0.2\n")
    port, rndc_port = free_port(), free_port()
    secret = "c2VjcmV0LWZvci10aGUtdGVzdC1ybmRjLWtleS0zMmI="
    key = f'key "rk" {{ algorithm hmac-sha256; secret "{secret}"; }};\n'
    (online / "named.conf").write_text(
        f'options {{ directory "{online}"; pid-file "{online}/named.pid"; '
        f'listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }}; recursion no; '
        f'dnssec-validation no; notify no; }};\n{key}'
        f'controls {{ inet 127.0.0.1 port {rndc_port} allow {{ 127.0.0.1; }} keys {{ "rk"; }}; }};\n'
        'dnssec-policy "offline" { offline-ksk yes; dnskey-ttl 3600; keys {\n'
        '  ksk key-directory lifetime unlimited algorithm 13;\n'
        '  zsk key-directory lifetime unlimited algorithm 13; }; };\n'
        f'zone "{ZONE}" {{ type primary; file "{online}/zone.db"; key-directory "{online}/keys"; '
        'inline-signing yes; dnssec-policy "offline"; };\n')
    (online / "rndc.conf").write_text(f'{key}options {{ default-key "rk"; default-server 127.0.0.1; '
                                      f'default-port {rndc_port}; }};\n')
    env = json.loads(cli("bind", "env", "--bind", "stock", "--json").stdout)["variables"]
    env = clean_env() | {k: v for k, v in env.items() if k in ("PATH", "LD_LIBRARY_PATH")}
    named = subprocess.Popen(["named", "-g", "-c", str(online / "named.conf")], env=env,
                             cwd=online, stdout=open(online / "named.log", "wb"),
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        poll(lambda: named.poll() is None and (online / "named.pid").exists(), DEADLINE,
             "named to start")
        imported = poll(lambda: subprocess.run(
            ["rndc", "-c", str(online / "rndc.conf"), "skr", "-import", str(skr), ZONE],
            env=env, capture_output=True, text=True, timeout=20).returncode == 0 or None,
            DEADLINE, "rndc skr -import")
        assert imported
        poll(lambda: _dnskey_signed(port, ksk["tag"]), DEADLINE,
             "the DNSKEY RRset signed by the KSK")
        _, dnskey_tags = validated(ZONE, "DNSKEY", port)
        _, soa_tags = validated(ZONE, "SOA", port)
        assert dnskey_tags == {ksk["tag"]} and soa_tags == {zsk["tag"]}
        anchors = tmp_path / "anchors.conf"
        anchors.write_text(delv_anchor(Path(ksk["key_file"])))
        checked = delv(anchors, port, f"www.{ZONE}", "A")
        assert "; fully validated" in checked.stdout, checked.stdout + checked.stderr
        # The served DNSKEY RRSIG is one the ceremony made: named had no KSK private key.
        response = dns.query.udp(dns.message.make_query(ZONE, "DNSKEY", want_dnssec=True),
                                 "127.0.0.1", port=port, timeout=2)
        served = {base64.b64encode(sig.signature).decode() for rrset in response.answer
                  if rrset.rdtype == 46 for sig in rrset}
        ceremony = {"".join(line.split()[12:]) for line in skr.read_text().splitlines()
                    if " RRSIG DNSKEY " in line}
        assert served and served <= ceremony
        assert not (online / "keys" / Path(ksk["private_file"]).name).exists()
    finally:
        named.terminate()
        named.wait(timeout=20)

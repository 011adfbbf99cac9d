"""Issue 8 item 8: signing resumes by itself when the token comes back, without `rndc sign`.

Before, a change named failed to sign (`receive_secure_serial: sign failure`) stayed unsigned
until the next change or a restart: nothing in BIND 9.18 retries that sync (`rndc sign` re-signs
the old contents and does not bring the change either). bindpkcs11/patches/bind-9.18-zz-rss-retry.patch
makes named retry it after 5 s, doubling to at most 60 s, so the bound is 60 s after the token
returns (plus the shim's re-initialisation, at most once a second).
"""

from __future__ import annotations

import time

import dns.dnssec
import dns.exception

from conftest import one_line_error
from test_inline import ZONE, inline_cli, poll, validated  # noqa: F401 (fixture)
from test_rel_health_faults import TOKEN_GONE, add_record, remove_token_dir, serve

RESUME_BOUND = 60 + 15  # the patch's longest back-off, plus slack for a loaded machine


def test_signing_resumes_within_a_minute_of_the_token_returning_without_rndc_sign(inline_cli,
                                                                                   tmp_path):
    zone_file = serve(inline_cli, tmp_path)
    port = inline_cli.ports[0]
    away = remove_token_dir(inline_cli)
    add_record(zone_file, "during-outage")
    error = one_line_error(inline_cli("named", "reload", ZONE, check=False))
    assert TOKEN_GONE in error and "retries by itself" in error
    status = inline_cli.json("named", "status", ZONE, check=False)
    assert status["health"]["pending"] and "signing stuck" in status["problem"]

    assert validated_or_none(port) is None  # the change is not served (signed) during the outage
    # The token comes back (the CLI may have left an empty tokens dir behind in the meantime).
    tokens = away.with_name("tokens")
    if tokens.exists():
        tokens.rmdir()
    away.rename(tokens)
    returned = time.monotonic()
    rrset, tags = poll(lambda: validated_or_none(port), deadline=RESUME_BOUND,
                       what="the change signed after the token returned")
    elapsed = time.monotonic() - returned
    print(f"signing resumed {elapsed:.1f} s after the token returned")
    zsk = {k["tag"] for k in inline_cli.json("named", "status", ZONE)["signing"] if k["role"] == "zsk"}
    assert rrset[0].address == "127.0.0.9" and tags == zsk
    log = (inline_cli.state_dir / "instances" / ZONE / "named.log").read_text()
    assert "received control channel command 'sign " not in log  # nobody ran rndc sign
    assert "bindpkcs11: retrying the sync with the unsigned zone" in log
    healthy = inline_cli.json("named", "status", ZONE)
    assert not healthy["health"]["pending"] and healthy["problem"] is None
    assert inline_cli("monitor", ZONE, "--once").returncode == 0


def validated_or_none(port: int):
    try:
        return validated(ZONE, "A", port, f"during-outage.{ZONE}")
    except (KeyError, dns.dnssec.ValidationFailure, dns.exception.Timeout):  # not there (yet)
        return None

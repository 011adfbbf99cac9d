"""Issue H: shim processes started together on one SoftHSM token must all find it.

Two patched dnssec-signzone processes started at the same instant failed with "token ... not
found" (3 of 24 in the benchmark runs).  The cause is SoftHSM2 2.6.1 itself: C_Login rewrites
token.object (Token::loginUser -> OSToken::setTokenFlags -> ObjectFile::store), and
ObjectFile::writeAttributes truncates the file and releases its fcntl lock before the buffered
new contents reach the file (they are written at fclose).  A process in C_Initialize that was
waiting for that lock reads an empty token.object, so ObjectStore skips the token ("Failed to
open token") and the slot list omits it until the next C_Initialize (met a moment later, the
same window leaves the token listed but C_Login says CKR_USER_PIN_NOT_INITIALIZED).  The
shim used to refuse a second C_Initialize within a second of the first, so the miss was final.

Real SoftHSM tokens in temporary directories, real shim processes (tests/shim_helper.py start)
released together, and real patched dnssec-signzone processes started 4 at a time; no mocks.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time

import dns.name
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from bindpkcs11.dnssec.samplezone import sample_zone_text
from bindpkcs11.shim import ErrorCode, Mechanism
from bindtools import tool_env
from fromlabel_tools import ZONE, validate_zone_file
from test_shim import (HELPER, Token, helper_outputs, make_token, public_key, request, run_helper,
                       sign_batch, stop_helpers)

PROCESSES = 4      # released together per round; on the old shim about 1 in 4 of them failed
ROUNDS = 12        # 48 processes: the old shim failing none of them is a ~1e-6 event
START_DIGEST = hashlib.sha256(b"start").digest()  # what `shim_helper.py start` signs


def release_together(tok, n: int) -> list:
    """Start n helper processes, wait until each has loaded Python and the shim, release them
    with one line each (microseconds apart), and return their outcomes.  All are reaped."""
    procs = [
        subprocess.Popen([sys.executable, str(HELPER), "start", tok.uri("ec256")], env=tok.env(),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for _ in range(n)
    ]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
    except BaseException:
        stop_helpers(procs)
        raise
    return helper_outputs(procs, timeout=60)


def test_processes_started_together_all_find_the_token(tmp_path):
    """48 processes in rounds of 4, each making its first signature at the same instant as the
    others (so their C_Initialize meets the others' C_Login): every one signs."""
    tok = make_token(tmp_path / "t", "together")
    keys = run_helper(["genkeys", tok.label], tok.env())
    tok = Token(tok.label, tok.conf, tok.tokendir, tok.pin_file, keys)
    key = public_key(tok, "ec256")
    started = time.monotonic()
    outcomes = [o for _ in range(ROUNDS) for o in release_together(tok, PROCESSES)]
    failed = [o["message"] for o in outcomes if o["code"] != 0]
    assert failed == [], f"{len(failed)} of {len(outcomes)} processes failed: {failed[:3]}"
    # Each signature is real: it verifies with the token's public key.
    for outcome in outcomes:
        sig = bytes.fromhex(outcome["sig"])
        der = utils.encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        key.verify(der, START_DIGEST, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    slowest = max(o["seconds"] for o in outcomes)
    assert slowest < 2, f"a first signature took {slowest:.3f} s"
    assert time.monotonic() - started < 60


def test_token_that_is_not_there_is_still_reported_fast(tmp_path):
    """The retry at start-up is bounded: a token that does not exist fails within a fraction of
    a second on first use, and at once on every later call in the same process."""
    tok = make_token(tmp_path / "t", "present")
    missing = request("pkcs11:token=absent;object=ec256", Mechanism.ECDSA, bytes(32))
    results = sign_batch(tok, [missing, missing, missing])
    assert [r["code"] for r in results] == [ErrorCode.TOKEN_NOT_FOUND] * 3, results
    assert "token 'absent'" in results[0]["message"] and "\n" not in results[0]["message"]
    assert results[0]["seconds"] < 1.0, results[0]
    assert max(r["seconds"] for r in results[1:]) < 0.1, results


SIGNZONE_GROUP = 4    # on a quiet machine the old shim failed 23 of 120 such processes (pairs: 34 of 400)
SIGNZONE_ROUNDS = 40  # 160 processes; under heavy load the old rate fell to ~2 %, still failing ~19 runs in 20


def test_patched_signzone_started_together_all_sign(token_cli, patched_bind, tmp_path):
    """The case the benchmark met: patched dnssec-signzone processes (C, so they reach
    C_Initialize within a millisecond of each other) started together on one token, 4 at a time,
    40 times; every one signs, and a signed zone validates with both token keys."""
    tags = {token_cli.json("keygen", ZONE, "--role", role, "--algorithm", "ECDSAP256SHA256")["tag"]
            for role in ("ksk", "zsk")}
    zone = tmp_path / f"{ZONE}.zone"
    zone.write_text(sample_zone_text(dns.name.from_text(ZONE), hosts=20, delegations=2))
    env = tool_env(token_cli, patched_bind)
    for name in ("OPENSSL_CONF", "OPENSSL_MODULES", "LD_PRELOAD"):  # the shim route: none of these
        env.pop(name, None)
    failures, started = [], time.monotonic()
    for _ in range(SIGNZONE_ROUNDS):
        procs = [subprocess.Popen(
            [str(patched_bind / "bin" / "dnssec-signzone"), "-S", "-K", str(token_cli.key_dir),
             "-o", ZONE, "-f", str(tmp_path / f"signed-{i}"), str(zone)],
            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(SIGNZONE_GROUP)]
        try:
            for proc in procs:
                _, err = proc.communicate(timeout=60)
                if proc.returncode != 0:
                    failures.append(err.strip()[-300:])
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
    assert failures == [], f"{len(failures)} of {SIGNZONE_GROUP * SIGNZONE_ROUNDS} failed: {failures[:2]}"
    assert validate_zone_file(tmp_path / "signed-0") == tags
    assert time.monotonic() - started < 60

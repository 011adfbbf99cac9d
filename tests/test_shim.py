"""The C signing shim against real SoftHSM2 tokens in temporary directories (no mocks).

Every shim call runs in a subprocess (tests/shim_helper.py): SoftHSM takes one configuration per
C_Initialize and the shim keeps per-process state (a rejected PIN stays rejected), so a fresh
process per scenario keeps tests independent of each other and of other test modules that load
SoftHSM through python-pkcs11.  Signatures are verified here with `cryptography` against public
keys read from the token.
"""

import hashlib
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils
from cryptography.hazmat.primitives.serialization import load_der_public_key

from bindpkcs11.shim import ErrorCode, Mechanism
from bindpkcs11.shim.sharedlib import build_shared_library

SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
SPY = "/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so"
HELPER = Path(__file__).with_name("shim_helper.py")
PIN = "4711-test"
SO_PIN = "0815-test-so"

pytestmark = pytest.mark.skipif(
    not (os.path.exists(SOFTHSM) and shutil.which("softhsm2-util") and shutil.which("gcc")),
    reason="needs SoftHSM2 (softhsm2-util) and gcc",
)

# A PKCS#11 module that forwards everything to SoftHSM and appends a line to a log file for
# each C_Login: the only way to count login attempts, since SoftHSM keeps no failure counter
# (it just sets CKF_USER_PIN_COUNT_LOW after a failure).
LOGIN_COUNTER_C = r"""
#include <p11-kit/pkcs11.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

static CK_FUNCTION_LIST proxy;
static CK_FUNCTION_LIST_PTR real;

static CK_RV counting_login(CK_SESSION_HANDLE s, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin, CK_ULONG len)
{
    FILE *log = fopen(getenv("BP11_TEST_LOGIN_LOG"), "a");
    if (log) {
        fputs("C_Login\n", log);
        fclose(log);
    }
    return real->C_Login(s, user, pin, len);
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR out)
{
    if (!real) {
        void *h = dlopen(getenv("BP11_TEST_REAL_MODULE"), RTLD_NOW | RTLD_LOCAL);
        CK_C_GetFunctionList get = h ? (CK_C_GetFunctionList)dlsym(h, "C_GetFunctionList") : NULL;
        if (!get || get(&real) != CKR_OK)
            return CKR_GENERAL_ERROR;
        proxy = *real;
        proxy.C_Login = counting_login;
    }
    *out = &proxy;
    return CKR_OK;
}
"""


@dataclass(frozen=True)
class Token:
    """A SoftHSM token in its own token directory, and the environment that reaches it."""

    label: str
    conf: Path
    tokendir: Path
    pin_file: Path
    keys: dict = field(default_factory=dict)

    def env(self, **overrides) -> dict:
        """Environment for a helper: this token's SoftHSM config, module and PIN file."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PKCS11_LIBRARY_")}
        env.update(
            SOFTHSM2_CONF=str(self.conf),
            PKCS11_LIBRARY_PATH=SOFTHSM,
            PKCS11_LIBRARY_PIN_FILE=str(self.pin_file),
        )
        for key, value in overrides.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def uri(self, key: str, query: str = "") -> str:
        return f"pkcs11:token={self.label};object={key}" + (f"?{query}" if query else "")


def make_token(root: Path, label: str, pin: str = PIN) -> Token:
    """softhsm2-util --init-token in a private token directory; the PIN file is 0600."""
    tokendir = root / "tokens"
    tokendir.mkdir(parents=True)
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokendir}\nobjectstore.backend = file\nlog.level = ERROR\n")
    pin_file = root / "pin"
    pin_file.touch(mode=0o600)
    pin_file.write_text(pin + "\n")
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", SO_PIN],
        env={**os.environ, "SOFTHSM2_CONF": str(conf)}, check=True, capture_output=True, timeout=60,
    )
    return Token(label, conf, tokendir, pin_file)


def run_helper(args: list, env: dict, stdin: str = "", timeout: float = 120) -> object:
    """Run tests/shim_helper.py with the venv's python; return its JSON output."""
    proc = subprocess.run(
        [sys.executable, str(HELPER), *args], input=stdin, env=env,
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    assert proc.returncode == 0, f"helper {args[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(proc.stdout)


def helper_outputs(procs: list[subprocess.Popen], timeout: float) -> list:
    """Wait for helper processes started together; their JSON outputs. Every one is stopped,
    also when one of them failed."""
    try:
        outputs = []
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, err[-2000:]
            outputs.append(json.loads(out))
        return outputs
    finally:
        stop_helpers(procs)


def stop_helpers(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def sign_batch(token: Token, requests: list, **env) -> list:
    return run_helper(["sign-batch"], token.env(**env), stdin=json.dumps(requests))


def request(uri: str, mechanism: Mechanism, data: bytes, **extra) -> dict:
    return {"uri": uri, "mech": int(mechanism), "data": data.hex(), **extra}


@pytest.fixture(scope="module")
def token(tmp_path_factory) -> Token:
    """One token with P-256, P-384, RSA-2048 and (if SoftHSM offers it) Ed25519 keys."""
    tok = make_token(tmp_path_factory.mktemp("shim-token"), "dnssec")
    keys = run_helper(["genkeys", tok.label], tok.env())
    return Token(tok.label, tok.conf, tok.tokendir, tok.pin_file, keys)


@pytest.fixture
def login_counter(tmp_path) -> tuple:
    """(module path of the counting proxy, its login log) for a test's own helper process."""
    src = tmp_path / "login_counter.c"
    src.write_text(LOGIN_COUNTER_C)
    module = tmp_path / "login_counter.so"
    subprocess.run(
        ["gcc", "-O2", "-fPIC", "-shared", "-I/usr/include/p11-kit-1", str(src), "-o", str(module), "-ldl"],
        check=True, capture_output=True, timeout=60,
    )
    return module, tmp_path / "logins.log"


def public_key(token: Token, label: str):
    entry = token.keys[label]
    if "error" in entry:
        pytest.skip(f"SoftHSM could not make {label}: {entry['error']}")
    return load_der_public_key(bytes.fromhex(entry["spki"]))


# --- signatures verify --------------------------------------------------------------------------

MESSAGE = b"example.com. 3600 IN SOA ns1.example.com. hostmaster.example.com. 1 7200 3600 1209600 3600"

# (key label, mechanism, hash for the digest or None for EdDSA's whole message)
VECTORS = [
    ("ec256", Mechanism.ECDSA, hashes.SHA256()),
    ("ec384", Mechanism.ECDSA, hashes.SHA384()),
    ("rsa2048", Mechanism.RSA_SHA1, hashes.SHA1()),
    ("rsa2048", Mechanism.RSA_SHA256, hashes.SHA256()),
    ("rsa2048", Mechanism.RSA_SHA512, hashes.SHA512()),
    ("ed25519", Mechanism.EDDSA, None),
]


def digest(algorithm, data: bytes) -> bytes:
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize()


def verify(key, mechanism: Mechanism, algorithm, sig: bytes) -> None:
    """Raise InvalidSignature unless sig is a DNSSEC-format signature of MESSAGE."""
    if mechanism == Mechanism.EDDSA:
        key.verify(sig, MESSAGE)
    elif mechanism == Mechanism.ECDSA:
        half = len(sig) // 2  # r||s, as RFC 6605 puts it on the wire
        der = utils.encode_dss_signature(int.from_bytes(sig[:half], "big"), int.from_bytes(sig[half:], "big"))
        key.verify(der, digest(algorithm, MESSAGE), ec.ECDSA(utils.Prehashed(algorithm)))
    else:
        key.verify(sig, digest(algorithm, MESSAGE), padding.PKCS1v15(), utils.Prehashed(algorithm))


@pytest.fixture(scope="module")
def vector_results(token) -> list:
    requests = [
        request(token.uri(label), mech, MESSAGE if alg is None else digest(alg, MESSAGE))
        for label, mech, alg in VECTORS
    ]
    return sign_batch(token, requests)


@pytest.mark.parametrize("index", range(len(VECTORS)), ids=[f"{v[0]}-{v[1].name}" for v in VECTORS])
def test_signature_verifies_with_public_key_from_token(token, vector_results, index):
    label, mechanism, algorithm = VECTORS[index]
    key = public_key(token, label)
    result = vector_results[index]
    assert "sig" in result, result
    sig = bytes.fromhex(result["sig"])
    expected = {"ec256": 64, "ec384": 96, "rsa2048": 256, "ed25519": 64}[label]
    assert len(sig) == expected
    verify(key, mechanism, algorithm, sig)


def test_uri_with_percent_encoded_id_type_and_harmless_query(token):
    """A key chosen by percent-encoded id and type; a vendor query attribute changes nothing."""
    uri = f"pkcs11:token={token.label};id=%01;type=private?x-vendor=ignored"
    [result] = sign_batch(token, [request(uri, Mechanism.ECDSA, digest(hashes.SHA256(), MESSAGE))])
    verify(public_key(token, "ec256"), Mechanism.ECDSA, hashes.SHA256(), bytes.fromhex(result["sig"]))


def test_module_and_pin_come_only_from_the_environment(token):
    """A URI naming the module and a PIN file is refused, even where they would work."""
    uri = f"{token.uri('ec256')}?module-path={SOFTHSM}&pin-source=file://{token.pin_file}"
    [result] = sign_batch(token, [request(uri, Mechanism.ECDSA, bytes(32))])
    assert result["code"] == ErrorCode.URI
    assert "'module-path' is not allowed" in result["message"]
    assert SOFTHSM not in result["message"] and str(token.pin_file) not in result["message"]


def test_pin_from_environment_variable(token):
    [result] = sign_batch(token, [request(token.uri("ec256"), Mechanism.ECDSA, bytes(32))],
                          PKCS11_LIBRARY_PIN=PIN, PKCS11_LIBRARY_PIN_FILE=None)
    assert "sig" in result, result


# --- concurrency and login count ------------------------------------------------------------------

def test_eight_threads_sign_a_thousand_times_each(token):
    out = run_helper(["threads", token.uri("ec256"), "8", "1000"], token.env())
    assert out["errors"] == []
    key = public_key(token, "ec256")
    for t, sigs in out["sigs"].items():
        assert len(sigs) == 1000
        for i, sig_hex in enumerate(sigs):
            sig = bytes.fromhex(sig_hex)
            r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
            data = hashlib.sha256(f"{t}-{i}".encode()).digest()
            key.verify(utils.encode_dss_signature(r, s), data, ec.ECDSA(utils.Prehashed(hashes.SHA256())))


def test_signs_with_one_session_copy_of_the_key(token, tmp_path):
    """pkcs11-spy between the shim and SoftHSM: the key is copied once into a session object
    (CKA_TOKEN false, SoftHSM signs it ~1.4 x faster than the token object, which it re-reads
    from disk at every C_SignInit), every signature of every thread uses that copy, and the token
    object is only re-checked now and then (the 400 signatures take well under a second here, so
    a few checks at most), never once per signature."""
    spy_log = tmp_path / "spy.log"
    env = token.env(PKCS11_LIBRARY_PATH=SPY, PKCS11SPY=SOFTHSM, PKCS11SPY_OUTPUT=str(spy_log))
    out = run_helper(["threads", token.uri("ec256"), "4", "100"], env)
    assert out["errors"] == []
    log = spy_log.read_text()  # threads' entries may interleave: count calls, not blocks
    copies = re.findall(r": C_CopyObject\n.*?\[out\] \*phNewObject = (\S+)\nReturned:  0 CKR_OK", log,
                        re.S)
    assert len(copies) == 1 and log.count("CKA_TOKEN             False") == 1
    assert log.count(": C_SignInit\n") == 400
    assert set(re.findall(r"\[in\] hKey = (\S+)", log)) == {copies[0]}
    assert log.count(": C_GetAttributeValue\n") < 20


def test_one_login_serves_every_thread(token, login_counter):
    module, log = login_counter
    env = token.env(PKCS11_LIBRARY_PATH=str(module), BP11_TEST_REAL_MODULE=SOFTHSM,
                    BP11_TEST_LOGIN_LOG=str(log))
    out = run_helper(["threads", token.uri("ec256"), "8", "50"], env)
    assert out["errors"] == []
    assert log.read_text().count("C_Login") == 1


# --- wrong PIN: tried once, never again --------------------------------------------------------

def test_wrong_pin_is_tried_exactly_once(tmp_path, login_counter):
    tok = make_token(tmp_path / "t", "pinlock")
    run_helper(["genkeys", tok.label], tok.env())
    wrong = tmp_path / "wrong-pin"
    wrong.write_text("not-the-pin\n")
    module, log = login_counter
    env = dict(PKCS11_LIBRARY_PATH=str(module), PKCS11_LIBRARY_PIN_FILE=str(wrong),
               BP11_TEST_REAL_MODULE=SOFTHSM, BP11_TEST_LOGIN_LOG=str(log))
    sign = request(tok.uri("ec256"), Mechanism.ECDSA, bytes(32))
    other_key = request(tok.uri("ec384"), Mechanism.ECDSA, bytes(48))
    results = sign_batch(tok, [sign, sign, other_key, {"finalize": True}, sign], **env)

    failures = [r for r in results if "finalized" not in r]
    assert [r["code"] for r in failures] == [ErrorCode.PIN_INCORRECT] * 4
    assert log.read_text().count("C_Login") == 1  # later calls, other keys, after finalize: none
    first = failures[0]["message"]
    assert "check the PIN" in first and "will not try again" in first
    assert "PIN count low" in first  # SoftHSM sets CKF_USER_PIN_COUNT_LOW after the failure
    assert "not-the-pin" not in json.dumps(results)

    # The token is not locked: the right PIN still works in a fresh process.
    [ok] = sign_batch(tok, [sign])
    assert "sig" in ok, ok


# --- errors ----------------------------------------------------------------------------------------

def error_cases(token: Token) -> list:
    """(name, request, expected code, text the message must contain)."""
    d32 = bytes(32)
    return [
        ("token-not-found", request("pkcs11:token=nosuch;object=ec256", Mechanism.ECDSA, d32),
         ErrorCode.TOKEN_NOT_FOUND, f"token 'nosuch' (module {SOFTHSM}) not found"),
        ("key-not-found", request(token.uri("nosuch"), Mechanism.ECDSA, d32),
         ErrorCode.KEY_NOT_FOUND, "key 'nosuch' on token 'dnssec' not found"),
        ("id-not-found", request(f"pkcs11:token={token.label};id=%99", Mechanism.ECDSA, d32),
         ErrorCode.KEY_NOT_FOUND, "key id 99"),
        ("not-pkcs11", request("file:token=x;object=y", Mechanism.ECDSA, d32), ErrorCode.URI, "pkcs11:"),
        ("no-token", request("pkcs11:object=ec256", Mechanism.ECDSA, d32), ErrorCode.URI, "no token"),
        ("no-key", request(f"pkcs11:token={token.label}", Mechanism.ECDSA, d32), ErrorCode.URI, "no key"),
        ("bad-percent", request("pkcs11:token=a%2;object=b", Mechanism.ECDSA, d32), ErrorCode.URI, "percent"),
        ("twice", request("pkcs11:token=a;token=b;object=c", Mechanism.ECDSA, d32), ErrorCode.URI, "twice"),
        ("unknown-attr", request("pkcs11:token=a;object=b;colour=red", Mechanism.ECDSA, d32),
         ErrorCode.URI, "colour"),
        ("public-type", request(token.uri("ec256") + ";type=public", Mechanism.ECDSA, d32),
         ErrorCode.URI, "type=public"),
        ("ec-key-rsa-mech", request(token.uri("ec256"), Mechanism.RSA_SHA256, d32),
         ErrorCode.MECHANISM, "EC key"),
        ("digest-length", request(token.uri("rsa2048"), Mechanism.RSA_SHA256, bytes(20)),
         ErrorCode.MECHANISM, "32-byte digest"),
        ("bad-mechanism", {**request(token.uri("ec256"), Mechanism.ECDSA, d32, buflen=512), "mech": 99},
         ErrorCode.MECHANISM, "unknown mechanism"),
        ("module-path-refused", request(token.uri("ec256", "module-path=/nonexistent/p11.so"),
                                        Mechanism.ECDSA, d32), ErrorCode.URI, "'module-path' is not allowed"),
        ("pin-source-refused", request(token.uri("ec256", "pin-source=file:///nonexistent/pin"),
                                       Mechanism.ECDSA, d32), ErrorCode.URI, "'pin-source' is not allowed"),
        ("path-attribute-in-query", request(token.uri("ec256", "object=other"), Mechanism.ECDSA, d32),
         ErrorCode.URI, "'object' belongs in the path part"),
        ("module-name-refused", request(token.uri("ec256", "module-name=softhsm2"),
                                        Mechanism.ECDSA, d32), ErrorCode.URI, "'module-name' is not allowed"),
        ("buffer-small", request(token.uri("rsa2048"), Mechanism.RSA_SHA256, d32, buflen=100),
         ErrorCode.BUFFER, "256 bytes"),
    ]


@pytest.fixture(scope="module")
def error_results(token) -> dict:
    cases = error_cases(token)
    results = sign_batch(token, [case[1] for case in cases])
    return {case[0]: (case, result) for case, result in zip(cases, results)}


@pytest.mark.parametrize("name", [c[0] for c in error_cases(Token("dnssec", Path(), Path(), Path()))])
def test_error_is_reported_with_code_and_one_line(error_results, name):
    (_, _, code, text), result = error_results[name]
    assert result.get("code") == code, result
    assert text in result["message"]
    assert "\n" not in result["message"]


def test_buffer_too_small_reports_needed_size(error_results):
    _, result = error_results["buffer-small"]
    assert result["siglen"] == 256


def test_module_missing_names_the_module(token):
    [result] = sign_batch(token, [request(token.uri("ec256"), Mechanism.ECDSA, bytes(32))],
                          PKCS11_LIBRARY_PATH="/nonexistent/p11.so")
    assert result["code"] == ErrorCode.MODULE
    assert "/nonexistent/p11.so" in result["message"]


def test_pin_file_missing_names_the_file(token):
    [result] = sign_batch(token, [request(token.uri("ec256"), Mechanism.ECDSA, bytes(32))],
                          PKCS11_LIBRARY_PIN_FILE="/nonexistent/pin")
    assert result["code"] == ErrorCode.CONFIG
    assert "/nonexistent/pin" in result["message"]


def test_no_module_configured_is_a_config_error(token):
    [result] = sign_batch(token, [request(token.uri("ec256"), Mechanism.ECDSA, bytes(32))],
                          PKCS11_LIBRARY_PATH=None)
    assert result["code"] == ErrorCode.CONFIG
    assert "PKCS11_LIBRARY_PATH" in result["message"]


def test_pin_value_never_appears_in_errors(token):
    secret = "s3cr3t-pin-value"
    uris = [f"pkcs11:token=nosuch;object=x?pin-value={secret}",
            f"pkcs11:token={token.label};object=nosuch?pin-value={secret}"]
    results = sign_batch(token, [request(u, Mechanism.ECDSA, bytes(32)) for u in uris])
    assert [r["code"] for r in results] == [ErrorCode.URI, ErrorCode.URI]
    assert all("'pin-value' is not allowed" in r["message"] for r in results)
    assert secret not in json.dumps(results)


def test_finalize_then_sign_again(token):
    sign = request(token.uri("ec256"), Mechanism.ECDSA, bytes(32))
    results = sign_batch(token, [sign, {"finalize": True}, sign, {"finalize": True}, sign])
    assert all("sig" in r for r in results if "finalized" not in r), results


# --- a long-running signer: token directory moved away and back, key re-created ---------------

class Heartbeats:
    """JSON lines from a `shim_helper.py loop` process, read with deadlines."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def wait_for(self, predicate, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"timed out after {timeout} s waiting for {what}"
            try:
                beat = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            assert beat is not None, f"helper exited while waiting for {what}: {self.proc.stderr.read()}"
            if predicate(beat):
                return beat


@contextmanager
def signing_loop(tok: Token, key: str, threads: int = 4):
    """A helper process signing with `key` from several threads until the block ends.

    On exit it must stop cleanly: every signing thread finished, exit status 0 (nothing hung).
    """
    proc = subprocess.Popen(
        [sys.executable, str(HELPER), "loop", tok.uri(key), str(threads)], env=tok.env(),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    beats = Heartbeats(proc)
    try:
        yield beats
    finally:
        if proc.poll() is None:
            proc.stdin.write("stop\n")
            proc.stdin.flush()
    done = beats.wait_for(lambda b: b.get("done"), 15, "the helper to stop")
    assert done["alive"] == 0, "a signing thread hung"
    assert proc.wait(timeout=15) == 0


GONE = (ErrorCode.TOKEN_NOT_FOUND, ErrorCode.KEY_NOT_FOUND)


def test_token_dir_moved_away_fails_fast_and_recovers_in_same_process(tmp_path):
    tok = make_token(tmp_path / "t", "moving")
    run_helper(["genkeys", tok.label], tok.env())
    away = tok.tokendir.with_name("tokens.away")
    try:
        with signing_loop(tok, "ec256") as beats:
            beats.wait_for(lambda b: b["ok"] >= 500 and not b["errors"], 30, "500 good signatures")

            tok.tokendir.rename(away)
            moved = time.monotonic()
            failed = beats.wait_for(lambda b: b["last"] in GONE, 5, "signing to fail after the move")
            assert failed["t"] - moved < 2, "the loss of the token was noticed late"
            assert "moving" in failed["message"]
            # Stay away past the re-initialisation interval, so failed C_Initialize attempts are
            # included: every call must come back quickly and none may succeed.
            settled = beats.wait_for(lambda b: b["t"] > failed["t"] + 0.2, 5, "the away phase to settle")
            beat, slowest = settled, 0.0
            while beat["t"] < moved + 2.5:
                beat = beats.wait_for(lambda b: True, 5, "heartbeats while the token is away")
                assert beat["last"] in GONE, beat
                slowest = max(slowest, beat["max_call_s"])
            assert beat["ok"] == settled["ok"], "a signature succeeded while the token was away"
            assert sum(beat["errors"].values()) > 100, "calls did not fail fast"
            assert slowest < 0.5, f"a call took {slowest:.3f} s while the token was away"

            away.rename(tok.tokendir)
            back = time.monotonic()
            resumed = beats.wait_for(lambda b: b["ok"] > beat["ok"] + 100 and b["last"] == 0, 10,
                                     "signing to resume after the move back")
            assert resumed["t"] - back < 5
    finally:
        if away.exists() and not tok.tokendir.exists():
            away.rename(tok.tokendir)


def test_key_recreated_under_a_running_signer_is_found_again(tmp_path):
    """SoftHSM can hide a key re-created by another process until C_Initialize; the shim copes."""
    tok = make_token(tmp_path / "t", "rekey")
    run_helper(["genkeys", tok.label], tok.env())
    with signing_loop(tok, "ec256", threads=2) as beats:
        beats.wait_for(lambda b: b["ok"] >= 500, 30, "500 good signatures")
        run_helper(["regen", tok.label, "ec256"], tok.env())
        regenerated = time.monotonic()
        before = beats.wait_for(lambda b: b["t"] > regenerated, 5, "a heartbeat after the re-creation")
        resumed = beats.wait_for(lambda b: b["ok"] > before["ok"] + 100 and b["last"] == 0, 10,
                                 "signing to resume with the new key")
        assert resumed["t"] - regenerated < 5
        # While the other process writes the new key, one signature failed in about 1 run of 20
        # with CKR_KEY_FUNCTION_NOT_PERMITTED (ErrorCode.PKCS11), most likely signed with the
        # object before SoftHSM had written all of it. Allowed only around the re-creation:
        # signing must resume by itself, as asserted above.
        during = {str(int(code)) for code in (*GONE, ErrorCode.PKCS11)}
        assert set(resumed["errors"]) <= during, resumed["errors"]


# --- the plain shared library for BIND -----------------------------------------------------------

def test_shared_library_builds_and_loads_without_python(tmp_path):
    import ctypes

    so = build_shared_library(tmp_path / "lib")
    assert so == tmp_path / "lib" / "libbp11.so"
    assert (tmp_path / "lib" / "bp11.h").exists()
    lib = ctypes.CDLL(str(so))
    lib.bp11_last_error.restype = ctypes.c_char_p
    assert lib.bp11_last_error() == b""
    assert lib.bp11_last_ckr() == 0

"""Subprocess side of tests/test_shim.py.

Each command runs in its own process because the shim and SoftHSM keep per-process state: one
SoftHSM configuration per C_Initialize, a PIN that failed is never retried, and python-pkcs11
(which initialises SoftHSM without CKF_OS_LOCKING_OK) must not share a process with the shim.
The PIN always comes from the file named by PKCS11_LIBRARY_PIN_FILE, never from argv.

  genkeys LABEL            make the test keys with python-pkcs11; print their public keys (JSON)
  regen LABEL KEY          delete key pair KEY and make a new one with the same label and id
  sign-batch               sign the JSON list of requests on stdin; print the outcomes (JSON)
  threads URI N COUNT      N threads x COUNT ECDSA signatures; print them all (JSON)
  loop URI THREADS         sign from THREADS threads until stdin says "stop"; print JSON lines
  start URI                load the shim, print "ready", wait for a line on stdin, then make this
                           process's first signature (C_Initialize, login, sign); print the outcome
  logins LABEL N [churn]   log in to token LABEL N times (python-pkcs11 through bindpkcs11.token),
                           each login in a session of its own; with "churn" each session also
                           creates and destroys a token object, as keygen does; print the outcomes
"""

import hashlib
import json
import os
import sys
import threading
import time
from pathlib import Path

# The checkout this helper belongs to, not whatever bindpkcs11 the venv has installed: a test
# must exercise the shim built from the source it sits next to.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
ED25519_OID = b"\x06\x03\x2b\x65\x70"

# label -> (key type, parameter, id); the same table the tests use through genkeys' output.
KEYS = {
    "ec256": ("ec", "secp256r1", b"\x01"),
    "ec384": ("ec", "secp384r1", b"\x02"),
    "rsa2048": ("rsa", 2048, b"\x03"),
    "ed25519": ("ed", None, b"\x04"),
}


def _read_pin() -> str:
    with open(os.environ["PKCS11_LIBRARY_PIN_FILE"], encoding="utf-8") as f:
        return f.readline().rstrip("\n")


def _der_octet_string(der: bytes) -> bytes:
    """Content of a DER OCTET STRING (CKA_EC_POINT); short and 0x81 lengths are all EC uses."""
    if der[0] != 0x04:
        raise ValueError("CKA_EC_POINT is not an OCTET STRING")
    return der[3:] if der[1] == 0x81 else der[2:]


def _spki(kind: str, param, pub) -> bytes:
    """DER SubjectPublicKeyInfo built from the token's public key attributes."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from pkcs11 import Attribute

    if kind == "ec":
        curve = {"secp256r1": ec.SECP256R1(), "secp384r1": ec.SECP384R1()}[param]
        key = ec.EllipticCurvePublicKey.from_encoded_point(curve, _der_octet_string(pub[Attribute.EC_POINT]))
    elif kind == "rsa":
        numbers = rsa.RSAPublicNumbers(
            int.from_bytes(pub[Attribute.PUBLIC_EXPONENT], "big"),
            int.from_bytes(pub[Attribute.MODULUS], "big"),
        )
        key = numbers.public_key()
    else:
        key = ed25519.Ed25519PublicKey.from_public_bytes(_der_octet_string(pub[Attribute.EC_POINT]))
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _generate(session, label: str, kind: str, param, key_id: bytes):
    from pkcs11 import Attribute, KeyType, Mechanism
    from pkcs11.util.ec import encode_named_curve_parameters

    if kind == "rsa":
        return session.generate_keypair(KeyType.RSA, param, store=True, label=label, id=key_id)
    if kind == "ec":
        params = {Attribute.EC_PARAMS: encode_named_curve_parameters(param)}
        domain = session.create_domain_parameters(KeyType.EC, params, local=True)
        return domain.generate_keypair(store=True, label=label, id=key_id)
    domain = session.create_domain_parameters(
        KeyType.EC_EDWARDS, {Attribute.EC_PARAMS: ED25519_OID}, local=True
    )
    return domain.generate_keypair(
        store=True, label=label, id=key_id, mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN
    )


def genkeys(token_label: str) -> dict:
    """Generate every key in KEYS on the token; a key type the token lacks is reported, not fatal."""
    import pkcs11

    lib = pkcs11.lib(SOFTHSM)
    token = lib.get_token(token_label=token_label)
    out = {}
    with token.open(rw=True, user_pin=_read_pin()) as session:
        for label, (kind, param, key_id) in KEYS.items():
            try:
                pub, _ = _generate(session, label, kind, param, key_id)
            except pkcs11.PKCS11Error as exc:
                out[label] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            out[label] = {"spki": _spki(kind, param, pub).hex(), "id": key_id.hex()}
    return out


def regen(token_label: str, key_label: str) -> dict:
    """Destroy the key pair called key_label and generate a new one with the same label and id."""
    import pkcs11
    from pkcs11 import Attribute

    kind, param, key_id = KEYS[key_label]
    token = pkcs11.lib(SOFTHSM).get_token(token_label=token_label)
    with token.open(rw=True, user_pin=_read_pin()) as session:
        for obj in list(session.get_objects({Attribute.LABEL: key_label})):
            obj.destroy()
        pub, _ = _generate(session, key_label, kind, param, key_id)
        return {"spki": _spki(kind, param, pub).hex()}


def _sign_one(uri: str, mechanism: int, data: bytes, buflen) -> dict:
    """One sign through the Python wrapper, or with a caller-sized buffer straight through cffi."""
    from bindpkcs11 import shim
    from bindpkcs11._shim import ffi, lib

    if buflen is None:
        try:
            return {"sig": shim.sign(uri, shim.Mechanism(mechanism), data).hex()}
        except shim.ShimError as exc:
            return {"code": int(exc.code), "ckr": exc.ckr, "message": exc.message}
    buf = ffi.new("unsigned char[]", max(buflen, 1))
    siglen = ffi.new("size_t *", buflen)
    source = ffi.from_buffer("unsigned char[]", data)
    code = lib.bp11_sign(uri.encode(), mechanism, source, len(data), buf, siglen)
    return {"code": code, "siglen": siglen[0], "message": ffi.string(lib.bp11_last_error()).decode()}


def sign_batch(requests: list) -> list:
    """Run requests in order: {"uri", "mech", "data" (hex), optional "buflen"} or {"finalize": true}.

    Each outcome carries "seconds", how long its call took (fail-fast checks need it).
    """
    from bindpkcs11 import shim

    results = []
    for req in requests:
        if req.get("finalize"):
            shim.finalize()
            results.append({"finalized": True})
            continue
        start_s = time.monotonic()
        result = _sign_one(req["uri"], req["mech"], bytes.fromhex(req["data"]), req.get("buflen"))
        results.append({**result, "seconds": time.monotonic() - start_s})
    return results


def threads(uri: str, nthreads: int, count: int) -> dict:
    """nthreads threads each sign SHA-256("<thread>-<i>") count times; all signatures come back."""
    from concurrent.futures import ThreadPoolExecutor

    from bindpkcs11 import shim

    def work(t: int) -> list:
        return [
            shim.sign(uri, shim.Mechanism.ECDSA, hashlib.sha256(f"{t}-{i}".encode()).digest()).hex()
            for i in range(count)
        ]

    start = time.monotonic()
    with ThreadPoolExecutor(nthreads) as pool:
        futures = [pool.submit(work, t) for t in range(nthreads)]
        sigs, errors = {}, []
        for t, fut in enumerate(futures):
            try:
                sigs[t] = fut.result()
            except shim.ShimError as exc:
                errors.append(f"thread {t}: {exc}")
    return {"sigs": sigs, "errors": errors, "seconds": time.monotonic() - start}


class _Counters:
    """Per-outcome counts and the slowest call, shared by the signing threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ok = 0
        self.errors: dict = {}
        self.last = None  # last outcome: 0 or an error code
        self.last_message = ""
        self.messages: dict = {}  # every distinct error message and how often it came
        self.max_call_s = 0.0

    def record(self, code: int, message: str, seconds: float) -> None:
        with self.lock:
            if code == 0:
                self.ok += 1
            else:
                self.errors[code] = self.errors.get(code, 0) + 1
                self.last_message = message
                self.messages[message] = self.messages.get(message, 0) + 1
            self.last = code
            self.max_call_s = max(self.max_call_s, seconds)

    def snapshot(self) -> dict:
        with self.lock:
            snap = {"ok": self.ok, "errors": dict(self.errors), "last": self.last,
                    "message": self.last_message, "messages": dict(self.messages),
                    "max_call_s": self.max_call_s}
            self.max_call_s = 0.0  # each heartbeat reports the slowest call since the previous one
            return snap


def loop(uri: str, nthreads: int) -> None:
    """Sign until "stop" arrives on stdin; a JSON heartbeat goes to stdout every 50 ms."""
    from bindpkcs11 import shim

    digest = hashlib.sha256(b"loop").digest()
    counters = _Counters()
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            start = time.monotonic()
            try:
                shim.sign(uri, shim.Mechanism.ECDSA, digest)
                code, message = 0, ""
            except shim.ShimError as exc:
                code, message = int(exc.code), exc.message
            counters.record(code, message, time.monotonic() - start)

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(nthreads)]
    for w in workers:
        w.start()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    while not stop.wait(0.05):
        print(json.dumps({"t": time.monotonic(), **counters.snapshot()}), flush=True)
    for w in workers:
        w.join(timeout=10)
    print(json.dumps({"done": True, "alive": sum(w.is_alive() for w in workers)}), flush=True)


def start(uri: str) -> dict:
    """The first signature of a fresh process, begun when stdin says so.

    Python and the shim are loaded before "ready" so that processes released together reach
    C_Initialize within microseconds of each other, as C programs started together do.
    """
    from bindpkcs11 import shim

    print("ready", flush=True)
    sys.stdin.readline()
    start_s = time.monotonic()
    try:
        sig = shim.sign(uri, shim.Mechanism.ECDSA, hashlib.sha256(b"start").digest())
        outcome = {"code": 0, "message": "", "sig": sig.hex()}
    except shim.ShimError as exc:
        outcome = {"code": int(exc.code), "message": exc.message}
    return {**outcome, "seconds": time.monotonic() - start_s}


def logins(label: str, count: int, churn: bool = False) -> dict:
    """Log in `count` times, as every `bindpkcs11` command that opens the token does: each
    successful C_Login makes SoftHSM rewrite token.object (see bp11.c); with `churn`, a token
    object made and destroyed per login also rewrites the token's generation file.  Failures
    are counted, never retried within one round."""
    from pkcs11 import Attribute, ObjectClass, PKCS11Error

    from bindpkcs11.errors import BindPkcs11Error
    from bindpkcs11.token.library import load_module, open_session

    ok, errors = 0, {}
    start_s = time.monotonic()
    for _ in range(count):
        try:
            with open_session(SOFTHSM, label, pin=_read_pin, rw=churn) as session:
                if churn:
                    session.create_object({Attribute.CLASS: ObjectClass.DATA, Attribute.TOKEN: True,
                                           Attribute.LABEL: "churn", Attribute.VALUE: b"x"}).destroy()
                ok += 1
        except (BindPkcs11Error, PKCS11Error) as exc:  # the other login processes tear it too
            what = f"{type(exc).__name__}: {exc}"
            errors[what] = errors.get(what, 0) + 1
            load_module(SOFTHSM).reinitialize()  # SoftHSM sees the token again only after this
    return {"ok": ok, "errors": errors, "seconds": time.monotonic() - start_s}


def main(argv: list) -> int:
    command = argv[1]
    if command == "genkeys":
        print(json.dumps(genkeys(argv[2])))
    elif command == "regen":
        print(json.dumps(regen(argv[2], argv[3])))
    elif command == "sign-batch":
        print(json.dumps(sign_batch(json.load(sys.stdin))))
    elif command == "threads":
        print(json.dumps(threads(argv[2], int(argv[3]), int(argv[4]))))
    elif command == "loop":
        loop(argv[2], int(argv[3]))
    elif command == "logins":
        print(json.dumps(logins(argv[2], int(argv[3]), argv[4:] == ["churn"])))
    elif command == "start":
        print(json.dumps(start(argv[2])))
    else:
        raise SystemExit(f"unknown command {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

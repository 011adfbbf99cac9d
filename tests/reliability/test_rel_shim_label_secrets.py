"""Issue 8 item 9: a key's Label never carries a PIN or a module, and no URI query reaches a log.

RFC 7512 lets a URI hold `pin-value`, `pin-source`, `module-path` and `module-name`. A Label
with one of them is refused by bindpkcs11 when it reads a key file, by the C shim when asked to
sign (the PIN comes only from PKCS11_LIBRARY_PIN(_FILE), the module only from
PKCS11_LIBRARY_PATH), and the patched BIND logs a sign failure with the URI cut before '?'.
Real SoftHSM tokens, real keygen, real patched dnssec-signzone; nothing is mocked.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path

import pytest

from bindpkcs11.dnssec.keyfile import read_key_pair
from bindpkcs11.errors import KeyFileError
from bindpkcs11.shim import ErrorCode, Mechanism
from bindtools import tool_env
from conftest import SOFTHSM_MODULE
from test_shim import LOGIN_COUNTER_C, PIN, make_token, request, run_helper, sign_batch

ZONE = "example.test"
SECRET = "S3CRET-4711-never-logged"


def set_label(private: Path, label: str, field: str = "Label") -> None:
    """Rewrite the Label line of a .private as an operator's editor would (base64 + NUL)."""
    encoded = base64.b64encode(label.encode() + b"\0").decode()
    lines = [f"{field}: {encoded}" if line.startswith("Label:") else line
             for line in private.read_text().splitlines()]
    private.write_text("\n".join(lines) + "\n")


def label_of(private: Path) -> str:
    line = next(l for l in private.read_text().splitlines() if l.startswith("Label:"))
    return base64.b64decode(line.split(":", 1)[1].strip()).rstrip(b"\0").decode()


@pytest.fixture(scope="module")
def shim_token(tmp_path_factory):
    tok = make_token(tmp_path_factory.mktemp("rel-shim-token"), "relshim")
    run_helper(["genkeys", tok.label], tok.env())
    return tok


@pytest.fixture
def login_counter(tmp_path):
    src = tmp_path / "login_counter.c"
    src.write_text(LOGIN_COUNTER_C)
    module = tmp_path / "login_counter.so"
    subprocess.run(["gcc", "-O2", "-fPIC", "-shared", "-I/usr/include/p11-kit-1", str(src), "-o",
                    str(module), "-ldl"], check=True, capture_output=True, timeout=60)
    return module, tmp_path / "logins.log"


def test_shim_refuses_a_uri_naming_a_pin_or_module(shim_token, login_counter):
    """Each of these would sign (or log in) with the old shim; now none gets past the parser."""
    tok = shim_token
    base = tok.uri("ec256")
    variants = {
        "pin-value": f"{base}?pin-value={PIN}",
        "pin-source": f"{base}?pin-source=file://{tok.pin_file}",
        "module-path": f"{base}?module-path={SOFTHSM_MODULE}",
        "module-name": f"{base}?module-name=softhsm2",
    }
    variants_any_case = {**variants, "PIN-VALUE": f"{base}?x-vendor=1&PIN-VALUE={PIN}",
                         "pin-value-in-path": f"{base};pin-value={PIN}"}
    module, log = login_counter
    # No PIN in the environment: only the URI could log in, and it must not.
    env = dict(PKCS11_LIBRARY_PATH=str(module), PKCS11_LIBRARY_PIN_FILE=None,
               BP11_TEST_REAL_MODULE=SOFTHSM_MODULE, BP11_TEST_LOGIN_LOG=str(log))
    names = list(variants_any_case)
    results = sign_batch(tok, [request(variants_any_case[n], Mechanism.ECDSA, bytes(32)) for n in names],
                         **env)
    for name, result in zip(names, results):
        attribute = name.lower().replace("-in-path", "")
        assert result.get("code") == ErrorCode.URI, (name, result)
        assert f"'{attribute}' is not allowed" in result["message"], (name, result)
        assert "PKCS11_LIBRARY_PIN_FILE" in result["message"]  # says where the PIN belongs
    output = json.dumps(results)
    for leaked in (PIN, str(tok.pin_file), SOFTHSM_MODULE, "softhsm2"):
        assert leaked not in output
    assert not log.exists() or log.read_text().count("C_Login") == 0


@pytest.mark.parametrize("query, field", [
    (f"?pin-value={SECRET}", "Label"),
    (f"?pin-source=file:///tmp/{SECRET}", "Label"),
    (f"?module-path=/tmp/{SECRET}.so", "Label"),
    (f"?module-name={SECRET}", "Label"),
    (f"?x-vendor=1&Pin-Value={SECRET}", "Label"),
    (f";pin-value={SECRET}", "Label"),
    (f"?pin-value={SECRET}", "label"),  # BIND matches field names in any case
], ids=["pin-value", "pin-source", "module-path", "module-name", "mixed-case", "in-path", "field-case"])
def test_key_file_whose_label_names_a_pin_or_module_is_refused(token_cli, query, field):
    key = token_cli.json("keygen", ZONE, "--role", "zsk", "--algorithm", "ECDSAP256SHA256")
    key_file = token_cli.key_dir / Path(key["key_file"]).name
    private = key_file.with_suffix(".private")
    set_label(private, label_of(private) + query, field)
    with pytest.raises(KeyFileError) as error:
        read_key_pair(key_file)
    message = str(error.value)
    attribute = re.search(r"(pin-value|pin-source|module-path|module-name)", query, re.I).group(1).lower()
    assert str(private) in message and f"'{attribute}'" in message
    assert SECRET not in message and "\n" not in message


def test_cli_skips_a_key_file_with_a_pin_in_its_label_and_says_why(token_cli):
    """`token show` matches key files to token objects: the tampered one is named, its PIN not."""
    pin = token_cli.pin()
    key = token_cli.json("keygen", ZONE, "--role", "zsk", "--algorithm", "ECDSAP256SHA256")
    private = (token_cli.key_dir / Path(key["key_file"]).name).with_suffix(".private")
    set_label(private, f"{label_of(private)}?pin-value={pin}")
    result = token_cli("token", "show", "--label", "bindpkcs11", "--json")
    assert f"warning: skipping a key pair: {private}: refusing this key file: the key label " \
           "carries 'pin-value'" in result.stderr, result.stderr
    assert pin not in result.stdout + result.stderr
    objects = json.loads(result.stdout)["objects"]
    assert not any(o.get("dnssec") for o in objects if o["object"]["label"] == key["object_label"])


def test_keygen_cannot_be_made_to_write_a_pin_into_a_label(token_cli):
    """Token and key labels full of URI syntax end up percent-encoded, never as a query."""
    key = token_cli.json("keygen", ZONE, "--role", "zsk", "--algorithm", "ECDSAP256SHA256",
                         "--label", f"zsk?pin-value={SECRET}&module-path=/x;pin-source=y")
    pair = read_key_pair(token_cli.key_dir / Path(key["key_file"]).name)
    assert "?" not in pair.label_uri and ";pin-source" not in pair.label_uri
    assert pair.label_uri.endswith("object=zsk%3Fpin-value=" + SECRET + "%26module-path=%2Fx%3Bpin-source=y")


def signzone(prefix: Path, key_dir: Path, zone: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(prefix / "bin" / "dnssec-signzone"), "-S", "-K", str(key_dir), "-o", ZONE,
         "-f", str(zone.with_suffix(".signed")), str(zone)],
        capture_output=True, text=True, env=env, cwd=zone.parent, timeout=300,
    )


def small_zone(directory: Path) -> Path:
    zone = directory / f"{ZONE}.zone"
    zone.write_text(f"$TTL 300\n@ SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ NS ns1\n"
                    f"ns1 A 127.0.0.1\nwww A 127.0.0.2\n")
    return zone


def test_patched_signzone_refuses_a_label_with_the_pin_and_never_prints_it(token_cli, patched_bind,
                                                                           tmp_path):
    """The real PIN in both Labels, none in the environment: the old shim signed with it."""
    pin = token_cli.pin()
    for role in ("ksk", "zsk"):
        key = token_cli.json("keygen", ZONE, "--role", role, "--algorithm", "ECDSAP256SHA256")
        private = (token_cli.key_dir / Path(key["key_file"]).name).with_suffix(".private")
        set_label(private, f"{label_of(private)}?pin-value={pin}")
    env = tool_env(token_cli, patched_bind)
    del env["PKCS11_LIBRARY_PIN_FILE"]
    zone = small_zone(tmp_path)
    result = signzone(patched_bind, token_cli.key_dir, zone, env)
    assert result.returncode != 0, result.stdout
    assert "'pin-value' is not allowed" in result.stderr, result.stderr
    assert re.search(r"\(key id \d+\)", result.stderr), result.stderr
    assert pin not in result.stdout + result.stderr
    assert not zone.with_suffix(".signed").exists()


def test_patched_signzone_logs_a_failing_key_by_its_tag_never_its_label(token_cli, patched_bind,
                                                                         tmp_path):
    """A sign failure names the key by its tag: no part of its label (which may hold a PIN in
    the path or the query) reaches the log."""
    for role in ("ksk", "zsk"):
        key = token_cli.json("keygen", ZONE, "--role", role, "--algorithm", "ECDSAP256SHA256")
        private = (token_cli.key_dir / Path(key["key_file"]).name).with_suffix(".private")
        set_label(private, f"pkcs11:token=bindpkcs11;object=gone-{role}?x-note={SECRET}")
    zone = small_zone(tmp_path)
    result = signzone(patched_bind, token_cli.key_dir, zone, tool_env(token_cli, patched_bind))
    assert result.returncode != 0
    assert re.search(r"bindpkcs11: key 'gone-(k|z)sk' on token 'bindpkcs11' not found .*"
                     r"\(key id \d+\)", result.stderr), result.stderr
    assert SECRET not in result.stdout + result.stderr

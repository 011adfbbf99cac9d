"""Issue 10, the SmartCard-HSM's own DKEK scheme behind the backup commands, tested against a
SCRIPTED STAND-IN of sc-hsm-tool (no SmartCard-HSM can be emulated here).

The stand-in prints the real tool's prompts and messages (OpenSC's src/tools/sc-hsm-tool.c:
create_dkek_share / ask_for_password, import_dkek_share, print_dkek_info, wrap_key, unwrap_key),
reads each password and PIN from its terminal without echo as the real tool does, keeps the
card's state (DKEK shares, KCV, user PIN, keys by reference) in a JSON file, and logs its argv:
the tests check that no password or PIN reached a command line. Its share files follow the real
format (b"Salted__", an 8-byte salt, AES-256-CBC under EVP_BytesToKey(MD5) of the password), with
fewer key-derivation rounds. What cannot run without a card: the PKCS#11 proof after an unwrap.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bindpkcs11.dnssec.keyfile import read_key_pair, token_private_fields, write_key_pair
from bindpkcs11.token.uri import key_uri
from conftest import Cli, clean_env, one_line_error

TOKEN = "SmartCard-HSM"
OBJECT = "example.test-ksk-card"
USER_PIN = "648219"
PROFILE = ("--profile", "opensc-sc-hsm")

STAND_IN = r'''#!{python}
import getpass, hashlib, json, os, sys
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives import padding
STATE, LOG, ITER = {state!r}, {log!r}, 16
with open(LOG, "a") as log:
    log.write(json.dumps(sys.argv) + "\n")
card = json.load(open(STATE))
def save():
    json.dump(card, open(STATE, "w"))
def fail(message):
    print(message, file=sys.stderr, flush=True)
    sys.exit(1)
def key_iv(salt, password):  # EVP_BytesToKey(aes-256-cbc, md5)
    out, block = b"", b""
    while len(out) < 48:
        block = block + password + salt
        for _ in range(ITER):
            block = hashlib.md5(block).digest()
        out += block
    return out[:32], out[32:48]
def cbc(key, iv, data, encrypt):
    c = Cipher(algorithms.AES(key), modes.CBC(iv))
    if encrypt:
        p = padding.PKCS7(128).padder()
        e = c.encryptor()
        return e.update(p.update(data) + p.finalize()) + e.finalize()
    d = c.decryptor()
    u = padding.PKCS7(128).unpadder()
    return u.update(d.update(data) + d.finalize()) + u.finalize()
def kcv():
    return hashlib.sha256(bytes.fromhex(card["dkek"])).digest()[:8].hex().upper()
def dkek_info():
    print("DKEK shares          : %d" % card["dkek_shares"])
    missing = card["dkek_shares"] - card["imported"]
    if missing > 0:
        print("DKEK import pending, %d share(s) still missing" % missing)
    else:
        print("DKEK key check value : " + kcv())
def verify_pin():
    pin = getpass.getpass("Enter User PIN : ")
    print()
    if pin != card["user_pin"]:
        card["pin_tries"] = card.get("pin_tries", 0) + 1
        save()
        fail("PIN verification failed with PIN code or password incorrect")
def der(tag, value):
    n = len(value)
    size = bytes([n]) if n < 128 else bytes([0x82, n >> 8, n & 255])
    return bytes([tag]) + size + value
def complete():
    return card["dkek_shares"] and card["imported"] >= card["dkek_shares"]
args = sys.argv[1:]
if card.get("fail"):
    fail(card["fail"])
if not args:
    print("Version              : 3.5")
    print("SO-PIN tries left    : 15")
    print("User PIN tries left  : 3")
    if card["dkek_shares"]:
        dkek_info()
elif args[0] == "--create-dkek-share":
    print("\nThe DKEK share will be enciphered using a key derived from a user supplied password.")
    while True:
        pwd = getpass.getpass("Enter password to encrypt DKEK share : ")
        print()
        if len(pwd) < 6:
            print("Password way to short. Please retry.")
            continue
        again = getpass.getpass("Please retype password to confirm : ")
        print()
        if again != pwd:
            print("Passwords do not match. Please retry.")
            continue
        break
    salt = os.urandom(8)
    print("Enciphering DKEK share, please wait...")
    key, iv = key_iv(salt, pwd.encode())
    data = b"Salted__" + salt + cbc(key, iv, os.urandom(32), True)
    open(args[1], "wb").write(data)
    print("DKEK share created and saved to %s" % args[1])
elif args[0] == "--import-dkek-share":
    data = open(args[1], "rb").read()
    if len(data) != 64 or data[:8] != b"Salted__":
        fail("File %s is not a DKEK share" % args[1])
    pwd = getpass.getpass("Enter password to decrypt DKEK share : ")
    print()
    print("Deciphering DKEK share, please wait...")
    key, iv = key_iv(data[8:16], pwd.encode())
    try:
        share = cbc(key, iv, data[16:], False)
        assert len(share) == 32
    except Exception:
        fail("Error decrypting DKEK share. Password correct ?")
    if not card["dkek_shares"]:
        fail("Not supported by card or card not initialized for key share usage")
    if complete():
        fail("sc_card_ctl(*, SC_CARDCTL_SC_HSM_IMPORT_DKEK_SHARE, *) failed with Incorrect parameters in APDU")
    card["dkek"] = bytes(a ^ b for a, b in zip(bytes.fromhex(card["dkek"]), share)).hex()
    card["imported"] += 1
    save()
    print("DKEK share imported")
    dkek_info()
elif args[0] == "--wrap-key":
    ref = args[args.index("--key-reference") + 1]
    verify_pin()
    if not complete():
        fail("Card not initialized for key wrap")
    if ref not in card["keys"]:
        fail("sc_card_ctl(*, SC_CARDCTL_SC_HSM_WRAP_KEY, *) failed with File not found")
    blob = bytes.fromhex(kcv()) + bytes.fromhex(card["keys"][ref])
    open(args[1], "wb").write(der(0x30, der(0x04, blob) + der(0xA0, b"PRKD " + ref.encode())))
elif args[0] == "--unwrap-key":
    ref = args[args.index("--key-reference") + 1]
    data = open(args[1], "rb").read()
    if data[:1] != b"\x30":
        fail("Invalid wrapped key format (Outer sequence).")
    print("Wrapped key contains:\n  Key blob\n  Private Key Description (PRKD)")
    if ref in card["keys"]:
        fail("Found existing private key description in EF with fid c4%02x. Please remove key "
             "first, select unused key reference or use --force." % int(ref))
    verify_pin()
    if not complete():
        fail("Card not initialized for key wrap")
    blob = data[4:4 + data[3]]
    if blob[:8].hex().upper() != kcv():
        fail("Wrapped key does not match DKEK")
    card["keys"][ref] = blob[8:].hex()
    save()
    print("Key successfully imported")
'''


def new_card(directory: Path, name: str, shares: int = 2, keys: dict | None = None) -> Path:
    state = directory / f"{name}.json"
    state.write_text(json.dumps({"user_pin": USER_PIN, "dkek_shares": shares, "imported": 0,
                                 "dkek": "00" * 32, "keys": keys or {}}))
    return state


def install_stand_in(directory: Path, card: Path) -> Path:
    """sc-hsm-tool in `directory`, acting as the card whose state is `card`; returns its argv log."""
    log = directory / "argv.log"
    tool = directory / "sc-hsm-tool"
    tool.write_text(STAND_IN.format(python=sys.executable, state=str(card), log=str(log)))
    tool.chmod(0o755)
    return log


def card_state(card: Path) -> dict:
    return json.loads(card.read_text())


@pytest.fixture
def hsm(tmp_path):
    """A CLI whose PATH finds the stand-in first; `hsm.card` is the stand-in card's state file."""
    tools = tmp_path / "bin"
    tools.mkdir()
    card = new_card(tmp_path, "card-a", keys={"1": "5ec2e7" * 10})
    cli = Cli(tmp_path / "state", clean_env() | {"PATH": f"{tools}:/usr/bin:/bin"})
    cli.tools, cli.card, cli.argv_log = tools, card, install_stand_in(tools, card)
    pin = tmp_path / "user.pin"
    pin.write_text(USER_PIN + "\n")
    pin.chmod(0o600)
    cli.pin_file = pin
    return cli


def passwords(tmp_path: Path, count: int) -> list[Path]:
    paths = []
    for index in range(1, count + 1):
        path = tmp_path / f"pw{index}"
        path.write_text(f"dkek password {index}\n")
        path.chmod(0o600)
        paths.append(path)
    return paths


def make_shares(cli: Cli, tmp_path: Path, count: int = 2, out: str = "dkek") -> list[Path]:
    pws = passwords(tmp_path, count)
    args = [*PROFILE, "backup", "make-shares", "--shares", str(count), "--out", str(tmp_path / out)]
    for path in pws:
        args += ["--password-file", str(path)]
    result = cli.json(*args)
    return [Path(f["path"]) for f in result["files"]], pws


def import_share(cli: Cli, share: Path, pw: Path, check: bool = True):
    return cli(*PROFILE, "backup", "import-share", str(share), "--token", TOKEN,
               "--password-file", str(pw), check=check)


def card_key_file(cli: Cli, tmp_path: Path) -> Path:
    """The key files of a KSK on the card at key reference 1, as keygen on a real card writes
    them (a software key's DNSKEY, a Label naming the card's object)."""
    cli("keygen", "example.test", "--role", "ksk", "--algorithm", "13", "--software",
        "--key-dir", str(tmp_path / "soft"))
    pair = read_key_pair(next((tmp_path / "soft").glob("*.key")))
    fields = token_private_fields(pair.dnskey, key_uri(TOKEN, OBJECT))
    cli.key_dir.mkdir(parents=True, exist_ok=True)
    key_path, _ = write_key_pair(cli.key_dir, pair.zone, pair.dnskey, fields, pair.timing)
    return key_path


def no_secret_on_argv(log: Path, *secrets: str) -> None:
    text = log.read_text()
    assert text and all(secret not in text for secret in secrets)


def test_sc_hsm_dkek_shares_import_and_wrap_against_a_stand_in(hsm, tmp_path, monkeypatch):
    shares, pws = make_shares(hsm, tmp_path)
    assert [p.name for p in shares] == ["dkek-share-1-of-2.pbe", "dkek-share-2-of-2.pbe"]
    assert all(p.read_bytes()[:8] == b"Salted__" and p.stat().st_mode & 0o777 == 0o600
               for p in shares)
    first = import_share(hsm, shares[0], pws[0]).stdout
    assert "1 of 2; import 1 more" in first
    second = import_share(hsm, shares[1], pws[1]).stdout
    kcv = __import__("hashlib").sha256(bytes.fromhex(card_state(hsm.card)["dkek"])).hexdigest()[:16]
    assert f"DKEK complete, KCV {kcv}" in second

    # share count: the card's DKEK is complete, a further share is refused before the card
    error = one_line_error(import_share(hsm, shares[0], pws[0], check=False))
    assert "complete already" in error and "2 of 2" in error
    assert card_state(hsm.card)["imported"] == 2

    key_path = card_key_file(hsm, tmp_path)
    wrap = tmp_path / "ksk.wrap"
    hsm(*PROFILE, "--pin-file", str(hsm.pin_file), "backup", "wrap", "--token", TOKEN,
        "--object", OBJECT, "--key-reference", "1", "--out", str(wrap))
    record = hsm.json("backup", "verify", str(wrap))
    assert record["mechanism"] == "SC-HSM-DKEK" and record["kek_kcv"] == kcv
    assert record["tag"] == read_key_pair(key_path).tag
    shown = hsm("backup", "verify", str(wrap)).stdout
    assert "(SC-HSM-DKEK)" in shown
    no_secret_on_argv(hsm.argv_log, USER_PIN, *(p.read_text().strip() for p in pws))

    # another card with the same two shares unwraps it (the tool's part; the PKCS#11 proof
    # after it needs a real card) ...
    from bindpkcs11.backup.wrapkeys import verify_wrap_file
    from bindpkcs11.token.profiles import schsm

    card_b = new_card(tmp_path, "card-b")
    install_stand_in(hsm.tools, card_b)
    for share, pw in zip(shares, pws):
        import_share(hsm, share, pw)
    blob = verify_wrap_file(wrap).wrapped
    monkeypatch.setenv("PATH", hsm.env["PATH"])
    schsm.unwrap_key(3, blob, USER_PIN)
    assert card_state(card_b)["keys"]["3"] == card_state(hsm.card)["keys"]["1"]
    # ... but not into a reference in use: one line, the card unchanged
    before = card_state(card_b)
    error = one_line_error(hsm(*PROFILE, "--pin-file", str(hsm.pin_file), "backup", "unwrap",
                               str(wrap), "--token", TOKEN, "--key-reference", "3", check=False))
    assert "key reference 3 is in use" in error
    assert card_state(card_b) == before

    # a card whose DKEK is another one refuses before the card sees the wrapped key
    card_c = new_card(tmp_path, "card-c")
    install_stand_in(hsm.tools, card_c)
    other, other_pws = make_shares(hsm, tmp_path, out="other")
    for share, pw in zip(other, other_pws):
        import_share(hsm, share, pw)
    error = one_line_error(hsm(*PROFILE, "--pin-file", str(hsm.pin_file), "backup", "unwrap",
                               str(wrap), "--token", TOKEN, "--key-reference", "2", check=False))
    assert f"wrapped under DKEK {kcv}" in error
    assert card_state(card_c)["keys"] == {}

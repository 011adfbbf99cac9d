"""Token administration on real SoftHSM2 tokens: init, list, show, delete, erase, rng."""

from __future__ import annotations

import os
import stat

from conftest import TOKEN, one_line_error


def test_init_creates_private_state_and_refuses_reinit(token_cli):
    state = token_cli.state_dir
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for name in (f"{TOKEN}.pin", f"{TOKEN}.so-pin"):
        pin_file = state / "pins" / name
        assert stat.S_IMODE(pin_file.stat().st_mode) == 0o600
        assert len(pin_file.read_text().strip()) == 16
    assert stat.S_IMODE(token_cli.softhsm_conf.stat().st_mode) == 0o600
    error = one_line_error(token_cli("token", "init", "--label", TOKEN, "--generate-pins", check=False))
    assert "already exists" in error and "refusing" in error


def test_init_with_pins_from_files_and_env(cli, tmp_path):
    pin_file, so_file = tmp_path / "pin", tmp_path / "so"
    pin_file.write_text("1234-user\n")
    so_file.write_text("5678-so\n")
    result = cli("token", "init", "--label", "a", "--pin-file", str(pin_file), "--so-pin-file", str(so_file))
    assert "initialised token 'a'" in result.stdout
    assert not (cli.state_dir / "pins" / "a.pin").exists()
    cli("token", "init", "--label", "b", env={"PKCS11_LIBRARY_PIN": "4321", "PKCS11_SO_PIN": "8765"})
    labels = {t["label"] for t in cli.json("token", "list")}
    assert {"a", "b"} <= labels
    cli("keygen", "example.test", "--role", "zsk", "--algorithm", "13", "--token", "a",
        "--pin-file", str(pin_file))
    cli("keygen", "example.test", "--role", "zsk", "--algorithm", "13", "--token", "b",
        env={"PKCS11_LIBRARY_PIN": "4321"})


def test_init_without_any_pin_source_and_no_terminal_fails_clearly(cli):
    error = one_line_error(cli("token", "init", "--label", "x", check=False))
    assert "--pin-file" in error and "PKCS11_LIBRARY_PIN" in error


def test_list_reports_flags(token_cli):
    tokens = token_cli.json("token", "list")
    ours = [t for t in tokens if t["label"] == TOKEN]
    assert len(ours) == 1
    flags = ours[0]["flags"]
    assert flags["initialized"] and flags["user_pin_initialized"] and flags["has_rng"]
    assert not (flags["user_pin_count_low"] or flags["user_pin_final_try"] or flags["user_pin_locked"])
    table = token_cli("token", "list").stdout
    assert TOKEN in table.splitlines()[1] or any(TOKEN in line for line in table.splitlines())


def test_show_lists_every_object_with_attributes_and_key_tags(token_cli):
    ksk = token_cli.json("keygen", "example.test", "--role", "ksk", "--algorithm", "ECDSAP256SHA256")
    zsk = token_cli.json("keygen", "example.test", "--role", "zsk", "--algorithm", "RSASHA256")
    report = token_cli.json("token", "show", "--label", TOKEN)
    assert report["token"]["label"] == TOKEN
    objects = report["objects"]
    assert len(objects) == 4
    by_key = {(o["object"]["label"], o["object"]["object_class"]): o for o in objects}
    private_ksk = by_key[(ksk["object_label"], "private")]
    assert private_ksk["object"]["key_type"] == "EC"
    assert private_ksk["object"]["curve"] == "secp256r1"
    assert private_ksk["object"]["sensitive"] is True
    assert private_ksk["object"]["extractable"] is False
    assert private_ksk["dnssec"]["tag"] == ksk["tag"]
    assert private_ksk["dnssec"]["role"] == "ksk"
    assert private_ksk["dnssec"]["algorithm"] == 13
    assert private_ksk["dnssec"]["matches_token"] is True
    public_zsk = by_key[(zsk["object_label"], "public")]
    assert public_zsk["object"]["size"] == 2048
    assert public_zsk["object"]["key_type"] == "RSA"
    assert public_zsk["dnssec"]["tag"] == zsk["tag"]
    assert private_ksk["object"]["id"] == by_key[(ksk["object_label"], "public")]["object"]["id"]
    assert len(bytes.fromhex(private_ksk["object"]["id"])) == 8
    table = token_cli("token", "show", "--label", TOKEN).stdout
    assert f"ksk tag {ksk['tag']} alg 13" in table
    assert f"zsk tag {zsk['tag']} alg 8" in table


def test_show_flags_a_key_file_that_does_not_match_the_token(token_cli):
    first = token_cli.json("keygen", "example.test", "--role", "zsk", "--algorithm", "13")
    other = token_cli.json("keygen", "example.test", "--role", "zsk", "--algorithm", "13", "--software")
    # Point the software key's file at the token key: show must notice the public keys differ.
    token_key = token_cli.key_dir / first["private_file"].split("/")[-1]
    private = token_key.read_text()
    fake = token_cli.key_dir / other["private_file"].split("/")[-1]
    fake.write_text(private)
    os.unlink(token_key)
    report = token_cli.json("token", "show", "--label", TOKEN)
    flagged = [o for o in report["objects"] if o["dnssec"]]
    assert flagged and all(o["dnssec"]["matches_token"] is False for o in flagged)
    assert "KEY FILE MISMATCH" in token_cli("token", "show", "--label", TOKEN).stdout


def _labels(cli, object_class):
    report = cli.json("token", "show", "--label", TOKEN)
    return [o["object"]["label"] for o in report["objects"] if o["object"]["object_class"] == object_class]


def test_delete_needs_force_and_double_force_for_an_active_key(token_cli):
    key = token_cli.json("keygen", "example.test", "--role", "zsk", "--algorithm", "13")
    label = key["object_label"]
    error = one_line_error(token_cli("token", "delete", "--label", TOKEN, "--object", label,
                                     "--type", "private", check=False))
    assert "--force" in error
    error = one_line_error(token_cli("token", "delete", "--label", TOKEN, "--object", label, "--force",
                                     check=False))
    assert "2 objects" in error and "--type" in error
    error = one_line_error(token_cli("token", "delete", "--label", TOKEN, "--object", label,
                                     "--type", "private", "--force", check=False))
    assert "active key" in error and "--force twice" in error
    assert label in _labels(token_cli, "private")
    token_cli("token", "delete", "--label", TOKEN, "--object", label, "--type", "public", "--force")
    assert label not in _labels(token_cli, "public")
    token_cli("token", "delete", "--label", TOKEN, "--object", label, "--type", "private",
              "--force", "--force")
    assert label not in _labels(token_cli, "private")
    error = one_line_error(token_cli("token", "delete", "--label", TOKEN, "--object", label,
                                     "--force", check=False))
    assert "no object labelled" in error


def test_delete_of_a_retired_key_needs_one_force(token_cli):
    key = token_cli.json("keygen", "example.test", "--role", "zsk", "--algorithm", "13",
                         "--publish", "20200101", "--activate", "20200101",
                         "--inactive", "20210101", "--delete", "20220101")
    token_cli("token", "delete", "--label", TOKEN, "--object", key["object_label"],
              "--type", "private", "--force")
    assert key["object_label"] not in _labels(token_cli, "private")


def test_erase_asks_for_confirmation_and_wipes_every_object(token_cli):
    token_cli("keygen", "example.test", "--role", "ksk", "--algorithm", "13")
    error = one_line_error(token_cli("token", "erase", "--label", TOKEN, check=False))
    assert "--force" in error
    error = one_line_error(token_cli("token", "erase", "--label", TOKEN, "--force", check=False))
    assert "1 active key file(s)" in error and "--destroy-active-keys" in error
    error = one_line_error(token_cli("token", "erase", "--label", TOKEN, "--force",
                                     "--destroy-active-keys", check=False))
    assert "--yes" in error
    assert len(_labels(token_cli, "private")) == 1
    result = token_cli("token", "erase", "--label", TOKEN, "--force", "--yes", "--destroy-active-keys")
    assert "1 key file(s)" in result.stdout
    assert _labels(token_cli, "private") == [] and _labels(token_cli, "public") == []
    # The token keeps its label and PINs: a new key can be made right away.
    token_cli("keygen", "example.test", "--role", "ksk", "--algorithm", "13")


def test_erase_of_a_token_whose_keys_are_all_retired_needs_no_override(token_cli):
    token_cli("keygen", "example.test", "--role", "zsk", "--algorithm", "13",
              "--publish", "20200101", "--activate", "20200101", "--inactive", "20210101")
    result = token_cli("token", "erase", "--label", TOKEN, "--force", "--yes")
    assert "1 key file(s)" in result.stdout
    assert _labels(token_cli, "private") == []


def test_rng_writes_the_requested_number_of_fresh_bytes(token_cli, tmp_path):
    out = tmp_path / "random.bin"
    token_cli("token", "rng", "--label", TOKEN, "--bytes", "64", "--out", str(out))
    first = out.read_bytes()
    assert len(first) == 64 and stat.S_IMODE(out.stat().st_mode) == 0o600
    piped = token_cli("token", "rng", "--label", TOKEN, "--bytes", "64", binary=True).stdout
    assert len(piped) == 64 and piped != first
    second = token_cli.json("token", "rng", "--label", TOKEN, "--bytes", "64")
    assert second["bytes"] == 64 and bytes.fromhex(second["hex"]) != first
    error = one_line_error(token_cli("token", "rng", "--label", TOKEN, "--bytes", "0", check=False))
    assert "--bytes" in error


def test_rng_feeds_the_kernel_pool(token_cli):
    result = token_cli.json("token", "rng", "--label", TOKEN, "--bytes", "32", "--feed-kernel")
    assert result["fed_kernel"] is True
    assert result["credited"] is (os.geteuid() == 0)


def test_state_dir_comes_from_the_environment_and_is_private(tmp_path):
    """No --state-dir: $BINDPKCS11_STATE_DIR, else $XDG_DATA_HOME/bindpkcs11; created 0700."""
    import subprocess
    import sys

    from conftest import REPO, clean_env

    explicit = tmp_path / "explicit"
    env = clean_env() | {"BINDPKCS11_STATE_DIR": str(explicit)}
    subprocess.run([sys.executable, "-m", "bindpkcs11", "token", "init", "--label", "a",
                    "--generate-pins"], env=env, check=True, capture_output=True, cwd=REPO)
    assert stat.S_IMODE(explicit.stat().st_mode) == 0o700
    assert (explicit / "pins" / "a.pin").exists()
    env = clean_env() | {"XDG_DATA_HOME": str(tmp_path / "xdg")}
    subprocess.run([sys.executable, "-m", "bindpkcs11", "token", "list"], env=env, check=True,
                   capture_output=True, cwd=REPO)
    assert stat.S_IMODE((tmp_path / "xdg" / "bindpkcs11").stat().st_mode) == 0o700


def test_init_token_exist_ok_leaves_an_existing_token_and_its_pins_alone(token_cli):
    """setup-inline's way in: a token another run just made is used, not refused or re-made."""
    from conftest import run_python

    pins_before = {p.name: p.read_text() for p in (token_cli.state_dir / "pins").iterdir()}
    out = run_python(
        "import sys\nfrom pathlib import Path\nfrom bindpkcs11 import admin\n"
        "from bindpkcs11.access import TokenAccess\nfrom bindpkcs11.state import StateDir\n"
        "access = TokenAccess.build(StateDir.open(Path(sys.argv[1])), 'softhsm', sys.argv[2])\n"
        "print(admin.init_token(access, generate_pins=True, exist_ok=True))\n",
        token_cli.env, str(token_cli.state_dir), TOKEN)
    assert out.strip() == "None"
    assert {p.name: p.read_text() for p in (token_cli.state_dir / "pins").iterdir()} == pins_before
    assert [t["label"] for t in token_cli.json("token", "list")].count(TOKEN) == 1

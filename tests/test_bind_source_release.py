"""Issue 9 (Debian 13): `bind build` fetches BIND 9.18 from Debian 12's suites on the machine's own
mirrors, whatever release the machine runs (trixie's own bind9 is 9.20, which the patch is not for)."""

from __future__ import annotations

from bindpkcs11.bind.source import debian_source_stanzas

TRIXIE = """Types: deb
URIs: http://mirror.example/debian
Suites: trixie trixie-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: trixie-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def test_trixie_sources_give_bookworm_source_suites_on_the_same_mirrors(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(TRIXIE)
    (tmp_path / "sources.list").write_text("deb http://other.example/x trixie main\n")
    stanzas = debian_source_stanzas(tmp_path, codename="trixie")
    assert [line for s in stanzas for line in s.splitlines() if line.startswith(("URIs", "Suites"))] == [
        "URIs: http://other.example/x", "Suites: bookworm",
        "URIs: http://mirror.example/debian", "Suites: bookworm bookworm-updates",
        "URIs: http://mirror.example/debian-security", "Suites: bookworm-security"]
    assert all("Types: deb-src" in s for s in stanzas)


def test_bookworm_sources_are_their_own_twins(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(TRIXIE.replace("trixie", "bookworm"))
    stanzas = debian_source_stanzas(tmp_path, codename="bookworm")
    assert "Suites: bookworm bookworm-updates" in stanzas[0] and "Suites: bookworm-security" in stanzas[1]

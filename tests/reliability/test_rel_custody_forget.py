"""A copy destroyed on a token stops counting: after `token erase` or `token delete` of the
private key, the other token's copy reads "ONLY COPY" again, never "backed up"."""

from __future__ import annotations

from pathlib import Path

from conftest import Cli
from test_custody_listings import private_custody
from test_key_import import software_ksk


def _two_copies(cli: Cli, tmp_path: Path) -> str:
    cli("token", "init", "--label", "A", "--generate-pins")
    cli("token", "init", "--label", "B", "--generate-pins")
    result = cli.json("key", "import", str(software_ksk(cli, tmp_path)), "--token", "A",
                      "--token", "B")
    assert private_custody(cli, "A") == "2 copies (token A, token B), backed up"
    return result["label"]


def test_erasing_one_token_leaves_the_other_copy_alone_and_only(cli: Cli, tmp_path: Path):
    _two_copies(cli, tmp_path)
    cli("token", "erase", "--label", "B", "--force", "--yes", "--destroy-active-keys")
    assert private_custody(cli, "A") == "1 copy (token A), ONLY COPY"


def test_deleting_the_private_key_on_one_token_drops_that_copy(cli: Cli, tmp_path: Path):
    label = _two_copies(cli, tmp_path)
    cli("token", "delete", "--label", "B", "--object", label, "--type", "private", "--force",
        "--force")
    assert private_custody(cli, "A") == "1 copy (token A), ONLY COPY"
    # the public half alone is no copy: deleting it changes nothing more
    cli("token", "delete", "--label", "B", "--object", label, "--type", "public", "--force")
    assert private_custody(cli, "A") == "1 copy (token A), ONLY COPY"

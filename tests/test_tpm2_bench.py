"""`bindpkcs11 bench --profile tpm2`: the TPM's rate through the shim (swtpm simulator)."""

from __future__ import annotations

import json

from tpm2_fixtures import TPM_TOKEN, tp, tpm2_cli  # noqa: F401 - fixture


def test_bench_on_the_tpm_reports_a_rate_and_leaves_no_key(tpm2_cli):
    tp(tpm2_cli, "token", "init", "--label", TPM_TOKEN, "--generate-pins")
    report = json.loads(tp(tpm2_cli, "bench", "--token", TPM_TOKEN, "--sessions", "1,2",
                           "--seconds", "0.5", "--json").stdout)
    assert report["profile"] == "tpm2" and [r["sessions"] for r in report["rates"]] == [1, 2]
    assert all(r["signatures"] > 10 for r in report["rates"])
    objects = json.loads(tp(tpm2_cli, "token", "show", "--label", TPM_TOKEN, "--json").stdout)["objects"]
    assert not [o for o in objects if o["object"]["label"].startswith("bindpkcs11-bench-")]


def test_bench_refuses_ed25519_on_the_tpm_before_touching_it(tpm2_cli):
    tp(tpm2_cli, "token", "init", "--label", TPM_TOKEN, "--generate-pins")
    result = tp(tpm2_cli, "bench", "--token", TPM_TOKEN, "--algorithm", "ED25519", check=False)
    assert result.returncode == 8 and "ed25519" in result.stderr.lower()

"""`bindpkcs11 bench`: a real SoftHSM token signing through the shim, the temporary key removed."""

from __future__ import annotations

from conftest import TOKEN


def bench_objects(cli) -> list[str]:
    return [o["object"]["label"] for o in cli.json("token", "show", "--label", TOKEN)["objects"]
            if o["object"]["label"].startswith("bindpkcs11-bench-")]


def test_bench_reports_a_rate_per_session_count_and_removes_its_key(token_cli):
    report = token_cli.json("bench", "--sessions", "1,2", "--seconds", "0.5")
    assert [r["sessions"] for r in report["rates"]] == [1, 2]
    for rate in report["rates"]:
        assert rate["signatures"] > 50 and rate["seconds"] >= 0.5
        assert abs(rate["per_second"] - rate["signatures"] / rate["seconds"]) < rate["per_second"] / 100
    assert report["algorithm"] == "ECDSAP256SHA256" and report["profile"] == "softhsm"
    assert bench_objects(token_cli) == []


def test_bench_table_and_progress(token_cli):
    result = token_cli("bench", "--algorithm", "RSASHA256", "--sessions", "1", "--seconds", "0.5")
    assert "signatures/s" in result.stdout and "RSASHA256" in result.stdout
    assert "generating a temporary" in result.stderr and "destroyed the temporary key" in result.stderr
    assert bench_objects(token_cli) == []

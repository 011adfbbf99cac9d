"""Issue 15: bad --timeout values, and a named that cannot sign a big zone is still a failure.

Real CLI, real SoftHSM tokens, real patched named on loopback high ports. On the code before
issue 15 there was no --timeout (argparse refused it), so these fail there.
"""

from __future__ import annotations

import shutil
import time

from conftest import one_line_error
from test_inline import ZONE, inline_cli, named_pid, setup  # noqa: F401
from test_inline_bigzone import progress_percents, setup_process, zone_file


def test_timeouts_out_of_range_are_refused_before_anything_is_made(inline_cli):
    for value in ("0", "-5", "nan", "100000"):
        result = setup(inline_cli, "--timeout", value, check=False)
        line = one_line_error(result)
        assert result.returncode == 2 and "--timeout" in line, line
    assert not (inline_cli.state_dir / "instances").exists()
    for action in ("start", "reload"):
        result = inline_cli("named", action, ZONE, "--timeout", "0", check=False)
        assert result.returncode == 2 and "--timeout" in one_line_error(result)


def test_a_token_that_goes_away_mid_pass_fails_with_nameds_reason_and_rolls_back(inline_cli,
                                                                                tmp_path):
    """Progress must not hide a failure: the token directory vanishes while named signs a big
    zone; setup-inline stops named, rolls the first start back, and names named's reason."""
    source = zone_file(tmp_path, 6_000)
    process = setup_process(inline_cli, "--zone-file", str(source), "--algorithm", "RSASHA256",
                            "--bits", "2048")
    token_dir = inline_cli.state_dir / "softhsm" / "tokens"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if progress_percents(inline_cli("named", "status", ZONE, check=False).stdout):
                break
            time.sleep(0.5)
        assert process.poll() is None, "named finished before the token could be taken away"
        moved = tmp_path / "tokens-away"
        shutil.move(str(token_dir), str(moved))
        stdout, stderr = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode not in (0, 15), stderr
    lines = [line for line in stderr.splitlines() if line.startswith("bindpkcs11: error:")]
    assert len(lines) == 1 and "stopped named" in lines[0], stderr
    assert "Traceback" not in stderr
    assert named_pid(inline_cli) is None
    instance = inline_cli.state_dir / "instances" / ZONE
    assert not (instance / "instance.json").exists()  # a failed first start is rolled back

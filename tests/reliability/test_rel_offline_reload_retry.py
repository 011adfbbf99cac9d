"""Issue 8, silent signing failure, on the offline-KSK side: a zone published while named could not
be reloaded (rndc failed, or the signer was stopped between publishing and reloading) was never
reloaded afterwards: the next rounds said "up to date" and named served the old zone until the next
re-sign. The state now records whether the reload happened, and every round retries it.
"""

from __future__ import annotations

import json

from conftest import one_line_error
import test_signer_offline_ksk
from test_signer_offline_ksk import ControlledNamed, Online

offline = test_signer_offline_ksk.offline  # the fixture, reused
online = test_signer_offline_ksk.online  # the fixture, reused


def test_a_failed_reload_is_retried_by_the_next_round(online: Online, tmp_path):
    offline = online.offline
    first = online.publish(offline.at(0))
    with ControlledNamed(online.out, tmp_path / "named") as named:
        assert named.serial() == first["serial"]
        online.unsigned.write_text(online.unsigned.read_text() + "added IN A 127.0.0.99\n")
        broken = online.run(offline.at(0, 30), "--rndc", f"-c {tmp_path / 'missing.conf'}")
        error = one_line_error(broken)
        assert broken.returncode == 10 and "did not reload" in error
        assert named.serial() == first["serial"]
        result = online.run(offline.at(0, 40), "--rndc", f"-c {named.rndc_conf}")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert not report["published"] and report["reason"].startswith("reloaded named")
        named.wait_for_serial(report["serial"])
        assert report["serial"] > first["serial"]
        again = json.loads(online.run(offline.at(0, 50), "--rndc", f"-c {named.rndc_conf}").stdout)
        assert again["reason"] == "up to date"

"""The systemd units pass `systemd-analyze verify` and the main unit's offline security exposure is <= 2.0;
sysusers.d and tmpfiles.d create the user and directories in a staging root."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
from field_support import REPO

from edge.field.install import UNITS, VENV, unit_text

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (Debian package systemd)")
MAX_EXPOSURE = 2.0


def rendered(tmp_path, name: str):
    """The unit as install writes it, with ExecStart in this venv so that verify finds the executable."""
    path = tmp_path / name
    path.write_text(unit_text(name, sys.prefix))
    return path


def test_shipped_units_differ_from_installed_ones_only_in_the_venv():
    for name in UNITS:
        shipped = (REPO / "systemd" / name).read_text()
        assert f"ExecStart={VENV}/bin/stopewatch run --config /etc/stopewatch/" in shipped
        assert unit_text(name, "/x/venv") == shipped.replace(VENV, "/x/venv")


@needs_analyze
@pytest.mark.parametrize("name", ["stopewatch.service", "stopewatch@.service", "stopewatch@board2.service"])
def test_systemd_analyze_verify(tmp_path, name):
    src = "stopewatch@.service" if "@" in name else name
    path = tmp_path / name
    path.write_text(unit_text(src, sys.prefix))
    done = subprocess.run([ANALYZE, "verify", "--man=no", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert name not in done.stderr, done.stderr  # no warning about our unit either


@needs_analyze
@pytest.mark.parametrize("name", ["stopewatch.service", "stopewatch@board2.service"])
def test_security_exposure_at_most_2(tmp_path, name):
    path = tmp_path / name
    path.write_text(unit_text("stopewatch@.service" if "@" in name else name, sys.prefix))
    done = subprocess.run([ANALYZE, "security", "--offline=true", "--no-pager", str(path)],
                          capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout)
    assert m, done.stdout + done.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, done.stdout


def test_unit_has_the_service_contract():
    text = (REPO / "systemd" / "stopewatch.service").read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "StartLimitBurst=", "User=stopewatch",
                 "StateDirectory=stopewatch", "SupplementaryGroups=dialout", "ExecReload=/bin/kill -HUP $MAINPID",
                 "NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet=\n",
                 "SystemCallFilter=@system-service", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
                 "MemoryMax="):
        assert line in text, line


@pytest.mark.skipif(not (shutil.which("systemd-sysusers") and shutil.which("systemd-tmpfiles")),
                    reason="systemd-sysusers/systemd-tmpfiles not installed (Debian package systemd)")
def test_sysusers_and_tmpfiles_in_a_staging_root(tmp_path):
    for kind in ("sysusers.d", "tmpfiles.d"):
        (tmp_path / "etc" / kind).mkdir(parents=True)
        shutil.copy(REPO / "systemd" / kind / "stopewatch.conf", tmp_path / "etc" / kind)
    subprocess.run(["systemd-sysusers", f"--root={tmp_path}", "stopewatch.conf"], check=True, timeout=60)
    passwd = (tmp_path / "etc/passwd").read_text()
    user = next(line.split(":") for line in passwd.splitlines() if line.startswith("stopewatch:"))
    assert user[5] == "/var/lib/stopewatch" and user[6].endswith("nologin")
    dialout = next(line for line in (tmp_path / "etc/group").read_text().splitlines() if line.startswith("dialout:"))
    assert "stopewatch" in dialout.split(":")[3].split(",")
    subprocess.run(["systemd-tmpfiles", f"--root={tmp_path}", "--create", "stopewatch.conf"], check=True,
                   timeout=60)
    state = tmp_path / "var/lib/stopewatch"
    assert (state / "models/versions").is_dir()
    assert state.stat().st_uid == int(user[2]) and oct(state.stat().st_mode & 0o777) == "0o750"

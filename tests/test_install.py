"""`stopewatch install --root DIR`: user, directories, secrets, model, config, units and enablement in a staging
root; idempotent; --dry-run changes nothing; bad answers stop before any change."""

from __future__ import annotations

import os
import shutil
import sys
import tomllib

import pytest
from field_support import shipped_model

from edge.cli import main
from edge.gateway.config import parse_config
from edge.gateway.model import Classifier

pytestmark = pytest.mark.skipif(not shutil.which("systemd-sysusers"),
                                reason="systemd-sysusers not installed (Debian package systemd)")


def install(root, *extra) -> int:
    return main(["install", "--root", str(root), "--yes", "--prefix", sys.prefix, *extra])


def args(model):
    return ["--site", "kloof-4", "--node", "l29-east", "--serial-port", "/dev/ttyUSB3",
            "--broker", "mqtt.surface:8883", "--model", str(model), "--board-fs", "4000", "--board-channels", "3"]


def test_staged_install_lays_down_everything(tmp_path, capsys):
    model = shipped_model()
    root = tmp_path / "root"
    assert install(root, *args(model)) == 0
    uid = next(int(line.split(":")[2]) for line in (root / "etc/passwd").read_text().splitlines()
               if line.startswith("stopewatch:"))
    conf = root / "etc/stopewatch/stopewatch.toml"
    data = tomllib.loads(conf.read_text())
    cfg = parse_config(data, str(conf))
    assert (cfg.node.site, cfg.node.node, cfg.board.port) == ("kloof-4", "l29-east", "/dev/ttyUSB3")
    assert (cfg.mqtt.host, cfg.mqtt.port) == ("mqtt.surface", 8883)
    assert cfg.model.path == "/var/lib/stopewatch/models/current"
    assert oct(conf.stat().st_mode & 0o777) == "0o640"
    current = root / "var/lib/stopewatch/models/current"
    assert Classifier(current).card["sha256"] == Classifier(model).card["sha256"]
    unit = (root / "etc/systemd/system/stopewatch.service").read_text()
    assert f"ExecStart={sys.prefix}/bin/stopewatch run --config /etc/stopewatch/stopewatch.toml" in unit
    assert (root / "etc/systemd/system/multi-user.target.wants/stopewatch.service").is_symlink()
    if os.geteuid() == 0:  # the daemon owns its state; root owns the config, readable by the daemon's group
        assert (root / "var/lib/stopewatch/models").stat().st_uid == uid
        assert conf.stat().st_uid == 0
    out = capsys.readouterr().out
    assert out.count("done:") >= 7


def test_second_run_changes_nothing_and_keeps_hand_edits(tmp_path, capsys):
    model = shipped_model()
    root = tmp_path / "root"
    assert install(root, *args(model)) == 0
    conf = root / "etc/stopewatch/stopewatch.toml"
    conf.write_text(conf.read_text() + "\n[trigger]\non = 5.5\n")  # a technician's edit
    capsys.readouterr()
    assert install(root) == 0
    out = capsys.readouterr().out
    assert "done:" not in out and out.count("unchanged:") >= 6 and "0 step(s) changed" in out
    assert install(root, "--broker", "10.0.0.7") == 0
    data = tomllib.loads(conf.read_text())
    assert data["mqtt"]["host"] == "10.0.0.7" and data["trigger"]["on"] == 5.5 and data["node"]["site"] == "kloof-4"
    assert (conf.with_name("stopewatch.toml.bak")).is_file()


def test_dry_run_shows_every_step_and_touches_nothing(tmp_path, capsys):
    root = tmp_path / "root"
    root.mkdir()
    assert main(["install", "--dry-run", "--yes", "--root", str(root), "--site", "s", "--node", "n"]) == 0
    out = capsys.readouterr().out
    assert out.count("would:") >= 6 and 'site = "s"' in out
    assert list(root.iterdir()) == []
    # On the real system --dry-run needs no root rights and changes nothing either.
    assert main(["install", "--dry-run", "--yes", "--site", "s"]) == 0


def test_bad_answer_stops_before_any_change(tmp_path, capsys):
    root = tmp_path / "root"
    root.mkdir()
    assert install(root, "--site", "bad site") == 2
    assert "node.site" in capsys.readouterr().err
    assert list(root.iterdir()) == []


def test_tls_files_are_copied_where_the_service_can_read_them(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed (needed to make test certificates)")
    from test_mqtt_publisher import make_certificates

    model = shipped_model()
    root = tmp_path / "root"
    certs = make_certificates(tmp_path / "pki")  # real PEM files: the config check loads them as TLS will
    home = tmp_path / "home"
    home.mkdir()
    for name, src in (("ca.crt", "ca.crt"), ("gw.crt", "client.crt"), ("gw.key", "client.key")):
        shutil.copyfile(certs[src], home / name)
    (home / "pw").write_text("s3cret\n")
    assert install(root, *args(model), "--tls", "--ca-file", str(home / "ca.crt"), "--cert-file",
                   str(home / "gw.crt"), "--key-file", str(home / "gw.key"), "--username", "gw",
                   "--password-file", str(home / "pw")) == 0
    data = tomllib.loads((root / "etc/stopewatch/stopewatch.toml").read_text())
    assert data["mqtt"]["ca_file"] == "/etc/stopewatch/tls/ca.crt"
    assert data["mqtt"]["password_file"] == "/etc/stopewatch/stopewatch.password"
    key = root / "etc/stopewatch/tls/gw.key"
    # The private key and the password: the daemon's user alone (doctor warns on group/other read bits).
    assert key.read_bytes() == (home / "gw.key").read_bytes() and oct(key.stat().st_mode & 0o777) == "0o600"
    password = root / "etc/stopewatch/stopewatch.password"
    assert oct(password.stat().st_mode & 0o777) == "0o600"
    assert oct((root / "etc/stopewatch/tls/ca.crt").stat().st_mode & 0o777) == "0o640"


def test_second_board_gets_a_template_instance(tmp_path):
    model = shipped_model()
    root = tmp_path / "root"
    assert install(root, *args(model)) == 0
    assert install(root, "--instance", "board2", "--site", "kloof-4", "--node", "l29-west", "--serial-port",
                   "/dev/ttyACM1", "--broker", "mqtt.surface", "--model", str(model)) == 0
    data = tomllib.loads((root / "etc/stopewatch/board2.toml").read_text())
    assert data["node"]["state_dir"] == "/var/lib/stopewatch/board2"
    assert (root / "var/lib/stopewatch/board2/models/current/model.tflite").is_file()
    link = root / "etc/systemd/system/multi-user.target.wants/stopewatch@board2.service"
    assert link.is_symlink() and os.readlink(link).endswith("stopewatch@.service")

"""`stopewatch doctor` against the board simulator on a pseudo-terminal and a real broker, and against each
failure it must name (with its fix)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading

import pytest
from field_support import model_variant, shipped_model, write_config

from edge.cli import main
from edge.field.doctor import FAIL, PASS, SKIP, WARN, check_clock, check_service, kernel_clock_synced, run_checks
from edge.field.model_store import Board, ModelStore, read_board, write_board
from firmware_bridge.faults import FaultConfig
from firmware_bridge.simulator import BoardSimulator, PtyPort
from firmware_bridge.sources import NoisePulseSource

SECONDS = 1.5  # of board data per serial check


@pytest.fixture
def board():
    """A simulated triaxial 4 kHz board streaming in real time on a pty; ``board(faults=...)`` for a bad line."""
    started = []

    def start(faults: FaultConfig | None = None, fs: float = 4000.0, channels: int = 3):
        port = PtyPort()
        sim = BoardSimulator(NoisePulseSource(fs, channels, seed=1), fs=fs, channels=channels, scale=1000.0,
                             faults=faults, seed=1)
        stop = threading.Event()
        t = threading.Thread(target=sim.run, args=(port,), kwargs={"seconds": None, "stop": stop}, daemon=True)
        t.start()
        started.append((port, stop, t))
        return port.path

    yield start
    for port, stop, t in started:
        stop.set()
        port.stop.set()
        t.join(5)
        port.close()


def gateway(tmp_path, port: str, broker_port: int, model=None, **sections):
    state = tmp_path / "state"
    ModelStore(state / "models").install(model or shipped_model())
    sections.setdefault("board", {}).setdefault("port", port)
    sections.setdefault("mqtt", {}).update(host="127.0.0.1", port=broker_port)
    return write_config(tmp_path / "stopewatch.toml", state, **sections), state


def statuses(results):
    return {r.check: r.status for r in results}


def run(cfg, only=("config", "serial", "model", "broker", "disk"), **kw):
    return run_checks(str(cfg), only, serial_seconds=SECONDS, broker_timeout=3.0, **kw)


def test_all_pass_against_simulator_and_broker(tmp_path, board, mqtt_broker, capsys):
    cfg, state = gateway(tmp_path, board(), mqtt_broker.port)
    results = run(cfg)
    assert statuses(results) == dict.fromkeys(("config", "serial", "model", "broker", "disk"), PASS), results
    serial = next(r for r in results if r.check == "serial")
    assert "3 channel(s) at 4000 Hz" in serial.detail and "CRC errors 0" in serial.detail
    assert read_board(state) == Board(4000.0, 3, read_board(state).source)  # measured, for model install
    model = next(r for r in results if r.check == "model")
    assert "6/6 test windows right" in model.detail
    code = main(["doctor", "--config", str(cfg), "--only", "config,serial,model,broker,disk",
                 "--serial-seconds", str(SECONDS)])
    out = capsys.readouterr().out
    assert code == 0 and "all checks passed" in out and out.count("PASS") == 5


def test_invalid_config_fails_and_skips_the_rest(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[board]\nprot = '/dev/ttyACM0'\n")
    results = run(bad)
    assert results[0].status == FAIL and "board.prot" in results[0].detail and "edit" in results[0].fix
    assert all(r.status == SKIP for r in results[1:])
    assert main(["doctor", "--config", str(bad), "--json", "--only", "config,serial"]) == 1
    rows = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in rows] == [FAIL, SKIP]


def test_missing_altered_and_wrong_models(tmp_path, board, mqtt_broker):
    port = board()
    cfg, state = gateway(tmp_path, port, mqtt_broker.port)
    current = state / "models" / "current"
    # 1. the card and weights do not match (altered file)
    tfl = current / "model.tflite"
    data = tfl.read_bytes()
    tfl.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    r = run(cfg, only=("model",))[0]
    assert r.status == FAIL and "sha256" in r.detail and "rollback" in r.fix
    tfl.write_bytes(data)
    # 2. a model whose card names the classes in the wrong order misclassifies the built-in windows
    classes = json.loads((current / "model_card.json").read_text())["classes"]
    ModelStore(state / "models").install(model_variant(shipped_model(), tmp_path / "swapped",  # install refuses
                                                       classes=classes[::-1], version="bad"), force=True)
    r = run(cfg, only=("model",))[0]
    assert r.status == FAIL and "misclassifies" in r.detail and "rollback" in r.fix
    # 3. the board measured at 2 kHz cannot feed a model that looks up to 1.8 kHz
    ModelStore(state / "models").rollback()
    write_board(state, Board(2000.0, 3, "test"))
    r = run(cfg, only=("model",))[0]
    assert r.status == FAIL and "does not fit" in r.detail
    # 4. no model at all
    shutil.rmtree(state / "models")
    r = run(cfg, only=("model",))[0]
    assert r.status == FAIL and "stopewatch model install" in r.fix


def test_serial_failures(tmp_path, board, mqtt_broker):
    cfg, _ = gateway(tmp_path, str(tmp_path / "ttyACM9"), mqtt_broker.port)
    r = run(cfg, only=("serial",))[0]
    assert r.status == FAIL and "no device" in r.detail and "/dev/serial/by-id" in r.fix

    silent = PtyPort()  # a device that sends nothing
    try:
        cfg, _ = gateway(tmp_path / "s", silent.path, mqtt_broker.port)
        r = run(cfg, only=("serial",))[0]
        assert r.status == FAIL and "no bytes" in r.detail and "baudrate" in r.fix
    finally:
        silent.close()

    text = board()  # binary frames while the config expects a text-mode board
    cfg, _ = gateway(tmp_path / "t", text, mqtt_broker.port, board={"text_mode": True})
    r = run(cfg, only=("serial",))[0]
    assert r.status == FAIL and "no valid text lines" in r.detail and "text_mode" in r.fix

    noisy = board(faults=FaultConfig(bit_error_rate=2e-4))  # a long unshielded cable
    cfg, _ = gateway(tmp_path / "n", noisy, mqtt_broker.port)
    r = run(cfg, only=("serial",))[0]
    assert r.status == FAIL and "CRC errors" in r.detail and "cable" in r.fix


def test_broker_unreachable_and_refused(tmp_path, board, make_broker):
    from edge.devtools.broker import free_port

    cfg, _ = gateway(tmp_path, "/dev/null", free_port())
    r = run(cfg, only=("broker",))[0]
    assert r.status == FAIL and "unreachable" in r.detail and "mqtt.host" in r.fix

    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd not installed")
    pwfile = tmp_path / "passwd"
    subprocess.run([tool, "-c", "-b", str(pwfile), "gateway", "s3cret"], check=True, timeout=30)
    broker = make_broker(password_file=pwfile)
    (tmp_path / "wrong").write_text("nope\n")
    cfg, _ = gateway(tmp_path / "pw", "/dev/null", broker.port,
                     mqtt={"username": "gateway", "password_file": str(tmp_path / "wrong")})
    r = run(cfg, only=("broker",))[0]
    assert r.status == FAIL and "refused" in r.detail and "password" in r.fix
    (tmp_path / "right").write_text("s3cret\n")
    cfg, _ = gateway(tmp_path / "pw2", "/dev/null", broker.port,
                     mqtt={"username": "gateway", "password_file": str(tmp_path / "right")})
    assert run(cfg, only=("broker",))[0].status == PASS


def test_broker_tls(tmp_path, make_broker):
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed (needed to make test certificates)")
    from test_mqtt_publisher import make_certificates

    certs = make_certificates(tmp_path / "pki")
    other = make_certificates(tmp_path / "other-pki")
    broker = make_broker(tls={"ca": certs["ca.crt"], "cert": certs["server.crt"], "key": certs["server.key"]})
    tls = {"tls": True, "cert_file": certs["client.crt"], "key_file": certs["client.key"]}
    cfg, _ = gateway(tmp_path / "ok", "/dev/null", broker.port, mqtt=dict(tls, ca_file=certs["ca.crt"]))
    r = run(cfg, only=("broker",))[0]
    assert r.status == PASS and "(TLS)" in r.detail
    cfg, _ = gateway(tmp_path / "bad", "/dev/null", broker.port, mqtt=dict(tls, ca_file=other["ca.crt"]))
    r = run(cfg, only=("broker",))[0]
    assert r.status == FAIL and "TLS" in r.detail and "ca_file" in r.fix


def test_disk_warns_when_a_full_outbox_would_not_fit(tmp_path, mqtt_broker):
    # The most rows the config allows: terabytes, more than any disk here has free.
    cfg, _ = gateway(tmp_path, "/dev/null", mqtt_broker.port, outbox={"max_events": 10**9})
    r = run(cfg, only=("disk",))[0]
    assert r.status == WARN and "max_events" in r.fix


def test_clock_and_service_say_unknown_rather_than_fail():
    r = check_clock()
    synced = kernel_clock_synced()
    if shutil.which("timedatectl") is None and synced is not None:
        assert r.status == (PASS if synced else FAIL)
    assert r.status in (PASS, FAIL, WARN) and r.detail
    if not os.path.isdir("/run/systemd/system"):
        from edge.field.doctor import service_state

        assert service_state("stopewatch.service") is None
        r = check_service("stopewatch.service", None)
        assert r.status == WARN and r.detail.startswith("unknown")
    assert check_service("stopewatch.service", "failed").status == FAIL
    assert "journalctl -u stopewatch.service" in check_service("stopewatch.service", "failed").fix
    assert check_service("stopewatch.service", "inactive").status == WARN


@pytest.mark.parametrize("key", ["password_file", "key_file"])
def test_config_warns_on_a_secret_others_can_read(tmp_path, key):
    secret = tmp_path / "secret"
    mqtt = {"username": "gw", "password_file": str(secret)} if key == "password_file" else {}
    if key == "key_file":
        if shutil.which("openssl") is None:
            pytest.skip("openssl CLI not installed (needed to make test certificates)")
        from test_mqtt_publisher import make_certificates

        certs = make_certificates(tmp_path / "pki")
        shutil.copyfile(certs["client.key"], secret)
        mqtt = {"tls": True, "ca_file": certs["ca.crt"], "cert_file": certs["client.crt"], "key_file": str(secret)}
    else:
        secret.write_text("s3cret\n")
    secret.chmod(0o644)
    cfg, _ = gateway(tmp_path, "/dev/null", 9, mqtt=mqtt)
    r = run(cfg, only=("config",))[0]
    assert r.status == WARN and f"mqtt.{key} {secret}" in r.detail and "0644" in r.detail
    assert f"chmod 600 {secret}" in r.fix
    secret.chmod(0o600)
    assert run(cfg, only=("config",))[0].status == PASS


def test_config_fails_on_a_plaintext_password(tmp_path):
    cfg, _ = gateway(tmp_path, "/dev/null", 9, mqtt={"username": "gw", "password": "s3cret"})
    r = run(cfg, only=("config",))[0]
    assert r.status == FAIL and "mqtt.password" in r.detail and "password_file" in r.detail
    assert "s3cret" not in r.detail  # the secret itself is never echoed


def test_model_whose_card_hash_is_wrong_fails(tmp_path):
    bad = model_variant(shipped_model(), tmp_path / "bad", sha256="0" * 64)
    cfg = write_config(tmp_path / "stopewatch.toml", tmp_path / "state", model={"path": str(bad)},
                       board={"port": "/dev/null"}, mqtt={"host": "127.0.0.1", "port": 9})
    r = run(cfg, only=("model",))[0]
    assert r.status == FAIL and "sha256" in r.detail and "does not match" in r.detail

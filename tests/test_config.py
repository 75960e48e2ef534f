"""The daemon's TOML configuration: the example documents every key, and bad input is one clear line."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from edge.gateway.config import Config, parse_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "edge" / "stopewatch.example.toml"


def test_example_config_names_every_key_with_its_default():
    data = tomllib.loads(EXAMPLE.read_text())
    defaults = Config()
    for section in dataclasses.fields(Config):
        if section.name == "source":
            continue
        keys = {f.name for f in dataclasses.fields(getattr(defaults, section.name))}
        assert set(data[section.name]) == keys, section.name
    parsed = parse_config(data, str(EXAMPLE))
    assert dataclasses.replace(parsed, source="") == dataclasses.replace(defaults, source="")


@pytest.mark.parametrize("toml, message", [
    ("[mqtt]\nport = 'x'\n", "mqtt.port = 'x'; expected int"),
    ("[mqtt]\nport = 70000\n", "mqtt.port = 70000; expected 1-65535"),
    ("[trigger]\non = 2.0\noff = 3.0\n", "trigger.off = 3; must be below trigger.on = 2"),
    ("[trigger]\nmethod = 'fancy'\n", "trigger.method = 'fancy'; allowed: recursive, classic"),
    ("[trigger]\nstalta = 1\n", "unknown key trigger.stalta; allowed in [trigger]: highpass_hz"),
    ("[brokers]\n", "unknown section [brokers]; allowed: node, board"),
    ("[node]\nsite = 'a/b'\n", "node.site = 'a/b'; allowed: 1-64 letters"),
    ("[mqtt]\ntls = true\n", "mqtt.tls = true needs mqtt.ca_file"),
    ("[mqtt]\nusername = 'u'\npassword_file = '/nonexistent/pw'\n",
     "mqtt.password_file = '/nonexistent/pw'; no such file"),
    ("[board]\ncounts_per_unit = -1\n", "board.counts_per_unit = -1.0; expected a positive number"),
    ("[node\n", "not valid TOML"),
])
def test_bad_configuration_is_one_clear_line(tmp_path, toml, message):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "run", "--config", str(path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr and str(path) in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_a_training_configuration_is_recognised(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "run", "--config",
                           str(ROOT / "training" / "configs" / "triaxial.toml")],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2 and "looks like a training configuration" in proc.stderr


def test_missing_configuration_file(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "replay", "--config", str(tmp_path / "nope.toml"),
                           str(tmp_path / "s.npz")], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2 and "no such configuration file" in proc.stderr


@pytest.mark.parametrize("section, key, value", [
    ("trigger", "lta_s", 1e9), ("trigger", "sta_s", 1e-6), ("board", "counts_per_unit", 1e-300),
    ("trigger", "pre_s", 1000.0), ("health", "interval_s", 1e-9), ("board", "baudrate", 12345678901234),
    ("mqtt", "keepalive_s", 100000), ("trigger", "on", 1.0), ("trigger", "coincidence", 100),
    ("mqtt", "client_id", "gw\x00one"), ("node", "state_dir", "/var/lib/x\x00y"),
])
def test_values_that_would_detect_nothing_or_choke_a_library_are_refused(tmp_path, section, key, value):
    from edge.errors import UserError
    from edge.gateway.config import load_config

    text = f'[{section}]\n{key} = {value!r}\n'.replace("'", '"').replace("\\x00", "\\u0000")
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        load_config(path)
    msg = str(err.value)
    assert f"{section}.{key}" in msg and str(path) in msg and "\n" not in msg


def test_relative_paths_name_what_is_beside_the_config_file(tmp_path):
    from edge.gateway.config import load_config

    (tmp_path / "etc" / "state").mkdir(parents=True)
    (tmp_path / "models" / "m").mkdir(parents=True)
    path = tmp_path / "etc" / "c.toml"
    path.write_text('[node]\nstate_dir = "state"\n[model]\npath = "../models/m"\n[outbox]\npath = "/abs/o.sqlite"\n')
    cfg = load_config(path)
    assert cfg.node.state_dir == str(tmp_path / "etc" / "state")
    assert Path(cfg.model.path).resolve() == (tmp_path / "models" / "m").resolve()
    assert cfg.outbox.path == "/abs/o.sqlite"
    path.write_text('[model]\npath = "models/triaxial"\n')  # nothing of that name beside it: as written (cwd)
    assert load_config(path).model.path == "models/triaxial"


@pytest.mark.parametrize("level", ["warning", "info"])
def test_the_log_level_is_set_in_the_config(tmp_path, level):
    """The real daemon (no board, no broker: its first WARNING says the broker is unreachable) logs INFO
    lines only at ``log.level = "info"``."""
    import os
    import threading
    import time

    from field_support import shipped_model, write_config

    cfg = write_config(tmp_path / "c.toml", tmp_path / "state", model={"path": str(shipped_model())},
                       board={"port": str(tmp_path / "no-board")}, mqtt={"host": "127.0.0.1", "port": 9},
                       log={"level": level})
    env = {k: v for k, v in os.environ.items() if k != "STOPEWATCH_LOG"}
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(cfg)], env=env,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True).start()
    try:
        deadline = time.monotonic() + 90
        while not any(ln.startswith("WARNING") and "unreachable" in ln for ln in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0
    assert any(ln.startswith("INFO") for ln in lines) == (level == "info"), "".join(lines)

"""surface.toml: the example parses, every bad value is one line naming file, key and what is allowed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli import main
from edge.errors import UserError
from edge.topics import NodeTopics, alert_subscription, parse_topic
from surface.collector import subscriptions
from surface.config import load_surface_config, parse_surface_config

ROOT = Path(__file__).resolve().parents[1]


def test_example_parses_with_the_defaults(tmp_path):
    cfg = load_surface_config(ROOT / "surface" / "surface.example.toml")
    assert cfg.broker.session_expiry_s == 7 * 86400 and cfg.alerts.silent_after == 3
    # a relative SQLite path names a file beside the config
    assert cfg.database.url == f"sqlite:///{ROOT / 'surface' / 'surface.db'}"


@pytest.mark.parametrize("data, want", [
    ({"brokr": {}}, "unknown section [brokr]; allowed: database, broker, ingest, alerts"),
    ({"broker": {"prot": 1}}, "unknown key broker.prot"),
    ({"broker": {"port": "1883"}}, "broker.port = '1883'; expected int"),
    ({"broker": {"port": 70000}}, "broker.port = 70000; allowed 1 to 65535"),
    ({"broker": {"prefix": "a/#"}}, "broker.prefix = 'a/#'"),
    ({"broker": {"shared_group": "a/b"}}, "broker.shared_group = 'a/b'"),
    ({"broker": {"tls": True}}, "broker.tls = true needs broker.ca_file"),
    ({"broker": {"password_file": "/nonexistent"}}, "broker.password_file = '/nonexistent'; no such file"),
    ({"database": {"url": "mysql://x"}}, "database.url = 'mysql://x'"),
    ({"alerts": {"silent_after": 0}}, "alerts.silent_after = 0; allowed 1 to 1000"),
    ({"alerts": {"gap_grace_s": float("nan")}}, "alerts.gap_grace_s = nan; expected a finite number"),
])
def test_bad_values_are_one_line(data, want):
    with pytest.raises(UserError) as err:
        parse_surface_config(data, "surface.toml")
    assert want in str(err.value) and str(err.value).startswith("surface.toml: ") and "\n" not in str(err.value)


def test_collect_with_a_bad_config_exits_2_without_traceback(tmp_path):
    bad = tmp_path / "surface.toml"
    bad.write_text("[broker]\nport = 0\n")
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "collect", "--config", str(bad)], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"stopewatch: error: {bad}: broker.port = 0; allowed 1 to 65535 (TCP port)"
    assert main(["collect", "--config", str(tmp_path / "missing.toml")]) == 2


def test_topics_subscriptions_and_alert_topic():
    assert subscriptions("stopewatch/v1") == [f"stopewatch/v1/+/+/{k}" for k in ("status", "event", "waveform",
                                                                                  "health")]
    assert subscriptions("p", "archive")[0] == "$share/archive/p/+/+/status"
    t = NodeTopics("stopewatch/v1", "kloof-4", "l29-east")
    assert t.alert == "stopewatch/v1/kloof-4/l29-east/alert"
    assert alert_subscription() == "stopewatch/v1/+/+/alert"
    assert parse_topic(t.alert) is None  # not a node's own kind: the collector never ingests its alerts

"""Shared fixtures: a real MQTT broker on a free loopback port (see tests/mqtt_broker.py)."""

from __future__ import annotations

import pytest
from field_support import shipped_model
from mqtt_broker import start_broker


@pytest.fixture
def mqtt_broker(tmp_path):
    """A running broker (Mosquitto, else amqtt) for one test; stop()/start() keep its port."""
    broker = start_broker(tmp_path / "broker")
    yield broker
    broker.close()


@pytest.fixture
def make_broker(tmp_path):
    """Factory for brokers with options (persistence, password_file, tls); all are stopped afterwards."""
    brokers = []

    def make(name: str = "broker", **options):
        broker = start_broker(tmp_path / name, **options)
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        broker.close()


@pytest.fixture(scope="session")
def triaxial_model():
    """The shipped triaxial model directory."""
    return shipped_model()


@pytest.fixture(params=["sqlite", "postgresql"])
def surface_url(request, tmp_path):
    """An empty archive URL: SQLite in tmp_path, or a throwaway PostgreSQL database (tests/surface_support.py)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'surface.db'}"
        return
    from surface_support import ThrowawayDatabase, pg_server

    db = ThrowawayDatabase(pg_server())
    yield db.url
    db.drop()


@pytest.fixture
def pg_url():
    """A throwaway PostgreSQL database (skipped with the reason when no server can be had)."""
    from surface_support import ThrowawayDatabase, pg_server

    db = ThrowawayDatabase(pg_server())
    yield db.url
    db.drop()


def pytest_sessionfinish(session, exitstatus):
    from surface_support import stop_cluster

    stop_cluster()


@pytest.fixture
def cleanup():
    """Register what a test starts (daemons, board simulators, collectors); at its end each is stopped, last
    first: ``stop()`` where it has one, else ``close()``."""
    things: list = []
    yield things.append
    for thing in reversed(things):
        (thing.stop if hasattr(thing, "stop") else thing.close)()

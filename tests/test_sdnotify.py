"""sd_notify over a real AF_UNIX datagram socket, as systemd sets it up."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

from edge.field.sdnotify import Notifier

ROOT = Path(__file__).resolve().parents[1]


def _listener(address):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(20)
    return sock


def test_path_socket_receives_ready_status_watchdog_stopping(tmp_path):
    path = str(tmp_path / "notify.sock")
    with _listener(path) as sock:
        n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000000"})
        assert n.enabled and n.watchdog_interval() == 10.0
        assert n.ready("classifying, broker unreachable")
        assert sock.recv(4096) == b"READY=1\nSTATUS=classifying, broker unreachable"
        assert n.status("12 events queued on disk")
        assert sock.recv(4096) == b"STATUS=12 events queued on disk"
        assert n.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
        assert n.stopping()
        assert sock.recv(4096) == b"STOPPING=1"
        n.close()


def test_abstract_namespace_socket():
    name = f"stopewatch-test-{uuid.uuid4().hex}"
    with _listener(b"\0" + name.encode()) as sock:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert sock.recv(4096) == b"READY=1"
        n.close()


def test_noop_without_systemd_and_watchdog_for_other_pid():
    n = Notifier({})
    assert not n.enabled and n.watchdog_interval() is None
    assert n.ready() is False and n.watchdog() is False
    other = Notifier({"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval() is None  # the watchdog is meant for another process


def test_missing_socket_fails_softly(tmp_path):
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.notify("READY=1") is False  # logged once, never raises


def test_module_function_uses_process_environment(tmp_path):
    path = str(tmp_path / "n.sock")
    with _listener(path) as sock:
        env = dict(os.environ, NOTIFY_SOCKET=path)
        subprocess.run([sys.executable, "-c", "from edge.field.sdnotify import notify; notify('READY=1', 'STATUS=up')"],
                       cwd=ROOT, env=env, check=True, timeout=60)
        assert sock.recv(4096) == b"READY=1\nSTATUS=up"

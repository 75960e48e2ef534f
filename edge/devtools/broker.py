"""A local MQTT broker on a free loopback port: Mosquitto, or a pure-Python broker where it is missing.

Used by ``stopewatch demo`` (and the tests) so that nothing depends on a broker already running:
Mosquitto is preferred; without it amqtt (MQTT 3.1.1, anonymous, no TLS, no persistence) serves.
Stop and start keep the port, so clients reconnect to "the same" broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path


def mosquitto_path() -> str | None:
    """Mosquitto's executable; None when absent or when STOPEWATCH_TEST_BROKER=amqtt forces the fallback."""
    if os.environ.get("STOPEWATCH_TEST_BROKER") == "amqtt":
        return None
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").is_file() else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout`` s pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class MosquittoBroker:
    """Mosquitto with a temporary config; stop() and start() keep the port so clients can reconnect."""

    kind = "mosquitto"

    def __init__(self, workdir: Path, *, port: int | None = None, persistence: bool = False,
                 password_file: Path | None = None, tls: dict | None = None, acl_file: Path | None = None,
                 max_packet_size: int | None = None) -> None:
        self.exe = mosquitto_path()
        if self.exe is None:
            raise FileNotFoundError("mosquitto is not installed")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.conf = self.workdir / "mosquitto.conf"
        self.log = self.workdir / "mosquitto.log"
        lines = [f"user {getpass.getuser()}",  # as root, stay root: the temp files are private to us
                 f"listener {self.port} 127.0.0.1"]
        if tls:  # per-listener TLS: CA, server certificate, and client certificates required
            lines += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}",
                      "require_certificate true"]
        if password_file:
            lines += ["allow_anonymous false", f"password_file {password_file}"]
        else:
            lines.append("allow_anonymous true")
        if acl_file:  # who may publish and subscribe where (anonymous clients: the patterns without a user)
            lines.append(f"acl_file {acl_file}")
        if max_packet_size:  # the broker refuses larger packets and tells MQTT 5 clients in CONNACK
            lines.append(f"max_packet_size {int(max_packet_size)}")
        if persistence:  # sessions and queued QoS 1 messages survive a broker restart
            lines += ["persistence true", f"persistence_location {self.workdir}/"]
        else:
            lines.append("persistence false")
        lines += ["log_type error", "log_type warning", "log_type notice", "log_type information"]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 15.0) -> None:
        assert self.proc is None, "already running"
        self._logf = open(self.log, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=self._logf,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mosquitto did not start on port {self.port}: {self.log_tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (Mosquitto saves its persistence file) and wait; SIGKILL if it hangs."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self._logf.close()

    close = stop

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 20) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log.read_text(errors="replace").splitlines()[-n:])
        return ""


class AmqttBroker:
    """Fallback: amqtt in its own event-loop thread (MQTT 3.1.1, anonymous, no TLS, no persistence)."""

    kind = "amqtt"

    def __init__(self, workdir: Path, *, port: int | None = None) -> None:
        from amqtt.broker import Broker  # noqa: F401  (fail here when amqtt is missing)

        self.port = port or free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker = None

    def start(self, timeout: float = 15.0) -> None:
        from amqtt.broker import Broker

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="amqtt", daemon=True)
        self._thread.start()
        config = {"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
                  "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}}

        async def _start():
            self._broker = Broker(config, loop=self._loop)
            await self._broker.start()

        asyncio.run_coroutine_threadsafe(_start(), self._loop).result(timeout)
        if not wait_until(lambda: port_open(self.port), timeout):
            raise RuntimeError(f"amqtt did not start on port {self.port}")

    def stop(self, timeout: float = 15.0) -> None:
        if self._loop is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop).result(timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._loop.close()
        self._loop = None

    close = stop

    @property
    def running(self) -> bool:
        return self._loop is not None


def start_local_broker(workdir: Path, port: int | None = None, **options) -> MosquittoBroker | AmqttBroker:
    """A running broker on ``port`` or a free loopback port: Mosquitto if installed, else amqtt.

    ``options`` (persistence, password_file, tls) need Mosquitto; RuntimeError names what is missing.
    """
    if mosquitto_path() is not None:
        broker: MosquittoBroker | AmqttBroker = MosquittoBroker(workdir, port=port, **options)
    elif any(options.values()):
        raise RuntimeError(f"{', '.join(k for k, v in options.items() if v)} need Mosquitto "
                           "(apt-get install mosquitto)")
    else:
        try:
            broker = AmqttBroker(workdir, port=port)
        except ImportError:
            raise RuntimeError("no MQTT broker: install mosquitto (apt-get install mosquitto) "
                               "or amqtt (pip install amqtt)") from None
    broker.start()
    return broker

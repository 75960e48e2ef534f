"""systemd's notify protocol (sd_notify(3)) without libsystemd: one datagram per state change.

With ``Type=notify`` in the unit, systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` for the Linux
abstract namespace) and, with ``WatchdogSec=``, ``WATCHDOG_USEC``. Outside systemd every call is a no-op,
so the daemon runs the same from a terminal.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def _address(env: str) -> str | bytes:
    # A leading '@' means the abstract namespace, spelled with a leading NUL byte on the wire.
    return b"\0" + env[1:].encode() if env.startswith("@") else env


class Notifier:
    """Sends READY/STATUS/WATCHDOG/STOPPING to systemd when ``NOTIFY_SOCKET`` is set."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.socket_path = env.get("NOTIFY_SOCKET", "")
        self._sock: socket.socket | None = None
        self._warned = False
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        # WATCHDOG_PID names the process the watchdog is meant for; ignore it when it is another process.
        mine = not pid or pid == str(os.getpid())
        self.watchdog_s: float | None = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 and mine else None

    @property
    def enabled(self) -> bool:
        return bool(self.socket_path)

    def watchdog_interval(self) -> float | None:
        """How often to send WATCHDOG=1: half the watchdog timeout, as systemd recommends; None if unset."""
        return None if self.watchdog_s is None else self.watchdog_s / 2

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields in one datagram; returns False when not under systemd or on error."""
        if not self.socket_path:
            return False
        message = "\n".join(fields).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # Never block the daemon on a notify socket nobody reads (its queue full): drop instead.
            self._sock.sendto(message, socket.MSG_DONTWAIT, _address(self.socket_path))
            return True
        except OSError as exc:
            if not self._warned:  # once: a broken notify socket must not flood the journal
                log.warning("sd_notify to %s failed: %s", self.socket_path, exc)
                self._warned = True
            return False

    def ready(self, status: str = "") -> bool:
        """Tell systemd that start-up is finished (Type=notify units leave 'activating')."""
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        """One line shown by ``systemctl status``."""
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        """Keep-alive: send at least every :meth:`watchdog_interval` seconds while healthy."""
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str = "") -> bool:
        """Tell systemd a clean shutdown has begun."""
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


_default: Notifier | None = None


def notify(*fields: str) -> bool:
    """Module-level sd_notify using the process environment (e.g. ``notify("READY=1")``)."""
    global _default
    if _default is None:
        _default = Notifier()
    return _default.notify(*fields)

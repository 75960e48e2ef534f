"""Shared pieces of the fault-injection tests: an event ledger, a small full disk, a fake MQTT broker.

- :class:`EventLedger` counts what became of a run's events (produced, stored, delivered, dead-lettered,
  evicted, unstored, still queued) and what is left over: ``lost`` must be 0 outside what is explicitly
  refused, evicted or reported lost by a salvage, and counted.
- :func:`small_disk` mounts a tmpfs of a given size (or a loop file system) and skips the test, saying
  why, where neither can be made.
- :class:`FakeBroker` is a few hundred lines of MQTT 5 on a socket, for the broker answers Mosquitto cannot
  be made to give: chosen PUBACK reason codes, a CONNACK Maximum Packet Size, an oversized PUBLISH.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sqlite3
import struct
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass
class EventLedger:
    """What became of the events of one run. ``lost`` is what no counter explains."""

    case: str
    produced: int = 0  # events the daemon classified (health ``events``)
    stored: int = 0  # events that went into the outbox
    delivered: int = 0  # distinct event ids a subscriber received
    dead_lettered: int = 0  # events in the dead-letter table (refused for good, kept)
    evicted: int = 0  # events evicted by the outbox's bound or a full disk (health ``evicted``)
    unstored: int = 0  # events the disk refused even after eviction (health ``outbox.unstored``)
    queued: int = 0  # events still in the outbox at the end
    salvage_lost: int = 0  # rows a start-up salvage reported lost
    resent_later: int = 0  # delivered rows still on disk (their acknowledgement could not be written): duplicates
    notes: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        """Events neither delivered nor accounted for by a counter."""
        return (self.produced - self.delivered - self.dead_lettered - self.evicted - self.unstored - self.queued
                - self.salvage_lost)

    def row(self) -> str:
        """One Markdown table row (the README's reliability table)."""
        notes = self.notes + ([f"{self.resent_later} delivered rows resent after a restart"]
                              if self.resent_later else [])
        return (f"| {self.case} | {self.produced} | {self.stored} | {self.delivered} | {self.dead_lettered} | "
                f"{self.evicted} | {self.unstored} | {self.queued} | {self.salvage_lost} | {self.lost} | "
                f"{'; '.join(notes)} |")


LEDGER_HEADER = ("| case | produced | stored | delivered | dead-lettered | evicted | unstored | queued | "
                 "salvage lost | lost | notes |\n|---|---|---|---|---|---|---|---|---|---|---|")


def outbox_counts(path: Path, delivered: set[str] | None = None) -> dict[str, int]:
    """Events queued and dead-lettered in an outbox file (read-only; 0 where the file or table is absent).

    ``delivered`` (event ids a subscriber has) leaves out rows already delivered whose acknowledgement the
    daemon could not write (a full disk): they are resent after a restart, duplicates rather than a backlog.
    """
    out = {"queued": 0, "dead_lettered": 0, "resent_later": 0}
    if not path.exists():
        return out
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db, \
            contextlib.suppress(sqlite3.OperationalError):
        queued = [json.loads(p)["event_id"] for (p,) in db.execute("SELECT payload FROM outbox WHERE kind = 'event'")]
        out["queued"] = len([e for e in queued if e not in (delivered or set())])
        out["resent_later"] = len(queued) - out["queued"]
        out["dead_lettered"] = db.execute("SELECT COUNT(*) FROM dead_letter WHERE kind = 'event'").fetchone()[0]
    return out


@contextlib.contextmanager
def small_disk(size_kb: int) -> Iterator[Path]:
    """A file system of ``size_kb`` mounted on a temporary directory: tmpfs, else an ext2 loop file system;
    the test is skipped (with the reason) when neither can be mounted (not root, no mount permission)."""
    mount = shutil.which("mount")
    where = Path(tempfile.mkdtemp(prefix="stopewatch-disk-"))
    image = None
    tried = []
    if mount is None:
        pytest.skip("no mount command: cannot make a small file system for the disk-full case")
    ok = subprocess.run([mount, "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(where)],
                        capture_output=True, text=True)
    if ok.returncode != 0:
        tried.append(f"tmpfs: {ok.stderr.strip()}")
        image = where.with_suffix(".img")
        mkfs = shutil.which("mkfs.ext2")
        made = mkfs and subprocess.run([mkfs, "-q", "-F", str(image), f"{size_kb}k"],
                                       capture_output=True).returncode == 0
        ok = subprocess.run([mount, "-o", "loop", str(image), str(where)], capture_output=True, text=True) \
            if made else None
        if ok is None or ok.returncode != 0:
            tried.append(f"loop: {ok.stderr.strip() if ok else 'mkfs.ext2 missing or failed'}")
            where.rmdir()
            if image.exists():
                image.unlink()
            pytest.skip("cannot mount a small file system for the disk-full case (" + "; ".join(tried) + ")")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
        with contextlib.suppress(OSError):
            where.rmdir()
        if image is not None:
            with contextlib.suppress(OSError):
                image.unlink()


def fill(directory: Path, leave_bytes: int = 0, name: str = "filler") -> Path:
    """Write a file into ``directory`` until at most ``leave_bytes`` are free (ENOSPC ends it)."""
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # unbuffered: ENOSPC shows at once
    try:
        while (free := shutil.disk_usage(directory).free) > leave_bytes:
            os.write(fd, b"\0" * min(65536, max(512, free - leave_bytes)))
    except OSError:
        pass
    finally:
        os.close(fd)
    return path


class NotifyListener:
    """A systemd notify socket (``NOTIFY_SOCKET``) that keeps every ``STATUS=`` the daemon sends."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="sw-notify-")  # a socket path must stay under 108 bytes
        self.path = str(Path(self._dir) / "notify")
        self.statuses: list[str] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                message = self._sock.recv(65536).decode(errors="replace")
            except (TimeoutError, OSError):
                continue
            self.statuses += [line[len("STATUS="):] for line in message.splitlines() if line.startswith("STATUS=")]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)


# ----------------------------------------------------------------------------- a fake MQTT 5 broker
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(sock: socket.socket) -> int:
    value, mult = 0, 1
    for _ in range(4):
        b = sock.recv(1)
        if not b:
            raise ConnectionError("closed")
        value += (b[0] & 127) * mult
        mult *= 128
        if not b[0] & 128:
            return value
    raise ConnectionError("bad remaining length")


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(65536, n - len(buf)))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return bytes(buf)


@dataclass
class Received:
    """One PUBLISH the fake broker took, and the reason code it answered with."""

    topic: str
    payload: bytes
    reason: int


class FakeBroker:
    """An MQTT 5 (and 3.1.1) broker on a free loopback port that answers as it is told.

    ``puback(topic, n)`` gives the PUBACK reason code for the ``n``-th PUBLISH (from 1) on ``topic``
    (default 0, success). ``max_packet`` is sent as the CONNACK Maximum Packet Size. ``after_connack``
    (if given) is called with the client's socket right after CONNACK, e.g. to send an oversized packet.
    It keeps no sessions and delivers nothing to anyone: it only answers the client under test.
    """

    def __init__(self, *, puback: Callable[[str, int], int] | None = None, max_packet: int | None = None,
                 after_connack: Callable[[socket.socket], None] | None = None) -> None:
        self.puback = puback or (lambda topic, n: 0)
        self.max_packet = max_packet
        self.after_connack = after_connack
        self.received: list[Received] = []
        self.connects = 0
        self.connect_properties: list[bytes] = []  # raw CONNECT property bytes, per connection
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(8)
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        accept = threading.Thread(target=self._accept, name="fake-broker", daemon=True)
        accept.start()
        self._threads.append(accept)

    def _accept(self) -> None:
        self._server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                sock, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            self._socks.append(sock)
            t = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, sock: socket.socket) -> None:
        v5 = True
        with contextlib.suppress(OSError, ConnectionError, struct.error):
            while not self._stop.is_set():
                first = sock.recv(1)
                if not first:
                    return
                kind, flags = first[0] >> 4, first[0] & 0x0F
                body = _recv_exactly(sock, _read_varint(sock))
                if kind == 1:  # CONNECT
                    v5 = body[6] == 5
                    if v5:  # properties follow the 10-byte variable header
                        plen, at = 0, 10
                        mult = 1
                        while True:
                            b = body[at]
                            plen += (b & 127) * mult
                            mult *= 128
                            at += 1
                            if not b & 128:
                                break
                        self.connect_properties.append(body[at:at + plen])
                    self.connects += 1
                    props = b""
                    if v5 and self.max_packet:
                        props += b"\x27" + struct.pack(">I", self.max_packet)
                    var = b"\x00\x00" + (_varint(len(props)) + props if v5 else b"")
                    sock.sendall(b"\x20" + _varint(len(var)) + var)
                    if self.after_connack is not None:
                        self.after_connack(sock)
                elif kind == 3:  # PUBLISH
                    qos = (flags >> 1) & 3
                    tlen = struct.unpack(">H", body[:2])[0]
                    topic = body[2:2 + tlen].decode()
                    at = 2 + tlen
                    mid = None
                    if qos:
                        mid = struct.unpack(">H", body[at:at + 2])[0]
                        at += 2
                    if v5:
                        plen, mult = 0, 1
                        while True:
                            b = body[at]
                            plen += (b & 127) * mult
                            mult *= 128
                            at += 1
                            if not b & 128:
                                break
                        at += plen
                    with self._lock:
                        n = self._counts[topic] = self._counts.get(topic, 0) + 1
                    code = self.puback(topic, n) if qos else 0
                    with self._lock:
                        self.received.append(Received(topic, body[at:], code))
                    if qos == 1:
                        var = struct.pack(">H", mid) + (bytes([code, 0]) if v5 and code else b"")
                        sock.sendall(b"\x40" + _varint(len(var)) + var)
                elif kind == 12:  # PINGREQ
                    sock.sendall(b"\xd0\x00")
                elif kind == 14:  # DISCONNECT
                    return

    def published(self, topic: str, code: int | None = None) -> list[Received]:
        """PUBLISHes taken on ``topic`` (only those answered with ``code``, if given)."""
        with self._lock:
            return [r for r in self.received if r.topic == topic and (code is None or r.reason == code)]

    def close(self) -> None:
        self._stop.set()
        for sock in self._socks:
            with contextlib.suppress(OSError):
                sock.close()
        self._server.close()
        for t in self._threads:
            t.join(5)


def oversized_publish(announced: int, send_bytes: int) -> Callable[[socket.socket], None]:
    """An ``after_connack`` that announces a PUBLISH of ``announced`` bytes and sends ``send_bytes`` of it."""

    def send(sock: socket.socket) -> None:
        header = b"\x30" + _varint(announced)
        with contextlib.suppress(OSError):
            sock.sendall(header + b"\x00\x01t")
            sent = 0
            chunk = b"\xaa" * 65536
            while sent < send_bytes:
                sock.sendall(chunk)
                sent += len(chunk)

    return send

"""Reading the board's byte stream: a serial device (any pyserial URL) or a file for replay.

The serial reader survives the device disappearing (USB unplug, board reset): it closes
the port, waits with exponential back-off and reopens the same path until it is back.
Readers yield raw chunks; feed them to a FrameDecoder (or TextDecoder). The decoder
keeps its sequence tracking across a reconnect, so samples lost while unplugged show
up as one reported gap.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class ReaderStats:
    connects: int = 0
    disconnects: int = 0
    open_failures: int = 0
    bytes_read: int = 0
    last_error: str = ""


def is_replay_file(url: str) -> bool:
    """A regular file (not a device, not a URL) is replayed rather than opened as a serial port."""
    return "://" not in url and os.path.isfile(url)


class SerialReader:
    """Chunks of bytes from a pyserial URL, reconnecting with back-off.

    ``url``: a device path (/dev/ttyACM0, a udev symlink, a pty), or any pyserial URL
    (socket://host:port, rfc2217://..., loop://). ``stop`` ends ``chunks()`` from another
    thread. ``on_state`` is called with "connected" / "disconnected" and a detail string.
    """

    def __init__(self, url: str, *, baudrate: int = 921600, read_size: int = 65536, timeout: float = 0.1,
                 backoff_initial: float = 0.1, backoff_max: float = 5.0, stop: threading.Event | None = None,
                 on_state: Callable[[str, str], None] | None = None) -> None:
        self.url = url
        self.baudrate = baudrate
        self.read_size = read_size
        self.timeout = timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stop = stop or threading.Event()
        self.on_state = on_state
        self.stats = ReaderStats()
        self._port = None

    def _state(self, state: str, detail: str) -> None:
        log.info("serial %s %s: %s", self.url, state, detail)
        if self.on_state is not None:
            self.on_state(state, detail)

    def _open(self):
        import serial  # pyserial

        port = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=self.timeout,
                                     do_not_open=True)
        port.open()
        return port

    def _close(self) -> None:
        if self._port is not None:
            with contextlib.suppress(Exception):  # the device is gone; closing is best effort
                self._port.close()
            self._port = None

    def chunks(self) -> Iterator[bytes]:
        """Yield bytes as they arrive until ``stop`` is set; reconnect whenever the device vanishes."""
        import serial

        backoff = self.backoff_initial
        try:
            while not self.stop.is_set():
                if self._port is None:
                    try:
                        self._port = self._open()
                    except (serial.SerialException, OSError, ValueError) as exc:
                        self.stats.open_failures += 1
                        self.stats.last_error = str(exc)
                        if self.stop.wait(backoff):
                            break
                        backoff = min(backoff * 2, self.backoff_max)
                        continue
                    self.stats.connects += 1
                    self._state("connected", self.url)
                    backoff = self.backoff_initial
                try:
                    data = self._port.read(min(max(self._port.in_waiting, 1), self.read_size))
                except (serial.SerialException, OSError, TypeError) as exc:
                    # TypeError: pyserial's posix port when the fd closes under it.
                    self.stats.disconnects += 1
                    self.stats.last_error = str(exc)
                    self._state("disconnected", str(exc))
                    self._close()
                    continue
                if data:
                    self.stats.bytes_read += len(data)
                    yield data
        finally:
            self._close()

    def close(self) -> None:
        self.stop.set()


class FileReader:
    """Chunks of a recorded byte stream (replay). ``rate`` bytes/s paces it; None = as fast as possible."""

    def __init__(self, path: str | os.PathLike, *, read_size: int = 65536, rate: float | None = None,
                 stop: threading.Event | None = None) -> None:
        self.path = path
        self.read_size = read_size
        self.rate = rate
        self.stop = stop or threading.Event()
        self.stats = ReaderStats()

    def chunks(self) -> Iterator[bytes]:
        t0 = time.monotonic()
        with open(self.path, "rb") as f:
            self.stats.connects += 1
            while not self.stop.is_set():
                data = f.read(self.read_size)
                if not data:
                    return
                self.stats.bytes_read += len(data)
                if self.rate:
                    wait = t0 + self.stats.bytes_read / self.rate - time.monotonic()
                    if wait > 0:
                        self.stop.wait(wait)
                yield data

    def close(self) -> None:
        self.stop.set()


def open_reader(url: str, **kwargs) -> SerialReader | FileReader:
    """A FileReader for a regular file, else a SerialReader (device path or pyserial URL)."""
    if is_replay_file(url):
        return FileReader(url, **{k: v for k, v in kwargs.items() if k in ("read_size", "rate", "stop")})
    kwargs.pop("rate", None)
    return SerialReader(url, **kwargs)

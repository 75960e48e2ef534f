"""Line faults for the board simulator and the fuzz tests.

Each frame's bytes pass through ``FaultInjector.apply``, which returns what goes on
the wire and whether the frame itself arrived intact. Bytes inserted between frames
(garbage bursts) do not damage a frame; anything that changes a frame's own bytes does.
Stalls and disconnects are time faults: the simulator asks ``next_time_fault``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from firmware_bridge.protocol import SYNC


@dataclass(frozen=True)
class FaultConfig:
    """Fault rates. Byte faults are per byte (bit errors per bit); bursts and duplicates per frame;
    stalls and disconnects per second of stream."""

    bit_error_rate: float = 0.0
    drop_rate: float = 0.0
    insert_rate: float = 0.0
    garbage_rate: float = 0.0
    garbage_max: int = 512
    duplicate_rate: float = 0.0
    stall_rate: float = 0.0
    stall_seconds: float = 0.5
    disconnect_rate: float = 0.0
    disconnect_seconds: float = 2.0

    def __post_init__(self) -> None:
        for name in ("bit_error_rate", "drop_rate", "insert_rate", "garbage_rate", "duplicate_rate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"fault {name} = {v}; allowed 0..1")
        for name in ("stall_rate", "stall_seconds", "disconnect_rate", "disconnect_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"fault {name} = {getattr(self, name)}; must not be negative")
        if self.garbage_max < 1:
            raise ValueError(f"fault garbage_max = {self.garbage_max}; must be at least 1")

    @property
    def any_byte_fault(self) -> bool:
        return any((self.bit_error_rate, self.drop_rate, self.insert_rate, self.garbage_rate,
                    self.duplicate_rate))


class FaultInjector:
    """Applies a FaultConfig to frames with its own random generator (reproducible from the seed)."""

    def __init__(self, config: FaultConfig, seed: int | np.random.Generator = 0) -> None:
        self.config = config
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.bits_flipped = 0
        self.bytes_dropped = 0
        self.bytes_inserted = 0
        self.garbage_bytes = 0
        self.duplicates = 0

    def garbage(self) -> bytes:
        """A burst of random bytes; sometimes it holds sync markers to tempt the decoder."""
        rng = self.rng
        n = int(rng.integers(1, self.config.garbage_max + 1))
        g = rng.integers(0, 256, n, dtype=np.uint8)
        if n >= 2 and rng.random() < 0.5:
            for p in rng.integers(0, n - 1, 1 + n // 64):
                g[p:p + 2] = np.frombuffer(SYNC, np.uint8)
        self.garbage_bytes += n
        return g.tobytes()

    def apply(self, frame: bytes) -> tuple[bytes, bool]:
        """The bytes to send for ``frame`` and whether the frame's own bytes are unchanged."""
        c = self.config
        if not c.any_byte_fault:
            return frame, True
        rng = self.rng
        head = self.garbage() if c.garbage_rate and rng.random() < c.garbage_rate else b""
        n = len(frame)
        intact = True
        data = None
        if c.bit_error_rate:
            k = int(rng.binomial(8 * n, c.bit_error_rate))
            if k:
                data = np.frombuffer(frame, np.uint8).copy()
                bits = rng.choice(8 * n, size=min(k, 8 * n), replace=False)
                np.bitwise_xor.at(data, bits // 8, (1 << (bits % 8)).astype(np.uint8))
                self.bits_flipped += len(bits)
                intact = False
        if c.drop_rate or c.insert_rate:
            if data is None:
                data = np.frombuffer(frame, np.uint8)
            if c.drop_rate:
                keep = rng.random(n) >= c.drop_rate
                if not keep.all():
                    self.bytes_dropped += int(n - keep.sum())
                    data = data[keep]
                    intact = False
            if c.insert_rate:
                k = int(rng.binomial(n, c.insert_rate))
                if k:
                    # Insert strictly inside the frame: bytes between frames are the garbage bursts' job.
                    at = np.sort(rng.integers(1, max(len(data), 2), k))
                    data = np.insert(data, at, rng.integers(0, 256, k, dtype=np.uint8))
                    self.bytes_inserted += k
                    intact = False
        body = frame if data is None else data.tobytes()
        if c.duplicate_rate and rng.random() < c.duplicate_rate:
            self.duplicates += 1
            body = body + body
        return head + body, intact

    def next_time_fault(self, dt: float) -> tuple[str, float] | None:
        """Whether a stall or disconnect begins within the next ``dt`` seconds of stream: (kind, seconds)."""
        c = self.config
        if c.disconnect_rate and self.rng.random() < c.disconnect_rate * dt:
            return "disconnect", c.disconnect_seconds
        if c.stall_rate and self.rng.random() < c.stall_rate * dt:
            return "stall", c.stall_seconds
        return None

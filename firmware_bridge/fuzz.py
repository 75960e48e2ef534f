"""Fuzzing the frame decoder with corrupted byte streams whose damage is known exactly.

A stream is a run of genuine frames (samples and status) passed through vectorised
faults: bit flips, dropped bytes, bytes inserted inside frames, and at frame boundaries
garbage bursts (often holding sync markers), torn frame prefixes and duplicated frames.
Because every fault position is known, so is the set of frames that arrived intact.
``check_stream`` decodes the stream in random chunks and asserts the properties:

* the decoder never raises;
* everything it returns is a genuine frame, bit for bit (never corrupt data);
* every frame that arrived intact is returned, once, in order;
* every gap in the samples is reported with its exact size, duplicates are counted.

Run a long campaign with ``python -m firmware_bridge.fuzz --streams 1000000``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np

from firmware_bridge.decoder import FrameDecoder, SampleBlock, StatusReport
from firmware_bridge.protocol import SYNC, BoardStatus, SampleFormat, encode_samples, encode_status


@dataclass(frozen=True)
class Frame:
    """A genuine frame and what it holds (``counts`` None for status frames)."""

    data: bytes
    seq: int
    first_sample: int
    n: int
    counts: np.ndarray | None


@dataclass(frozen=True)
class FaultRates:
    bit_error_rate: float = 1e-4
    drop_rate: float = 1e-3
    insert_rate: float = 1e-3
    garbage_rate: float = 0.1
    duplicate_rate: float = 0.05


def frame_pool(rng: np.random.Generator, n_frames: int, *, channels: int, fmt: SampleFormat,
               samples_per_frame: int, status_every: int = 0, timestamps: bool = False,
               seq0: int = 0, first0: int = 0, board_id: int = 1, session: int = 0) -> list[Frame]:
    """Consecutive genuine frames of one board; every ``status_every``-th frame is a status frame."""
    frames = []
    seq, first = seq0, first0
    bits = {SampleFormat.INT16: 16, SampleFormat.INT24: 24, SampleFormat.INT32: 32}.get(fmt)
    for i in range(n_frames):
        ts = 1_767_225_600_000_000_000 + first * 100_000 if timestamps else None
        if status_every and i % status_every == status_every - 1:
            st = BoardStatus(20.0, 5.0, i, tuple(rng.uniform(1, 64, channels)), tuple(range(channels)))
            frames.append(Frame(encode_status(st, fs=10000.0, sample=first, seq=seq, board_id=board_id,
                                              session=session, timestamp_ns=ts), seq, first, 0, None))
        else:
            n = int(rng.integers(1, samples_per_frame + 1))
            if bits is None:
                counts = rng.standard_normal((channels, n)).astype(np.float32)
            else:
                counts = rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), (channels, n))
            frames.append(Frame(encode_samples(counts, fmt=fmt, fs=10000.0, first_sample=first, seq=seq,
                                               board_id=board_id, session=session, timestamp_ns=ts),
                                seq, first, n, counts))
            first += n
        seq = (seq + 1) & 0xFFFFFFFF
    return frames


def _garbage(rng: np.random.Generator, foreign: list[Frame]) -> tuple[np.ndarray, Frame | None]:
    kind = rng.integers(0, 3) if foreign else rng.integers(1, 3)
    if kind == 0:  # a torn frame: the start of a genuine frame (not one of this stream's), cut short
        f = foreign[int(rng.integers(0, len(foreign)))]
        return np.frombuffer(f.data[:int(rng.integers(1, len(f.data)))], np.uint8), f
    g = rng.integers(0, 256, int(rng.integers(1, 200)), dtype=np.uint8)
    if kind == 1:  # sync markers sprinkled in
        at = rng.integers(0, max(len(g) - 1, 1), 1 + len(g) // 16)
        g[at] = SYNC[0]
        g[np.minimum(at + 1, len(g) - 1)] = SYNC[1]
    return g, None


def corrupt(rng: np.random.Generator, frames: list[Frame], rates: FaultRates, pool: list[Frame] | None = None
            ) -> tuple[bytes, np.ndarray, np.ndarray]:
    """Wire bytes for ``frames`` with faults; returns (wire, damaged, duplicated) per frame.

    A duplicated frame is followed by a clean copy, so it arrives intact even if damaged once.
    Torn frames are cut from ``pool`` frames that are not in ``frames``.
    """
    own = {f.seq for f in frames}
    foreign = [f for f in (pool or []) if f.seq not in own]
    for _ in range(100):
        wire, damaged, duplicated, torn = _corrupt_once(rng, frames, rates, foreign)
        # An insertion right after a torn prefix may complete it (1/256 when one byte is missing): that
        # puts a genuine foreign frame on the wire, which the decoder rightly returns. Draw again.
        if not any(wire.find(f.data) >= 0 for f in torn):
            return wire, damaged, duplicated
    raise RuntimeError("could not draw a stream without completed torn frames")


def _corrupt_once(rng: np.random.Generator, frames: list[Frame], rates: FaultRates, foreign: list[Frame]
                  ) -> tuple[bytes, np.ndarray, np.ndarray, list[Frame]]:
    lens = np.fromiter((len(f.data) for f in frames), np.int64, len(frames))
    ends = np.cumsum(lens)
    starts = ends - lens
    clean = np.frombuffer(b"".join(f.data for f in frames), np.uint8)
    size = len(clean)
    wire = clean.copy()
    damaged = np.zeros(len(frames), bool)
    # Bit flips (distinct bits, so that two flips never cancel).
    k = int(rng.binomial(8 * size, rates.bit_error_rate))
    if k:
        bits = np.unique(rng.integers(0, 8 * size, k))
        np.bitwise_xor.at(wire, bits // 8, (1 << (bits % 8)).astype(np.uint8))
        damaged[np.searchsorted(ends, bits // 8, side="right")] = True
    dropped = np.flatnonzero(rng.random(size) < rates.drop_rate) if rates.drop_rate else np.zeros(0, np.int64)
    damaged[np.searchsorted(ends, dropped, side="right")] = True
    # Insertions: (position in the clean stream, bytes), inserted before that position.
    ins_pos: list[np.ndarray] = []
    ins_val: list[np.ndarray] = []
    k = int(rng.binomial(size, rates.insert_rate))
    if k:
        p = rng.integers(0, size, k)
        ins_pos.append(p)
        ins_val.append(rng.integers(0, 256, k, dtype=np.uint8))
        inside = p[~np.isin(p, starts)]  # at a frame's first byte = between frames: no damage
        damaged[np.searchsorted(ends, inside, side="right")] = True
    duplicated = rng.random(len(frames)) < rates.duplicate_rate
    for j in np.flatnonzero(duplicated):
        v = np.frombuffer(frames[j].data, np.uint8)
        ins_pos.append(np.full(len(v), ends[j]))
        ins_val.append(v)
    torn = []
    for j in np.flatnonzero(rng.random(len(frames) + 1) < rates.garbage_rate):
        g, src = _garbage(rng, foreign)
        if src is not None:
            torn.append(src)
        ins_pos.append(np.full(len(g), starts[j] if j < len(frames) else size))
        ins_val.append(g)
    if ins_pos:
        pos = np.concatenate(ins_pos)
        order = np.argsort(pos, kind="stable")
        pos = pos[order]
        wire = np.insert(wire, pos, np.concatenate(ins_val)[order])
        dropped = dropped + np.searchsorted(pos, dropped, side="right")
    if dropped.size:
        wire = np.delete(wire, dropped)
    out = wire.tobytes()
    # A drop and an insertion can restore a frame exactly (drop one byte of a run of equal bytes, insert
    # the same value within the run): what counts is whether the frame's bytes arrived.
    for j in np.flatnonzero(damaged):
        damaged[j] = _occurrences(out, frames[j].data) < (2 if duplicated[j] else 1)
    return out, damaged, duplicated, torn


def _occurrences(data: bytes, sub: bytes) -> int:
    """Occurrences of ``sub`` in ``data``, overlapping ones included (frames may share a sync byte)."""
    k, at = 0, data.find(sub)
    while at >= 0:
        k += 1
        at = data.find(sub, at + 1)
    return k


def decode_in_chunks(rng: np.random.Generator, wire: bytes, max_chunk: int = 300
                     ) -> tuple[list[SampleBlock | StatusReport], FrameDecoder]:
    """Decode ``wire`` fed in random-sized chunks, then flush."""
    dec = FrameDecoder()
    out: list[SampleBlock | StatusReport] = []
    cuts = np.cumsum(rng.integers(1, max_chunk + 1, len(wire) // 2 + 2))
    prev = 0
    for c in cuts[cuts < len(wire)]:
        out += dec.feed(wire[prev:c])
        prev = int(c)
    out += dec.feed(wire[prev:])
    out += dec.flush()
    return out, dec


def check_stream(frames: list[Frame], damaged: np.ndarray, duplicated: np.ndarray,
                 out: list[SampleBlock | StatusReport], dec: FrameDecoder) -> None:
    """Assert the decoder's properties for one stream (AssertionError names the first violation)."""
    arrived = ~damaged | duplicated
    expect = [f for f, ok in zip(frames, arrived, strict=True) if ok]
    got_seq = [o.seq for o in out]
    assert got_seq == [f.seq for f in expect], f"returned seqs {got_seq}, intact {[f.seq for f in expect]}"
    prev_end = None
    gaps = []
    for f, o in zip(expect, out, strict=True):
        if f.counts is None:
            assert isinstance(o, StatusReport) and o.sample == f.first_sample
            continue
        assert isinstance(o, SampleBlock) and o.first_sample == f.first_sample
        assert np.array_equal(o.data, f.counts.astype(np.float64)), f"seq {f.seq}: data differ"
        gap = 0 if prev_end is None else f.first_sample - prev_end
        assert o.gap_before == gap, f"seq {f.seq}: gap_before {o.gap_before}, expected {gap}"
        assert o.reset == (prev_end is None or gap > 0), f"seq {f.seq}: reset flag"
        if gap:
            gaps.append(gap)
        prev_end = f.first_sample + f.n
    s = dec.stats
    assert (s.sample_gaps, s.samples_missed) == (len(gaps), sum(gaps)), "gap counters"
    assert s.duplicates == int((duplicated & ~damaged).sum()), "duplicate counter"
    assert s.frames == len(expect) + int((duplicated & ~damaged).sum()), "frame counter"
    assert dec.buffered == 0


def fuzz_streams(seed: int, n_streams: int, *, channels: int, fmt: SampleFormat, samples_per_frame: int,
                 rates: FaultRates, max_frames: int = 10, pool_size: int = 200, status_every: int = 7,
                 timestamps: bool = False) -> dict[str, int]:
    """Check ``n_streams`` corrupted streams cut from one pool of genuine frames; returns totals."""
    rng = np.random.default_rng(seed)
    seq0 = int(rng.integers(0, 2**32))  # exercises wrap-around of the sequence number
    pool = frame_pool(rng, pool_size, channels=channels, fmt=fmt, samples_per_frame=samples_per_frame,
                      status_every=status_every, timestamps=timestamps, seq0=seq0,
                      first0=int(rng.integers(0, 2**40)), session=int(rng.integers(0, 0x10000)))
    totals = {"streams": 0, "frames": 0, "intact": 0, "bytes": 0}
    for _ in range(n_streams):
        m = int(rng.integers(1, max_frames + 1))
        a = int(rng.integers(0, pool_size - m + 1))
        frames = pool[a:a + m]
        wire, damaged, duplicated = corrupt(rng, frames, rates, pool)
        out, dec = decode_in_chunks(rng, wire)
        check_stream(frames, damaged, duplicated, out, dec)
        totals["streams"] += 1
        totals["frames"] += m
        totals["intact"] += int((~damaged | duplicated).sum())
        totals["bytes"] += len(wire)
    return totals


def campaign(n_streams: int, seed: int = 0, per_pool: int = 500) -> dict[str, int]:
    """Streams over varied formats, channel counts, frame sizes and fault rates."""
    rng = np.random.default_rng(seed)
    totals = {"streams": 0, "frames": 0, "intact": 0, "bytes": 0}
    done = 0
    while done < n_streams:
        k = min(per_pool, n_streams - done)
        rates = FaultRates(*(10 ** rng.uniform(lo, hi) for lo, hi in ((-6, -2), (-5, -2), (-5, -2), (-2, 0),
                                                                        (-3, -0.5))))
        part = fuzz_streams(int(rng.integers(2**63)), k, channels=int(rng.integers(1, 9)),
                            fmt=SampleFormat(int(rng.integers(1, 5))), samples_per_frame=int(rng.integers(1, 64)),
                            rates=rates, timestamps=bool(rng.integers(0, 2)))
        for key in totals:
            totals[key] += part[key]
        done += k
    return totals


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m firmware_bridge.fuzz", description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    t = time.perf_counter()
    totals = campaign(args.streams, args.seed)
    dt = time.perf_counter() - t
    print(f"{totals['streams']} streams, {totals['frames']} frames ({totals['intact']} intact), "
          f"{totals['bytes'] / 1e6:.1f} MB checked in {dt:.0f} s: all properties hold")
    return 0


if __name__ == "__main__":
    sys.exit(main())

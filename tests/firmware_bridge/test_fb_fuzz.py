"""Fuzz and property tests of the frame decoder (firmware_bridge.fuzz holds the harness).

``test_100k_corrupted_streams``: hypothesis draws 500 stream families (format, channels, frame
size, fault rates, time stamps, seed); each family checks 200 independently corrupted streams
cut from its pool of genuine frames: 100,000 byte streams in about 20-30 s. A longer campaign:
``python -m firmware_bridge.fuzz --streams 1000000``.
The other tests let hypothesis choose the bytes and edits directly, so failures shrink.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.decoder import FrameDecoder
from firmware_bridge.fuzz import FaultRates, check_stream, frame_pool, fuzz_streams
from firmware_bridge.protocol import SYNC, SampleFormat

STREAMS_PER_EXAMPLE = 200
EXAMPLES = 500  # x 200 = 100,000 streams

rate = st.floats(min_value=0.0, max_value=1.0)


@pytest.mark.slow
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**63 - 1), channels=st.integers(1, 8), fmt=st.sampled_from(list(SampleFormat)),
       spf=st.integers(1, 48), timestamps=st.booleans(),
       ber=st.sampled_from([0.0, 1e-5, 1e-4, 1e-3, 1e-2]), drop=st.sampled_from([0.0, 1e-4, 1e-3, 1e-2]),
       ins=st.sampled_from([0.0, 1e-4, 1e-3, 1e-2]), garbage=st.sampled_from([0.0, 0.05, 0.3, 1.0]),
       dup=st.sampled_from([0.0, 0.05, 0.3]))
def test_100k_corrupted_streams(seed, channels, fmt, spf, timestamps, ber, drop, ins, garbage, dup):
    totals = fuzz_streams(seed, STREAMS_PER_EXAMPLE, channels=channels, fmt=fmt, samples_per_frame=spf,
                          rates=FaultRates(ber, drop, ins, garbage, dup), timestamps=timestamps)
    assert totals["streams"] == STREAMS_PER_EXAMPLE


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=4000), chunk=st.integers(1, 512))
def test_arbitrary_bytes_never_raise_nor_yield(data, chunk):
    # Random bytes with sync markers spliced in, fed in chunks: nothing passes the CRC.
    data = data.replace(b"\x00\x00", SYNC + b"\x01\x01")
    dec = FrameDecoder()
    out = []
    for k in range(0, len(data), chunk):
        out += dec.feed(data[k:k + chunk])
    out += dec.flush()
    assert out == [] and dec.stats.frames == 0 and dec.buffered == 0
    assert dec.stats.bytes_in == len(data) == dec.stats.bytes_skipped


@st.composite
def edited_stream(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32)))
    frames = frame_pool(rng, draw(st.integers(1, 8)), channels=draw(st.integers(1, 4)),
                        fmt=draw(st.sampled_from(list(SampleFormat))), samples_per_frame=8, status_every=3)
    clean = b"".join(f.data for f in frames)
    edits = draw(st.lists(st.tuples(st.integers(0, len(clean)), st.sampled_from(["flip", "drop", "insert"]),
                                    st.integers(0, 7), st.binary(min_size=1, max_size=60)), max_size=6))
    return frames, clean, edits, draw(st.integers(1, 256))


@settings(max_examples=400, deadline=None)
@given(case=edited_stream())
def test_hypothesis_edits_lose_only_the_edited_frames(case):
    frames, clean, edits, chunk = case
    ends = np.cumsum([len(f.data) for f in frames])
    starts = set((ends - [len(f.data) for f in frames]).tolist())
    size = len(clean)
    # Edits refer to positions in the clean stream; flips are distinct bits so that none cancel.
    flips = {(p, bit) for p, kind, bit, _ in edits if kind == "flip" and p < size}
    drops = {p for p, kind, _, _ in edits if kind == "drop" and p < size}
    inserts: dict[int, bytes] = {}
    for p, kind, _, blob in edits:
        if kind == "insert":
            inserts[p] = inserts.get(p, b"") + blob
    flipped = bytearray(clean)
    for p, bit in flips:
        flipped[p] ^= 1 << bit
    wire = bytearray()
    for i in range(size + 1):
        wire += inserts.get(i, b"")
        if i < size and i not in drops:
            wire.append(flipped[i])
    hit = {p for p, _ in flips} | drops | {p for p in inserts if p < size and p not in starts}
    damaged = np.zeros(len(frames), bool)
    damaged[np.searchsorted(ends, sorted(hit), side="right")] = True
    # Edits can cancel (drop a byte of a run of equal bytes, insert the same value): judge by content.
    arrived = np.array([bytes(wire).count(f.data) > 0 for f in frames])
    assert arrived[~damaged].all()  # the edit model: untouched frames are on the wire unchanged
    damaged &= ~arrived
    dec = FrameDecoder()
    out = []
    for k in range(0, len(wire), chunk):
        out += dec.feed(bytes(wire[k:k + chunk]))
    out += dec.flush()
    check_stream(frames, damaged, np.zeros(len(frames), bool), out, dec)

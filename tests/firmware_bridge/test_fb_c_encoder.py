"""The portable C encoder, compiled with the system C compiler, against the vectors and the Python side."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import firmware_bridge
from firmware_bridge.decoder import FrameDecoder
from firmware_bridge.protocol import (
    BYTES_PER_SAMPLE,
    MAX_PAYLOAD,
    BoardStatus,
    SampleFormat,
    encode_samples,
    encode_status,
)
from firmware_bridge.textmode import encode_lines

SRC = Path(firmware_bridge.__file__).resolve().parent
VECTOR_DIR = SRC / "vectors"
DRIVER = Path(__file__).resolve().parent / "c_driver.c"
CC = shutil.which("cc") or shutil.which("gcc")
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler")


@pytest.fixture(scope="module")
def driver(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cenc") / "driver"
    subprocess.run([CC, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic", f"-I{SRC}",
                    str(SRC / "fb_encoder.c"), str(DRIVER), "-o", str(out)], check=True)
    return out


def run_driver(driver: Path, requests: list[str]) -> list[bytes | None]:
    res = subprocess.run([str(driver)], input="\n".join(requests) + "\n", capture_output=True, text=True,
                         check=True, timeout=60)
    return [None if ln == "ERR" else bytes.fromhex(ln) for ln in res.stdout.splitlines()]


def sample_request(fmt: int, board: int, session: int, seq: int, fs: float, first: int, ts: int | None,
                   counts: np.ndarray) -> str:
    c, n = counts.shape
    vals = " ".join(repr(float(v)) if fmt == SampleFormat.FLOAT32 else str(int(v)) for v in counts.T.ravel())
    return (f"S {fmt} {board} {session} {seq} {int(round(fs * 1000))} {c} {n} {first} {int(ts is not None)} "
            f"{ts or 0} {vals}")


def vector_request(v: dict) -> str:
    if v["kind"] == "samples":
        fmt = SampleFormat[v["format"].upper()]
        counts = np.asarray(v["samples"], dtype=np.float32 if fmt == SampleFormat.FLOAT32 else np.int64)
        return sample_request(int(fmt), v["board_id"], v["session"], v["seq"], v["fs"], v["first_sample"],
                              v["timestamp_ns"], counts)
    if v["kind"] == "status":
        ts = v["timestamp_ns"]
        return (f"T {v['board_id']} {v['session']} {v['seq']} {int(round(v['fs'] * 1000))} {len(v['gain'])} "
                f"{v['first_sample']} {int(ts is not None)} {ts or 0} {int(round(v['temperature_c'] * 100))} "
                f"{int(round(v['supply_v'] * 1000))} {v['buffer_overruns']} "
                + " ".join(map(repr, v["gain"])) + " " + " ".join(map(str, v["clipped"])))
    raise ValueError(v["kind"])


def test_c_encoder_reproduces_every_vector(driver, vectors):
    binary = [v for v in vectors if v["kind"] != "text"]
    outs = run_driver(driver, [vector_request(v) for v in binary])
    for v, out in zip(binary, outs, strict=True):
        assert out == (VECTOR_DIR / f"{v['name']}.bin").read_bytes(), v["name"]
    text = next(v for v in vectors if v["kind"] == "text")
    rows = np.asarray(text["samples"]).T
    lines = run_driver(driver, [f"L {len(r)} " + " ".join(map(str, r)) for r in rows])
    assert b"".join(lines) == (VECTOR_DIR / "text_3ch.bin").read_bytes()


def test_c_encoder_refuses_bad_requests(driver):
    too_many = MAX_PAYLOAD // 4 + 1
    outs = run_driver(driver, [
        sample_request(3, 1, 0, 0, 100.0, 0, None, np.zeros((1, too_many), np.int64)),  # over the bound
        sample_request(9, 1, 0, 0, 100.0, 0, None, np.zeros((1, 4), np.int64)),  # unknown format
        "S 2 1 0 0 100000 0 1 0 0 0 5",  # zero channels
    ])
    assert outs == [None, None, None]


def test_c_encoder_needs_only_memcpy_and_memset(tmp_path):
    """Freestanding build: the only external symbols may be string.h's."""
    obj = tmp_path / "fb.o"
    subprocess.run([CC, "-std=c99", "-Os", "-ffreestanding", "-fno-builtin", "-Wall", "-Wextra", "-Werror",
                    "-pedantic", "-c", str(SRC / "fb_encoder.c"), "-o", str(obj)], check=True)
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("no nm")
    undefined = subprocess.run([nm, "-u", str(obj)], capture_output=True, text=True, check=True).stdout.split()
    assert set(undefined) - {"U"} <= {"memcpy", "memset"}


frame_params = st.tuples(
    st.sampled_from(list(SampleFormat)), st.integers(1, 32), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF), st.sampled_from([250.0, 4000.0, 10000.0, 20000.0, 1234.567]),
    # first_sample up to 2^62 - 2^16: beyond 2^62 the decoder refuses an index as impossible (tested there)
    st.integers(0, 2**62 - 2**16), st.one_of(st.none(), st.integers(0, 2**62)), st.integers(0, 2**32 - 1))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=st.lists(frame_params, min_size=1, max_size=20))
def test_c_frames_equal_python_frames_and_decode(driver, params):
    requests, expected, counts_list = [], [], []
    for fmt, channels, board, session, seq, fs, first, ts, seed in params:
        rng = np.random.default_rng(seed)
        n = int(rng.integers(1, min(64, MAX_PAYLOAD // (channels * BYTES_PER_SAMPLE[fmt])) + 1))
        if fmt == SampleFormat.FLOAT32:
            counts = (rng.standard_normal((channels, n)) * 10 ** rng.uniform(-3, 6)).astype(np.float32)
        else:
            bits = {SampleFormat.INT16: 16, SampleFormat.INT24: 24, SampleFormat.INT32: 32}[fmt]
            counts = rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), (channels, n))
        requests.append(sample_request(int(fmt), board, session, seq, fs, first, ts, counts))
        expected.append(encode_samples(counts, fmt=fmt, fs=fs, first_sample=first, seq=seq, board_id=board,
                                       session=session, timestamp_ns=ts))
        counts_list.append(counts)
    status = BoardStatus(-5.5, 3.3, 7, (1.0, 0.5), (1, 2))
    requests.append("T 3 4 5 10000000 2 77 0 0 -550 3300 7 1.0 0.5 1 2")
    expected.append(encode_status(status, fs=10000.0, sample=77, seq=5, board_id=3, session=4))
    got = run_driver(driver, requests)
    assert got == expected
    # The Python decoder reads the C encoder's frames back (each alone: boards/sessions may repeat).
    for frame, counts in zip(got[:-1], counts_list, strict=True):
        (block,) = FrameDecoder().feed(frame)
        assert np.array_equal(block.data, counts.astype(np.float64))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(st.integers(-(2**31), 2**31 - 1), min_size=3, max_size=3), min_size=1,
                     max_size=30))
def test_c_text_lines_equal_python_text(driver, rows):
    lines = run_driver(driver, [f"L 3 {a} {b} {c}" for a, b, c in rows])
    assert b"".join(lines) == encode_lines(np.asarray(rows, dtype=np.int64).T)

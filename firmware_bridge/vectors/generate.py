"""Write (or, with --check, verify) the shared test vectors of protocol version 1.

Each vector is a .bin file plus its inputs in vectors.json. The Python encoder, the C
encoder and the decoder are all tested against these files, so a change to the wire
format shows up as a failing vector, not as a silent incompatibility with boards in
the field. Regenerate only when bumping the protocol version.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from firmware_bridge.protocol import BoardStatus, encode_samples, encode_status
from firmware_bridge.textmode import encode_lines

HERE = Path(__file__).resolve().parent

VECTORS = [
    {"name": "int16_1ch", "kind": "samples", "format": "int16", "board_id": 7, "session": 1, "seq": 0,
     "fs": 250.0, "first_sample": 0, "timestamp_ns": None,
     "samples": [[-32768, -1, 0, 32767]]},
    {"name": "int24_3ch", "kind": "samples", "format": "int24", "board_id": 1, "session": 513, "seq": 41,
     "fs": 10000.0, "first_sample": 123456,
     "timestamp_ns": None,
     "samples": [[-8388608, -1, 0, 1, 8388607], [1000, -1000, 256, -256, 65536], [5, 4, 3, 2, 1]]},
    {"name": "int32_8ch_time", "kind": "samples", "format": "int32", "board_id": 65535, "session": 65535,
     "seq": 4294967295, "fs": 20000.0, "first_sample": 86400 * 20000 * 30 + 17,
     "timestamp_ns": 1767225600123456789,
     "samples": [[-2147483648, 2147483647], [1, -1], [0, 0], [16777216, -16777217], [100, 200], [-300, 400],
                 [500, -600], [700, 800]]},
    {"name": "float32_2ch", "kind": "samples", "format": "float32", "board_id": 2, "session": 0, "seq": 9,
     "fs": 4000.5, "first_sample": 99, "timestamp_ns": None,
     "samples": [[0.5, -1.25, 3.0e-3], [1.0e6, -0.0, 123.456]]},
    {"name": "status_3ch", "kind": "status", "board_id": 1, "session": 513, "seq": 42, "fs": 10000.0,
     "first_sample": 123461, "timestamp_ns": 1767225600000000000,
     "temperature_c": -12.34, "supply_v": 4.987, "buffer_overruns": 3, "gain": [1.0, 8.0, 64.0],
     "clipped": [0, 17, 4294967295]},
    {"name": "text_3ch", "kind": "text",
     "samples": [[-2147483648, 0, 12], [2147483647, -7, 3456789], [1, -1, 0]]},
]


def build(v: dict) -> bytes:
    """The bytes of one vector, from the Python encoders."""
    if v["kind"] == "samples":
        counts = np.asarray(v["samples"], dtype=np.float32 if v["format"] == "float32" else np.int64)
        return encode_samples(counts, fmt=v["format"], fs=v["fs"], first_sample=v["first_sample"],
                              seq=v["seq"], board_id=v["board_id"], session=v["session"],
                              timestamp_ns=v["timestamp_ns"])
    if v["kind"] == "status":
        st = BoardStatus(v["temperature_c"], v["supply_v"], v["buffer_overruns"], tuple(v["gain"]),
                         tuple(v["clipped"]))
        return encode_status(st, fs=v["fs"], sample=v["first_sample"], seq=v["seq"], board_id=v["board_id"],
                             session=v["session"], timestamp_ns=v["timestamp_ns"])
    return encode_lines(np.asarray(v["samples"], dtype=np.int64))


def main(argv: list[str]) -> int:
    check = "--check" in argv
    bad = 0
    for v in VECTORS:
        path = HERE / f"{v['name']}.bin"
        data = build(v)
        if check:
            if path.read_bytes() != data:
                print(f"{path.name}: differs from the encoder's output")
                bad += 1
        else:
            path.write_bytes(data)
    if not check:
        (HERE / "vectors.json").write_text(json.dumps(VECTORS, indent=1) + "\n")
    print(f"{len(VECTORS)} vectors {'checked' if check else 'written'}, {bad} bad")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The bad-input corpus: every command and config key given nonsense, through the real CLI.

Each case is (argv or a config mutation, expected exit code, substrings the one-line error must hold).
Every case runs ``python -m edge.cli ...`` in its own process (tests/cli_batch.py forks them from one
parent that has imported numpy and the CLI once, so the corpus takes a minute, not twenty) and must:
exit with the expected non-zero code, print no traceback, name the offending option/key/file and value
in its error line, and not hang (a case still running at its timeout fails, which is also how a config
that is wrongly accepted shows: ``stopewatch run`` would start the daemon). The cases include the silent
wrong successes once found here (a 10-sample window classified with high confidence, ``install
--instance ../../etc``, ``replay --block-s 0`` ...): each must now be refused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from field_support import REPO, model_variant, shipped_model

from edge.devtools.broker import free_port
from edge.formats import write_npz

CASE_TIMEOUT = 120.0  # seconds per case under load; a refusal takes well under one


@dataclass(frozen=True)
class Case:
    """One bad input: ``argv`` (placeholders {d} world dir, {model} shipped model, {cfg} good config,
    {config} this case's config file), the exit code and the substrings its error line must hold."""

    id: str
    argv: tuple[str, ...]
    code: int = 2
    expect: tuple[str, ...] = ()
    config: str | None = None  # TOML text of this case's config file ({config}); None: no file
    needs: str = ""  # a world resource that may be missing (e.g. "openssl"): skipped without it
    table: bool = False  # the command reports in a table on stdout (doctor): look there, not for an error line


CASES: list[Case] = []


def case(id: str, *argv: str, code: int = 2, expect: tuple[str, ...] | str = (), **kw) -> None:
    CASES.append(Case(id, tuple(argv), code, (expect,) if isinstance(expect, str) else tuple(expect), **kw))


# --------------------------------------------------------------------------- option values (argparse types)
GEN = ("dataset", "generate", "--out", "{d}/out/gen", "--count", "1", "--quiet")
IMP = ("dataset", "import", "--labels", "{d}/labels.csv", "--out", "{d}/out/imp")
GAL = ("dataset", "gallery", "{d}/ok.npz", "--out", "{d}/out/g.png")
TRAIN = ("train", "--config", "{d}/train.toml", "--out", "{d}/out/train")
EVAL = ("evaluate", "--model", "{model}", "--data", "{d}/ok.npz")
SIM = ("board", "simulate", "--out", "{d}/out/b.bin", "--seconds", "0.05")
REPLAY = ("replay", "--config", "{cfg}", "{d}/stream_ok.npz")
DEMO = ("demo",)
INSTALL = ("install", "--root", "{d}/root", "--yes", "--dry-run", "--site", "s1", "--node", "n1")
DOCTOR = ("doctor", "--config", "{cfg}", "--only", "config")
MINSTALL = ("model", "install", "{model}", "--config", "{cfg}", "--no-reload")

NOT_A_NUMBER = ("nan", "inf", "abc")
OPTION_VALUES = [  # (name, command, option, bad values)
    ("gen", GEN, "--count", ("0", "-1", "1.5", *NOT_A_NUMBER)),
    ("gen", GEN, "--seed", ("-1", "4294967296", "abc")),
    ("gen", GEN, "--fs", ("0", "-1", "1e300", "1e-300", *NOT_A_NUMBER)),
    ("gen", GEN, "--samples", ("0", "-5", "10", "1e9", "abc")),
    ("gen", GEN, "--shard-size", ("0", "-1", "abc")),
    ("gen", GEN, "--stream", ("0", "-1", "1e9", *NOT_A_NUMBER)),
    ("gen", GEN, "--events-per-min", ("-1", "1e6", *NOT_A_NUMBER)),
    ("gen", GEN, "--channels", ("2", "0")),
    ("imp", IMP, "--fs", ("0", "-1", "1e300", "nan")),
    ("imp", IMP, "--samples", ("0", "10", "abc")),
    ("imp", IMP, "--pre", ("-1", "nan", "inf")),
    ("imp", IMP, "--shard-size", ("0",)),
    ("imp", IMP, "--channels", ("2",)),
    ("gal", GAL, "--seed", ("-1",)),
    ("gal", GAL, "--onset", ("-1", "nan", "inf")),
    ("train", TRAIN, "--seeds", ("0", "-1", "abc")),
    ("sim", SIM, "--fs", ("0", "-1", "1e300", "1e-300", "nan", "inf")),
    ("sim", SIM, "--frame-samples", ("0", "-1", "70000")),
    ("sim", SIM, "--counts-per-unit", ("0", "-1", "nan", "inf")),
    ("sim", SIM, "--speed", ("-1", "nan", "inf")),
    ("sim", SIM, "--seconds", ("0", "-1", "nan", "inf")),
    ("sim", SIM, "--seed", ("-1",)),
    ("sim", SIM, "--events-per-min", ("-1", "nan")),
    ("sim", SIM, "--board-id", ("70000", "-1", "abc")),
    ("sim", SIM, "--bit-error-rate", ("-0.1", "2", "nan")),
    ("sim", SIM, "--drop-rate", ("2", "-1")),
    ("sim", SIM, "--insert-rate", ("nan",)),
    ("sim", SIM, "--garbage-rate", ("1.5",)),
    ("sim", SIM, "--duplicate-rate", ("-1",)),
    ("sim", SIM, "--stalls-per-min", ("-1", "nan")),
    ("sim", SIM, "--stall-seconds", ("-1",)),
    ("sim", SIM, "--disconnects-per-min", ("-1",)),
    ("sim", SIM, "--disconnect-seconds", ("nan",)),
    ("sim", SIM, "--format", ("int8",)),
    ("sim", SIM, "--channels", ("2",)),
    ("replay", REPLAY, "--block-s", ("0", "-1", "nan", "inf", "abc")),
    ("demo", DEMO, "--seconds", ("0", "-1", "nan", "inf")),
    ("demo", DEMO, "--events-per-min", ("0", "-1", "nan")),
    ("demo", DEMO, "--seed", ("-1",)),
    ("install", INSTALL, "--baudrate", ("0", "-1", "abc", "12345678901234")),
    ("install", INSTALL, "--board-fs", ("0", "-1", "nan", "inf")),
    ("install", INSTALL, "--board-channels", ("2",)),
    ("install", INSTALL, "--instance", ("../../etc", "a/b", ".hidden", "")),
    ("doctor", DOCTOR, "--serial-seconds", ("0", "-1", "nan")),
    ("doctor", DOCTOR, "--broker-timeout", ("0", "-1", "nan")),
    ("minstall", MINSTALL, "--board-fs", ("nan", "0", "-1", "inf", "1e300")),
    ("minstall", MINSTALL, "--board-channels", ("2",)),
    ("minstall", MINSTALL, "--pid", ("0", "-1")),
]
for name, base, option, values in OPTION_VALUES:
    for value in values:
        case(f"{name}{option}={value}", *base, f"{option}={value}", expect=(option, value))

for name, base, option in (("gen", GEN, "--classes"), ("sim", SIM, "--classes")):
    case(f"{name}{option}=foo,bar", *base, f"{option}=foo,bar", expect=(option, "foo"))
    case(f"{name}{option}=,", *base, f"{option}=,", expect=(option, "no class"))
for name, base in (("gen", GEN), ("sim", SIM)):
    for value in ("abc", "nan:nan", "5:1", "-3:inf", "1:2:3"):
        case(f"{name}--snr-db={value}", *base, f"--snr-db={value}", expect=("--snr-db", value))

# --------------------------------------------------------------------------- output and input paths
case("gen-out-proc", "dataset", "generate", "--out", "/proc/x", "--count", "1", "--quiet", code=1,
     expect="/proc/x")
case("gen-out-file", "dataset", "generate", "--out", "{d}/ok.npz", "--count", "1", expect=("--out", "ok.npz"))
case("gen-out-under-a-file", "dataset", "generate", "--out", "{d}/ok.npz/x", "--count", "1",
     expect=("--out", "not a directory"))
case("gen-stream-out-missing-dir", "dataset", "generate", "--out", "{d}/missing/deeper/s.npz", "--stream", "1",
     "--quiet", expect=("--out",), code=2)
case("gal-out-under-a-file", "dataset", "gallery", "{d}/ok.npz", "--out", "{d}/ok.npz/g.png",
     expect=("--out", "not a directory"))
case("gal-out-is-dir", "dataset", "gallery", "{d}/ok.npz", "--out", "{d}", expect=("--out", "directory"))
case("gal-data-missing", "dataset", "gallery", "{d}/none.npz", "--out", "{d}/out/g.png", expect="none.npz")
case("eval-out-under-a-file", *EVAL, "--out", "{d}/ok.npz/r.json", expect=("--out", "not a directory"))
case("eval-out-proc", *EVAL, "--out", "/proc/x/r.json", code=1, expect=("/proc/x",))
case("eval-model-missing", "evaluate", "--model", "{d}/nomodel", "--data", "{d}/ok.npz",
     expect=("--model", "nomodel"))
case("eval-data-missing", "evaluate", "--model", "{model}", "--data", "{d}/none.npz", expect=("--data", "none"))
case("replay-events-out-missing-dir", *REPLAY, "--events-out", "{d}/missing/e.jsonl",
     expect=("--events-out", "missing"))
case("replay-events-out-is-dir", *REPLAY, "--events-out", "{d}", expect=("--events-out", "directory"))
case("sim-out-missing-dir", "board", "simulate", "--out", "{d}/missing/b.bin", "--seconds", "0.05",
     expect=("--out", "missing"))
case("sim-truth-missing-dir", *SIM, "--truth", "{d}/missing/t.jsonl", expect=("--truth", "missing"))
case("sim-site-bogus", *SIM, "--site", "bogus", expect=("--site", "bogus"))
case("sim-port-missing", "board", "simulate", "--port", "/dev/nonexistent-tty", "--seconds", "0.05",
     expect="nonexistent-tty")
case("train-config-missing", "train", "--config", "{d}/none.toml", "--out", "{d}/out/t",
     expect=("--config", "none.toml"))
case("train-out-is-file", "train", "--config", "{d}/train.toml", "--out", "{d}/ok.npz", expect=("--out", "ok.npz"))
case("train-init-missing", "train", "--init", "{d}/nomodel", "--data", "{d}/ok.npz", "--out", "{d}/out/t",
     expect=("--init", "nomodel"))
case("train-adapt-without-init", "train", "--adapt-unlabelled", "{d}/ok.npz", "--out", "{d}/out/t",
     expect="--init")
case("train-nothing", "train", "--out", "{d}/out/t", expect="--config")
case("imp-labels-missing", "dataset", "import", "--labels", "{d}/none.csv", "--out", "{d}/out/imp",
     expect=("--labels", "none.csv"))
case("imp-labels-binary", "dataset", "import", "--labels", "{d}/binary.csv", "--out", "{d}/out/imp-bin",
     expect="binary.csv")
case("imp-labels-empty", "dataset", "import", "--labels", "{d}/empty.csv", "--out", "{d}/out/imp-empty",
     expect="empty.csv")
case("imp-labels-bad-label", "dataset", "import", "--labels", "{d}/labels_badlabel.csv",
     "--out", "{d}/out/imp-bl", expect=("labels_badlabel.csv", "rockfal"))
case("imp-labels-bad-time", "dataset", "import", "--labels", "{d}/labels_badtime.csv",
     "--out", "{d}/out/imp-bt", expect=("labels_badtime.csv", "yesterday"))
case("imp-records-all-nan", "dataset", "import", "--labels", "{d}/labels_nan.csv", "--out", "{d}/out/imp-nan",
     expect=("labels_nan.csv", "no window could be cut"))
case("imp-records-inf", "dataset", "import", "--labels", "{d}/labels_inf.csv", "--out", "{d}/out/imp-inf",
     expect=("labels_inf.csv", "no window could be cut"))
case("imp-records-nan-strict", "dataset", "import", "--labels", "{d}/labels_nan.csv", "--out",
     "{d}/out/imp-nan-s", "--strict", expect=("labels_nan.csv", "gap"))
case("imp-record-garbage", "dataset", "import", "--labels", "{d}/labels_garbage.csv", "--out",
     "{d}/out/imp-g", expect="rec_garbage.csv")
case("imp-out-is-file", "dataset", "import", "--labels", "{d}/labels.csv", "--out", "{d}/ok.npz",
     expect=("--out", "ok.npz"))

# --------------------------------------------------------------------------- window and stream files
for fname, expect in (("short.npz", ("short.npz", "10 samples")), ("nan.npz", ("nan.npz", "NaN")),
                      ("inf.npz", ("inf.npz", "infinite")), ("fsbig.npz", ("fsbig.npz", "fs")),
                      ("fstiny.npz", ("fstiny.npz", "fs")), ("fs0.npz", ("fs0.npz", "fs")),
                      ("pickled.npz", ("pickled.npz", "pickle")), ("garbage.npz", ("garbage.npz", "npz")),
                      ("nowave.npz", ("nowave.npz", "waveforms")), ("wave2d.npz", ("wave2d.npz", "shape")),
                      ("wave_int.npz", ("wave_int.npz", "dtype")), ("empty_ch.npz", ("empty_ch.npz", "shape")),
                      ("low500.npz", ("low500.npz", "500 Hz")), ("none.npz", ("none.npz", "no such"))):
    stem = fname.split(".")[0]
    case(f"classify-{stem}", "classify", "--model", "{model}", f"{{d}}/{fname}", expect=expect)
for fname, expect in (("nan.npz", ("nan.npz", "NaN")), ("inf.npz", ("inf.npz", "infinite")),
                      ("fsbig.npz", ("fsbig.npz", "fs")), ("nolabels.npz", ("nolabels.npz", "labels")),
                      ("short.npz", ("short.npz", "10 samples")), ("low500.npz", ("low500.npz", "500 Hz"))):
    case(f"evaluate-{fname.split('.')[0]}", "evaluate", "--model", "{model}", "--data", f"{{d}}/{fname}",
         expect=expect)
case("classify-model-not-a-model", "classify", "--model", "{d}/ok.npz", "{d}/ok.npz", expect="ok.npz")
case("classify-model-sha-mismatch", "classify", "--model", "{d}/models/sha_bad", "{d}/ok.npz",
     expect=("sha_bad", "sha256"))
case("classify-model-files-mismatch", "classify", "--model", "{d}/models/files_bad", "{d}/ok.npz",
     expect=("files_bad", "sha256"))
case("classify-model-card-garbage", "classify", "--model", "{d}/models/card_garbage", "{d}/ok.npz",
     expect=("card_garbage", "JSON"))
case("classify-model-card-missing-key", "classify", "--model", "{d}/models/card_nokey", "{d}/ok.npz",
     expect=("card_nokey", "temperature"))
case("classify-model-tflite-garbage", "classify", "--model", "{d}/models/tflite_garbage", "{d}/ok.npz",
     expect=("tflite_garbage",))
case("classify-dataset-dir-without-manifest", "classify", "--model", "{model}", "{d}/out",
     expect=("out", "manifest.json"))
for fname, expect in (("stream_fs1.npz", ("stream_fs1.npz", "1 Hz")), ("stream_fsbig.npz", ("stream_fsbig.npz", "fs")),
                      ("stream_nodata.npz", ("stream_nodata.npz", "data")),
                      ("stream_badtime.npz", ("stream_badtime.npz", "start_time")),
                      ("stream_chans.npz", ("stream_chans.npz", "channels")),
                      ("stream_500.npz", ("stream_500.npz", "500 Hz")),
                      ("stream_nan.npz", ("stream_nan.npz", "NaN")), ("stream_inf.npz", ("stream_inf.npz", "NaN")),
                      ("garbage.npz", ("garbage.npz", "npz")), ("none.npz", ("none.npz", "no such"))):
    case(f"replay-{fname.split('.')[0]}", "replay", "--config", "{cfg}", f"{{d}}/{fname}", expect=expect)
case("replay-config-missing", "replay", "--config", "{d}/none.toml", "{d}/stream_ok.npz", expect="none.toml")
case("replay-stream-1ch-coincidence", "replay", "--config", "{config}", "{d}/stream_1ch.npz",
     config='[trigger]\ncoincidence = 3\n', expect=("trigger.coincidence", "3"))

# --------------------------------------------------------------------------- field tools
case("install-root-is-file", "install", "--root", "{d}/ok.npz", "--yes", "--site", "s1", "--node", "n1",
     expect=("--root", "ok.npz"))
case("install-site-bad", "install", "--root", "{d}/root", "--yes", "--dry-run", "--site", "bad site",
     expect=("node.site", "bad site"))
case("install-node-slash", "install", "--root", "{d}/root", "--yes", "--dry-run", "--site", "s1",
     "--node", "a/b", expect=("node.node", "a/b"))
case("install-broker-port-text", *INSTALL, "--broker", "host:abc", expect=("--broker", "host:abc"))
case("install-broker-port-zero", *INSTALL, "--broker", "host:0", expect=("mqtt.port", "0"))
case("install-broker-port-big", *INSTALL, "--broker", "host:70000", expect=("mqtt.port", "70000"))
case("install-broker-credentials", *INSTALL, "--broker", "user:pw@host", expect=("--broker",))
case("install-broker-space", *INSTALL, "--broker", "a host", expect=("mqtt.host", "a host"))
case("install-password-file-missing", *INSTALL, "--username", "u", "--password-file", "{d}/none.pw",
     expect=("none.pw",))
case("install-password-non-utf8", *INSTALL, "--username", "u", "--password-file", "{d}/bad.pw",
     expect=("bad.pw", "UTF-8"))
case("install-tls-without-ca", *INSTALL, "--tls", expect=("mqtt.tls", "ca_file"))
case("install-ca-garbage", *INSTALL, "--tls", "--ca-file", "{d}/garbage.pem", expect=("ca_file", "garbage.pem"))
case("install-model-missing", *INSTALL, "--model", "{d}/nomodel", expect=("nomodel",))
case("install-board-fs-only", *INSTALL, "--board-fs", "4000", expect=("--board-channels",))
case("doctor-only-unknown", "doctor", "--config", "{cfg}", "--only", "foo", expect=("foo", "config"))
case("doctor-skip-unknown", "doctor", "--config", "{cfg}", "--skip", "bar", expect=("bar", "config"))
case("doctor-config-missing", "doctor", "--config", "{d}/none.toml", "--only", "config", code=1,
     expect=("FAIL", "none.toml"), table=True)
case("doctor-config-plaintext-password", "doctor", "--config", "{config}", "--only", "config", code=1,
     config='[mqtt]\npassword = "s3cret"\n', expect=("FAIL", "mqtt.password", "password_file"), table=True)
case("doctor-config-bad-value", "doctor", "--config", "{config}", "--only", "config", code=1,
     config="[trigger]\nsta_s = nan\n", expect=("FAIL", "trigger.sta_s", "nan"), table=True)
case("minstall-source-missing", "model", "install", "{d}/nomodel", "--config", "{cfg}", "--no-reload",
     expect=("nomodel",))
case("minstall-source-garbage-archive", "model", "install", "{d}/garbage.tar.gz", "--config", "{cfg}",
     "--no-reload", expect=("garbage.tar.gz", "archive"))
case("minstall-sha-mismatch", "model", "install", "{d}/models/sha_bad", "--config", "{cfg}", "--no-reload",
     expect=("sha_bad", "sha256"))
case("minstall-files-mismatch", "model", "install", "{d}/models/files_bad", "--config", "{cfg}",
     "--no-reload", expect=("files_bad", "sha256"))
case("minstall-selftest-fails", "model", "install", "{d}/models/selftest_bad", "--config", "{cfg}",
     "--no-reload", expect=("selftest_bad", "self-test"))
case("minstall-board-mismatch", *MINSTALL, "--board-fs", "500", "--board-channels", "3",
     expect=("500 Hz", "--force"))
case("minstall-board-fs-only", *MINSTALL, "--board-fs", "4000", expect=("--board-channels",))
case("minstall-config-missing", "model", "install", "{model}", "--config", "{d}/none.toml", "--no-reload",
     expect=("none.toml",))
case("mlist-config-garbage", "model", "list", "--config", "{d}/garbage.toml", expect=("garbage.toml", "TOML"))
case("mrollback-nothing", "model", "rollback", "--config", "{cfg}", "--no-reload", expect=("no previous model",))
case("mtest-path-missing", "model", "test", "{d}/nomodel", expect=("nomodel",))
case("mtest-sha-mismatch", "model", "test", "{d}/models/sha_bad", expect=("sha_bad", "sha256"))
case("mtest-selftest-fails", "model", "test", "{d}/models/selftest_bad", code=1, expect=())
case("demo-model-missing", "demo", "--model", "{d}/nomodel", expect=("--model", "nomodel"))
case("demo-model-no-card", "demo", "--model", "{d}/out", expect=("--model", "model_card.json"))
case("demo-site-bogus", "demo", "--site", "bogus", expect=("--site", "bogus"))
case("no-command", code=2, expect=("COMMAND",))
case("unknown-command", "frobnicate", expect=("frobnicate",))
case("unknown-option", "doctor", "--frobnicate", expect=("--frobnicate",))

# --------------------------------------------------------------------------- daemon configs (stopewatch run)
RUN = ("run", "--config", "{config}")
CONFIG_VALUES = [  # (section, key, TOML value, substrings of the error besides the key)
    ("node", "site", '""', ("''",)), ("node", "site", '"a b"', ("a b",)), ("node", "site", '"a\\u0000b"', ("NUL",)),
    ("node", "site", '"' + "x" * 65 + '"', ("xxxx",)), ("node", "site", "3", ("3", "str")),
    ("node", "node", '"x/y"', ("x/y",)), ("node", "node", '"a+b"', ("a+b",)),
    ("node", "prefix", '"a/#"', ("a/#",)), ("node", "prefix", '"a/"', ("a/",)), ("node", "prefix", '""', ("''",)),
    ("node", "prefix", '"$SYS/x"', ("$SYS/x",)), ("node", "state_dir", '"{d}/ok.npz"', ("ok.npz",)),
    ("board", "port", '""', ("''",)), ("board", "baudrate", "0", ("0",)), ("board", "baudrate", "-1", ("-1",)),
    ("board", "baudrate", "12345678901234", ("12345678901234",)), ("board", "baudrate", '"fast"', ("fast",)),
    ("board", "baudrate", "1.5", ("1.5",)), ("board", "baudrate", "true", ("True",)),
    ("board", "text_mode", '"yes"', ("yes",)), ("board", "counts_per_unit", "0", ("0",)),
    ("board", "counts_per_unit", "-1", ("-1",)), ("board", "counts_per_unit", "1e-300", ("1e-300",)),
    ("board", "counts_per_unit", "nan", ("nan",)), ("board", "counts_per_unit", "inf", ("inf",)),
    ("board", "counts_per_unit", "1e300", ("1e+300",)), ("board", "text_fs", "0", ("0",)),
    ("board", "text_fs", "nan", ("nan",)), ("board", "text_fs", "1e9", ("1e+09",)),
    ("board", "reconnect_max_s", "0", ("0",)), ("board", "reconnect_max_s", "1e9", ("1e+09",)),
    ("board", "units", '"m\\u0007s"', ("control",)),
    ("model", "path", '"{d}/nomodel"', ("nomodel",)), ("model", "path", '"{d}/ok.npz"', ("ok.npz",)),
    ("model", "path", '"{d}/models/sha_bad"', ("sha256",)), ("model", "threads", "0", ("0",)),
    ("model", "threads", "100000", ("100000",)), ("model", "threads", "-1", ("-1",)),
    ("trigger", "highpass_hz", "0", ("0",)), ("trigger", "highpass_hz", "-1", ("-1",)),
    ("trigger", "highpass_hz", "1e9", ("1e+09",)), ("trigger", "highpass_hz", "1400", ("1400",)),
    ("trigger", "lowpass_hz", "10", ("10",)), ("trigger", "lowpass_hz", "nan", ("nan",)),
    ("trigger", "method", '"foo"', ("foo", "recursive")), ("trigger", "sta_s", "0", ("0",)),
    ("trigger", "sta_s", "1e-5", ("1e-05",)), ("trigger", "sta_s", "0.0002", ("0.0002", "one sample")),
    ("trigger", "sta_s", "nan", ("nan",)), ("trigger", "lta_s", "1e9", ("1e+09",)),
    ("trigger", "lta_s", "0.01", ("0.01",)), ("trigger", "lta_s", "inf", ("inf",)),
    ("trigger", "on", "1.0", ("1",)), ("trigger", "on", "0.5", ("0.5",)), ("trigger", "on", "nan", ("nan",)),
    ("trigger", "off", "5.0", ("5",)), ("trigger", "off", "0", ("0",)), ("trigger", "coincidence", "0", ("0",)),
    ("trigger", "coincidence", "5", ("5",)), ("trigger", "coincidence", "100", ("100",)),
    ("trigger", "coincidence", "1.5", ("1.5",)), ("trigger", "min_duration_s", "-1", ("-1",)),
    ("trigger", "min_duration_s", "30", ("30",)), ("trigger", "max_duration_s", "0", ("0",)),
    ("trigger", "max_duration_s", "1e9", ("1e+09",)), ("trigger", "refractory_s", "-1", ("-1",)),
    ("trigger", "refractory_s", "1e9", ("1e+09",)), ("trigger", "pre_s", "1000", ("1000",)),
    ("trigger", "pre_s", "2", ("2", "window")), ("trigger", "pre_s", "-1", ("-1",)),
    ("mqtt", "host", '""', ("''",)), ("mqtt", "host", '"a b"', ("a b",)), ("mqtt", "host", '"user:pw@host"', ("@",)),
    ("mqtt", "host", '"mqtt://host"', ("mqtt://host",)), ("mqtt", "host", '"a\\u0000b"', ("NUL",)),
    ("mqtt", "host", '"-bad-"', ("-bad-",)), ("mqtt", "port", "0", ("0",)), ("mqtt", "port", "70000", ("70000",)),
    ("mqtt", "port", "-1", ("-1",)), ("mqtt", "port", '"1883"', ("1883",)), ("mqtt", "protocol", '"4"', ("4",)),
    ("mqtt", "keepalive_s", "0", ("0",)), ("mqtt", "keepalive_s", "100000", ("100000",)),
    ("mqtt", "client_id", '"a\\u0000b"', ("NUL",)), ("mqtt", "publish_waveforms", '"no"', ("no",)),
    ("mqtt", "tls", "1", ("1",)), ("outbox", "path", '"{d}"', ("directory",)),
    ("outbox", "max_events", "0", ("0",)), ("outbox", "max_events", "-1", ("-1",)),
    ("outbox", "max_events", "1000000000000", ("1000000000000",)), ("health", "interval_s", "1e-9", ("1e-09",)),
    ("health", "interval_s", "0", ("0",)), ("health", "interval_s", "nan", ("nan",)),
    ("health", "interval_s", "1e9", ("1e+09",)), ("health", "interval_s", "inf", ("inf",)),
    ("log", "level", '"verbose"', ("verbose", "info")),
    ("log", "level", "3", ("3",)), ("log", "level", '"INFO "', ("INFO ",)),
    ("mqtt", "homeassistant_discovery", '"yes"', ("yes",)), ("mqtt", "homeassistant_prefix", '"ha/#"', ("ha/#",)),
    ("mqtt", "homeassistant_prefix", '""', ("''",)), ("stream", "natural_hz", "-1", ("-1",)),
    ("stream", "damping", "2", ("2",)), ("stream", "damping", "0", ("0",)),
]
for section, key, value, extra in CONFIG_VALUES:
    case(f"config-{section}.{key}={value}", *RUN, config=f"[{section}]\n{key} = {value}\n",
         expect=(f"{section}.{key}", *extra))

CONFIG_TEXTS = [  # (id, TOML text, substrings)
    ("unknown-section", "[foo]\nx = 1\n", ("[foo]",)),
    ("unknown-key", "[node]\nfoo = 1\n", ("node.foo",)),
    ("training-config", "[data]\nx = 1\n[train]\ny = 2\n", ("[data]", "training")),
    ("section-not-table", "#raw\nnode = 3\n", ("[node]",)),
    ("not-toml", "#raw\n[node\nsite = \n", ("TOML",)),
    ("plaintext-password", '[mqtt]\nusername = "u"\npassword = "s3cret"\n', ("mqtt.password", "password_file")),
    ("plaintext-token", '[mqtt]\ntoken = "abc"\n', ("mqtt.token", "password_file")),
    ("password-without-username", '[mqtt]\npassword_file = "{d}/good.pw"\n', ("password_file", "username")),
    ("password-file-missing", '[mqtt]\nusername = "u"\npassword_file = "{d}/none.pw"\n', ("none.pw",)),
    ("password-file-non-utf8", '[mqtt]\nusername = "u"\npassword_file = "{d}/bad.pw"\n', ("bad.pw", "UTF-8")),
    ("password-file-empty", '[mqtt]\nusername = "u"\npassword_file = "{d}/empty.pw"\n', ("empty.pw", "empty")),
    ("password-file-two-lines", '[mqtt]\nusername = "u"\npassword_file = "{d}/two.pw"\n', ("two.pw", "line")),
    ("password-file-is-dir", '[mqtt]\nusername = "u"\npassword_file = "{d}"\n', ("password_file",)),
    ("tls-without-ca", "[mqtt]\ntls = true\n", ("mqtt.tls", "ca_file")),
    ("tls-ca-empty", '[mqtt]\ntls = true\nca_file = "{d}/empty.pem"\n', ("ca_file", "empty.pem")),
    ("tls-ca-garbage", '[mqtt]\ntls = true\nca_file = "{d}/garbage.pem"\n', ("ca_file", "garbage.pem")),
    ("tls-ca-missing", '[mqtt]\ntls = true\nca_file = "{d}/none.pem"\n', ("ca_file", "none.pem")),
    ("tls-ca-binary", '[mqtt]\ntls = true\nca_file = "{d}/bad.pw"\n', ("ca_file", "bad.pw")),
    ("tls-cert-without-key", '[mqtt]\ntls = true\nca_file = "{d}/pki/ca.crt"\ncert_file = "{d}/pki/client.crt"\n',
     ("cert_file", "key_file")),
    ("tls-cert-garbage", '[mqtt]\ntls = true\nca_file = "{d}/pki/ca.crt"\ncert_file = "{d}/garbage.pem"\n'
     'key_file = "{d}/pki/client.key"\n', ("cert_file", "garbage.pem")),
    ("tls-key-garbage", '[mqtt]\ntls = true\nca_file = "{d}/pki/ca.crt"\ncert_file = "{d}/pki/client.crt"\n'
     'key_file = "{d}/garbage.pem"\n', ("key_file", "garbage.pem")),
    ("tls-key-empty", '[mqtt]\ntls = true\nca_file = "{d}/pki/ca.crt"\ncert_file = "{d}/pki/client.crt"\n'
     'key_file = "{d}/empty.pem"\n', ("key_file", "empty.pem")),
    ("tls-key-other-cert", '[mqtt]\ntls = true\nca_file = "{d}/pki/ca.crt"\ncert_file = "{d}/pki/client.crt"\n'
     'key_file = "{d}/pki/server.key"\n', ("cert_file", "key_file")),
    ("tls-key-encrypted", '[mqtt]\ntls = true\nca_file = "{d}/pki/ca.crt"\ncert_file = "{d}/pki/client.crt"\n'
     'key_file = "{d}/pki/client_enc.key"\n', ("key_file", "passphrase")),
    ("min-above-max-duration", "[trigger]\nmin_duration_s = 5\nmax_duration_s = 1\n", ("min_duration_s",)),
    ("lta-below-sta", "[trigger]\nsta_s = 0.5\nlta_s = 0.4\n", ("trigger.lta_s", "0.4")),
    ("highpass-above-lowpass", "[trigger]\nhighpass_hz = 500\nlowpass_hz = 100\n", ("trigger.highpass_hz", "500")),
    ("coincidence-above-board", "[trigger]\ncoincidence = 3\n", ("trigger.coincidence", "3", "1 channel")),
    ("homeassistant-with-sparkplug", '[mqtt]\nhomeassistant_discovery = true\nmode = "sparkplug"\n',
     ("mqtt.homeassistant_discovery", "sparkplug")),
    ("natural-hz-accelerometer", '[stream]\ninstrument = "accelerometer"\nnatural_hz = 4.5\n',
     ("stream.natural_hz", "accelerometer")),
    ("sensitivity-below-natural-hz", "[stream]\nnatural_hz = 60\nsensitivity_hz = 100\n",
     ("stream.sensitivity_hz", "100", "natural_hz")),
]
for cid, text, extra in CONFIG_TEXTS:
    needs = "openssl" if "{d}/pki" in text else ""
    state = "{d}/state-1ch" if cid == "coincidence-above-board" else None
    case(f"config-{cid}", *RUN, config=text if state is None else f'[node]\nstate_dir = "{state}"\n' + text,
         expect=extra, needs=needs)
case("config-missing", "run", "--config", "{d}/none.toml", expect=("none.toml", "no such"))
case("config-is-dir", "run", "--config", "{d}", expect=("cannot read",))
case("config-binary", "run", "--config", "{d}/bad.pw", expect=("bad.pw",))


# --------------------------------------------------------------------------- the world the cases run in
def _toml_base(d: Path, model: Path, port: int) -> dict[str, dict[str, str]]:
    return {"node": {"site": '"bad-input"', "node": '"n1"', "state_dir": json.dumps(str(d / "state"))},
            "model": {"path": json.dumps(str(model))},
            "mqtt": {"host": '"127.0.0.1"', "port": str(port)}}


def render_config(text: str, d: Path, model: Path, port: int) -> str:
    """The base config with the case's sections' keys replaced or added ({d} filled in); a text starting
    with ``#raw`` is the whole file as written."""
    if text.startswith("#raw\n"):
        return text.format(d=d)
    sections = _toml_base(d, model, port)
    extra: list[str] = []
    current = None
    for line in text.format(d=d).splitlines():
        if line.startswith("[") and line.rstrip().endswith("]") and "=" not in line:
            current = line.strip()[1:-1]
            sections.setdefault(current, {})
        elif "=" in line and current is not None:
            key, _, value = line.partition("=")
            sections[current][key.strip()] = value.strip()
        else:
            extra.append(line)  # malformed on purpose: kept as written
    body = "\n".join(extra) + "\n"
    for name, table in sections.items():
        body += f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in table.items())
    return body


def _windows(path: Path, wav: np.ndarray, fs: float, **extra) -> None:
    write_npz(path, {"waveforms": wav.astype(np.float32), "fs": np.float64(fs),
                     "labels": np.array(["noise"] * len(wav)), **extra})


def _stream(path: Path, data: np.ndarray, fs: float, start: str = "2026-01-01T00:00:00Z", channels=None) -> None:
    write_npz(path, {"data": data.astype(np.float32), "fs": np.float64(fs), "start_time": np.asarray(start),
                     "channels": np.array(channels if channels is not None else ["Z", "N", "E"][:data.shape[0]])})


def _openssl_pki(d: Path) -> bool:
    if shutil.which("openssl") is None:
        return False
    from test_mqtt_publisher import make_certificates

    make_certificates(d)
    subprocess.run(["openssl", "pkey", "-in", "client.key", "-out", "client_enc.key", "-aes256", "-passout",
                    "pass:secret"], cwd=d, check=True, capture_output=True, timeout=60)
    return True


def build_world(d: Path) -> dict:
    """Every file the cases refer to, under ``d``; returns what is available (openssl)."""
    rng = np.random.default_rng(0)
    model = shipped_model()
    (d / "out").mkdir()
    (d / "root").mkdir()
    _windows(d / "ok.npz", rng.normal(size=(2, 3, 4096)), 4000)
    _windows(d / "short.npz", rng.normal(size=(2, 3, 10)), 4000)
    x = rng.normal(size=(2, 3, 4096))
    x[0, 0, 5] = np.nan
    _windows(d / "nan.npz", x, 4000)
    x = rng.normal(size=(2, 3, 4096))
    x[1, 1, :] = np.inf
    _windows(d / "inf.npz", x, 4000)
    for name, fs in (("fsbig", 1e300), ("fstiny", 1e-300), ("fs0", 0.0)):
        _windows(d / f"{name}.npz", rng.normal(size=(2, 3, 4096)), fs)
    _windows(d / "low500.npz", rng.normal(size=(2, 3, 4096)), 500)
    write_npz(d / "nowave.npz", {"fs": np.float64(4000)})
    write_npz(d / "wave2d.npz", {"waveforms": np.zeros((3, 4096), np.float32), "fs": np.float64(4000)})
    write_npz(d / "wave_int.npz", {"waveforms": np.zeros((1, 3, 4096), np.int32), "fs": np.float64(4000)})
    write_npz(d / "empty_ch.npz", {"waveforms": np.zeros((1, 0, 4096), np.float32), "fs": np.float64(4000)})
    write_npz(d / "nolabels.npz", {"waveforms": np.zeros((1, 3, 4096), np.float32), "fs": np.float64(4000)})
    np.savez(d / "pickled.npz", waveforms=np.array([{"a": 1}], dtype=object), fs=np.float64(4000))
    (d / "garbage.npz").write_bytes(b"PK\x03\x04 not really a zip" * 10)
    (d / "garbage.tar.gz").write_bytes(b"\x1f\x8b not a gzip" * 10)
    _stream(d / "stream_ok.npz", rng.normal(size=(3, 40000)) * 1e-9, 4000)
    for name, value in (("nan", np.nan), ("inf", np.inf)):
        x = rng.normal(size=(3, 40000)) * 1e-9
        x[1, 20000:20010] = value
        _stream(d / f"stream_{name}.npz", x, 4000)
    _stream(d / "stream_1ch.npz", rng.normal(size=(1, 40000)) * 1e-9, 4000)
    _stream(d / "stream_fs1.npz", rng.normal(size=(3, 100)), 1.0)
    _stream(d / "stream_fsbig.npz", rng.normal(size=(3, 100)), 1e300)
    _stream(d / "stream_500.npz", rng.normal(size=(3, 5000)), 500.0)
    _stream(d / "stream_badtime.npz", rng.normal(size=(3, 100)), 4000, start="yesterday")
    _stream(d / "stream_chans.npz", rng.normal(size=(3, 100)), 4000, channels=["Z"])
    write_npz(d / "stream_nodata.npz", {"fs": np.float64(4000)})
    # Labels and records for dataset import.
    (d / "labels.csv").write_text("file,start_time,label\nrec.csv,2026-01-01T00:00:01Z,blast\n")
    (d / "binary.csv").write_bytes(bytes(range(256)) * 4)
    (d / "empty.csv").write_text("")
    (d / "labels_badlabel.csv").write_text("file,start_time,label\nrec.csv,2026-01-01T00:00:01Z,rockfal\n")
    (d / "labels_badtime.csv").write_text("file,start_time,label\nrec.csv,yesterday,blast\n")
    n = 3 * 4000
    for name, fill in (("nan", ""), ("inf", "inf")):
        rows = "\n".join(f"{fill},{fill},{fill}" for _ in range(n))
        (d / f"rec_{name}.csv").write_text(f"# fs=4000\n# start_time=2026-01-01T00:00:00Z\nZ,N,E\n{rows}\n")
        (d / f"labels_{name}.csv").write_text(f"file,start_time,label\nrec_{name}.csv,2026-01-01T00:00:01Z,blast\n")
    (d / "rec_garbage.csv").write_text("# fs=4000\n# start_time=2026-01-01T00:00:00Z\nZ,N,E\n1,2,x\n")
    (d / "labels_garbage.csv").write_text("file,start_time,label\nrec_garbage.csv,2026-01-01T00:00:01Z,blast\n")
    rows = "\n".join("0.1,0.2,0.3" for _ in range(n))
    (d / "rec.csv").write_text(f"# fs=4000\n# start_time=2026-01-01T00:00:00Z\nZ,N,E\n{rows}\n")
    (d / "train.toml").write_text("[data]\n")
    # Secrets and certificates.
    (d / "bad.pw").write_bytes(b"\xff\xfe\xfa\n")
    (d / "good.pw").write_text("s3cret\n")
    (d / "empty.pw").write_text("\n")
    (d / "two.pw").write_text("one\ntwo\n")
    (d / "garbage.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n")
    (d / "empty.pem").write_text("")
    (d / "garbage.toml").write_text("[node\n")
    for p in d.glob("*.pw"):
        p.chmod(0o600)
    openssl = _openssl_pki(d / "pki")
    # Models: a wrong card hash, a files entry that disagrees, a self-test failure, garbage parts.
    models = d / "models"
    models.mkdir()
    model_variant(model, models / "sha_bad", sha256="0" * 64)
    card = json.loads((model / "model_card.json").read_text())
    model_variant(model, models / "files_bad", files={"model.tflite": "1" * 64})
    model_variant(model, models / "selftest_bad", version="9.9.9", classes=list(reversed(card["classes"])))
    bad = model_variant(model, models / "card_garbage")
    (bad / "model_card.json").write_text("{not json")
    bad = model_variant(model, models / "card_nokey")
    (bad / "model_card.json").write_text(json.dumps({k: v for k, v in card.items() if k != "temperature"}))
    bad = model_variant(model, models / "tflite_garbage")
    (bad / "model.tflite").write_bytes(b"TFL3" + bytes(1000))
    c = json.loads((bad / "model_card.json").read_text())
    from edge.gateway.model import sha256_file

    c["sha256"] = sha256_file(bad / "model.tflite")
    (bad / "model_card.json").write_text(json.dumps(c))
    # A board recorded as uniaxial (stopewatch doctor's board.json) for the coincidence case.
    (d / "state-1ch").mkdir()
    (d / "state-1ch" / "board.json").write_text(json.dumps({"fs": 4000.0, "channels": 1, "source": "test"}))
    return {"openssl": openssl}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad-input")
    have = build_world(d)
    port = free_port()  # nothing listens there: a config that were accepted could not reach any broker
    model = shipped_model()
    (d / "good.toml").write_text(render_config("", d, model, port))
    return {"d": d, "model": model, "port": port, **have}


def _argv(c: Case, world: dict, config: Path | None) -> list[str]:
    values = {"d": world["d"], "model": world["model"], "cfg": world["d"] / "good.toml", "config": config}
    return [a.format(**values) for a in c.argv]


@pytest.fixture(scope="module")
def results(world, tmp_path_factory):
    """Every runnable case's outcome, run once through tests/cli_batch.py."""
    d = world["d"]
    cfg_dir = d / "configs"
    cfg_dir.mkdir()
    batch = []
    for i, c in enumerate(CASES):
        if c.needs and not world.get(c.needs):
            continue
        config = None
        if c.config is not None:
            config = cfg_dir / f"case{i}.toml"
            config.write_text(render_config(c.config, d, world["model"], world["port"]))
        batch.append({"id": c.id, "argv": _argv(c, world, config), "timeout": CASE_TIMEOUT})
    work = tmp_path_factory.mktemp("batch")
    (work / "cases.json").write_text(json.dumps(batch))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, str(REPO / "tests" / "cli_batch.py"), str(work / "cases.json"),
                           str(work / "results.json")], cwd=d, env=env, capture_output=True, text=True,
                          timeout=CASE_TIMEOUT * 3 + 20 * len(batch))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((work / "results.json").read_text())


def error_line(stderr: str) -> str:
    """The one-line error: the last line that says ``error:``."""
    lines = [line for line in stderr.splitlines() if "error:" in line]
    return lines[-1] if lines else ""


def test_corpus_is_large_and_ids_are_unique():
    assert len(CASES) >= 250, len(CASES)
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_in_one_line(c: Case, results, world):
    if c.needs and not world.get(c.needs):
        pytest.skip(f"needs {c.needs} (apt-get install {c.needs}) to make the files of this case")
    r = results[c.id]
    assert not r["timed_out"], f"still running after {CASE_TIMEOUT:g} s (accepted, or hangs): {r['stderr'][-500:]}"
    assert "Traceback" not in r["stderr"], r["stderr"][-2000:]
    assert r["code"] == c.code, f"exit {r['code']}, expected {c.code}: {r['stderr'][-800:]}"
    if c.expect and c.table:
        missing = [s for s in c.expect if s not in r["stdout"]]
        assert not missing, f"{missing} not in the table: {r['stdout'][-1500:]}"
    elif c.expect:
        line = error_line(r["stderr"])
        assert line, f"no error line in: {r['stderr'][-800:]}"
        missing = [s for s in c.expect if s not in line]
        assert not missing, f"{missing} not named in: {line}"


def test_the_base_config_is_valid(world):
    """The config cases differ from a valid config by their mutation alone."""
    from edge.gateway.config import load_config

    cfg = load_config(world["d"] / "good.toml")
    assert cfg.mqtt.port == world["port"]


# The batch runner against ``python -m edge.cli`` itself, on cases of each kind.
SAMPLE = ("gen--fs=nan", "classify-short", "config-trigger.sta_s=1e-5", "install--instance=../../etc",
          "minstall-selftest-fails")


@pytest.mark.parametrize("cid", SAMPLE)
def test_batch_runner_matches_python_m(cid, results, world):
    c = next(c for c in CASES if c.id == cid)
    config = None
    if c.config is not None:
        config = world["d"] / "configs" / f"case{CASES.index(c)}.toml"
    done = subprocess.run([sys.executable, "-m", "edge.cli", *_argv(c, world, config)], cwd=world["d"],
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True,
                          timeout=CASE_TIMEOUT, stdin=subprocess.DEVNULL)
    r = results[cid]
    assert (done.returncode, error_line(done.stderr)) == (r["code"], error_line(r["stderr"]))

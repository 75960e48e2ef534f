"""``stopewatch doctor``: one table that says what is wrong on a gateway and how to fix it.

Checks, in order: config, serial (the board delivers valid frames: rate, channels, CRC error rate, and whether the
trigger stays armed on this link: the same assessment as the health message's ``link``),
model (present, matches its card, classifies the built-in test windows, fits the board), broker (reachable with the
configured TLS and credentials), clock (synchronised), disk (room for the outbox), service (systemd state).
A check that cannot run because an earlier one failed is SKIP; a check that cannot tell on this machine
says so and is WARN, never FAIL. The exit code is 1 when any check FAILs.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge.errors import UserError
from edge.field.install import USER
from edge.field.model_store import Board, card_fit, models_dir, read_board, unit_for_config, write_board
from edge.formats import read_npz
from edge.gateway.config import Config, load_config, password

PASS, FAIL, WARN, SKIP = "PASS", "FAIL", "WARN", "SKIP"
# The serial check runs before the model check: the model is checked against the board it measured.
CHECKS = ("config", "serial", "model", "broker", "clock", "disk", "service")
SELFTEST = Path(__file__).with_name("selftest") / "windows.npz"  # 4 kHz, 1.024 s: the high-rate family
SELFTEST_LOW = SELFTEST.with_name("windows_low.npz")  # 500 Hz, 8.192 s, onset 2 s in: the low-rate family
CRC_ERROR_LIMIT = 0.01  # more than 1 % of frames failing CRC: cabling, grounding or baud rate
MIN_FREE_BYTES = 100 * 2**20


@dataclass
class Result:
    """One row of the table."""

    check: str
    status: str
    detail: str
    fix: str = ""


# --------------------------------------------------------------------------- built-in test windows
def selftest_windows(model_fs: float = 4000.0) -> tuple[np.ndarray, np.ndarray, float]:
    """(waveforms, labels, fs) of the built-in labelled test windows (one clear window per class) of the
    family of a model at ``model_fs``: a low-rate model's 8 s window cannot be fed 1 s high-rate records."""
    from edge.gateway.model import HIGH_RATE_FAMILY_HZ
    z = read_npz(SELFTEST_LOW if model_fs < HIGH_RATE_FAMILY_HZ else SELFTEST)
    return z["waveforms"], z["labels"].astype(str), float(z["fs"])


def run_selftest(classifier) -> dict:
    """Classify the built-in windows; returns per-window results, how many were right and ms per window."""
    waves, labels, fs = selftest_windows(classifier.fs)
    if classifier.channels == 1 and waves.shape[1] > 1:
        waves = waves[:, :1]  # the vertical component of a triaxial record is a valid uniaxial record
    classifier.classify(waves[:1], fs)  # warm-up: the first invoke allocates
    t0 = time.perf_counter()
    results = classifier.classify(waves, fs)
    ms = (time.perf_counter() - t0) * 1e3 / len(waves)
    rows = [{"expected": str(want), "label": r.label, "confidence": r.confidence}
            for want, r in zip(labels, results, strict=True)]
    return {"windows": rows, "right": sum(r["expected"] == r["label"] for r in rows), "total": len(rows),
            "ms_per_window": round(ms, 3)}


# --------------------------------------------------------------------------- individual checks
def check_config(path: str) -> tuple[Result, Config | None]:
    try:
        cfg = load_config(path)
    except UserError as exc:
        return Result("config", FAIL, str(exc), f"edit {path} (every key is explained in "
                      "edge/stopewatch.example.toml) or re-run stopewatch install"), None
    detail = (f"{path}: site {cfg.node.site}, node {cfg.node.node}, board {cfg.board.port}, "
              f"broker {cfg.mqtt.host}:{cfg.mqtt.port}")
    readable = readable_secrets(cfg)
    if readable:
        return Result("config", WARN, f"{detail}; {'; '.join(text for text, _ in readable)}",
                      "; ".join(fix for _, fix in readable)), cfg
    return Result("config", PASS, detail), cfg


def readable_secrets(cfg: Config) -> list[tuple[str, str]]:
    """(problem, fix) for each secret file (mqtt.password_file, mqtt.key_file) that users other than its
    owner can read: group or other read bits, as a 0644 file has."""
    out = []
    for key in ("password_file", "key_file"):
        path = getattr(cfg.mqtt, key)
        if not path:
            continue
        try:
            mode = os.stat(path).st_mode
        except OSError:
            continue  # the config check has already refused a missing file
        who = [name for bit, name in ((0o040, "its group"), (0o004, "every user")) if mode & bit]
        if who:
            out.append((f"mqtt.{key} {path} is readable by {' and '.join(who)} (mode {mode & 0o777:04o})",
                        f"chmod 600 {path} (and chown it to the daemon's user: chown {USER} {path})"))
    return out


def check_model(cfg: Config, board: Board | None) -> Result:
    from edge.gateway.model import Classifier

    path = cfg.model.path
    try:
        clf = Classifier(path, num_threads=cfg.model.threads)
    except UserError as exc:
        text = str(exc)
        fix = ("install a model: stopewatch model install DIR" if "no such file" in text
               else "reinstall the model (stopewatch model install DIR) or go back to the previous one "
                    "(stopewatch model rollback)")
        return Result("model", FAIL, text, fix)
    card = clf.card
    name = f"{card['name']} {card['version']} ({card['sha256'][:12]})"
    problems = card_fit(card, board, cfg.trigger.pre_s)  # first: a model for another board is the news
    fatal = [p.text for p in problems if p.fatal]
    if fatal:
        fixes = [p.fix for p in problems if p.fatal and p.fix]
        return Result("model", FAIL, f"{name} does not fit: {'; '.join(fatal)}",
                      "; ".join(fixes) or "install the model made for this board (models/uniaxial for 1 "
                      "channel, models/triaxial for 3) with stopewatch model install")
    test = run_selftest(clf)
    if test["right"] < test["total"]:
        wrong = ", ".join(f"{w['expected']} -> {w['label']}" for w in test["windows"] if w["label"] != w["expected"])
        return Result("model", FAIL, f"{name} misclassifies built-in test windows: {wrong}",
                      "this model or the interpreter is broken on this gateway: stopewatch model rollback")
    detail = (f"{name}: {test['right']}/{test['total']} test windows right, {test['ms_per_window']:.1f} ms/window"
              + ("" if board else "; board rate/channels not yet measured"))
    store_current = models_dir(cfg.node.state_dir) / "current"
    if Path(path).absolute() != store_current.absolute():
        return Result("model", WARN, f"{detail}; model.path is {path}, not the model store's {store_current}",
                      f"set model.path = \"{store_current}\" so that stopewatch model install/rollback apply")
    if problems:
        return Result("model", WARN, f"{detail}; {'; '.join(p.text for p in problems)}",
                      "adjust [trigger] in the config as stated")
    return Result("model", PASS, detail)


def check_serial(cfg: Config, seconds: float, service_active: bool) -> tuple[Result, Board | None]:
    from edge.gateway.link import ArmTracker, LinkCounts, assess_link
    from firmware_bridge.decoder import FrameDecoder
    from firmware_bridge.reader import is_replay_file, open_reader
    from firmware_bridge.textmode import TextDecoder

    b = cfg.board
    if service_active:
        return Result("serial", SKIP, f"the service is reading {b.port}; a second reader would steal its data",
                      "read frames/crc_errors in the .../health topic, or stop the service first "
                      "(systemctl stop stopewatch) and run doctor again"), None
    url = b.port
    if "://" not in url and not os.path.exists(url):
        return Result("serial", FAIL, f"no device {url}",
                      "check the USB cable and board power; find the device in ls -l /dev/serial/by-id/ and set "
                      "board.port"), None
    if "://" not in url and not is_replay_file(url) and not os.access(url, os.R_OK | os.W_OK):
        return Result("serial", FAIL, f"no permission to open {url}",
                      "the stopewatch user must be in the device's group (dialout): run stopewatch install, or "
                      "run doctor as root"), None
    # Open once, without the reader's reconnect loop, so that a bad port fails fast and names the error.
    if "://" not in url and not is_replay_file(url):
        try:
            import serial

            serial.serial_for_url(url, baudrate=b.baudrate, timeout=0.1).close()
        except (OSError, ValueError, serial.SerialException) as exc:
            return Result("serial", FAIL, f"cannot open {url}: {exc}",
                          "check board.port; another program may hold the port (fuser -v " + url + ")"), None
    stop = threading.Event()
    reader = open_reader(url, baudrate=b.baudrate, stop=stop, backoff_max=1.0)
    decoder = TextDecoder(fs=b.text_fs) if b.text_mode else FrameDecoder()
    samples, channels, rates = 0, set(), set()
    t0 = time.monotonic()
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    t_first = None
    arm: ArmTracker | None = None  # what the trigger would make of the stream's gaps
    try:
        for chunk in reader.chunks():
            for item in decoder.feed(chunk):
                if hasattr(item, "data"):
                    t_first = t_first or time.monotonic()
                    if arm is None:
                        arm = ArmTracker(float(item.fs), cfg.trigger.lta_s, cfg.trigger.conceal_gap_s)
                    arm.observe(item.first_sample, item.data.shape[1])
                    samples += item.data.shape[1]
                    channels.add(int(item.data.shape[0]))
                    rates.add(float(item.fs))
    finally:
        timer.cancel()
        stop.set()
    wall = time.monotonic() - t0
    st = decoder.stats.as_dict() if hasattr(decoder, "stats") else {}
    frames, crc = st.get("sample_frames", 0), st.get("crc_errors", 0)
    got = reader.stats.bytes_read
    if got == 0:
        return Result("serial", FAIL, f"{url}: no bytes in {wall:.0f} s",
                      "the board is not sending: check its power and firmware, and that board.baudrate "
                      f"({b.baudrate}) matches the board"), None
    if not samples:
        mode = "text lines" if b.text_mode else "binary frames"
        return Result("serial", FAIL, f"{url}: {got} bytes in {wall:.0f} s but no valid {mode} "
                      f"({crc} CRC errors)",
                      "check board.baudrate and board.text_mode against the board's settings, and the cable"), None
    fs = max(rates)
    chans = max(channels)
    crc_rate = crc / max(frames + crc, 1)
    rate = samples / max(time.monotonic() - t_first, 1e-3) if t_first else 0.0
    detail = (f"{url}: {frames} frames, {chans} channel(s) at {fs:g} Hz, CRC errors {crc} ({100 * crc_rate:.2f} %), "
              f"{st.get('sample_gaps', 0)} gaps")
    link = assess_link(LinkCounts(
        frames_ok=frames + st.get("status_frames", 0), frames_lost=st.get("frames_missed", 0), crc_errors=crc,
        rejected_frames=st.get("rejected_frames", 0), nonfinite_frames=st.get("nonfinite_frames", 0),
        samples_received=st.get("samples", 0), samples_missed=st.get("samples_missed", 0),
        samples_concealed=arm.samples_concealed, trigger_resets=arm.trigger_resets,
        armed_samples=arm.armed_samples, warmup_samples=arm.warmup_samples), wall)
    detail += f"; link {link.state}" + (f": {link.reason}" if link.reason else "")
    board = Board(fs, chans, f"measured by stopewatch doctor on {url}")
    if link.state == "blind":
        return Result("serial", FAIL, detail, "the trigger cannot work on this link: use a shorter or shielded "
                      "cable, check grounding and the USB connector, or lower the baud rate on both ends"), board
    if crc_rate > CRC_ERROR_LIMIT:
        return Result("serial", FAIL, detail, "too many corrupted frames: use a shorter or shielded cable, check "
                      "grounding, or lower the baud rate on both ends"), board
    if len(rates) > 1 or len(channels) > 1:
        return Result("serial", WARN, detail + f"; the board changed layout ({sorted(rates)} Hz, "
                      f"{sorted(channels)} channels)", "check the board's configuration"), board
    # Data that waited in the OS buffer arrives in a burst, so only a stream far below real time is a problem.
    if not is_replay_file(url) and wall > 1.0 and rate < 0.8 * fs:
        return Result("serial", WARN, detail + f"; only {rate:.0f} samples/s arrive",
                      "the link is slower than the board's rate: raise board.baudrate on both ends"), board
    return Result("serial", PASS, detail), board


def check_broker(cfg: Config, timeout: float = 5.0) -> Result:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    m = cfg.mqtt
    where = f"{m.host}:{m.port}" + (" (TLS)" if m.tls else "") + (f" as {m.username}" if m.username else "")
    done = threading.Event()
    outcome: dict = {}

    def on_connect(client, userdata, flags, reason_code, properties):
        outcome["rc"] = reason_code
        done.set()

    v5 = m.protocol == "5"
    # Our own client id: reusing the daemon's would disconnect the running daemon.
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"stopewatch-doctor-{cfg.node.node}-{os.getpid()}",
                         protocol=paho.MQTTv5 if v5 else paho.MQTTv311)
    client.on_connect = on_connect
    try:
        if m.username:
            client.username_pw_set(m.username, password(m))
        if m.tls:
            client.tls_set(ca_certs=m.ca_file, certfile=m.cert_file or None, keyfile=m.key_file or None,
                           cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        t0 = time.monotonic()
        client.connect(m.host, m.port, keepalive=max(5, int(timeout)))
        client.loop_start()
        done.wait(timeout)
    except ssl.SSLError as exc:
        return Result("broker", FAIL, f"{where}: TLS failed ({exc.reason or exc})",
                      "check mqtt.ca_file is the CA that signed the broker's certificate, the broker name matches "
                      "the certificate, and the client certificate/key")
    except (socket.gaierror, UnicodeError) as exc:
        return Result("broker", FAIL, f"{where}: unknown host ({exc})", "check mqtt.host and the gateway's DNS")
    except (OSError, ValueError) as exc:
        return Result("broker", FAIL, f"{where}: unreachable ({exc})",
                      "check mqtt.host/mqtt.port, the network to the surface and the firewall; events queue on "
                      "disk meanwhile")
    finally:
        client.loop_stop()
        client.disconnect()
    rc = outcome.get("rc")
    if rc is None:
        return Result("broker", FAIL, f"{where}: no answer within {timeout:g} s",
                      "the port is open but no MQTT broker answers: check mqtt.port and mqtt.tls")
    if rc.is_failure:
        return Result("broker", FAIL, f"{where}: refused ({rc})",
                      "check mqtt.username and the password in mqtt.password_file, or the client certificate, "
                      "with the broker's administrator")
    return Result("broker", PASS, f"connected to {where} in {1e3 * (time.monotonic() - t0):.0f} ms")


class _Timex(ctypes.Structure):  # struct timex (linux/timex.h) on 64-bit Linux
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
                ("time_sec", ctypes.c_long), ("time_usec", ctypes.c_long), ("tick", ctypes.c_long),
                ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
                ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
                ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
                ("_pad", ctypes.c_int * 11)]


def kernel_clock_synced() -> bool | None:
    """The kernel's NTP state via adjtimex(2) (read only): True synced, False not, None cannot tell.

    This is what timedatectl's NTPSynchronized reports; it works without systemd.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != 5  # TIME_ERROR: the clock is not synchronised (STA_UNSYNC or a failed PLL)


def check_clock() -> Result:
    fix = ("enable time sync (timedatectl set-ntp true) and give it an NTP server reachable underground "
           "(/etc/systemd/timesyncd.conf) or a GPS/PTP source; event times are wrong until then")
    exe = shutil.which("timedatectl")
    if exe is not None:
        out = subprocess.run([exe, "show", "-p", "NTPSynchronized", "--value"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip() in ("yes", "no"):
            if out.stdout.strip() == "yes":
                return Result("clock", PASS, "synchronised (timedatectl NTPSynchronized=yes)")
            return Result("clock", FAIL, "not synchronised (timedatectl NTPSynchronized=no)", fix)
    synced = kernel_clock_synced()
    if synced is None:
        return Result("clock", WARN, "unknown: neither timedatectl nor adjtimex answers here",
                      "check the time source by hand (chronyc tracking or timedatectl)")
    if synced:
        return Result("clock", PASS, "synchronised (kernel adjtimex state; timedatectl not available)")
    return Result("clock", FAIL, "not synchronised (kernel adjtimex says TIME_ERROR)", fix)


def outbox_need(cfg: Config, samples: int = 4096, channels: int = 3) -> int:
    """Bytes a full outbox takes: about 1.5 kB per event, plus the window when waveforms are published."""
    per = 1500 + (int(samples * channels * 4 * 4 / 3) if cfg.mqtt.publish_waveforms else 0)
    return cfg.outbox.max_events * per


def check_disk(cfg: Config) -> Result:
    where = cfg.outbox_path.parent
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    need = outbox_need(cfg)
    detail = (f"{usage.free / 2**30:.1f} GB free at {probe}; a full outbox ({cfg.outbox.max_events} events) needs "
              f"~{need / 2**20:.0f} MB")
    if usage.free < MIN_FREE_BYTES:
        return Result("disk", FAIL, detail, "free space on the gateway's storage (journalctl --vacuum-size=50M, "
                      "old files), or lower outbox.max_events")
    if usage.free < need:
        return Result("disk", WARN, detail, "lower outbox.max_events or use a larger SD card: a long outage would "
                      "fill the disk before the outbox bound evicts events")
    return Result("disk", PASS, detail)


def service_state(unit: str) -> str | None:
    """``systemctl is-active`` of ``unit``; None where there is no systemd."""
    exe = shutil.which("systemctl")
    if exe is None or not Path("/run/systemd/system").is_dir():
        return None
    return subprocess.run([exe, "is-active", unit], capture_output=True, text=True).stdout.strip() or "unknown"


def check_service(unit: str, state: str | None) -> Result:
    if state is None:
        return Result("service", WARN, f"unknown: systemd is not running here, cannot ask about {unit}",
                      "on the gateway: systemctl status " + unit)
    if state == "active":
        return Result("service", PASS, f"{unit} is active")
    if state == "failed":
        return Result("service", FAIL, f"{unit} failed", f"read why: journalctl -u {unit} -n 50; after the fix: "
                      f"systemctl reset-failed {unit} && systemctl start {unit}")
    return Result("service", WARN, f"{unit} is {state}", f"start it when the other checks pass: "
                  f"systemctl enable --now {unit}")


# --------------------------------------------------------------------------- the whole run
def run_checks(config: str, only: tuple[str, ...] = CHECKS, serial_seconds: float = 3.0,
               broker_timeout: float = 5.0, unit: str | None = None, record_board: bool = True,
               progress: Callable[[str], None] | None = None) -> list[Result]:
    """Run the selected checks in order; later checks are SKIP when the config is invalid."""
    unit = unit or unit_for_config(config)
    results: list[Result] = []
    say = progress or (lambda _name: None)
    say("config")
    first, cfg = check_config(config)
    if "config" in only:
        results.append(first)
    state = service_state(unit)
    board: Board | None = None
    if cfg is not None:
        try:
            board = read_board(cfg.node.state_dir)
        except UserError:
            board = None
    for name in CHECKS[1:]:
        if name not in only:
            continue
        say(name)
        if cfg is None and name != "clock" and name != "service":
            results.append(Result(name, SKIP, "needs a valid config", "fix the config first"))
            continue
        if name == "serial":
            r, measured = check_serial(cfg, serial_seconds, state == "active")
            if measured is not None:
                board = measured
                if record_board:  # `stopewatch model install` checks new models against what was measured
                    with contextlib.suppress(OSError):  # a read-only state dir only loses this record
                        write_board(cfg.node.state_dir, measured)
            results.append(r)
        elif name == "model":
            results.append(check_model(cfg, board))
        elif name == "broker":
            results.append(check_broker(cfg, broker_timeout))
        elif name == "clock":
            results.append(check_clock())
        elif name == "disk":
            results.append(check_disk(cfg))
        elif name == "service":
            results.append(check_service(unit, state))
    return results


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]


def format_table(results: list[Result], width: int = 110) -> str:
    """The one table: CHECK, RESULT, DETAIL and FIX (the fix only where something is wrong)."""
    w_check, w_status = 8, 6
    w_text = max(30, width - w_check - w_status - 4)
    lines = [f"{'CHECK':<{w_check}} {'RESULT':<{w_status}} DETAIL / FIX", "-" * width]
    for r in results:
        body = _wrap(r.detail, w_text)
        if r.fix and r.status != PASS:
            body += _wrap(f"fix: {r.fix}", w_text)
        for j, line in enumerate(body):
            lead = f"{r.check:<{w_check}} {r.status:<{w_status}}" if j == 0 else " " * (w_check + w_status + 1)
            lines.append(f"{lead} {line}")
    failed = sum(r.status == FAIL for r in results)
    lines.append("-" * width)
    lines.append("all checks passed" if not failed and all(r.status == PASS for r in results) else
                 f"{failed} check(s) failed, {sum(r.status == WARN for r in results)} warning(s)")
    return "\n".join(lines)


def doctor(config: str, only: tuple[str, ...] = CHECKS, as_json: bool = False, **kwargs) -> tuple[str, int]:
    """Run the checks; (printed output, exit code: 1 when a check failed)."""
    unknown = [c for c in only if c not in CHECKS]
    if unknown:
        raise UserError(f"doctor: unknown check {unknown[0]!r}; allowed: {', '.join(CHECKS)}")
    results = run_checks(config, only, **kwargs)
    code = 1 if any(r.status == FAIL for r in results) else 0
    if as_json:
        return json.dumps([asdict(r) for r in results], indent=1), code
    return format_table(results), code

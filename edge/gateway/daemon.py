"""``stopewatch run``: the gateway daemon.

One reader thread turns the serial line into byte chunks; the main thread decodes
them into sample blocks (firmware_bridge), runs the pipeline (triggers, windows,
classification), writes each event to the durable outbox and hands it to the MQTT
publisher, and sends health messages and the systemd watchdog. It starts and
classifies with no broker and no board at all, and says so in its status and logs.

Signals: SIGTERM/SIGINT drain (open windows are classified, the outbox is flushed
for a few seconds, `stopped` is published) and exit 0; SIGHUP reloads the
configuration's trigger and model sections atomically (a model that fails to load
leaves the old one running).

A model that does not serve the board's rate (its card's ``board_rates_hz``) is refused when the rate
becomes known, at the first block: the daemon logs one ERROR line, classifies nothing, and keeps running
with the refusal in its health messages (``model_refused``) and in ``systemctl status``. It does not exit:
an exit would restart into the same refusal until systemd's restart limit, and the surface would see only
an offline node, where it now sees why; and once the right model is installed (``stopewatch model
install`` reloads the daemon) classification starts without a restart.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np

from edge import package_version
from edge.errors import UserError
from edge.field.sdnotify import Notifier
from edge.gateway.config import Config, load_config
from edge.gateway.health import percentile, rss_mb
from edge.gateway.messages import EventMessenger, new_boot_id
from edge.gateway.model import Classifier, rate_refusal
from firmware_bridge.clock import utc_now

if TYPE_CHECKING:  # the pipeline (the trigger DSP) is imported after READY
    from edge.gateway.pipeline import Pipeline, PipelineEvent
    from firmware_bridge.decoder import Decoder, SampleBlock, StatusReport

log = logging.getLogger("stopewatch")
EVENT_LOG_PER_S = 1.0  # journal lines per second for events, at most
CHUNK_QUEUE = 20_000  # byte chunks waiting for the pipeline; beyond this we drop and count (never block the port)


def channel_names(n: int) -> list[str]:
    """Triaxial boards are Z, N, E; a single channel is Z; anything else is numbered."""
    return ["Z", "N", "E"] if n == 3 else ["Z"] if n == 1 else [f"ch{i}" for i in range(n)]


class Daemon:
    """The gateway service. ``config_path`` is re-read on SIGHUP."""

    def __init__(self, config_path: str, notifier: Notifier | None = None):
        from edge.gateway.mqtt import Publisher  # paho is only needed by the daemon itself

        self.config_path = config_path
        self.cfg: Config = load_config(config_path)
        self.notifier = notifier or Notifier()
        self.stop_event = threading.Event()
        self._reload = threading.Event()
        self.started = time.monotonic()
        self.boot_id = new_boot_id()
        self.classifier = Classifier(self.cfg.model.path, num_threads=self.cfg.model.threads)
        try:
            self.cfg.outbox_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{config_path}: cannot create the outbox directory {self.cfg.outbox_path.parent} "
                            f"({exc.strerror}); set node.state_dir or outbox.path to a writable place") from None
        self.publisher = Publisher(self.cfg, self.boot_id, package_version(), self._model_status())
        self.messenger = EventMessenger(self.cfg.node.site, self.cfg.node.node, self.boot_id,
                                        self.classifier.identity)
        self.pipeline: Pipeline | None = None
        self.clock = None
        self.decoder: Decoder | None = None
        self.board_status: dict | None = None  # the board's latest status frame, for health
        self.chunks: queue.Queue[bytes] = queue.Queue(maxsize=CHUNK_QUEUE)
        self.dropped_chunks = 0
        self.serial_state = "not connected"
        self.events_out = 0
        self.exit_code = 0  # 1 when a worker thread died
        self._event_log_at = -1e9
        self._events_not_logged = 0
        self._worker_failures: dict[str, str] = {}
        self.model_refused: str | None = None  # why the model does not serve the board (None: it does)
        self.samples_refused = 0  # samples per channel not classified because of that
        self._events_logged = 0
        self._cpu0 = (time.monotonic(), sum(os.times()[:2]))

    def _model_status(self) -> dict:
        return {"name": self.classifier.card["name"], "sha256": self.classifier.card["sha256"]}

    # ------------------------------------------------------------------ workers
    def _guarded(self, name: str, target) -> None:
        """Run a worker thread's body; if it raises, log the cause and record it for the main loop."""
        try:
            target()
        except Exception as exc:
            self._worker_failures[name] = f"{type(exc).__name__}: {exc}"
            log.exception("worker thread %r died", name)

    def dead_workers(self) -> dict[str, str]:
        """Worker threads that died, with their cause: the daemon must not look healthy without them."""
        return {**self._worker_failures, **self.publisher.dead_workers()}

    # ------------------------------------------------------------------ input
    def _reader_thread(self) -> None:
        from firmware_bridge.reader import open_reader

        board = self.cfg.board
        reader = open_reader(board.port, baudrate=board.baudrate, stop=self.stop_event,
                             backoff_max=board.reconnect_max_s, on_state=self._serial_state)
        for data in reader.chunks():
            try:
                self.chunks.put_nowait(data)
            except queue.Full:
                self.dropped_chunks += 1  # the decoder will report the hole as a gap
        if not self.stop_event.is_set():
            log.info("board input %s ended", board.port)

    def _serial_state(self, state: str, detail: str) -> None:
        self.serial_state = state
        self.notifier.status(f"serial {state}; {self.publisher.status_line()}")

    def _take_chunks(self, timeout: float, limit: int = 1 << 20) -> bytes:
        """All bytes waiting (up to ``limit``), or the first to arrive within ``timeout``."""
        parts: list[bytes] = []
        size = 0
        try:
            parts.append(self.chunks.get(timeout=timeout) if timeout > 0 else self.chunks.get_nowait())
            size = len(parts[0])
            while size < limit:
                parts.append(self.chunks.get_nowait())
                size += len(parts[-1])
        except queue.Empty:
            pass
        return b"".join(parts)

    def _process(self, data: bytes) -> None:
        """Decode and feed the pipeline, joining contiguous frames into one block (fewer, larger calls)."""
        from firmware_bridge.decoder import StatusReport, join_contiguous

        if not data:
            return
        blocks = []
        for item in self.decoder.feed(data):
            if isinstance(item, StatusReport):
                self._on_status(item)
            else:
                blocks.append(item)
        for block in join_contiguous(blocks):
            self._on_block(block)

    def _on_status(self, report: StatusReport) -> None:
        """Keep the board's latest status for health; log when what it says changes."""
        status = {"temperature_c": round(report.temperature_c, 1), "supply_v": round(report.supply_v, 2),
                  "buffer_overruns": report.buffer_overruns, "gain": report.gain.tolist(),
                  "clipped": report.clipped.tolist()}
        last = self.board_status or {}
        if (last.get("gain"), last.get("buffer_overruns")) != (status["gain"], status["buffer_overruns"]):
            log.info("board status: %.1f degC, %.2f V, gain %s, %d buffer overruns, clipped %s",
                     report.temperature_c, report.supply_v, status["gain"], report.buffer_overruns,
                     status["clipped"])
        self.board_status = status

    def _make_decoder(self) -> Decoder:
        from firmware_bridge.decoder import FrameDecoder
        from firmware_bridge.textmode import TextDecoder

        return TextDecoder(fs=self.cfg.board.text_fs) if self.cfg.board.text_mode else FrameDecoder()

    def _refuses(self, fs: float) -> bool:
        """True (logged once, shown in status and health) when the model does not serve a board at ``fs``."""
        refusal = rate_refusal(self.classifier.card, fs)
        if refusal != self.model_refused:
            if refusal is not None:
                log.error("not classifying: %s", refusal)
                self.notifier.status(f"REFUSED: {refusal}")
            elif self.model_refused is not None:
                log.info("model %s serves the board at %g Hz: classifying", self.classifier.card["name"], fs)
        self.model_refused = refusal
        return refusal is not None

    def _on_block(self, block: SampleBlock) -> None:
        from edge.gateway.pipeline import Pipeline
        from firmware_bridge.clock import SampleClock

        if self._refuses(block.fs):
            if self.pipeline is not None:  # the board changed to a rate this model does not serve
                self._emit(self.pipeline.flush())
                self.pipeline = None
            self.samples_refused += block.data.shape[1]
            return
        fresh = self.pipeline is None or self.pipeline.fs != block.fs \
            or len(self.pipeline.channel_names) != block.channels \
            or (block.reset and self.pipeline.position is not None and block.first_sample < self.pipeline.position)
        if fresh:  # first data, or the board restarted with another rate/layout/index
            if self.pipeline is not None:
                self._emit(self.pipeline.flush())
            self.clock = SampleClock(block.fs)
            self.pipeline = Pipeline(self.cfg.trigger, self.classifier, block.fs, channel_names(block.channels),
                                     lambda i: datetime.fromtimestamp(self.clock.time_ns(i) / 1e9, UTC))
            log.info("board streaming %d channels at %g Hz", block.channels, block.fs)
        self.clock.observe(block.first_sample, block.data.shape[1], board_ns=block.timestamp_ns,
                           host_ns=time.time_ns())
        samples = block.data.astype(np.float32) / np.float32(self.cfg.board.counts_per_unit)
        self._emit(self.pipeline.feed(samples, block.first_sample))

    def _emit(self, events: list[PipelineEvent]) -> None:
        for event in events:
            msg = self.messenger.message(event)
            self.publisher.submit_event(msg, t_close=event.closed_at)
            w = event.window
            self.publisher.submit_waveform(msg["event_id"], event.samples, w.fs, w.start, w.channels,
                                           self.cfg.board.units, msg["label"])
            self.events_out += 1
            self._log_event(msg)

    def _log_event(self, msg: dict) -> None:
        """One journal line per event, at most ``EVENT_LOG_PER_S`` a second (a drilling shift must not fill
        the journal); lines held back are counted in the next one."""
        now = time.monotonic()
        if now - self._event_log_at < 1.0 / EVENT_LOG_PER_S:
            self._events_not_logged += 1
            return
        more = f" (+{self._events_not_logged} not logged)" if self._events_not_logged else ""
        log.info("event %s: %s %.2f at %s, PPV %.3g%s", msg["seq"], msg["label"], msg["confidence"],
                 msg["trigger_time"], msg["features"]["ppv"], more)
        self._event_log_at, self._events_not_logged = now, 0

    # ------------------------------------------------------------------ control
    def _reload_now(self) -> None:
        from edge.gateway.pipeline import Pipeline

        try:
            cfg = load_config(self.config_path)
            classifier = Classifier(cfg.model.path, num_threads=cfg.model.threads)
        except UserError as exc:
            log.error("reload refused, keeping the running configuration and model: %s", exc)
            return
        if self.pipeline is not None and (refusal := rate_refusal(classifier.card, self.pipeline.fs)):
            log.error("reload refused, keeping the running model: %s", refusal)
            return
        if self.pipeline is not None:
            if cfg.trigger != self.cfg.trigger:
                self._emit(self.pipeline.flush())
                self.pipeline = Pipeline(cfg.trigger, classifier, self.pipeline.fs, self.pipeline.channel_names,
                                         self.pipeline.clock)
            else:
                self.pipeline.classifier = classifier
        if (cfg.mqtt, cfg.node, cfg.board) != (self.cfg.mqtt, self.cfg.node, self.cfg.board):
            log.warning("reload: [mqtt], [node] and [board] changes take effect at the next restart")
        self.cfg.trigger, self.cfg.model = cfg.trigger, cfg.model
        self.classifier = classifier
        self.messenger.model = classifier.identity
        self.publisher.model = self._model_status()
        log.info("reloaded: model %s %s", classifier.card["name"], classifier.card["sha256"][:12])

    def _warm_up(self) -> None:
        """Load the trigger DSP and run the interpreter once, right after READY, before data arrives."""
        import edge.gateway.pipeline  # noqa: F401

        c = self.classifier
        c.classify(np.zeros((1, c.channels, c.samples), dtype=np.float32), c.params.fs)

    def health(self) -> dict:
        """The periodic health message."""
        now = time.monotonic()
        cpu = sum(os.times()[:2])
        t_prev, cpu_prev = self._cpu0
        self._cpu0 = (now, cpu)
        stats = self.pipeline.stats if self.pipeline is not None else None
        stream_s = stats.samples_in / self.pipeline.fs if stats else 0.0
        dec = self.decoder.stats.as_dict() if self.decoder is not None else {}
        return {
            "ts": utc_now(), "boot_id": self.boot_id, "uptime_s": round(now - self.started, 1),
            "serial": self.serial_state,
            "samples_in": stats.samples_in if stats else 0,
            "frames_ok": dec.get("sample_frames", 0), "crc_errors": dec.get("crc_errors", 0),
            "gaps": dec.get("sample_gaps", 0), "samples_missed": dec.get("samples_missed", 0),
            "resyncs": dec.get("resyncs", 0), "bad_lines": dec.get("bad_lines", 0),
            "rejected_frames": dec.get("rejected_frames", 0), "nonfinite_frames": dec.get("nonfinite_frames", 0),
            "dropped_chunks": self.dropped_chunks, "board": self.board_status,
            "model_refused": self.model_refused, "samples_refused": self.samples_refused,
            "triggers": stats.triggers if stats else 0, "events": self.events_out,
            "short_triggers": stats.short_triggers if stats else 0,
            "windows_with_gaps": stats.windows_with_gaps if stats else 0,
            "backlog": self.publisher.outbox.depth(),
            "evicted": dict(self.publisher.outbox.evictions),
            "inference_ms": {"p50": percentile(list(stats.inference_ms), 50) if stats else None,
                             "p99": percentile(list(stats.inference_ms), 99) if stats else None},
            # How much faster than real time the pipeline runs on this gateway: the headroom left.
            "realtime_factor": round(stream_s / stats.processing_s, 1) if stats and stats.processing_s else None,
            "input_queue": self.chunks.qsize(),
            "cpu_percent": round(100 * (cpu - cpu_prev) / max(now - t_prev, 1e-6), 1),
            "rss_mb": round(rss_mb(), 1),
            "mqtt": self.publisher.stats(),
            "dead_workers": self.dead_workers(),
        }

    def request_stop(self, *_args) -> None:
        self.stop_event.set()

    def request_reload(self, *_args) -> None:
        self._reload.set()

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit code."""
        # The MQTT threads wait for the GIL while the pipeline runs: hand it over every 1 ms, not 5 ms,
        # so that an event's publish and PUBACK are not held up behind the next block's DSP.
        sys.setswitchinterval(0.001)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
            signal.signal(signal.SIGHUP, self.request_reload)
        self.publisher.start()
        self.decoder = self._make_decoder()
        reader = threading.Thread(target=self._guarded, args=("serial", self._reader_thread), name="serial",
                                  daemon=True)
        reader.start()
        log.info("stopewatch %s: site %s node %s, model %s, board %s, broker %s:%d", package_version(),
                 self.cfg.node.site, self.cfg.node.node, self.classifier.card["name"], self.cfg.board.port,
                 self.cfg.mqtt.host, self.cfg.mqtt.port)
        self.notifier.ready(f"running; {self.publisher.status_line()}")
        self._warm_up()  # bytes arriving meanwhile wait in the queue
        watchdog = self.notifier.watchdog_interval() or 10.0
        next_health = time.monotonic() + min(5.0, self.cfg.health.interval_s)
        next_watchdog = time.monotonic()
        while not self.stop_event.is_set():
            if dead := self.dead_workers():  # no silent half-daemon: exit, and systemd restarts us
                why = "; ".join(f"{k}: {v}" for k, v in dead.items())
                log.error("stopping: worker thread(s) died (%s); exit 1 so that systemd restarts the service", why)
                self.notifier.status(f"FAILED: {why}")
                self.exit_code = 1
                break
            self._process(self._take_chunks(timeout=0.2))
            if self._reload.is_set():
                self._reload.clear()
                self._reload_now()
            now = time.monotonic()
            if now >= next_watchdog:
                self.notifier.watchdog()  # only while this loop turns: a hung pipeline gets restarted
                next_watchdog = now + watchdog  # watchdog_interval() is already half of WatchdogSec
            if now >= next_health:  # rates, not every event: the journal must not fill up
                health = self.health()
                self.publisher.publish_health(health)
                log.info("%d events (%d since last), %d triggers, backlog %d, %s x real time, serial %s",
                         health["events"], health["events"] - self._events_logged, health["triggers"],
                         health["backlog"], health["realtime_factor"], health["serial"])
                self._events_logged = health["events"]
                self.notifier.status((f"REFUSED: {self.model_refused}; " if self.model_refused else "")
                                     + f"{self.events_out} events; serial {self.serial_state}; "
                                     f"{self.publisher.status_line()}")
                next_health = now + self.cfg.health.interval_s
        return self._shutdown()

    def _shutdown(self) -> int:
        self.notifier.stopping("draining")
        try:
            while data := self._take_chunks(timeout=0):  # what the board already sent is processed ...
                self._process(data)
            if self.pipeline is not None:
                self._emit(self.pipeline.flush())
        except Exception:  # a broken outbox after a worker died: report it, still stop cleanly
            log.exception("draining failed; events of the last blocks may not be stored")
            self.exit_code = 1
        left = self.publisher.stop(timeout=10.0)
        log.info("stopped after %d events (+%d not logged since the last event line); %d left in the outbox for "
                 "the next start", self.events_out, self._events_not_logged, left)
        return self.exit_code


def run(config_path: str) -> int:
    """Entry point of ``stopewatch run``."""
    logging.basicConfig(level=os.environ.get("STOPEWATCH_LOG", "INFO"),
                        format="%(levelname)s %(name)s: %(message)s")
    return Daemon(config_path).run()

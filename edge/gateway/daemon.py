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
from edge.gateway.archive import RingArchive, span_fields
from edge.gateway.config import LOG_LEVELS, Config, check_trigger_fit, load_config
from edge.gateway.health import percentile, rss_mb
from edge.gateway.link import ArmTracker, LinkCounts, LinkMonitor, LinkState
from edge.gateway.messages import EventContext, EventMessenger, Timing, new_boot_id
from edge.gateway.model import Classifier, rate_refusal, trigger_limits
from firmware_bridge.clock import parse_iso_utc, utc_now

if TYPE_CHECKING:  # the pipeline (the trigger DSP) is imported after READY
    from edge.gateway.pipeline import Pipeline, PipelineEvent
    from edge.gateway.streams import StreamCodes
    from firmware_bridge.clock import SampleClock
    from firmware_bridge.decoder import Decoder, SampleBlock, StatusReport

log = logging.getLogger("stopewatch")
EVENT_LOG_PER_S = 1.0  # journal lines per second for events, at most
METRICS_REFRESH_S = 5.0  # the /metrics snapshot of health is at most this old
LINK_SETTLE_S = 5.0  # the link's state is first judged (and logged) this long after the start
CHUNK_QUEUE = 20_000  # byte chunks waiting for the pipeline; beyond this we drop and count (never block the port)


def _recorded_board(cfg: Config) -> tuple[float | None, int | None]:
    """(fs, channels) of the board as ``stopewatch doctor`` measured or ``install`` declared it, if recorded."""
    from edge.field.model_store import read_board

    try:
        board = read_board(cfg.node.state_dir)
    except UserError as exc:  # a damaged record only loses the board-specific checks
        log.warning("%s", exc)
        return None, None
    return (board.fs, board.channels) if board is not None else (None, None)


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
        try:
            self.classifier = Classifier(self.cfg.model.path, num_threads=self.cfg.model.threads)
        except UserError as exc:
            raise UserError(f"{config_path}: model.path = {self.cfg.model.path!r}: {exc}") from None
        check_trigger_fit(self.cfg, *trigger_limits(self.classifier.card, *_recorded_board(self.cfg)))
        try:
            self.cfg.outbox_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{config_path}: cannot create the outbox directory {self.cfg.outbox_path.parent} "
                            f"({exc.strerror}); set node.state_dir or outbox.path to a writable place") from None
        self.sparkplug = None  # the Sparkplug B publisher, in mqtt.mode "sparkplug" or "both"
        if self.cfg.mqtt.mode != "json":
            from edge.gateway.sparkplug import SparkplugPublisher  # pysparkplug (protobuf) only when asked for

            self.sparkplug = SparkplugPublisher(self.cfg, self.boot_id, package_version(), self._model_status())
        self.publisher = self.sparkplug if self.cfg.mqtt.mode == "sparkplug" else \
            Publisher(self.cfg, self.boot_id, package_version(), self._model_status())
        # Every form the events go out in; each has its own connection and outbox (mode "both": two).
        self.publishers = [self.publisher] + ([self.sparkplug] if self.cfg.mqtt.mode == "both" else [])
        self.messenger = EventMessenger(self.cfg.node.site, self.cfg.node.node, self.boot_id,
                                        self.classifier.identity)
        self.pipeline: Pipeline | None = None
        self.clock: SampleClock | None = None
        self.codes: StreamCodes | None = None  # the board's SEED codes, once its rate and layout are known
        self._stream_key: tuple[float, int] | None = None  # (rate, channels) of the board's current stream
        self._next_sample: int | None = None
        self.archive = RingArchive(self.cfg.archive, self.cfg.archive_path) if self.cfg.archive.enabled else None
        self.metrics = None
        if self.cfg.metrics.enabled:
            from edge.gateway.metrics import MetricsServer  # prometheus-client only when asked for

            self.metrics = MetricsServer(self.cfg.metrics, self.cfg.node.site, self.cfg.node.node)
        self.decoder: Decoder | None = None
        self.board_status: dict | None = None  # the board's latest status frame, for health
        # (host time the reader got them, bytes): the arrival time is the host clock's only observation of the
        # board, so it is taken at the read, not after the queue and the pipeline's own delays.
        self.chunks: queue.Queue[tuple[int, bytes]] = queue.Queue(maxsize=CHUNK_QUEUE)
        self.dropped_chunks = 0
        self.serial_state = "not connected"
        self.events_out = 0
        self.exit_code = 0  # 1 when a worker thread died
        self._event_log_at = -1e9
        self._events_not_logged = 0
        self._worker_failures: dict[str, str] = {}
        self._thread_errors: dict[threading.Thread, str] = {}  # threads not ours (paho's) that raised
        self.model_refused: str | None = None  # why the model does not serve the board (None: it does)
        self.samples_refused = 0  # samples per channel not classified because of that
        self._events_logged = 0
        self._cpu0 = (time.monotonic(), sum(os.times()[:2]))
        self.arm: ArmTracker | None = None  # the trigger's arming across gaps, once the board's rate is known
        self.link = LinkMonitor(self.started)
        self.link_state: LinkState = self.link.update(self.started, LinkCounts())
        self._link_logged: str | None = None  # the link state last written to the journal

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

    def _thread_raised(self, args: threading.ExceptHookArgs) -> None:
        """threading.excepthook: an exception ended a thread we did not write (paho's network loop)."""
        if args.thread is not None:
            self._thread_errors[args.thread] = f"{args.exc_type.__name__}: {args.exc_value}"
        log.error("thread %r died", getattr(args.thread, "name", "?"),
                  exc_info=(args.exc_type, args.exc_value, args.exc_traceback))

    def dead_workers(self) -> dict[str, str]:
        """Worker threads that died, with their cause: the daemon must not look healthy without them."""
        dead = dict(self._worker_failures)
        for pub in self.publishers:
            prefix = "sparkplug-" if pub is self.sparkplug and pub is not self.publisher else ""
            dead.update({prefix + name: why for name, why in pub.dead_workers().items()})
        if "mqtt-network" in dead and self.publisher.network_thread in self._thread_errors:
            dead["mqtt-network"] = self._thread_errors[self.publisher.network_thread]
        return dead

    # ------------------------------------------------------------------ input
    def _reader_thread(self) -> None:
        from firmware_bridge.reader import open_reader

        board = self.cfg.board
        reader = open_reader(board.port, baudrate=board.baudrate, stop=self.stop_event,
                             backoff_max=board.reconnect_max_s, on_state=self._serial_state)
        for data in reader.chunks():
            try:
                self.chunks.put_nowait((time.time_ns(), data))
            except queue.Full:
                self.dropped_chunks += 1  # the decoder will report the hole as a gap
        if not self.stop_event.is_set():
            log.info("board input %s ended", board.port)

    def _serial_state(self, state: str, detail: str) -> None:
        self.serial_state = state
        self.notifier.status(f"serial {state}; {self._mqtt_line()}")

    def _take_chunks(self, timeout: float, limit: int = 1 << 20) -> list[tuple[int, bytes]]:
        """All chunks waiting (up to ``limit`` bytes), or the first to arrive within ``timeout``."""
        parts: list[tuple[int, bytes]] = []
        size = 0
        try:
            parts.append(self.chunks.get(timeout=timeout) if timeout > 0 else self.chunks.get_nowait())
            size = len(parts[0][1])
            while size < limit:
                parts.append(self.chunks.get_nowait())
                size += len(parts[-1][1])
        except queue.Empty:
            pass
        return parts

    def _process(self, chunks: list[tuple[int, bytes]]) -> None:
        """Decode and feed the pipeline, joining contiguous frames into one block (fewer, larger calls).

        Each frame's arrival is the read time of the chunk that completed it; the clock observes every frame,
        the pipeline gets the joined blocks."""
        from firmware_bridge.decoder import StatusReport, join_contiguous

        arrivals: list[tuple[SampleBlock, int]] = []
        for host_ns, data in chunks:
            for item in self.decoder.feed(data):
                if isinstance(item, StatusReport):
                    self._on_status(item)
                else:
                    arrivals.append((item, host_ns))
        at = 0
        for block in join_contiguous([frame for frame, _ in arrivals]):
            # A joined block is the next run of frames, in order: take frames until their samples add up.
            end, n = at, 0
            while n < block.data.shape[1]:
                n += arrivals[end][0].data.shape[1]
                end += 1
            self._on_block(block, arrivals[at:end])
            at = end

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

    def _on_block(self, block: SampleBlock, arrivals: list[tuple[SampleBlock, int]]) -> None:
        """One joined block; ``arrivals`` are the frames it was joined from, each with its host arrival time."""
        from edge.gateway.pipeline import Pipeline

        new_stream = self._stream_key != (block.fs, block.channels) or (
            block.reset and self._next_sample is not None and block.first_sample < self._next_sample)
        if new_stream:  # first data, or the board restarted with another rate/layout/index
            if self.pipeline is not None:
                self._emit(self.pipeline.flush())
                self.pipeline = None
            self._start_stream(block)
        for frame, host_ns in arrivals:
            self.clock.observe(frame.first_sample, frame.data.shape[1], board_ns=frame.timestamp_ns, host_ns=host_ns)
        self._next_sample = block.end_sample
        if self.archive is not None and self.codes is not None:  # archived whether classified or not
            self.archive.write(block.data, block.first_sample, self.clock)
        if self._refuses(block.fs):
            if self.pipeline is not None:  # the board changed to a rate this model does not serve
                self._emit(self.pipeline.flush())
                self.pipeline = None
            self.samples_refused += block.data.shape[1]
            return
        if self.pipeline is None:
            self.pipeline = Pipeline(self.cfg.trigger, self.classifier, block.fs, channel_names(block.channels),
                                     lambda i: datetime.fromtimestamp(self.clock.time_ns(i) / 1e9, UTC))
            if self.arm is None:
                self.arm = ArmTracker(block.fs, self.cfg.trigger.lta_s, self.cfg.trigger.conceal_gap_s)
            else:
                self.arm.restart(block.fs, self.cfg.trigger.lta_s, self.cfg.trigger.conceal_gap_s)
        samples = block.data.astype(np.float32) / np.float32(self.cfg.board.counts_per_unit)
        self._emit(self.pipeline.feed(samples, block.first_sample))
        self.arm.observe(block.first_sample, block.data.shape[1])

    def _link_counts(self) -> LinkCounts:
        st, arm = (self.decoder.stats if self.decoder is not None else None), self.arm
        return LinkCounts(
            frames_ok=st.sample_frames + st.status_frames if st else 0, frames_lost=st.frames_missed if st else 0,
            crc_errors=st.crc_errors if st else 0, rejected_frames=st.rejected_frames if st else 0,
            nonfinite_frames=st.nonfinite_frames if st else 0, samples_received=st.samples if st else 0,
            samples_missed=st.samples_missed if st else 0,
            samples_concealed=arm.samples_concealed if arm else 0, trigger_resets=arm.trigger_resets if arm else 0,
            armed_samples=arm.armed_samples if arm else 0, warmup_samples=arm.warmup_samples if arm else 0)

    def _watch_link(self, now: float) -> None:
        """Assess the link over the last minute; a change of state goes to the journal with its reason."""
        self.link_state = state = self.link.update(now, self._link_counts())
        if state.state == self._link_logged or now - self.started < LINK_SETTLE_S:
            return
        if state.state == "ok":
            log.info("board link ok: trigger armed %.0f %% of the last %.0f s", state.trigger_armed_pct,
                     state.window_s)
        else:
            log.warning("board link %s: %s (serial %s)", state.state, state.reason, self.serial_state)
        self._link_logged = state.state

    def _start_stream(self, block: SampleBlock) -> None:
        """A new stream from the board: a fresh sample clock, its stream codes, a new run in the archive."""
        from edge.gateway.streams import stream_codes
        from firmware_bridge.clock import SampleClock

        self.clock = SampleClock(block.fs)
        self._stream_key = (block.fs, block.channels)
        try:
            self.codes = stream_codes(self.cfg.stream, block.fs, block.channels, self.cfg.source)
        except UserError as exc:  # survived: classification goes on; the archive and codes wait for a fix
            self.codes = None
            log.error("no stream codes for the board (%s); not archiving, events carry no stream", exc)
            if self.archive is not None:
                self.archive.stats.last_error = str(exc)
        if self.archive is not None and self.codes is not None:
            kind = block.sample_format.name.lower() if block.sample_format is not None else "text"
            self.archive.start(self.codes, block.fs, kind)
        log.info("board streaming %d channels at %g Hz%s", block.channels, block.fs,
                 f" as {self.codes.nslc(0)}..." if self.codes else "")

    def _context(self, event: PipelineEvent) -> EventContext:
        """Stream codes, units, timing and archive span of an event."""
        codes = self.codes
        archive = None
        if self.archive is not None and codes is not None:
            start = parse_iso_utc(event.window.start)
            archive = span_fields(codes, start, start + round(event.window.samples * 1e9 / event.window.fs))
        return EventContext(codes, self.cfg.board.units, self.timing(), archive)

    def timing(self) -> Timing | None:
        """The sample clock's kind, stated error and SEED quality now (None before the first block)."""
        if self.clock is None or self.clock.error_ns is None:
            return None
        return Timing("board" if self.clock.disciplined else "host", self.clock.error_ns / 1e9, self.clock.quality)

    def _emit(self, events: list[PipelineEvent]) -> None:
        for event in events:
            msg = self.messenger.message(event, self._context(event))
            stored = [pub.submit_event(msg, t_close=event.closed_at) for pub in self.publishers]
            if None in stored:
                # The disk refused it even after eviction (counted in health's outbox.unstored): the journal
                # keeps what it was, so the event is not gone without a trace.
                log.warning("event %s not stored (%s): %s %.2f at %s, PPV %.3g", msg["event_id"],
                            self.publisher.outbox.state(), msg["label"], msg["confidence"], msg["trigger_time"],
                            msg["features"]["ppv"])
            w = event.window
            self.publisher.submit_waveform(msg["event_id"], event.samples, w.fs, w.start, w.channels,
                                           self.cfg.board.units, msg["label"])
            self.events_out += 1
            self._log_event(msg)
            if self.metrics is not None:
                self.metrics.observe_event(event.inference_ms, event.latency_ms)

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
            check_trigger_fit(cfg, *trigger_limits(classifier.card, *_recorded_board(cfg)))
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
                if self.arm is not None:
                    self.arm.restart(self.pipeline.fs, cfg.trigger.lta_s, cfg.trigger.conceal_gap_s)
            else:
                self.pipeline.classifier = classifier
        if (cfg.mqtt, cfg.node, cfg.board, cfg.stream, cfg.archive, cfg.metrics) != \
                (self.cfg.mqtt, self.cfg.node, self.cfg.board, self.cfg.stream, self.cfg.archive, self.cfg.metrics):
            log.warning("reload: [mqtt], [node], [board], [stream], [archive] and [metrics] changes take effect at "
                        "the next restart")
        self.cfg.trigger, self.cfg.model, self.cfg.log = cfg.trigger, cfg.model, cfg.log
        if not os.environ.get("STOPEWATCH_LOG"):
            logging.getLogger().setLevel(cfg.log.level.upper())
        self.classifier = classifier
        self.messenger.model = classifier.identity
        for pub in self.publishers:
            pub.model = self._model_status()
        log.info("reloaded: model %s %s", classifier.card["name"], classifier.card["sha256"][:12])

    def _warm_up(self) -> None:
        """Load the trigger DSP and run the interpreter once, right after READY, before data arrives."""
        import edge.gateway.pipeline  # noqa: F401

        c = self.classifier
        c.classify(np.zeros((1, c.channels, c.samples), dtype=np.float32), c.params.fs)

    def health(self, advance: bool = True) -> dict:
        """The periodic health message; ``advance=False`` (a metrics refresh) leaves the CPU-use reference
        where the last health message put it."""
        now = time.monotonic()
        cpu = sum(os.times()[:2])
        t_prev, cpu_prev = self._cpu0
        if advance:
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
            "concealed_gaps": stats.concealed_gaps if stats else 0,
            "concealed_samples": stats.concealed_samples if stats else 0,
            "windows_concealed": stats.windows_concealed if stats else 0,
            "trigger_resets": stats.gaps if stats else 0,
            "link": self.link_state.as_fields(),
            "blind_reason": self.link_state.reason if self.link_state.state == "blind" else None,
            "backlog": self.publisher.outbox.depth(),
            "evicted": dict(self.publisher.outbox.evictions),
            "outbox": self.publisher.outbox.health(),
            "inference_ms": {"p50": percentile(list(stats.inference_ms), 50) if stats else None,
                             "p99": percentile(list(stats.inference_ms), 99) if stats else None},
            # How much faster than real time the pipeline runs on this gateway: the headroom left.
            "realtime_factor": round(stream_s / stats.processing_s, 1) if stats and stats.processing_s else None,
            "input_queue": self.chunks.qsize(),
            "cpu_percent": round(100 * (cpu - cpu_prev) / max(now - t_prev, 1e-6), 1),
            "rss_mb": round(rss_mb(), 1),
            "mqtt": self.publisher.stats(),
            "sparkplug": self._sparkplug_health(),
            "dead_workers": self.dead_workers(),
            "timing": timing.as_fields() if (timing := self.timing()) else None,
            "archive": self.archive.health() if self.archive is not None else None,
        }

    def _sparkplug_health(self) -> dict | None:
        """The Sparkplug session for health (None in mode "json"); in mode "both" with its own connection."""
        spb = self.sparkplug
        if spb is None:
            return None
        out = {**spb.session(), "backlog": spb.outbox.depth()}
        if spb is not self.publisher:
            out["mqtt"] = spb.stats()
        return out

    def _mqtt_line(self) -> str:
        return "; ".join(pub.status_line() for pub in self.publishers)

    def _outbox_note(self) -> str:
        """The outbox's trouble for ``systemctl status``: a disk that refuses writes, a salvage at start."""
        outbox = self.publisher.outbox
        note = "" if outbox.state() == "ok" else f"{outbox.state()}; "
        if (rec := outbox.recovery) is not None:
            note += f"outbox salvaged at start: {rec.recovered} recovered, {rec.lost} lost; "
        return note

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
            threading.excepthook = self._thread_raised
        if self.metrics is not None:  # before anything else starts: a busy port is a clean exit 2
            self.metrics.start()
            self.metrics.health.update(self.health(advance=False))
        for pub in self.publishers:
            pub.start()
        self.decoder = self._make_decoder()
        reader = threading.Thread(target=self._guarded, args=("serial", self._reader_thread), name="serial",
                                  daemon=True)
        reader.start()
        log.info("stopewatch %s: site %s node %s, model %s, board %s, broker %s:%d (%s)", package_version(),
                 self.cfg.node.site, self.cfg.node.node, self.classifier.card["name"], self.cfg.board.port,
                 self.cfg.mqtt.host, self.cfg.mqtt.port, {"json": "JSON", "sparkplug": "Sparkplug B",
                                                          "both": "JSON and Sparkplug B"}[self.cfg.mqtt.mode])
        self.notifier.ready(f"running; {self._outbox_note()}{self._mqtt_line()}")
        self._warm_up()  # bytes arriving meanwhile wait in the queue
        watchdog = self.notifier.watchdog_interval() or 10.0
        next_health = time.monotonic() + min(5.0, self.cfg.health.interval_s)
        next_watchdog = time.monotonic()
        next_metrics = time.monotonic() + METRICS_REFRESH_S
        while not self.stop_event.is_set():
            if dead := self.dead_workers():  # no silent half-daemon: exit, and systemd restarts us
                why = "; ".join(f"{k}: {v}" for k, v in dead.items())
                log.error("stopping: worker thread(s) died (%s); exit 1 so that systemd restarts the service", why)
                self.notifier.status(f"FAILED: {why}")
                health = self.health()
                for pub in self.publishers:  # the surface sees which worker and why
                    pub.publish_health(health)
                self.exit_code = 1
                break
            self._process(self._take_chunks(timeout=0.2))
            self._watch_link(time.monotonic())
            if self._reload.is_set():
                self._reload.clear()
                self._reload_now()
            now = time.monotonic()
            if now >= next_watchdog:
                self.notifier.watchdog()  # only while this loop turns: a hung pipeline gets restarted
                next_watchdog = now + watchdog  # watchdog_interval() is already half of WatchdogSec
            if self.metrics is not None and now >= next_metrics:
                self.metrics.health.update(self.health(advance=False))
                next_metrics = now + METRICS_REFRESH_S
            if now >= next_health:  # rates, not every event: the journal must not fill up
                health = self.health()
                for pub in self.publishers:
                    pub.publish_health(health)
                if self.metrics is not None:
                    self.metrics.health.update(health)
                log.info("%d events (%d since last), %d triggers, backlog %d, %s x real time, serial %s, link %s%s",
                         health["events"], health["events"] - self._events_logged, health["triggers"],
                         health["backlog"], health["realtime_factor"], health["serial"],
                         self.link_state.state if self.link_state.reason is None else
                         f"{self.link_state.state} ({self.link_state.reason})",
                         "" if health["outbox"]["state"] == "ok" else
                         f"; {health['outbox']['state']}, evicted {health['outbox']['evicted']}, unstored "
                         f"{health['outbox']['unstored']}")
                self._events_logged = health["events"]
                self.notifier.status((f"REFUSED: {self.model_refused}; " if self.model_refused else "")
                                     + (f"BLIND: {self.link_state.reason}; " if self.link_state.state == "blind"
                                        else "")
                                     + self._outbox_note()
                                     + f"{self.events_out} events; serial {self.serial_state}; "
                                     f"{self._mqtt_line()}")
                next_health = now + self.cfg.health.interval_s
        return self._shutdown()

    def _shutdown(self) -> int:
        self.notifier.stopping("draining")
        try:
            while chunks := self._take_chunks(timeout=0):  # what the board already sent is processed ...
                self._process(chunks)
            if self.pipeline is not None:
                self._emit(self.pipeline.flush())
            if self.archive is not None:
                self.archive.close()  # the last partial records
        except Exception:  # a broken outbox after a worker died: report it, still stop cleanly
            log.exception("draining failed; events of the last blocks may not be stored")
            self.exit_code = 1
        left = self.publisher.stop(timeout=10.0)
        for pub in self.publishers[1:]:
            pub.stop(timeout=10.0)
        if self.metrics is not None:
            self.metrics.stop()
        outbox = self.publisher.outbox
        log.info("stopped after %d events (+%d not logged since the last event line); %d left in the outbox for "
                 "the next start%s", self.events_out, self._events_not_logged, left,
                 f"; evicted {outbox.evicted_kinds}, unstored {outbox.unstored}"
                 if outbox.evicted_kinds or outbox.unstored else "")
        return self.exit_code


def run(config_path: str) -> int:
    """Entry point of ``stopewatch run``: the config's ``log.level`` (``STOPEWATCH_LOG`` overrides it, for a
    one-off debugging run) sets how much goes to the journal."""
    level = os.environ.get("STOPEWATCH_LOG") or load_config(config_path).log.level
    if level.lower() not in LOG_LEVELS:
        raise UserError(f"STOPEWATCH_LOG = {level!r}; allowed: {', '.join(LOG_LEVELS)}")
    logging.basicConfig(level=level.upper(), format="%(levelname)s %(name)s: %(message)s")
    return Daemon(config_path).run()

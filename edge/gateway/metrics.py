"""The optional Prometheus endpoint: health counters and latency histograms at ``http://{bind}:{port}/metrics``.

prometheus-client does the exposition format and the HTTP server (a daemon thread), so the text a
Prometheus server scrapes is the library's, not ours. What is exposed:

- every numeric field of the health message (docs/mqtt.md), under ``stopewatch_`` + its path with ``_``
  for ``.`` (``mqtt.acked`` -> ``stopewatch_mqtt_acked_total``): fields that only grow are counters
  (``_total``), the rest gauges; booleans are 0/1; per-class and per-channel values carry a ``label`` or
  ``channel`` label; text states (``serial``, ``timing.clock``) are a gauge of 1 with the state as label;
- two histograms observed at every event: ``stopewatch_inference_seconds`` (the classifier) and
  ``stopewatch_event_latency_seconds`` (window close to event classified and described).

The health snapshot is refreshed by the daemon's main loop (every few seconds), never computed in the
server's thread, so a scrape cannot race the pipeline.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

from edge.errors import UserError
from edge.gateway.config import MetricsConfig

log = logging.getLogger("stopewatch.metrics")
PREFIX = "stopewatch"
# Health fields that can go down (the rest of the numbers only grow while the daemon runs: counters).
GAUGES = {"uptime_s", "backlog", "input_queue", "cpu_percent", "rss_mb", "realtime_factor", "inference_ms.p50",
          "inference_ms.p99", "mqtt.connected", "mqtt.backlog", "mqtt.publish_latency_ms.p50",
          "mqtt.publish_latency_ms.p99", "mqtt.publish_latency_ms.n", "board.temperature_c", "board.supply_v",
          "board.gain", "timing.error_s", "timing.quality", "timing.locked", "archive.size_bytes",
          "archive.files", "archive.timing_quality"}
STATES = {"serial", "timing.clock"}  # text fields exposed as state{state=...} 1
LABELLED = {"evicted": "label", "mqtt.evictions": "label"}  # objects keyed by event class
SKIP = {"ts", "boot_id", "model_refused", "dead_workers", "archive.last_error", "archive.oldest"}
LATENCY_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def _flatten(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict) and path not in LABELLED:
        for key, sub in value.items():
            yield from _flatten(sub, f"{path}.{key}" if path else str(key))
    else:
        yield path, value


class HealthCollector:
    """A prometheus-client collector over the latest health snapshot."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._health: dict = {}

    def update(self, health: dict) -> None:
        with self._lock:
            self._health = dict(health)

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        with self._lock:
            health = self._health
        for path, value in _flatten(health):
            if path in SKIP or value is None:
                continue
            name = f"{PREFIX}_{path.replace('.', '_')}"
            doc = f"health field {path} (docs/mqtt.md)"
            if path in STATES:
                fam = GaugeMetricFamily(name, doc, labels=["state"])
                fam.add_metric([str(value)], 1.0)
                yield fam
            elif path in LABELLED:
                fam = CounterMetricFamily(name, doc, labels=[LABELLED[path]])
                for key, n in sorted(value.items()):
                    fam.add_metric([str(key)], float(n))
                yield fam
            elif isinstance(value, list):
                cls = GaugeMetricFamily if path in GAUGES else CounterMetricFamily
                fam = cls(name, doc, labels=["channel"])
                for i, v in enumerate(value):
                    fam.add_metric([str(i)], float(v))
                yield fam
            elif isinstance(value, bool | int | float):
                cls = GaugeMetricFamily if path in GAUGES or isinstance(value, bool) else CounterMetricFamily
                yield cls(name, doc, value=float(value))
        yield GaugeMetricFamily(f"{PREFIX}_model_refused", "1 while the model does not serve the board's rate",
                                value=1.0 if health.get("model_refused") else 0.0)
        yield GaugeMetricFamily(f"{PREFIX}_dead_workers", "worker threads that died",
                                value=float(len(health.get("dead_workers") or {})))


class MetricsServer:
    """The /metrics endpoint of one daemon: its own registry, histograms and health snapshot."""

    def __init__(self, cfg: MetricsConfig, site: str, node: str):
        from prometheus_client import CollectorRegistry, Histogram, Info

        self.cfg = cfg
        self.registry = CollectorRegistry(auto_describe=True)
        self.health = HealthCollector()
        self.registry.register(self.health)
        Info(f"{PREFIX}_node", "which gateway this is", registry=self.registry).info({"site": site, "node": node})
        self.inference = Histogram(f"{PREFIX}_inference_seconds", "classifier time per event window",
                                   buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self.event_latency = Histogram(f"{PREFIX}_event_latency_seconds",
                                       "window close to event classified and described",
                                       buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self._server = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Serve /metrics in a daemon thread; a port that cannot be bound is a UserError (one line, exit 2)."""
        from prometheus_client import start_http_server

        try:
            self._server, self._thread = start_http_server(self.cfg.port, addr=self.cfg.bind,
                                                           registry=self.registry)
        except OSError as exc:
            raise UserError(f"metrics.bind/metrics.port = {self.cfg.bind}:{self.cfg.port}: cannot listen "
                            f"({exc.strerror or exc}); choose a free port or set metrics.enabled = false") from None
        log.info("Prometheus metrics on http://%s:%d/metrics", self.cfg.bind, self.cfg.port)

    def observe_event(self, inference_ms: float, latency_ms: float) -> None:
        """One classified event: its classifier time and its window-close-to-described latency."""
        self.inference.observe(inference_ms / 1000.0)
        self.event_latency.observe(latency_ms / 1000.0)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

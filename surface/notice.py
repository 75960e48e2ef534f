"""Noticing what is missing: seq gaps, nodes gone offline or silent, restarts -> alerts.

Each alert is stored (the ``alerts`` table the page shows), logged, and handed to ``publish`` (the
collector sends it on ``{prefix}/{site}/{node}/alert``). Decisions that several collectors could both
make (a gap, a silent node) are claimed in the database first, so each is alerted once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from firmware_bridge.clock import iso_utc
from surface.config import AlertsConfig
from surface.store import Alert, IngestResult, Store

log = logging.getLogger(__name__)
ALERT_SCHEMA = "stopewatch.alert/1"
KINDS = ("gap", "recovered", "offline", "silent", "resumed", "restart")


def alert_payload(alert: Alert) -> bytes:
    """The JSON published on the alert topic."""
    return json.dumps({"schema": ALERT_SCHEMA, "id": alert.id, "at": alert.at, "site": alert.site,
                       "node": alert.node, "kind": alert.kind, "severity": alert.severity,
                       "message": alert.message, "detail": alert.detail}, separators=(",", ":")).encode()


class Noticer:
    """Turns what the archive saw into alerts (``on_ingest``) and looks for silence and gaps (``check``)."""

    def __init__(self, store: Store, cfg: AlertsConfig, publish: Callable[[Alert], None] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store, self.cfg, self.publish, self.clock = store, cfg, publish, clock
        self.raised: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.publish_failures = 0

    def _raise(self, site: str, node: str, kind: str, severity: str, message: str, **detail) -> Alert:
        alert = self.store.add_alert(Alert(iso_utc(self.clock()), site, node, kind, severity, message, detail))
        self.raised[kind] += 1
        (log.warning if severity == "warning" else log.info)("alert %s/%s %s: %s", site, node, kind, message)
        if self.publish is not None:
            try:
                self.publish(alert)
            except Exception as exc:  # the alert is stored and logged; the topic is a convenience
                self.publish_failures += 1
                log.error("alert %s/%s %s not published (%s); it is in the alerts table", site, node, kind, exc)
        return alert

    def on_ingest(self, res: IngestResult) -> list[Alert]:
        """Alerts from one committed batch: offline wills, restarts, recovered events, health back."""
        out = []
        for s in res.statuses:
            if s.state == "offline":
                out.append(self._raise(s.site, s.node, "offline", "warning",
                                       f"offline (the broker published the node's will; boot {s.boot_id})",
                                       boot_id=s.boot_id, ts=s.ts))
        for b in res.boots:
            if b.previous is not None and b.live:
                out.append(self._raise(b.site, b.node, "restart", "info",
                                       f"restarted: boot {b.boot_id} follows {b.previous}",
                                       boot_id=b.boot_id, previous=b.previous))
        out += self._recovered(res.filled)
        for site, node in res.resumed:
            out.append(self._raise(site, node, "resumed", "info", "health messages resumed"))
        return out

    def _recovered(self, filled: list[tuple[str, str, str, int, bool]]) -> list[Alert]:
        groups: dict[tuple[str, str, str], list[int]] = {}
        for site, node, boot_id, seq, alerted in filled:
            if alerted:
                groups.setdefault((site, node, boot_id), []).append(seq)
        return [self._raise(site, node, "recovered", "info",
                            f"{len(seqs)} missing event(s) arrived late (boot {boot_id}, seq {_span(seqs)})",
                            boot_id=boot_id, seqs=sorted(seqs))
                for (site, node, boot_id), seqs in groups.items()]

    def check(self) -> list[Alert]:
        """The periodic look: gaps still open after the grace time, online nodes whose health stopped."""
        now = self.clock()
        out = self._recovered(self.store.reconcile_missing(iso_utc(now)))
        for g in self.store.claim_gaps(iso_utc(now - timedelta(seconds=self.cfg.gap_grace_s)), iso_utc(now)):
            out.append(self._raise(g.site, g.node, "gap", "warning",
                                   f"{g.count} event(s) missing: boot {g.boot_id} seq {g.first_seq}-{g.last_seq}",
                                   boot_id=g.boot_id, first_seq=g.first_seq, last_seq=g.last_seq))
        quiet_s = self.cfg.health_interval_s * self.cfg.silent_after
        for n in self.store.silent_nodes(iso_utc(now - timedelta(seconds=quiet_s)), iso_utc(now)):
            out.append(self._raise(n.site, n.node, "silent", "warning",
                                   f"no health for {quiet_s:g} s ({self.cfg.silent_after} intervals); "
                                   f"last at {n.last_health or 'never'}", last_health=n.last_health))
        return out


def _span(seqs: list[int]) -> str:
    seqs = sorted(seqs)
    return str(seqs[0]) if len(seqs) == 1 else f"{seqs[0]}-{seqs[-1]}"

"""Is the node watching? The board link's frame outcomes over a rolling minute, and what they did to the trigger.

The decoder counts frames (decoded, lost, failing CRC) and samples (received, missed); :class:`ArmTracker`
follows the stream's gaps as the pipeline treats them (a gap of at most ``conceal_gap_s`` is bridged, a
longer one resets the trigger, which then waits one LTA length before it can fire again) and counts the
stream time in which the trigger was armed. :class:`LinkMonitor` keeps snapshots of these counters
for the last ``window_s`` and :func:`assess_link` turns their difference into a :class:`LinkState`:
``ok``, ``degraded`` (frames lost, but the trigger armed most of the time), or ``blind`` (the trigger armed
for less than half of the window, or no samples at all), with a reason a technician can act on, e.g.
"trigger not armed 97 % of the last 60 s: 82 % of frames lost (CRC errors 9097), 1813 gaps reset the
trigger". The same assessment serves the daemon's health and journal and ``stopewatch doctor``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, fields

BLIND_BELOW = 0.5  # armed share of the window under which the node is blind
DEGRADED_ABOVE = 0.01  # lost-frame or lost-sample share above which the link is degraded
ARMED_WELL = 0.95  # armed share under which the link is degraded even without losses (e.g. board restarts)


@dataclass(frozen=True)
class LinkCounts:
    """Cumulative counters of the board link and the trigger; the difference of two is a window's."""

    frames_ok: int = 0  # sample and status frames decoded
    frames_lost: int = 0  # sequence numbers never received (CRC errors, damaged headers, unplugged)
    crc_errors: int = 0
    rejected_frames: int = 0  # CRC-valid, impossible header
    nonfinite_frames: int = 0  # NaN/inf samples
    samples_received: int = 0
    samples_missed: int = 0  # in gaps, per channel
    samples_concealed: int = 0  # of those, bridged without resetting the trigger
    trigger_resets: int = 0  # gaps too long to conceal
    armed_samples: int = 0  # stream time (samples) the trigger was armed: received, or concealed while armed
    warmup_samples: int = 0  # received while the trigger warmed up after a start (not a link fault)

    def __sub__(self, other: LinkCounts) -> LinkCounts:
        return LinkCounts(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)})


@dataclass(frozen=True)
class LinkState:
    """What the link did to the trigger over the last ``window_s``: the health message's ``link``."""

    state: str  # ok | degraded | blind
    reason: str | None  # why it is not ok, in one line
    window_s: float
    frames_lost_pct: float
    crc_errors: int
    samples_missing_pct: float
    samples_concealed_pct: float
    trigger_resets: int
    trigger_armed_pct: float

    def as_fields(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _pct(part: float, whole: float) -> float:
    return round(100.0 * part / whole, 1) if whole > 0 else 0.0


def assess_link(d: LinkCounts, window_s: float) -> LinkState:
    """The state of the link from a window's counters ``d`` covering ``window_s`` seconds."""
    frames = d.frames_ok + d.frames_lost
    stream = d.samples_received + d.samples_missed - d.warmup_samples  # stream time, in samples, bar start-up
    armed = d.armed_samples / stream if stream > 0 else 0.0
    lost = d.frames_lost / frames if frames else 0.0
    missing = d.samples_missed / (d.samples_received + d.samples_missed) if d.samples_received else 0.0
    why = []
    if lost:
        why.append(f"{100 * lost:.0f} % of frames lost (CRC errors {d.crc_errors})")
    if d.rejected_frames:
        why.append(f"{d.rejected_frames} frames with an impossible header")
    if d.nonfinite_frames:
        why.append(f"{d.nonfinite_frames} frames of NaN/inf samples")
    if d.trigger_resets:
        why.append(f"{d.trigger_resets} gaps reset the trigger")
    if d.samples_concealed:
        why.append(f"{_pct(d.samples_concealed, d.samples_received + d.samples_missed):g} % of samples concealed")
    span = f"the last {window_s:.0f} s"
    if d.samples_received == 0 and d.warmup_samples == 0:
        state, reason = "blind", f"no samples from the board in {span}"
    elif stream > 0 and armed < BLIND_BELOW:
        state = "blind"
        reason = f"trigger not armed {100 * (1 - armed):.0f} % of {span}" + (f": {', '.join(why)}" if why else "")
    elif lost > DEGRADED_ABOVE or missing > DEGRADED_ABOVE or (stream > 0 and armed < ARMED_WELL) or why:
        state = "degraded"
        reason = f"trigger armed {100 * armed:.0f} % of {span}" + (f": {', '.join(why)}" if why else "")
    else:
        state, reason = "ok", None
    return LinkState(state, reason, round(window_s, 1), _pct(d.frames_lost, frames), d.crc_errors,
                     _pct(d.samples_missed, d.samples_received + d.samples_missed),
                     _pct(d.samples_concealed, d.samples_received + d.samples_missed), d.trigger_resets,
                     round(100.0 * armed, 1) if stream > 0 else 0.0)


class ArmTracker:
    """Follows the trigger's arming across a stream's gaps, as the pipeline treats them.

    After a start or a reset the STA/LTA needs ``lta_s`` of received samples before it can fire; a gap of
    at most ``conceal_gap_s`` is concealed (the trigger goes on as if it were not there, and stays armed
    across it), a longer one resets it.
    """

    def __init__(self, fs: float, lta_s: float, conceal_gap_s: float):
        self.samples_concealed = self.trigger_resets = self.armed_samples = self.warmup_samples = 0
        self.restart(fs, lta_s, conceal_gap_s)

    def restart(self, fs: float, lta_s: float, conceal_gap_s: float) -> None:
        """A new trigger (first data, a board restart, a reload): warm-up again; the counters go on."""
        self.warmup = max(2, round(lta_s * fs))
        self.conceal_max = round(conceal_gap_s * fs)
        self.position: int | None = None
        self._fed = 0  # samples fed to the trigger since its last start or reset
        self._starting = True  # the current warm-up is the start's, not a gap's

    def observe(self, first_sample: int, n: int) -> None:
        """A block of ``n`` samples from absolute index ``first_sample`` reached the pipeline."""
        if self.position is not None and first_sample != self.position:
            gap = first_sample - self.position
            if 0 < gap <= self.conceal_max:
                self.samples_concealed += gap
                if self._fed >= self.warmup:  # armed across it: an event longer than the gap is still seen
                    self.armed_samples += gap
                elif self._starting:
                    self.warmup_samples += gap
            else:
                self.trigger_resets += 1
                self._fed, self._starting = 0, False
        cold = min(n, max(self.warmup - self._fed, 0))
        if self._starting:
            self.warmup_samples += cold
        self.armed_samples += n - cold
        self._fed += n
        self.position = first_sample + n


class LinkMonitor:
    """Snapshots of :class:`LinkCounts` over the last ``window_s``; logs nothing itself (the daemon does)."""

    def __init__(self, started: float, window_s: float = 60.0, resolution_s: float = 1.0):
        self.window_s = window_s
        # Snapshots closer than this replace the newest one: the daemon's loop turns thousands of times a
        # minute when data flows, and the window needs only its base, not every turn.
        self.resolution_s = resolution_s
        self._snaps: deque[tuple[float, LinkCounts]] = deque([(started, LinkCounts())])  # nothing before start

    def update(self, now: float, counts: LinkCounts) -> LinkState:
        """Record ``counts`` at monotonic time ``now``; the state over the window ending now."""
        if len(self._snaps) > 1 and now - self._snaps[-2][0] < self.resolution_s:
            self._snaps[-1] = (now, counts)
        else:
            self._snaps.append((now, counts))
        while len(self._snaps) > 2 and self._snaps[1][0] <= now - self.window_s:
            self._snaps.popleft()  # keep one snapshot at or before the window's start as its base
        t0, base = self._snaps[0]
        return assess_link(counts - base, max(now - t0, 0.0))

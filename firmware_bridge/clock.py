"""Map the board's absolute sample index to UTC.

With a disciplined board time stamp (GPS/PPS) in the frames, the time of a sample
follows from the nearest time-stamped frame and the fitted sample rate. Without one,
the only clock is the host's arrival time of each frame, which carries USB and
scheduler latency: always positive, jittery by milliseconds, occasionally large.
``SampleClock`` fits time = t0 + index / fs_true over a sliding history: the slope by
least squares (it tracks the crystal's drift against the host clock), the offset from
a low quantile of the residuals (the frames that arrived with the least delay), so the
mapping stays within a few milliseconds of the true sampling time and moves smoothly.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np


def iso_utc(t: int | float | datetime) -> str:
    """ISO-8601 UTC with microseconds and a Z, e.g. 2026-01-01T00:00:00.000000Z: the one time format of
    every message, record and file stopewatch writes. ``t`` is nanoseconds since the Unix epoch or a
    datetime (naive means UTC)."""
    if isinstance(t, datetime):
        t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
        return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    us = int(round(t / 1000.0))
    sec, frac = divmod(us, 1_000_000)
    return datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:06d}Z"


def utc_now() -> str:
    """The current time in the :func:`iso_utc` format."""
    return iso_utc(datetime.now(UTC))


def parse_utc(text: str) -> datetime:
    """An aware UTC datetime from an ISO-8601 time (``Z`` or an offset; a time without a zone is UTC).

    Raises ValueError when ``text`` is not ISO-8601.
    """
    t = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def parse_iso_utc(text: str) -> int:
    """Nanoseconds since the Unix epoch from an ISO-8601 time (naive times are taken as UTC)."""
    us = (parse_utc(text) - datetime(1970, 1, 1, tzinfo=UTC)) // _US
    return int(us) * 1000


_US = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)


GPS_ERROR_NS = 1_000  # a GPS/PPS-disciplined board's stamp: 1 us
# Host arrival times: never better than 2 ms. USB polling and the scheduler put a delay under every arrival
# that the fit cannot see; on a pty board (no USB at all) on a 2-core machine the fit's time was measured up
# to 1.08 ms from the true sampling time while the spread it saw stayed under 1 ms, so 1 ms was a claim
# the clock could not keep.
HOST_ERROR_NS = 2_000_000
HOST_FIT_MIN = 64  # host observations before the fit is trusted (as SampleClock._fit)
HOST_UNFITTED_NS = 50_000_000  # before that: 50 ms


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    xm, ym = x.mean(), y.mean()
    return float(((x - xm) * (y - ym)).sum() / ((x - xm) ** 2).sum())


class SampleClock:
    """Sample index -> UTC (ns since the epoch) for one board.

    Call ``observe`` for every sample block: with its board time stamp when it has one,
    otherwise with the host time (``time.time_ns()``) at which the block's last sample
    arrived. ``time_ns(index)`` then gives the time of any sample index.

    ``history`` is how many observations the fit uses; ``quantile`` is the residual
    quantile taken as the no-latency line (low, so that delayed frames do not bias it).
    """

    def __init__(self, fs: float, *, history: int = 2048, quantile: float = 0.05,
                 step_ns: int = 2_000_000_000) -> None:
        self.fs = float(fs)
        self.history = history
        self.quantile = quantile
        self.step_ns = step_ns  # a host-clock jump larger than this restarts the fit
        self._idx = np.zeros(history, np.float64)
        self._t = np.zeros(history, np.float64)
        self._n = 0
        self._head = 0
        self._ref_idx = 0
        self._ref_t = 0
        self.disciplined = False
        self.rate = self.fs  # fitted samples per second of the reference clock
        self.offset_ns = 0.0  # fitted time of _ref_idx relative to _ref_t
        self._spread_ns = 0.0  # scatter of the observations about the fit (see error_ns)
        self.restarts = 0

    def reset(self) -> None:
        """Forget the history (board restarted, or its sample index jumped)."""
        self._n = 0
        self._head = 0
        self.disciplined = False
        self.rate = self.fs

    def observe(self, first_sample: int, n: int, *, board_ns: int | None = None,
                host_ns: int | None = None) -> None:
        """One block: its first sample index and length, plus either the board's time stamp of its first
        sample (preferred, exact) or the host's arrival time of its last sample."""
        if board_ns is not None:
            self._add(first_sample, board_ns, disciplined=True)
        elif host_ns is not None and not self.disciplined:
            self._add(first_sample + n, host_ns, disciplined=False)

    def _add(self, index: int, t_ns: int, disciplined: bool) -> None:
        if self._n and disciplined != self.disciplined:
            self.reset()
        if self._n == 0:
            self._ref_idx, self._ref_t = index, t_ns
        elif abs(t_ns - self.time_ns(index)) > self.step_ns:
            # The host clock stepped (NTP) or the board's index jumped: start the fit again.
            self.restarts += 1
            self.reset()
            self._ref_idx, self._ref_t = index, t_ns
        self.disciplined = disciplined
        self._idx[self._head] = index - self._ref_idx
        self._t[self._head] = t_ns - self._ref_t
        self._head = (self._head + 1) % self.history
        self._n = min(self._n + 1, self.history)
        self._fit()

    def _fit(self) -> None:
        x = self._idx[:self._n]
        y = self._t[:self._n]
        nominal = 1e9 / self.fs
        if self.disciplined and self._n >= 2 and np.ptp(x) > 0:
            slope = _slope(x, y)
        elif self._n >= 64 and np.ptp(x) > 0:
            # Host times: fit the lower envelope. The low quantile of each of 16 stretches is the
            # least delayed arrival there; a line through those ignores jitter and long delays.
            r = y - nominal * x
            edges = np.linspace(x.min(), x.max(), 17)
            seg = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, 15)
            xs, qs = [], []
            for k in range(16):
                m = seg == k
                if m.sum() >= 4:
                    xs.append(x[m].mean())
                    qs.append(np.quantile(r[m], self.quantile))
            slope = nominal + (_slope(np.array(xs), np.array(qs)) if len(xs) >= 4 else 0.0)
        else:
            slope = nominal
        slope = min(max(slope, nominal * 0.999), nominal * 1.001)  # a crystal is within 1000 ppm
        resid = y - slope * x
        if self.disciplined:
            offset = float(np.median(resid))
        else:
            offset = float(np.quantile(resid, self.quantile)) if self._n >= 8 else float(resid.min())
        self.rate = 1e9 / slope
        self.offset_ns = offset
        if self.disciplined:  # board stamps: how far they scatter about the fitted line
            spread = float(np.abs(resid - offset).max())
        else:  # host arrivals: how far most of them arrive behind the least-delayed ones the line follows
            spread = float(np.quantile(resid, 0.95)) - offset if self._n >= 8 else float(np.ptp(resid))
        self._spread_ns = spread

    @property
    def error_ns(self) -> int | None:
        """The stated timing error of :meth:`time_ns` (ns), None before the first observation.

        Board (GPS) time stamps: the largest scatter of the stamps about the fitted line, at least
        ``GPS_ERROR_NS``. Host arrival times: the spread of arrival delays above the fitted line (its 95th
        percentile), at least ``HOST_ERROR_NS`` (the USB poll and scheduler latency the line cannot see),
        and, until ``HOST_FIT_MIN`` observations, a flat ``HOST_UNFITTED_NS``.
        """
        if self._n == 0:
            return None
        if self.disciplined:
            return int(max(self._spread_ns, GPS_ERROR_NS))
        if self._n < HOST_FIT_MIN:
            return HOST_UNFITTED_NS
        return int(max(self._spread_ns, HOST_ERROR_NS))

    @property
    def quality(self) -> int:
        """SEED timing quality, 0-100 (miniSEED blockette 1001): 100 for board (GPS) stamps; for the host
        fit 80 at 1 ms error, 10 less per doubling, at least 10; 0 before any observation."""
        err = self.error_ns
        if err is None:
            return 0
        if self.disciplined:
            return 100
        return int(min(80, max(10, round(80 - 10 * np.log2(max(err, 1) / 1e6)))))

    def time_ns(self, index: int | float) -> int:
        """UTC of sample ``index`` in ns since the epoch (raises if nothing was observed yet)."""
        if self._n == 0:
            raise RuntimeError("SampleClock: no block observed yet")
        return int(round(self._ref_t + self.offset_ns + (index - self._ref_idx) * 1e9 / self.rate))

    def iso(self, index: int | float) -> str:
        """UTC of sample ``index`` as ISO-8601 with microseconds."""
        return iso_utc(self.time_ns(index))

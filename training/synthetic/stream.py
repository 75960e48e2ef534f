"""An endless synthetic recording with injected events: the board simulator's and the demo's source."""

from __future__ import annotations

import numpy as np

from edge.errors import UserError
from edge.vocabulary import CLASSES
from firmware_bridge.sources import overlay
from training.synthetic.generate import REGIMES, recorded_event
from training.synthetic.recording import digitise, make_background, snr_gain
from training.synthetic.sites import SITES, TRAIN_SITES, WIDE, WIDE_SITES, draw_chain
from training.synthetic.sources import MECHANISM_SETS

# How long each family lasts in a stream (s); drilling and machinery go on for a while.
# On a slow board (low regime) everything lasts the regime's ``slow`` times longer, up to a minute.
DURATION_S = {"microseismic": (0.8, 0.8), "blast": (1.6, 1.6), "electrical": (0.8, 0.8),
              "rockfall": (1.4, 1.4), "orepass": (2.0, 2.0), "test_pulse": (0.6, 0.6),
              "drilling": (3.0, 10.0), "mechanical": (4.0, 12.0)}
PRE_S = 0.1  # the inserted buffer starts a little before the onset, so nothing of the event is cut
GAP_S = 1.5  # quiet time between the end of one event and the next onset


class StreamSynth:
    """Continuous background of one site with events at random times (Poisson, ``rate_per_min``).

    ``site`` is a named profile, or ``wide``/``wide-heldout``: one recording chain drawn for the whole
    stream, whose background level and machinery tones drift over time.

    :meth:`next_block` returns (channels, n) float32 in physical units and the events whose onset
    falls in that block, as ``{"sample", "end", "label", "snr_db", "mechanism"}`` with the absolute onset
    sample and the absolute sample where the event's inserted record ends.
    ``regime`` sets the events' magnitudes, distances and durations (``fs`` defaults to the regime's);
    ``mechanisms`` the set their mechanisms are drawn from. ``cycle`` draws the families in shuffled
    rounds (each once per round) instead of independently, and ``regular`` puts onsets every
    1 / ``rate_per_min`` (or as soon after as the previous event and its quiet gap allow) instead of
    at Poisson times: a short demonstration stream then shows every family.
    """

    def __init__(self, fs: float | None = None, channels: int = 3, site: str | None = None, seed: int = 0,
                 families: list[str] | tuple[str, ...] = CLASSES, snr_db: tuple[float, float] = (-3.0, 30.0),
                 rate_per_min: float = 6.0, start_time: str = "2026-01-01T00:00:00.000000Z",
                 regime: str = "high", mechanisms: str = "train", cycle: bool = False,
                 regular: bool = False):
        if regime not in REGIMES:
            raise UserError(f"--regime = {regime!r}; allowed: {', '.join(REGIMES)}")
        if mechanisms not in MECHANISM_SETS:
            raise UserError(f"--mechanisms = {mechanisms!r}; allowed: {', '.join(MECHANISM_SETS)}")
        fs = REGIMES[regime].fs if fs is None else fs
        self.regime, self.mechanisms, self.slow = regime, mechanisms, REGIMES[regime].slow
        site = site or TRAIN_SITES[0]
        if site not in SITES and site not in WIDE_SITES:
            raise UserError(f"--site = {site!r}; allowed: {', '.join((*SITES, *WIDE_SITES))}")
        if rate_per_min < 0:
            raise UserError(f"--events-per-min = {rate_per_min:g}; expected zero or more")
        self.fs, self.channels = fs, channels
        self.families = [f for f in families if f != "noise"]  # the background is the noise
        self.cycle, self.regular, self._round = cycle, regular, []
        self.snr_db, self.rate_per_min, self.start_time = snr_db, rate_per_min, start_time
        self.channel_names = ["Z", "N", "E"] if channels == 3 else ["Z"]
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 0x57EA]))
        self.site = SITES[site] if site in SITES else draw_chain(self.rng, WIDE, WIDE_SITES[site])
        self.background = make_background(self.site, fs, channels, self.rng, endless=True)
        if channels == 3 and getattr(self.site, "orientation", "ZNE") != "ZNE":
            self.channel_names = ["Z", "1", "2"]  # horizontals at an arbitrary azimuth
        self.noise_rms = self.background.rms
        self.position = 0
        self._pending: list[tuple[int, np.ndarray]] = []
        self._next_onset = self._draw_onset(int(2.0 * fs))

    def _draw_onset(self, earliest: int, previous: int | None = None) -> int | None:
        if self.rate_per_min <= 0 or not self.families:
            return None
        if self.regular:
            return max(earliest, (previous or 0) + int(60.0 / self.rate_per_min * self.fs))
        return earliest + int(self.rng.exponential(60.0 / self.rate_per_min) * self.fs)

    def _inject(self, onset: int) -> dict:
        if self.cycle:
            if not self._round:
                self._round = [str(f) for f in self.rng.permutation(self.families)]
            family = self._round.pop()
        else:
            family = str(self.rng.choice(self.families))
        lo, hi = DURATION_S[family]
        n = int((PRE_S + min(60.0, self.slow * self.rng.uniform(lo, hi))) * self.fs)
        # Synthesised on a longer grid and cut, so nothing of the event's end wraps around to its start.
        rec, src = recorded_event(family, self.rng, self.site, self.fs, self.channels,
                                  n + int(0.5 * self.slow * self.fs), PRE_S, allow_ongoing=False,
                                  regime=self.regime, mechanisms=self.mechanisms)
        rec = rec[:, :n]
        taper = min(n // 4, int(0.3 * self.fs))  # persistent sources fade out instead of stopping dead
        rec[:, n - taper:] *= np.linspace(1.0, 0.0, taper)
        snr = float(self.rng.uniform(*self.snr_db))
        self._pending.append((onset - int(PRE_S * self.fs), snr_gain(rec, self.noise_rms, snr) * rec))
        self._next_onset = self._draw_onset(onset + n + int(GAP_S * self.slow * self.fs), onset)
        delay = getattr(self.site, "delay_samples", 0)
        return {"sample": onset + delay, "end": onset - int(PRE_S * self.fs) + n + delay, "label": family,
                "snr_db": snr, "mechanism": src.meta["mechanism"]}

    def next_block(self, n: int) -> tuple[np.ndarray, list[dict]]:
        """The next ``n`` samples and the ground truth of events starting in them."""
        start, stop = self.position, self.position + n
        x = self.background.block(n)
        events = []
        while self._next_onset is not None and self._next_onset < stop:
            events.append(self._inject(max(self._next_onset, start + int(PRE_S * self.fs))))
        self._pending = overlay(x, start, self._pending)
        self.position = stop
        y, _, _ = digitise(x, self.site, self.noise_rms, self.rng, self.fs)
        return y, events

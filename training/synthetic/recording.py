"""What a site's sensor and digitiser make of ground motion and background.

Ground noise (a white floor plus a red low-frequency part) and seismic sources
pass through the sensor (a geophone's second-order high-pass, or an
accelerometer's differentiation) and the ADC's anti-alias filter; mains hum,
stationary machinery tones and electrical pickup are added after the sensor;
the digitiser then adds single-sample spikes, quantises (coarsely near the noise
floor at high gain) and clips. The same filters serve windows (applied in the
frequency domain) and endless streams (IIR with carried state), so both agree.

A drawn :class:`~training.synthetic.sites.RecordingChain` goes the same way with
more of a real recorder: its sensor, mounting resonance and anti-alias filter
(Butterworth, Chebyshev, elliptic or linear-phase FIR) make one frequency
response; orientation turns the horizontals or tilts the vertical; its
background is coloured noise shaped in the frequency domain (slope, bumps,
correlated across channels; endless streams join segments with a
power-preserving cross-fade) plus drifting machinery lines and mains harmonics;
its digitiser applies polarity, channel gains, DC offset, spikes, quantisation,
clipping and dropouts. Filters are cached by the chain (or by its anti-alias
design, which sits on a grid), so a window drawing its own chain stays cheap.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import fft as sp_fft
from scipy import signal

from training.synthetic.sites import SITES, RecordingChain, SiteProfile

Profile = SiteProfile | RecordingChain

ACCEL_REF_HZ = 100.0  # accelerometer background is flat in acceleration; scale it like 100 Hz velocity


@lru_cache(maxsize=64)
def sensor_sos(site: SiteProfile, fs: float) -> np.ndarray:
    """Second-order sections of sensor response plus anti-alias filter (ground velocity in, output out)."""
    aa = signal.butter(6, 0.42 * fs, fs=fs, output="sos")
    if site.sensor == "geophone":
        w0 = 2 * np.pi * site.natural_hz
        b, a = signal.bilinear([1.0, 0.0, 0.0], [1.0, 2 * site.damping * w0, w0 * w0], fs)
        mech = signal.tf2sos(b, a)
    else:  # velocity -> acceleration: a first difference, scaled to m/s^2
        mech = np.array([[fs, -fs, 0.0, 1.0, 0.0, 0.0]])
    return np.vstack([mech, aa])


@lru_cache(maxsize=64)
def noise_sos(site: SiteProfile, fs: float) -> np.ndarray:
    """Filter that turns the site's ground-noise floor into recorded background (before hum)."""
    if site.sensor == "geophone":
        return sensor_sos(site, fs)
    return signal.butter(6, 0.42 * fs, fs=fs, output="sos")  # accelerometer self-noise is flat


@lru_cache(maxsize=64)
def red_sos(corner_hz: float, fs: float) -> np.ndarray:
    return signal.butter(2, corner_hz, fs=fs, output="sos")


@lru_cache(maxsize=64)
def _response(sos_key: tuple, fs: float, n: int) -> np.ndarray:
    sos = np.array(sos_key)
    _, h = signal.sosfreqz(sos, worN=np.fft.rfftfreq(n, 1.0 / fs), fs=fs)
    return h


def sensor_response(site: Profile | str, fs: float, n: int, through_sensor: bool = True) -> np.ndarray:
    """Complex response on the rfft grid of ``n`` samples (sensor+anti-alias, or anti-alias only)."""
    site = SITES[site] if isinstance(site, str) else site
    if isinstance(site, RecordingChain):
        return chain_response(site, fs, n, through_sensor)
    sos = sensor_sos(site, fs) if through_sensor else sensor_sos(site, fs)[-3:]
    return _response(tuple(map(tuple, sos)), fs, n)


def record(site: Profile | str, fs: float, ground: np.ndarray, through_sensor: bool = True) -> np.ndarray:
    """Apply the site's sensor (or only the anti-alias filter for pickup) to (c, n) motion, circularly.

    A drawn chain also turns three-component ground motion (Z, N, E) into its sensor's axes.
    """
    site = SITES[site] if isinstance(site, str) else site
    n = ground.shape[-1]
    if isinstance(site, RecordingChain) and through_sensor and ground.shape[0] == 3 and site.orientation != "ZNE":
        ground = orientation_matrix(site) @ ground
    return np.fft.irfft(np.fft.rfft(ground, axis=-1) * sensor_response(site, fs, n, through_sensor),
                        n=n, axis=-1)


class Background:
    """An endless background recording of one site: ground noise through the sensor, hum, tones.

    State is carried between :meth:`block` calls, so blocks join without seams.
    Per-instance draws (level, hum, tones) vary one recording from another.
    """

    def __init__(self, site: SiteProfile, fs: float, channels: int, rng: np.random.Generator):
        self.site, self.fs, self.channels, self.rng = site, fs, channels, rng
        self.level = site.noise_velocity * 10.0 ** (rng.uniform(-4.0, 4.0) / 20.0)
        if site.sensor == "accelerometer":
            self.level *= 2 * np.pi * ACCEL_REF_HZ
        red_corner = site.red_corner_hz * rng.uniform(0.7, 1.4)
        self.red_gain = 10.0 ** ((site.red_db + rng.uniform(-4.0, 4.0)) / 20.0)
        self._red = red_sos(round(red_corner, 3), fs)
        self._sensor = noise_sos(site, fs)
        self._zi_red = np.zeros((self._red.shape[0], channels, 2))
        self._zi_sensor = np.zeros((self._sensor.shape[0], channels, 2))
        self._n = 0
        self._ground(int(0.3 * fs))  # warm the filters up so the first block is already stationary
        probe = self._ground(int(0.3 * fs))
        self.ground_rms = float(np.sqrt(np.mean(probe**2)))
        # Tones as (fundamental, harmonic, amplitude): mains hum (odd harmonics stronger) and machinery.
        hum = self.ground_rms * 10.0 ** ((site.hum_db + rng.uniform(-4.0, 4.0)) / 20.0)
        fundamentals = [site.mains_hz * (1.0 + rng.normal(0.0, 5e-4))]
        tones = [(0, h, hum * (1.0 if h == 1 else rng.uniform(0.05, 0.6) / h * (2.0 if h % 2 else 1.0)))
                 for h in range(1, 8) if h * fundamentals[0] < 0.42 * fs]
        ambient = self.ground_rms * 10.0 ** (site.ambient_db / 20.0)
        for f in site.ambient_hz:
            fundamentals.append(f * rng.uniform(0.98, 1.02))
            tones += [(len(fundamentals) - 1, h, ambient / h) for h in (1, 2, 3) if f * h < 0.42 * fs]
        self._fundamentals = np.array(fundamentals)
        self._tones = [(k, h) for k, h, _ in tones]
        amp = np.array([a for _, _, a in tones])[:, None] * rng.uniform(0.6, 1.0, (len(tones), channels))
        phase = rng.uniform(0, 2 * np.pi, (len(tones), channels))
        # a sin(wt + p) = Im(e^{iwt}) a cos p + Re(e^{iwt}) a sin p: one complex tone per harmonic,
        # harmonics by repeated multiplication (cheaper than a sin and cos each).
        self._tone_sin, self._tone_cos = (amp * np.cos(phase)).T, (amp * np.sin(phase)).T
        self.rms = float(np.sqrt(self.ground_rms**2 + 0.5 * np.sum(amp**2) / channels))

    def _ground(self, n: int) -> np.ndarray:
        white = self.rng.standard_normal((self.channels, n))
        red, self._zi_red = signal.sosfilt(self._red, white, axis=-1, zi=self._zi_red)
        out, self._zi_sensor = signal.sosfilt(self._sensor, (white + self.red_gain * red) * self.level,
                                              axis=-1, zi=self._zi_sensor)
        return out

    def block(self, n: int) -> np.ndarray:
        """The next ``n`` samples, (channels, n) float64, continuing the previous block."""
        x = self._ground(n)
        if self._tones:
            t = (self._n + np.arange(n)) / self.fs
            base = np.exp(2j * np.pi * np.outer(self._fundamentals, t))
            z = np.empty((len(self._tones), n), dtype=complex)
            for row, (k, h) in enumerate(self._tones):
                z[row] = base[k] if h == 1 else z[row - 1] * base[k]  # harmonics are listed in order
            x += self._tone_sin @ z.imag + self._tone_cos @ z.real
        self._n += n
        return x


def digitise(x: np.ndarray, site: Profile, noise_rms: float, rng: np.random.Generator,
             fs: float) -> tuple[np.ndarray, int, bool]:
    """Add single-sample spikes, quantise with the site's step, clip at full scale.

    Returns the float32 record in physical units, the number of spikes and whether any sample clipped.
    A drawn chain's digitiser also applies its polarity, channel gains, DC offset, dropouts and gain.
    """
    if isinstance(site, RecordingChain):
        return digitise_chain(x, site, noise_rms, rng, fs)
    y, n_spikes, clipped = _spike_quantise_clip(x.copy(), site, noise_rms, rng, fs)
    return y.astype(np.float32), n_spikes, clipped


def _spike_quantise_clip(y: np.ndarray, site: Profile, noise_rms: float, rng: np.random.Generator,
                         fs: float) -> tuple[np.ndarray, int, bool]:
    """Single-sample spikes, the ADC step and full-scale clipping, in place on ``y`` (channels, n)."""
    c, n = y.shape
    n_spikes = int(rng.poisson(site.spike_rate * n / fs))
    if n_spikes:
        ch = rng.integers(0, c, n_spikes)
        at = rng.integers(0, n, n_spikes)
        y[ch, at] += rng.choice([-1.0, 1.0], n_spikes) * rng.uniform(5.0, 40.0, n_spikes) * noise_rms
    lsb = site.lsb_sigma * noise_rms
    full_scale = noise_rms * 10.0 ** (site.clip_db / 20.0)
    y = np.round(y / lsb) * lsb
    clipped = bool(np.any(np.abs(y) >= full_scale))
    np.clip(y, -full_scale, full_scale, out=y)
    return y, n_spikes, clipped


def energy_span(x: np.ndarray, lo: float = 0.05, hi: float = 0.95) -> tuple[int, int]:
    """Samples between ``lo`` and ``hi`` of the cumulative energy of a (c, n) signal."""
    cum = np.cumsum(np.sum(x * x, axis=0))
    total = cum[-1]
    if total <= 0:
        return 0, x.shape[-1]
    a = int(np.searchsorted(cum, lo * total))
    b = int(np.searchsorted(cum, hi * total)) + 1
    return a, max(b, a + 1)


def snr_gain(event: np.ndarray, noise_rms: float, snr_db: float) -> float:
    """Gain that puts ``event`` at ``snr_db``: RMS over its 5-95 % energy span vs background RMS."""
    a, b = energy_span(event)
    sig_rms = float(np.sqrt(np.mean(event[:, a:b] ** 2)))
    return 0.0 if sig_rms == 0 else noise_rms * 10.0 ** (snr_db / 20.0) / sig_rms


# --------------------------------------------------------------------------- drawn recording chains
@lru_cache(maxsize=16)
def _zinv(fs: float, n: int) -> np.ndarray:
    """z^-1 = exp(-i w / fs) on the rfft grid of ``n`` samples."""
    return np.exp(-2j * np.pi * np.fft.rfftfreq(n, 1.0 / fs) / fs)


def _biquad(b: tuple[float, float, float], a: tuple[float, float, float], z1: np.ndarray) -> np.ndarray:
    return (b[0] + z1 * (b[1] + z1 * b[2])) / (a[0] + z1 * (a[1] + z1 * a[2]))


def geophone_biquad(natural_hz: float, damping: float, fs: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Bilinear transform of a geophone's s^2 / (s^2 + 2 h w0 s + w0^2) (velocity in, velocity out)."""
    w0, k = 2 * np.pi * natural_hz, 2.0 * fs
    return ((k * k, -2 * k * k, k * k),
            (k * k + 2 * damping * w0 * k + w0 * w0, 2 * (w0 * w0 - k * k), k * k - 2 * damping * w0 * k + w0 * w0))


def peaking_biquad(hz: float, q: float, gain_db: float, fs: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """A resonance of ``gain_db`` at ``hz`` with quality ``q`` (the audio-EQ peaking section)."""
    big_a, w = 10.0 ** (gain_db / 40.0), 2 * np.pi * hz / fs
    alpha = np.sin(w) / (2 * q)
    return ((1 + alpha * big_a, -2 * np.cos(w), 1 - alpha * big_a),
            (1 + alpha / big_a, -2 * np.cos(w), 1 - alpha / big_a))


# The anti-alias designs are a finite set (sites.AA_DESIGNS x the corner grid, 512 of them): cache them all,
# and their responses on one window grid (~50 kB each).
@lru_cache(maxsize=1024)
def aa_design(family: str, order: int, ripple_db: float, stop_db: float, corner: float) -> np.ndarray:
    """Anti-alias filter, corner a fraction of Nyquist: IIR second-order sections, or FIR taps."""
    if family == "butter":
        return signal.butter(order, corner, output="sos")
    if family == "cheby1":
        return signal.cheby1(order, ripple_db, corner, output="sos")
    if family == "ellip":
        return signal.ellip(order, ripple_db, stop_db, corner, output="sos")
    if family == "fir":  # linear phase, windowed sinc
        return signal.firwin(order, corner)
    raise ValueError(f"unknown anti-alias family {family!r}")


@lru_cache(maxsize=640)
def aa_response(family: str, order: int, ripple_db: float, stop_db: float, corner: float, n: int) -> np.ndarray:
    """The anti-alias filter's complex response on the rfft grid of ``n`` samples (any sampling rate)."""
    design = aa_design(family, order, ripple_db, stop_db, corner)
    if family == "fir":
        return np.fft.rfft(design, n)
    z1 = np.exp(-2j * np.pi * np.fft.rfftfreq(n))
    h = np.ones(z1.size, dtype=complex)
    for b0, b1, b2, a0, a1, a2 in design:
        h *= _biquad((b0, b1, b2), (a0, a1, a2), z1)
    return h


def aa_at(chain: RecordingChain, hz: np.ndarray, fs: float) -> np.ndarray:
    """The chain's anti-alias response at the frequencies ``hz`` (for lines, without a whole grid)."""
    design = aa_design(chain.aa_family, chain.aa_order, chain.aa_ripple_db, chain.aa_stop_db, chain.aa_corner)
    z1 = np.exp(-2j * np.pi * np.asarray(hz, dtype=float) / fs)
    if chain.aa_family == "fir":
        return np.polyval(design[::-1], z1)
    h = np.ones(z1.shape, dtype=complex)
    for b0, b1, b2, a0, a1, a2 in design:
        h *= _biquad((b0, b1, b2), (a0, a1, a2), z1)
    return h


def _chain_aa(chain: RecordingChain, n: int) -> np.ndarray:
    return aa_response(chain.aa_family, chain.aa_order, chain.aa_ripple_db, chain.aa_stop_db, chain.aa_corner, n)


@lru_cache(maxsize=16)
def chain_response(chain: RecordingChain, fs: float, n: int, through_sensor: bool = True) -> np.ndarray:
    """Complex response of a drawn chain on the rfft grid of ``n`` samples: sensor x mounting x anti-alias
    (ground velocity in), or the anti-alias filter alone for electrical pickup."""
    h = _chain_aa(chain, n)
    if not through_sensor:
        return h
    z1 = _zinv(fs, n)
    if chain.sensor == "geophone":
        mech = _biquad(*geophone_biquad(chain.natural_hz, chain.damping, fs), z1)
    else:  # velocity -> acceleration: a first difference, scaled to m/s^2
        mech = fs * (1.0 - z1)
    mount = _biquad(*peaking_biquad(min(chain.mount_hz, 0.45 * fs), chain.mount_q, chain.mount_gain_db, fs), z1)
    return h * mech * mount


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues: rotation by ``angle`` (rad) about the unit vector ``axis``."""
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


@lru_cache(maxsize=16)
def orientation_matrix(chain: RecordingChain) -> np.ndarray:
    """Rows: the sensor's three axes in (Z, N, E) coordinates (channel 1 at the azimuth, 2 at +90 degrees)."""
    a = np.radians(chain.azimuth_deg)
    axes = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(a), np.sin(a)], [0.0, -np.sin(a), np.cos(a)]])
    if chain.tilt_deg:
        ta = np.radians(chain.tilt_azimuth_deg)
        axes = axes @ _rotation(np.array([0.0, -np.sin(ta), np.cos(ta)]), np.radians(chain.tilt_deg)).T
    return axes


def background_shape(chain: RecordingChain, fs: float, n: int) -> np.ndarray:
    """Amplitude spectrum (before the chain) of the ground noise: slope f^s above 1 Hz plus Gaussian bumps."""
    f = np.fft.rfftfreq(n, 1.0 / fs)
    amp = (np.maximum(f, 1.0) / 100.0) ** chain.noise_slope
    if chain.bumps:
        logf = np.log2(np.maximum(f, 1e-3))
        bump = np.ones_like(f)
        for hz, octaves, db in chain.bumps:
            bump += (10.0 ** (db / 20.0) - 1.0) * np.exp(-0.5 * ((logf - np.log2(hz)) / octaves) ** 2)
        amp *= bump
    amp[0] = 0.0  # no DC: offsets are the digitiser's
    if n % 2 == 0:
        amp[-1] = 0.0
    return amp


class ChainBackground:
    """The background recording of a drawn chain: coloured noise, machinery lines, mains; endless if asked.

    ``endless`` streams join frequency-domain segments with a quarter-second power-preserving cross-fade
    and let the background level and the machinery frequencies drift with time; a window (``endless``
    false) is one segment at a random moment of those drifts. Same interface as :class:`Background`.
    """

    def __init__(self, chain: RecordingChain, fs: float, channels: int, rng: np.random.Generator,
                 endless: bool = False):
        self.chain, self.fs, self.channels, self.rng, self.endless = chain, fs, channels, rng, endless
        self.ground_rms = chain.noise_velocity * (2 * np.pi * ACCEL_REF_HZ if chain.sensor == "accelerometer" else 1.0)
        c = chain.coherence
        self._mix = np.linalg.cholesky((1 - c) * np.eye(channels) + c * np.ones((channels, channels)))
        self._shapes: dict[int, np.ndarray] = {}
        self._fade = max(8, int(0.25 * fs))
        self._buf = np.zeros((channels, 0))
        self._tail: np.ndarray | None = None
        self._t0 = rng.uniform(0.0, chain.level_period_s)  # where in the shift cycle the record starts
        self._level_phase = rng.uniform(0.0, 2 * np.pi)
        self._n = 0

        # Lines as (fundamental index, harmonic, amplitude); fundamentals as (hz, relative swing, period s).
        fundamentals: list[tuple[float, float, float]] = []
        rows: list[tuple[int, int, float]] = []
        hum = self.ground_rms * 10.0 ** (chain.hum_db / 20.0)
        f_mains = chain.mains_hz * (1.0 + rng.normal(0.0, 5e-4))
        fundamentals.append((f_mains, 5e-4, rng.uniform(10.0, 100.0)))  # the grid's frequency wanders
        rows += [(0, h, hum * 10.0 ** (db / 20.0)) for h, db in ((1, 0.0), *chain.mains_harmonics)]
        n_mains = len(rows)
        for hz, rel, db, drift, period in chain.tones:
            fundamentals.append((hz * rng.uniform(0.98, 1.02), drift, period))
            level = self.ground_rms * 10.0 ** (db / 20.0)
            rows += [(len(fundamentals) - 1, h, level * 10.0 ** (r / 20.0)) for h, r in enumerate(rel, start=1)]
        keep = [i for i, (k, h, _) in enumerate(rows) if h * fundamentals[k][0] < 0.48 * fs]
        self._n_mains = sum(i < n_mains for i in keep)
        rows = [rows[i] for i in keep]
        self._fundamentals = np.array(fundamentals)
        self._fm_phase = rng.uniform(0.0, 2 * np.pi, len(fundamentals))
        self._rows = [(k, h) for k, h, _ in rows]
        through_aa = np.abs(aa_at(chain, np.array([h * fundamentals[k][0] for k, h, _ in rows]), fs))
        is_mains = (np.arange(len(rows)) < self._n_mains)[:, None]
        spread = np.where(is_mains, rng.uniform(0.6, 1.0, (len(rows), channels)),
                          rng.uniform(0.3, 1.0, (len(rows), channels)))
        amp = (np.array([a for _, _, a in rows]) * through_aa)[:, None] * spread
        phase = rng.uniform(0, 2 * np.pi, (len(rows), channels))
        self._tone_sin, self._tone_cos = (amp * np.cos(phase)).T, (amp * np.sin(phase)).T
        self.rms = float(np.sqrt(self.ground_rms**2 + 0.5 * np.sum(amp**2) / channels))

    def _shape(self, m: int) -> np.ndarray:
        if m not in self._shapes:
            s = background_shape(self.chain, self.fs, m) * chain_response(self.chain, self.fs, m)
            power = (2.0 * np.sum(np.abs(s) ** 2) - np.abs(s[0]) ** 2 - (np.abs(s[-1]) ** 2 if m % 2 == 0 else 0)) / m
            self._shapes[m] = s * (self.ground_rms / np.sqrt(max(power, 1e-300)) * np.sqrt(m))
        return self._shapes[m]

    def _segment(self, m: int) -> np.ndarray:
        """``m`` samples of the coloured, channel-correlated ground noise (circular)."""
        nf = m // 2 + 1
        z = self.rng.standard_normal((2, self.channels, nf))
        spec = self._mix @ ((z[0] + 1j * z[1]) * np.sqrt(0.5))
        return np.fft.irfft(spec * self._shape(m), n=m, axis=-1)

    def _noise(self, n: int) -> np.ndarray:
        while self._buf.shape[1] < n:
            need = n - self._buf.shape[1]
            if not self.endless and self._tail is None:  # a window: one segment, nothing to join
                self._buf = np.concatenate([self._buf, self._segment(need)], axis=1)
                break
            fade = self._fade
            m = sp_fft.next_fast_len(need + 2 * fade)
            seg = self._segment(m)
            if self._tail is None:
                head = seg[:, :m - fade]
            else:
                theta = (np.arange(fade) + 0.5) / fade * (np.pi / 2)
                head = np.concatenate([self._tail * np.cos(theta) + seg[:, :fade] * np.sin(theta),
                                       seg[:, fade:m - fade]], axis=1)
            self._tail = seg[:, m - fade:]
            self._buf = np.concatenate([self._buf, head], axis=1)
        out, self._buf = self._buf[:, :n], self._buf[:, n:]
        return out

    def _level(self, t: np.ndarray) -> np.ndarray:
        """Slow level drift (shift changes), linear within a block."""
        ends = t[[0, -1]] + self._t0
        db = self.chain.level_drift_db * np.sin(2 * np.pi * ends / self.chain.level_period_s + self._level_phase)
        g = 10.0 ** (db / 20.0)
        return np.linspace(g[0], g[1], t.size)

    def block(self, n: int) -> np.ndarray:
        """The next ``n`` samples, (channels, n) float64, continuing the previous block."""
        t = (self._n + np.arange(n)) / self.fs
        x = self._noise(n)
        if self._rows:
            f0, swing, period = self._fundamentals.T
            tt = t + self._t0
            # Frequency f0 (1 + swing cos(2 pi t / period + p)): its phase, integrated in closed form.
            arg = 2 * np.pi * tt[None, :] / period[:, None] + self._fm_phase[:, None]
            phase = 2 * np.pi * f0[:, None] * (tt[None, :] + (swing * period / (2 * np.pi))[:, None] * np.sin(arg))
            base = np.exp(1j * phase)
            z = np.empty((len(self._rows), n), dtype=complex)
            for k, b in enumerate(base):  # harmonics by multiplying up from the one below: cheaper than exp
                powers = {1: b}

                def power(d: int, powers: dict = powers, b: np.ndarray = b) -> np.ndarray:
                    if d not in powers:
                        half = power(d // 2)
                        powers[d] = half * half * b if d % 2 else half * half
                    return powers[d]

                below, h_below = None, 0
                for row, (kk, h) in enumerate(self._rows):
                    if kk != k:
                        continue
                    if below is None:
                        z[row] = power(h)
                    else:
                        np.multiply(z[below], power(h - h_below), out=z[row])
                    below, h_below = row, h
            m = self._n_mains  # mains rows come first
            mains = self._tone_sin[:, :m] @ z[:m].imag + self._tone_cos[:, :m] @ z[:m].real
            machinery = self._tone_sin[:, m:] @ z[m:].imag + self._tone_cos[:, m:] @ z[m:].real
            x = (x + machinery) * self._level(t) + mains
        else:
            x = x * self._level(t)
        self._n += n
        return x


def make_background(site: Profile, fs: float, channels: int, rng: np.random.Generator,
                    endless: bool = False) -> Background | ChainBackground:
    """The background recorder of a named site or of a drawn chain."""
    if isinstance(site, RecordingChain):
        return ChainBackground(site, fs, channels, rng, endless)
    return Background(site, fs, channels, rng)


def digitise_chain(x: np.ndarray, chain: RecordingChain, noise_rms: float, rng: np.random.Generator,
                   fs: float) -> tuple[np.ndarray, int, bool]:
    """A drawn chain's digitiser: polarity and channel gains, DC offset, spikes, quantisation, clipping,
    dropouts (runs of zeros or of the held last value, on all channels), then the record's gain."""
    c, n = x.shape
    y = x * (np.array(chain.channel_gain[:c]) * np.array(chain.polarity[:c]))[:, None]
    y += np.array(chain.dc_offset[:c])[:, None] * noise_rms
    y, n_spikes, clipped = _spike_quantise_clip(y, chain, noise_rms, rng, fs)
    n_drop = int(rng.poisson(chain.dropout_rate * n / fs))
    if n_drop:
        length = max(1, int(round(chain.dropout_ms * 1e-3 * fs)))
        for at in rng.integers(0, n, n_drop):
            y[:, at:at + length] = y[:, at - 1:at] if chain.dropout_hold and at > 0 else 0.0
    return (y * chain.gain).astype(np.float32), n_spikes, clipped

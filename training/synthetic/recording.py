"""What a site's sensor and digitiser make of ground motion and background.

Ground noise (a white floor plus a red low-frequency part) and seismic sources
pass through the sensor (a geophone's second-order high-pass, or an
accelerometer's differentiation) and the ADC's anti-alias filter; mains hum,
stationary machinery tones and electrical pickup are added after the sensor;
the digitiser then adds single-sample spikes, quantises (coarsely near the noise
floor at high gain) and clips. The same filters serve windows (applied in the
frequency domain) and endless streams (IIR with carried state), so both agree.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import signal

from training.synthetic.sites import SITES, SiteProfile

ACCEL_REF_HZ = 100.0  # accelerometer background is flat in acceleration; scale it like 100 Hz velocity


@lru_cache(maxsize=64)
def sensor_sos(site_name: str, fs: float) -> np.ndarray:
    """Second-order sections of sensor response plus anti-alias filter (ground velocity in, output out)."""
    site = SITES[site_name]
    aa = signal.butter(6, 0.42 * fs, fs=fs, output="sos")
    if site.sensor == "geophone":
        w0 = 2 * np.pi * site.natural_hz
        b, a = signal.bilinear([1.0, 0.0, 0.0], [1.0, 2 * site.damping * w0, w0 * w0], fs)
        mech = signal.tf2sos(b, a)
    else:  # velocity -> acceleration: a first difference, scaled to m/s^2
        mech = np.array([[fs, -fs, 0.0, 1.0, 0.0, 0.0]])
    return np.vstack([mech, aa])


@lru_cache(maxsize=64)
def noise_sos(site_name: str, fs: float) -> np.ndarray:
    """Filter that turns the site's ground-noise floor into recorded background (before hum)."""
    site = SITES[site_name]
    if site.sensor == "geophone":
        return sensor_sos(site_name, fs)
    return signal.butter(6, 0.42 * fs, fs=fs, output="sos")  # accelerometer self-noise is flat


@lru_cache(maxsize=64)
def red_sos(corner_hz: float, fs: float) -> np.ndarray:
    return signal.butter(2, corner_hz, fs=fs, output="sos")


@lru_cache(maxsize=64)
def _response(sos_key: tuple, fs: float, n: int) -> np.ndarray:
    sos = np.array(sos_key)
    _, h = signal.sosfreqz(sos, worN=np.fft.rfftfreq(n, 1.0 / fs), fs=fs)
    return h


def sensor_response(site_name: str, fs: float, n: int, through_sensor: bool = True) -> np.ndarray:
    """Complex response on the rfft grid of ``n`` samples (sensor+anti-alias, or anti-alias only)."""
    sos = sensor_sos(site_name, fs) if through_sensor else sensor_sos(site_name, fs)[-3:]
    return _response(tuple(map(tuple, sos)), fs, n)


def record(site_name: str, fs: float, ground: np.ndarray, through_sensor: bool = True) -> np.ndarray:
    """Apply the site's sensor (or only the anti-alias filter for pickup) to (c, n) motion, circularly."""
    n = ground.shape[-1]
    return np.fft.irfft(np.fft.rfft(ground, axis=-1) * sensor_response(site_name, fs, n, through_sensor),
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
        self._sensor = noise_sos(site.name, fs)
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


def digitise(x: np.ndarray, site: SiteProfile, noise_rms: float, rng: np.random.Generator,
             fs: float) -> tuple[np.ndarray, int, bool]:
    """Add single-sample spikes, quantise with the site's step, clip at full scale.

    Returns the float32 record in physical units, the number of spikes and whether any sample clipped.
    """
    y = x.copy()
    n_spikes = int(rng.poisson(site.spike_rate * y.shape[-1] / fs))
    if n_spikes:
        ch = rng.integers(0, y.shape[0], n_spikes)
        at = rng.integers(0, y.shape[-1], n_spikes)
        y[ch, at] += rng.choice([-1.0, 1.0], n_spikes) * rng.uniform(5.0, 40.0, n_spikes) * noise_rms
    lsb = site.lsb_sigma * noise_rms
    full_scale = noise_rms * 10.0 ** (site.clip_db / 20.0)
    y = np.round(y / lsb) * lsb
    clipped = bool(np.any(np.abs(y) >= full_scale))
    np.clip(y, -full_scale, full_scale, out=y)
    return y.astype(np.float32), n_spikes, clipped


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

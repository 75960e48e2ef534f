"""Recording chains and mine backgrounds: eight site types, each drawn afresh with random variation.

A site type is a set of parameter ranges; ``SiteType.draw`` picks one concrete recording chain from
them (one sensor with its natural frequency and damping, its mounting resonance, anti-alias filter,
background spectrum with its tonal lines, mains pickup, ADC resolution and full scale, channel
gains, polarities and orientation). Responses are evaluated analytically on the FFT grid, so a
chain costs a few vector operations per window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import signal as sps
from scipy.fft import irfft, next_fast_len, rfft, rfftfreq

TWO_PI = 2.0 * math.pi


def loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """A draw uniform in log between ``lo`` and ``hi`` (both > 0)."""
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


@dataclass(frozen=True)
class SiteType:
    """Parameter ranges of one kind of recording site (frequencies in Hz, levels in dB)."""

    name: str
    sensor: str  # "geophone" (velocity) or "accelerometer" (acceleration)
    natural_hz: tuple[float, ...] = (14.0,)
    damping: tuple[float, float] = (0.6, 0.75)
    accel_resonance_hz: tuple[float, float] = (8000.0, 25000.0)
    mount_hz: tuple[float, float] = (1500.0, 6000.0)  # grouted: high; bolted/plated: lower
    mount_zeta: tuple[float, float] = (0.1, 0.3)
    antialias: tuple[str, ...] = ("butter",)  # butter / cheby1 / ellip (causal IIR), fir (linear phase)
    aa_order: tuple[int, int] = (4, 8)
    aa_corner: tuple[float, float] = (0.36, 0.45)  # fraction of the sampling rate
    highpass_hz: tuple[float, float] = (0.05, 1.0)  # AC coupling of the amplifier
    slope: tuple[float, float] = (0.8, 2.0)  # ground-noise velocity PSD ~ f**-slope
    bumps: tuple[int, int] = (0, 2)  # band-limited humps (distant machinery, flow)
    tonal_lines: tuple[int, int] = (1, 3)  # fans, pumps, motors
    tone_db: tuple[float, float] = (-12.0, 3.0)  # each line's RMS over the broadband ground noise
    mains_hz: tuple[float, ...] = (50.0,)
    mains_db: tuple[float, float] = (-30.0, -10.0)
    electronic_db: tuple[float, float] = (-25.0, -10.0)  # white self-noise floor
    drift: tuple[float, float] = (0.0, 0.2)  # relative level drift
    levels: tuple[float, float] = (300.0, 5000.0)  # distinct ADC values over the background range
    clip_db: tuple[float, float] = (60.0, 90.0)  # full scale over the background RMS
    spikes_per_s: tuple[float, float] = (0.0, 0.3)
    orientation: tuple[str, ...] = ("ZNE",)  # ZNE, Z12 (horizontals at unknown azimuth), borehole
    gain_spread: float = 0.05
    flip_prob: float = 0.0
    dc_offset: tuple[float, float] = (0.0, 0.0)  # in background RMS

    def draw(self, rng: np.random.Generator, fs: float, channels: int) -> Site:
        """One concrete recording chain of this type."""
        u = rng.uniform
        nyq = fs / 2.0
        natural = float(rng.choice(self.natural_hz)) * u(0.95, 1.05)  # tolerance of the spring
        mount = loguniform(rng, *self.mount_hz)
        aa_kind = str(rng.choice(self.antialias))
        aa_corner = u(*self.aa_corner) * fs
        if aa_kind == "fir":
            aa = ("fir", aa_corner, 0.0, 0.0)
        else:
            order = int(rng.integers(self.aa_order[0], self.aa_order[1] + 1))
            if aa_kind == "butter":
                z, p, k = sps.butter(order, TWO_PI * aa_corner, analog=True, output="zpk")
            elif aa_kind == "cheby1":
                z, p, k = sps.cheby1(order, u(0.1, 1.0), TWO_PI * aa_corner, analog=True, output="zpk")
            else:
                z, p, k = sps.ellip(order, u(0.1, 0.5), u(60.0, 90.0), TWO_PI * aa_corner, analog=True,
                                    output="zpk")
            aa = (aa_kind, z, p, k)
        lines = []
        for _ in range(int(rng.integers(self.tonal_lines[0], self.tonal_lines[1] + 1))):
            # A rotating machine: shaft (motor 24-30 Hz, fan blade pass, pump vanes) with harmonics.
            f0 = loguniform(rng, 8.0, min(400.0, 0.3 * nyq))
            n_harm = int(rng.integers(1, 4))
            level = 10 ** (u(*self.tone_db) / 20)
            for h in range(1, n_harm + 1):
                if h * f0 < 0.8 * aa_corner:
                    lines.append(ToneLine(h * f0, level * u(0.3, 1.0) ** (h - 1), u(0.0, 0.004),
                                          u(0.02, 0.5), rng.uniform(0, TWO_PI, channels),
                                          rng.uniform(0.3, 1.0, channels)))
        bumps = [(loguniform(rng, 3.0, 0.5 * nyq), u(0.15, 0.5), loguniform(rng, 2.0, 30.0))
                 for _ in range(int(rng.integers(self.bumps[0], self.bumps[1] + 1)))]
        mains = float(rng.choice(self.mains_hz)) * u(0.998, 1.002)
        n_harm = max(1, min(15, int(0.8 * aa_corner // mains)))
        # Odd harmonics dominate (saturating transformers, rectifiers); even ones are weaker.
        harm_amp = np.array([1.0 if h == 1 else u(0.05, 0.6) / h ** 0.5 * (1.0 if h % 2 else u(0.1, 0.5))
                             for h in range(1, n_harm + 1)])
        gains = 1.0 + rng.uniform(-self.gain_spread, self.gain_spread, channels)
        signs = np.where(rng.random(channels) < self.flip_prob, -1.0, 1.0)
        return Site(
            name=self.name, fs=fs, channels=channels, sensor=self.sensor, natural_hz=natural,
            damping=u(*self.damping), accel_resonance_hz=u(*self.accel_resonance_hz), mount_hz=mount,
            mount_zeta=u(*self.mount_zeta), aa=aa, highpass_hz=loguniform(rng, *self.highpass_hz),
            slope=u(*self.slope), bumps=bumps, lines=lines, mains_hz=mains,
            mains_level=10 ** (u(*self.mains_db) / 20), mains_harmonics=harm_amp,
            mains_phase=rng.uniform(0, TWO_PI, (channels, n_harm)), mains_coupling=rng.uniform(0.4, 1.0, channels),
            electronic=10 ** (u(*self.electronic_db) / 20), drift=u(*self.drift), drift_period_s=u(3.0, 30.0),
            drift_phase=u(0, TWO_PI), levels=loguniform(rng, *self.levels), clip_db=u(*self.clip_db),
            spikes_per_s=u(*self.spikes_per_s), rotation=orientation_matrix(rng, str(rng.choice(self.orientation)),
                                                                          channels),
            gains=gains * signs, dc=rng.uniform(*self.dc_offset, channels) * rng.choice([-1.0, 1.0], channels))


@dataclass
class ToneLine:
    """One steady spectral line: frequency, level over the ground noise, slow FM, per-channel phase/gain."""

    hz: float
    level: float
    fm_depth: float  # relative frequency wander
    fm_hz: float
    phase: np.ndarray
    coupling: np.ndarray


@dataclass
class Site:
    """A concrete recording chain (see ``SiteType.draw``)."""

    name: str
    fs: float
    channels: int
    sensor: str
    natural_hz: float
    damping: float
    accel_resonance_hz: float
    mount_hz: float
    mount_zeta: float
    aa: tuple
    highpass_hz: float
    slope: float
    bumps: list
    lines: list[ToneLine]
    mains_hz: float
    mains_level: float
    mains_harmonics: np.ndarray
    mains_phase: np.ndarray
    mains_coupling: np.ndarray
    electronic: float
    drift: float
    drift_period_s: float
    drift_phase: float
    levels: float
    clip_db: float
    spikes_per_s: float
    rotation: np.ndarray  # (channels, 3): each channel's axis in (Z, N, E)
    gains: np.ndarray  # per-channel gain including polarity
    dc: np.ndarray
    _cache: dict = field(default_factory=dict, repr=False)

    # -- responses ---------------------------------------------------------------------------------
    def antialias(self, f: np.ndarray) -> np.ndarray:
        """The digitiser's anti-alias filter (causal IIR, or zero-phase linear-phase FIR)."""
        kind = self.aa[0]
        if kind == "fir":
            corner = self.aa[1]
            lo, hi = 0.88 * corner, min(1.12 * corner, self.fs / 2)
            x = np.clip((f - lo) / max(hi - lo, 1e-9), 0.0, 1.0)
            return (np.cos(0.5 * math.pi * x) ** 2).astype(complex)
        _, z, p, k = self.aa
        return sps.freqs_zpk(z, p, k, worN=TWO_PI * f)[1]

    def sensor_response(self, f: np.ndarray) -> np.ndarray:
        """Sensor output per unit ground velocity, with mounting resonance and AC coupling."""
        s = 1j * TWO_PI * f
        if self.sensor == "geophone":
            w0 = TWO_PI * self.natural_hz
            h = s * s / (s * s + 2 * self.damping * w0 * s + w0 * w0)
        else:  # acceleration sensor, normalised to unit gain at fs/20, with its own resonance
            wr = TWO_PI * self.accel_resonance_hz
            h = s / (TWO_PI * self.fs / 20) * wr * wr / (s * s + 2 * 0.03 * wr * s + wr * wr)
        wm = TWO_PI * self.mount_hz
        mount = (2 * self.mount_zeta * wm * s + wm * wm) / (s * s + 2 * self.mount_zeta * wm * s + wm * wm)
        hp = s / (s + TWO_PI * self.highpass_hz)
        return h * mount * hp

    def response(self, n_fft: int, path: str) -> np.ndarray:
        """Transfer function on the rfft grid of ``n_fft``: ``ground`` (sensor+digitiser), ``coil`` (a
        calibration current through the sensor) or ``electronic`` (pickup after the sensor)."""
        key = (n_fft, path)
        if key not in self._cache:
            f = rfftfreq(n_fft, 1.0 / self.fs)
            f[0] = 1e-6
            s = 1j * TWO_PI * f
            aa = self.antialias(f) * (s / (s + TWO_PI * self.highpass_hz))
            if path == "ground":
                h = self.sensor_response(f) * self.antialias(f)
            elif path == "coil" and self.sensor == "geophone":
                # Coil current acts like ground acceleration on the mass: velocity response / s.
                h = self.sensor_response(f) * self.antialias(f) * (TWO_PI * self.natural_hz) / s
            else:
                h = aa
            h[0] = 0.0
            self._cache[key] = h
        return self._cache[key]

    def record(self, x: np.ndarray, path: str) -> np.ndarray:
        """Pass a signal through the chain. ``ground``: x is (3, L) ground velocity in (Z, N, E);
        otherwise x is (channels, L) already per channel. Returns (channels, L)."""
        length = x.shape[-1]
        n_fft = next_fast_len(length + int(0.05 * self.fs) + 256, real=True)
        if path == "ground":
            x = self.rotation @ x
        spec = rfft(x, n_fft, axis=-1) * self.response(n_fft, path)
        out = irfft(spec, n_fft, axis=-1)[:, :length]
        return out * self.gains[:, None] if path != "electronic" else out

    # -- background --------------------------------------------------------------------------------
    def ground_psd(self, f: np.ndarray) -> np.ndarray:
        """Ground-noise velocity PSD shape: a power law with band-limited humps."""
        fl = np.maximum(f, 1.0)
        psd = (fl / 10.0) ** (-self.slope)
        for centre, width, gain in self.bumps:
            psd = psd * (1.0 + gain * np.exp(-0.5 * (np.log(fl / centre) / width) ** 2))
        return psd

    def noise(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Broadband background (channels, n): coloured ground noise through the chain, plus white
        electronic self-noise through the anti-alias filter. Ground part normalised to unit RMS."""
        n_fft = next_fast_len(n, real=True)
        key = ("psd", n_fft)
        if key not in self._cache:
            f = rfftfreq(n_fft, 1.0 / self.fs)
            g = np.sqrt(self.ground_psd(f)) * np.abs(self.response(n_fft, "ground"))
            e = np.abs(self.response(n_fft, "electronic"))
            # Scale each part so that its expected RMS is 1 (ground) and `electronic` (self-noise).
            g /= math.sqrt(2 * np.sum(g ** 2) / n_fft ** 2) + 1e-30
            e *= self.electronic / (math.sqrt(2 * np.sum(e ** 2) / n_fft ** 2) + 1e-30)
            self._cache[key] = g + 0j, e + 0j
        g, e = self._cache[key]
        shape = (self.channels, g.size)
        white = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / math.sqrt(2)
        white2 = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / math.sqrt(2)
        return irfft(white * g + white2 * e, n_fft, axis=-1)[:, :n]

    def tones(self, t: np.ndarray, on: np.ndarray | None = None) -> np.ndarray:
        """Steady tonal lines (fans, pumps) at absolute times ``t``; ``on`` optionally gates each line."""
        out = np.zeros((self.channels, t.size))
        f_axis = np.array([ln.hz for ln in self.lines])
        if not self.lines:
            return out
        gain = np.abs(self.sensor_response(f_axis) * self.antialias(f_axis))
        for j, ln in enumerate(self.lines):
            # Slow wander of the shaft speed: the phase integrates the frequency modulation.
            theta = TWO_PI * ln.hz * t + ln.fm_depth * ln.hz / ln.fm_hz * np.sin(TWO_PI * ln.fm_hz * t)
            z = np.exp(1j * theta)
            a = math.sqrt(2) * ln.level * gain[j] * ln.coupling
            c = a * np.exp(1j * ln.phase)
            wave = c.real[:, None] * z.real - c.imag[:, None] * z.imag
            out += wave if on is None else wave * on[j]
        return out

    def mains(self, t: np.ndarray, level: float = 1.0) -> np.ndarray:
        """Mains hum with harmonics, induced in the cables (after the sensor, before the filter)."""
        theta = TWO_PI * self.mains_hz * t
        z1 = np.exp(1j * theta)
        z = np.ones_like(z1)
        out = np.zeros((self.channels, t.size))
        f = self.mains_hz * np.arange(1, self.mains_harmonics.size + 1)
        aa = np.abs(self.antialias(f))
        for h, amp in enumerate(self.mains_harmonics):
            z = z * z1
            c = (math.sqrt(2) * self.mains_level * level * amp * aa[h] * self.mains_coupling
                 * np.exp(1j * self.mains_phase[:, h]))
            out += c.real[:, None] * z.real - c.imag[:, None] * z.imag
        return out

    def drift_envelope(self, t: np.ndarray) -> np.ndarray:
        """Slow level drift of the background (ventilation, shift activity)."""
        return 1.0 + self.drift * np.sin(TWO_PI * t / self.drift_period_s + self.drift_phase)

    def background(self, rng: np.random.Generator, n: int, t0: float = 0.0) -> np.ndarray:
        """A window of background (channels, n) starting at absolute time ``t0``."""
        t = t0 + np.arange(n) / self.fs
        return (self.noise(rng, n) + self.tones(t)) * self.drift_envelope(t) + self.mains(t)

    # -- digitiser ---------------------------------------------------------------------------------
    def digitise(self, rng: np.random.Generator, x: np.ndarray, background_rms: float,
                 spikes: bool = True) -> np.ndarray:
        """ADC: DC offset, single-sample glitches, quantisation to the site's resolution, clipping."""
        lsb = 6.0 * background_rms / self.levels  # `levels` distinct values across +-3 sigma
        full_scale = background_rms * 10 ** (self.clip_db / 20)
        y = x + (self.dc * background_rms)[:, None]
        if spikes and self.spikes_per_s > 0:
            k = rng.poisson(self.spikes_per_s * x.shape[1] / self.fs)
            if k:
                ch = rng.integers(0, self.channels, k)
                at = rng.integers(0, x.shape[1], k)
                y[ch, at] += rng.choice([-1.0, 1.0], k) * rng.uniform(5.0, 40.0, k) * background_rms
        y = np.round(y / lsb) * lsb
        return np.clip(y, -full_scale, full_scale)


def orientation_matrix(rng: np.random.Generator, kind: str, channels: int) -> np.ndarray:
    """Each channel's sensitive axis as a unit vector in (Z up, N, E).

    ``ZNE``: nominal axes with a few degrees of installation error; ``Z12``: vertical plus horizontals
    at an unknown azimuth; ``borehole``: an arbitrary rotation (azimuth and tilt of the hole unknown).
    """
    if kind == "borehole":
        q, r = np.linalg.qr(rng.standard_normal((3, 3)))
        rot = q * np.sign(np.diag(r))
        tilt = 0.0
    else:
        az = rng.uniform(0, TWO_PI) if kind == "Z12" else math.radians(rng.normal(0, 4))
        c, s = math.cos(az), math.sin(az)
        rot = np.array([[1.0, 0, 0], [0, c, s], [0, -s, c]])
        tilt = math.radians(rng.normal(0, 3))
    if tilt:
        c, s = math.cos(tilt), math.sin(tilt)
        rot = rot @ np.array([[c, s, 0], [-s, c, 0], [0, 0, 1.0]])
    axes = [rot[k % 3] for k in range(min(channels, 3))]
    for _ in range(channels - len(axes)):  # extra channels: further uniaxial sensors, any direction
        v = rng.standard_normal(3)
        axes.append(v / np.linalg.norm(v))
    return np.array(axes)


SITE_TYPES: dict[str, SiteType] = {s.name: s for s in (
    SiteType("grouted_borehole_14hz", "geophone", natural_hz=(14.0,), damping=(0.62, 0.72),
             mount_hz=(2500.0, 8000.0), mount_zeta=(0.15, 0.35), antialias=("butter", "fir"),
             orientation=("borehole",), tonal_lines=(1, 2), flip_prob=0.05),
    SiteType("bolted_wall_28hz", "geophone", natural_hz=(28.0,), damping=(0.5, 0.72),
             mount_hz=(350.0, 1500.0), mount_zeta=(0.04, 0.12), antialias=("fir", "cheby1"),
             orientation=("Z12",), tonal_lines=(1, 3), mains_db=(-25.0, -8.0), gain_spread=0.15, flip_prob=0.15),
    SiteType("stope_piezo_accelerometer", "accelerometer", accel_resonance_hz=(6000.0, 25000.0),
             mount_hz=(3000.0, 9000.0), antialias=("ellip",), highpass_hz=(2.0, 30.0), slope=(0.3, 1.2),
             electronic_db=(-15.0, -4.0), orientation=("borehole", "ZNE"), mains_hz=(60.0,),
             gain_spread=0.1),
    SiteType("vent_shaft_noisy_14hz", "geophone", natural_hz=(14.0,), damping=(0.6, 0.75),
             mount_hz=(800.0, 3000.0), tonal_lines=(3, 5), tone_db=(-3.0, 10.0), mains_db=(-12.0, 0.0),
             drift=(0.1, 0.35), levels=(10.0, 40.0), spikes_per_s=(0.5, 3.0), orientation=("ZNE", "Z12"),
             flip_prob=0.1),
    SiteType("high_gain_coarse_adc", "geophone", natural_hz=(14.0, 28.0), damping=(0.55, 0.75),
             mount_hz=(600.0, 4000.0), antialias=("butter", "cheby1"), levels=(10.0, 30.0),
             clip_db=(28.0, 42.0), mains_hz=(60.0,), spikes_per_s=(0.1, 1.0), dc_offset=(0.0, 2.0),
             gain_spread=0.2, flip_prob=0.2, orientation=("Z12",)),
    SiteType("longwall_node_4p5hz", "geophone", natural_hz=(4.5,), damping=(0.3, 0.7),
             mount_hz=(150.0, 1200.0), mount_zeta=(0.1, 0.4), antialias=("fir",), slope=(1.5, 3.0),
             bumps=(1, 3), tonal_lines=(2, 4), tone_db=(-10.0, 5.0), orientation=("ZNE",), levels=(40.0, 400.0)),
    SiteType("open_pit_slope_14hz", "geophone", natural_hz=(14.0, 4.5), damping=(0.55, 0.72),
             mount_hz=(100.0, 800.0), mount_zeta=(0.2, 0.5), antialias=("butter",), slope=(1.8, 3.0),
             bumps=(1, 3), drift=(0.1, 0.4), mains_hz=(60.0,), mains_db=(-40.0, -20.0),
             orientation=("ZNE", "Z12")),
    SiteType("deep_force_balance_accel", "accelerometer", accel_resonance_hz=(3000.0, 12000.0),
             mount_hz=(4000.0, 12000.0), mount_zeta=(0.2, 0.4), antialias=("fir", "ellip"),
             highpass_hz=(0.1, 2.0), slope=(0.5, 1.5), electronic_db=(-30.0, -15.0), tonal_lines=(1, 2),
             tone_db=(-15.0, -3.0), mains_db=(-40.0, -22.0), levels=(1000.0, 20000.0), orientation=("borehole",)),
)}


def site_types() -> tuple[str, ...]:
    """Names of the eight site types."""
    return tuple(SITE_TYPES)

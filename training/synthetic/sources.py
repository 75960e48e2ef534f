"""Ground-motion physics of each signal family (DOMAIN.md), on a common time grid.

Every source draws its own parameters from ``rng`` (wide ranges, so a model
cannot memorise one shape) and returns a :class:`Source`: three-component
(Z, N, E) signal on the grid, with ``onset`` the sample of the first energy.
Amplitudes are relative: the window generator scales each event to its drawn
SNR. Seismic sources are built in the frequency domain, so any sampling rate
works without aliasing; electrical pickup bypasses the sensor's mechanics.

References: Brune (1970) omega-squared source, corner frequency
f_c = 0.37 beta (16 dsigma / (7 M0))^(1/3), M0 = 10^(1.5 Mw + 9.1) N m;
constant-Q attenuation exp(-pi f t*) with Futterman-type dispersion.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

ZNE = 3  # components: vertical, north, east


@dataclass(frozen=True)
class Grid:
    """A time grid of ``n`` samples at ``fs`` Hz, with its rfft frequencies."""

    fs: float
    n: int
    t: np.ndarray = field(repr=False)
    f: np.ndarray = field(repr=False)

    @classmethod
    def make(cls, fs: float, n: int) -> Grid:
        return cls(fs, n, np.arange(n) / fs, np.fft.rfftfreq(n, 1.0 / fs))


@dataclass
class Source:
    """One signal family's contribution: (3, n) ground motion (or pickup) and what made it."""

    signal: np.ndarray
    onset: int
    through_sensor: bool = True
    meta: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- building blocks
def corner_hz(mw: float, stress_drop_pa: float, beta: float) -> float:
    """Brune corner frequency of a source of moment magnitude ``mw``."""
    m0 = 10.0 ** (1.5 * mw + 9.1)
    return 0.37 * beta * (16.0 * stress_drop_pa / (7.0 * m0)) ** (1.0 / 3.0)


def brune_velocity(f: np.ndarray, fc: float) -> np.ndarray:
    """Far-field velocity spectrum of a Brune source with unit low-frequency displacement plateau."""
    return 2j * np.pi * f / (1.0 + 1j * f / fc) ** 2


def attenuation(f: np.ndarray, tstar: float) -> np.ndarray:
    """Constant-Q operator exp(-pi f t*) with the dispersion that keeps it causal (Futterman 1962)."""
    fr = max(float(f[-1]), 1.0)
    with np.errstate(divide="ignore"):
        disp = np.where(f > 0, np.log(fr / np.maximum(f, 1e-9)), 0.0)
    return np.exp(-np.pi * f * tstar - 2j * f * tstar * disp)


def delays(f: np.ndarray, times: np.ndarray, amps: np.ndarray) -> np.ndarray:
    """Spectrum of a train of impulses at ``times`` (s) with ``amps``: sum_k a_k exp(-2 pi i f t_k)."""
    return amps @ np.exp(-2j * np.pi * np.outer(times, f))


def impulses(grid: Grid, times: np.ndarray, amps: np.ndarray) -> np.ndarray:
    """Spectrum of impulses at ``times`` rounded to the nearest sample; ``amps`` (k,) or (rows, k).

    Cheaper than :func:`delays` for long trains (drill blows, rockfall impacts), where the
    half-sample timing error is far below the trains' own jitter.
    """
    idx = np.clip(np.round(times * grid.fs).astype(int), 0, grid.n - 1)
    amps = np.atleast_2d(amps)
    x = np.zeros((amps.shape[0], grid.n))
    for row in range(amps.shape[0]):
        np.add.at(x[row], idx, amps[row])
    return np.fft.rfft(x, axis=-1)


def unit_vector(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(ZNE)
    return v / np.linalg.norm(v)


def s_polarisation(rng: np.random.Generator, ray: np.ndarray) -> np.ndarray:
    """A unit S polarisation perpendicular to ``ray``, at least half of its energy on SH (horizontal)."""
    sh = np.cross([1.0, 0.0, 0.0], ray)  # Z x ray is horizontal
    if np.linalg.norm(sh) < 1e-6:
        sh = np.array([0.0, 1.0, 0.0])
    sh /= np.linalg.norm(sh)
    sv = np.cross(ray, sh)
    psi = rng.uniform(-np.pi / 4, np.pi / 4)
    return np.cos(psi) * sh + np.sin(psi) * sv


def _smooth_noise(rng: np.random.Generator, grid: Grid, shape: np.ndarray, rows: int) -> np.ndarray:
    """Gaussian noise with spectral amplitude ``shape``, each row scaled to unit RMS."""
    spec = np.fft.rfft(rng.standard_normal((rows, grid.n)), axis=-1) * shape
    x = np.fft.irfft(spec, n=grid.n, axis=-1)
    return x / (np.sqrt(np.mean(x**2, axis=-1, keepdims=True)) + 1e-30)


def _decay_envelope(grid: Grid, start: float, tau: float, rise: float = 0.004) -> np.ndarray:
    dt = grid.t - start
    env = np.where(dt > 0, (1.0 - np.exp(-np.maximum(dt, 0) / rise)) * np.exp(-np.maximum(dt, 0) / tau), 0.0)
    return env


# --------------------------------------------------------------------------- families
def microseismic(rng: np.random.Generator, grid: Grid, onset: float, q_range: tuple[float, float],
                 mw_range: tuple[float, float] = (-3.0, 1.0)) -> Source:
    """Rock fracture: Brune P then larger S (S-P from the distance), attenuated, with a scattered coda."""
    f = grid.f
    mw = rng.uniform(*mw_range)
    stress_drop = 10.0 ** rng.uniform(5.0, 7.0)  # 0.1-10 MPa
    beta = rng.uniform(3000.0, 3500.0)
    alpha = beta * rng.uniform(1.65, 1.8)
    dist = 10.0 ** rng.uniform(np.log10(30.0), np.log10(1000.0))
    qs = rng.uniform(*q_range)
    qp = qs * rng.uniform(1.3, 2.0)
    fc_s = corner_hz(mw, stress_drop, beta)
    fc_p = fc_s * rng.uniform(1.2, 1.6)
    tp, ts = dist / alpha, dist / beta
    t_sp = ts - tp
    # S/P displacement ratio (alpha/beta)^3 ~ 5, times a radiation-pattern draw.
    s_ratio = (alpha / beta) ** 3 * rng.uniform(0.9, 2.0)
    p = np.fft.irfft(brune_velocity(f, fc_p) * attenuation(f, tp / qp) * delays(f, np.array([onset]),
                     np.ones(1)), n=grid.n)
    s = np.fft.irfft(s_ratio * brune_velocity(f, fc_s) * attenuation(f, ts / qs)
                     * delays(f, np.array([onset + t_sp]), np.ones(1)), n=grid.n)
    ray = unit_vector(rng)
    pol_s = s_polarisation(rng, ray)
    coda_shape = np.abs(brune_velocity(f, fc_s) * attenuation(f, ts / qs))
    tau_coda = rng.uniform(0.012, 0.05) + 0.3 * t_sp
    coda = _smooth_noise(rng, grid, coda_shape, ZNE) * _decay_envelope(grid, onset + t_sp, tau_coda)
    coda *= rng.uniform(0.06, 0.2) * np.max(np.abs(s))
    signal = np.outer(ray, p) + np.outer(pol_s, s) + coda
    return Source(signal, int(round(onset * grid.fs)), meta={
        "mw": mw, "fc_s_hz": fc_s, "fc_p_hz": fc_p, "distance_m": dist, "s_minus_p_s": t_sp, "q": qs,
        "s_sample": int(round((onset + t_sp) * grid.fs)), "coda_tau_s": tau_coda})


def blast(rng: np.random.Generator, grid: Grid, onset: float, q_range: tuple[float, float]) -> Source:
    """Delay-fired blast: similar P-dominant pulses repeating at millisecond delays, gradual rise, long decay."""
    f = grid.f
    n_charges = int(rng.integers(2, 13))
    delay = rng.uniform(0.017, 0.100)
    steps = delay * (1.0 + rng.normal(0.0, 0.03, n_charges - 1))
    times = onset + np.concatenate([[0.0], np.cumsum(steps)])
    times = times[times < grid.t[-1] - 0.05]
    k = np.arange(times.size)
    amps = (1.0 - np.exp(-(k + 1) / rng.uniform(0.7, 2.5))) * rng.uniform(0.75, 1.0, times.size)
    mw = rng.uniform(-1.0, 1.5)
    beta = rng.uniform(3000.0, 3500.0)
    alpha = beta * rng.uniform(1.65, 1.8)
    dist = 10.0 ** rng.uniform(np.log10(40.0), np.log10(1500.0))
    qs = rng.uniform(*q_range)
    qp = qs * rng.uniform(1.3, 2.0)
    fc_p = corner_hz(mw, 10.0 ** rng.uniform(5.0, 6.5), beta) * rng.uniform(1.2, 1.6)
    fc_s = fc_p / rng.uniform(1.2, 1.6)
    tp, ts = dist / alpha, dist / beta
    comb = delays(f, times, amps)
    p = np.fft.irfft(brune_velocity(f, fc_p) * attenuation(f, tp / qp) * comb, n=grid.n)
    s = np.fft.irfft(rng.uniform(0.2, 0.8) * brune_velocity(f, fc_s) * attenuation(f, ts / qs) * comb
                     * np.exp(-2j * np.pi * f * (ts - tp)), n=grid.n)
    ray = unit_vector(rng)
    # The coda grows with each charge and decays monotonically after the last one.
    tau = rng.uniform(0.06, 0.3)
    env = sum(a * _decay_envelope(grid, t0, tau) for a, t0 in zip(amps, times, strict=True))
    coda = _smooth_noise(rng, grid, np.abs(brune_velocity(f, fc_s) * attenuation(f, ts / qs)), ZNE) * env
    coda *= rng.uniform(0.04, 0.12) * np.max(np.abs(p)) / (np.max(env) + 1e-30)
    signal = np.outer(ray, p) + np.outer(s_polarisation(rng, ray), s) + coda
    return Source(signal, int(round(onset * grid.fs)), meta={
        "charges": int(times.size), "delay_s": delay, "mw": mw, "distance_m": dist,
        "charge_samples": np.round(times * grid.fs).astype(int).tolist()})


def drilling(rng: np.random.Generator, grid: Grid, onset: float, q_range: tuple[float, float],
             allow_ongoing: bool = True) -> Source:
    """Percussive drilling: tens of blows per second, each a broadband impact with resonant ringing.

    With ``allow_ongoing`` a third of the draws are already drilling when the grid starts.
    """
    f = grid.f
    rate = rng.uniform(15.0, 60.0)
    f_ring = rng.uniform(250.0, min(1800.0, 0.4 * grid.fs))
    tau_ring = rng.uniform(0.0015, min(0.008, 0.4 / rate))
    ongoing = allow_ongoing and rng.random() < 0.35
    start = rng.uniform(0.0, 1.0 / rate) if ongoing else onset
    n_blows = int((grid.t[-1] - start) * rate) + 1
    periods = (1.0 / rate) * (1.0 + rng.normal(0.0, 0.015, n_blows))
    times = start + np.concatenate([[0.0], np.cumsum(periods[:-1])])
    times = times[times < grid.t[-1]]
    amps = np.clip(1.0 + rng.normal(0.0, 0.15, times.size), 0.3, None)
    ring = 1.0 / (1.0 / tau_ring + 2j * np.pi * (f - f_ring)) + 1.0 / (1.0 / tau_ring + 2j * np.pi * (f + f_ring))
    click = rng.uniform(0.2, 1.0) * brune_velocity(f, rng.uniform(600.0, 3000.0)) * tau_ring / (2 * np.pi * 1000)
    dist = rng.uniform(5.0, 200.0)
    path = attenuation(f, dist / 3200.0 / rng.uniform(*q_range))
    x = np.fft.irfft(impulses(grid, times, amps)[0] * (ring + click) * path, n=grid.n)
    ray = unit_vector(rng)
    other = s_polarisation(rng, ray)
    lag = int(rng.integers(1, max(2, int(0.002 * grid.fs))))
    signal = np.outer(ray, x) + rng.uniform(0.2, 0.6) * np.outer(other, np.roll(x, lag))
    return Source(signal, int(round(max(start, 0.0) * grid.fs)), meta={
        "blow_rate_hz": rate, "ring_hz": f_ring, "ongoing": bool(ongoing), "distance_m": dist})


def electrical(rng: np.random.Generator, grid: Grid, onset: float, mains_hz: float) -> Source:
    """Electrical pickup: mains bursts, switching transients or pulse trains, common to all channels."""
    t = grid.t - onset
    kind = ("mains_burst", "switching", "pulse_train")[int(rng.integers(3))]
    nyq = 0.45 * grid.fs
    if kind == "mains_burst":
        f0 = mains_hz * (1.0 + rng.normal(0.0, 1e-3))
        dur = rng.uniform(0.05, 0.6)
        x = np.zeros(grid.n)
        for h in range(1, 16):
            if h * f0 >= nyq:
                break
            weight = (1.0 if h % 2 else 0.3) * rng.uniform(0.0, 1.0) / np.sqrt(h)
            x += (1.0 if h == 1 else weight) * np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 2 * np.pi))
        rise = rng.uniform(0.0005, 0.003)
        env = np.clip(t / rise, 0, 1) * np.clip((dur - t) / rise, 0, 1)
        x *= env
        meta = {"duration_s": dur, "mains_hz": f0}
    elif kind == "switching":
        x = np.zeros(grid.n)
        starts = np.concatenate([[0.0], rng.uniform(0.005, 0.3, int(rng.integers(0, 3)))])
        for t0 in starts:
            dt = t - t0
            tau = 10.0 ** rng.uniform(np.log10(3e-4), np.log10(3e-2))
            pulse = np.where(dt >= 0, np.exp(-np.maximum(dt, 0) / tau), 0.0) * rng.choice([-1.0, 1.0])
            if rng.random() < 0.6:
                pulse *= np.cos(2 * np.pi * rng.uniform(100.0, nyq * 0.9) * np.maximum(dt, 0))
            x += rng.uniform(0.3, 1.0) * pulse
        meta = {"transients": int(starts.size)}
    else:
        rep = rng.uniform(50.0, min(1000.0, nyq / 2))
        width = rng.uniform(0.0002, min(0.002, 0.45 / rep))
        dur = rng.uniform(0.05, 0.5)
        phase = np.mod(t, 1.0 / rep)
        x = np.where((t >= 0) & (t < dur) & (phase < width), 1.0, 0.0)
        if rng.random() < 0.5:  # bipolar trains
            x *= np.where(np.mod(np.floor(t * rep), 2) == 0, 1.0, -1.0)
        meta = {"rep_hz": rep, "width_s": width, "duration_s": dur}
    gains = 1.0 + rng.normal(0.0, 0.02, ZNE)  # common mode: same waveform, near-equal gains, no delay
    return Source(np.outer(gains, x), int(round(onset * grid.fs)), through_sensor=False,
                  meta={"kind": kind, **meta})


def mechanical(rng: np.random.Generator, grid: Grid, onset: float, q_range: tuple[float, float]) -> Source:
    """Machinery and vehicles: drifting tones with harmonics and/or broadband rumble, emergent onset."""
    del q_range  # near-field machinery: attenuation is folded into the rumble's band
    t = grid.t - onset
    rise = rng.uniform(0.15, 0.7)
    env = 0.5 - 0.5 * np.cos(np.pi * np.clip(t / rise, 0.0, 1.0))
    env *= 1.0 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.2, 2.0) * grid.t + rng.uniform(0, 2 * np.pi))
    kind = ("tonal", "rumble", "both")[int(rng.integers(3))]
    signal = np.zeros((ZNE, grid.n))
    meta: dict = {"kind": kind, "rise_s": rise}
    if kind in ("tonal", "both"):
        f1 = rng.uniform(8.0, 120.0)
        spin_up = rng.uniform(0.6, 1.0)  # machines come up to speed as they start
        drift = rng.uniform(0.005, 0.03) * np.sin(2 * np.pi * rng.uniform(0.1, 1.0) * grid.t)
        freq = f1 * (spin_up + (1.0 - spin_up) * np.clip(t / rise, 0.0, 1.0)) * (1.0 + drift)
        phase = 2 * np.pi * np.cumsum(freq) / grid.fs
        for h in range(1, int(rng.integers(2, 9)) + 1):
            if h * f1 >= 0.45 * grid.fs:
                break
            amp = rng.uniform(0.3, 1.0) / h ** rng.uniform(0.3, 1.2)
            signal += amp * rng.uniform(0.3, 1.0, (ZNE, 1)) * np.sin(h * phase + rng.uniform(0, 2 * np.pi, (ZNE, 1)))
        meta["f1_hz"] = f1
    if kind in ("rumble", "both"):
        lo, hi = rng.uniform(10.0, 60.0), rng.uniform(min(120.0, 0.3 * grid.fs), min(700.0, 0.45 * grid.fs))
        band = 1.0 / np.sqrt(1.0 + (lo / np.maximum(grid.f, 1e-3)) ** 4) / np.sqrt(1.0 + (grid.f / hi) ** 4)
        shared = _smooth_noise(rng, grid, band, 1)
        own = _smooth_noise(rng, grid, band, ZNE)
        mix = rng.uniform(0.2, 0.7)
        signal += rng.uniform(0.5, 1.5) * (mix * shared + (1 - mix) * own)
        meta["band_hz"] = (lo, hi)
    return Source(signal * env, int(round(onset * grid.fs)), meta=meta)


def rockfall(rng: np.random.Generator, grid: Grid, onset: float, q_range: tuple[float, float]) -> Source:
    """Rockfall / ore-pass impacts (evaluation only): irregular, emergent, lower-frequency impacts."""
    f = grid.f
    dur = rng.uniform(0.3, 1.0)
    n_hits = max(3, int(rng.poisson(rng.uniform(8.0, 40.0) * dur)))
    times = np.sort(onset + rng.uniform(0.0, dur, n_hits))
    times = times[times < grid.t[-1]]
    peak = rng.uniform(0.3, 0.7)
    shape = np.interp((times - onset) / dur, [0, peak, 1], [0.2, 1.0, 0.1])
    amps = shape * rng.lognormal(0.0, 0.8, times.size)
    dirs = np.array([unit_vector(rng) for _ in times]).T  # each block hits from a new direction
    fc = rng.uniform(20.0, 150.0)
    tstar = rng.uniform(50.0, 500.0) / 3200.0 / rng.uniform(*q_range)
    spec = impulses(grid, times, dirs * amps) * (brune_velocity(f, fc) * attenuation(f, tstar))
    return Source(np.fft.irfft(spec, n=grid.n, axis=-1), int(round(onset * grid.fs)),
                  meta={"impacts": int(times.size), "duration_s": dur, "fc_hz": fc})


SourceFn = Callable[..., Source]

# Families of the model vocabulary, plus evaluation-only families a deployed model will meet unseen.
FAMILIES: dict[str, SourceFn] = {
    "microseismic": microseismic, "blast": blast, "drilling": drilling,
    "mechanical": mechanical, "rockfall": rockfall,
}
EVALUATION_ONLY: tuple[str, ...] = ("rockfall",)

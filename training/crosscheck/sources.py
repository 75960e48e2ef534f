"""Source physics of each class: what reaches the sensor before the recording chain acts on it.

Every synthesiser has the signature ``fn(rng, ctx, lead, span) -> (x, path)``: ``lead`` samples
before the onset and at least ``span`` samples after it are wanted; ``x[..., lead]`` is the onset.
``path`` says how the signal enters the recording chain (see ``Site.response``): ``ground`` (x is
ground velocity in Z, N, E), ``coil``/``electronic`` (x is already per channel) or ``digital``
(added after the digitiser's filters, as ADC glitches are).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.fft import irfft, next_fast_len, rfft, rfftfreq
from scipy.signal import lfilter

from training.crosscheck.instrument import TWO_PI, Site, loguniform


@dataclass(frozen=True)
class Regime:
    """Physical ranges of one kind of seismic system (SI units, Hz)."""

    name: str
    magnitude: tuple[float, float]  # Mw (high) or ML (low)
    local_magnitude: bool
    beta: tuple[float, float]  # shear-wave speed, m/s
    vp_vs: tuple[float, float]
    stress_drop: tuple[float, float]  # Pa, log-uniform
    distance: tuple[float, float]  # hypocentral distance, m, log-uniform
    q: tuple[float, float]  # P quality factor, log-uniform
    coda_s: tuple[float, float]  # coda decay time for the smallest and largest events
    fc: tuple[float, float]  # bounds on the corner frequency
    double_delay: tuple[float, float]  # s between two events in one window
    blast_fc: tuple[float, float]
    blast_distance: tuple[float, float]
    air_hz: tuple[float, float]
    blow_hz: tuple[float, float]
    ring_hz: tuple[float, float]
    drill_distance: tuple[float, float]
    machine_hz: tuple[float, float]
    scale: float  # time scale of machinery and noise transients
    rockfall_fc: tuple[float, float]
    kappa: tuple[float, float]  # s: extra high-frequency decay near the sensor (damaged rock, site)


REGIMES: dict[str, Regime] = {
    # Hard-rock mines, 2-20 kHz systems, Mw -3..1 at 30-1000 m.
    "high": Regime("high", (-3.0, 1.0), False, (3000.0, 3600.0), (1.65, 1.8), (0.1e6, 10e6), (30.0, 1000.0),
                   (50.0, 400.0), (0.012, 0.04), (30.0, 6000.0), (0.03, 0.5), (80.0, 1500.0), (50.0, 1500.0),
                   (20.0, 150.0), (20.0, 60.0), (400.0, 3500.0), (10.0, 300.0), (8.0, 400.0), 1.0, (30.0, 300.0),
                   (0.0001, 0.0006)),
    # Coal, open-pit and regional mine networks, 250-1000 Hz, ML -1..2 at 0.2-5 km in softer rock.
    "low": Regime("low", (-1.0, 2.0), True, (1800.0, 3000.0), (1.7, 2.0), (0.01e6, 1e6), (200.0, 5000.0),
                  (50.0, 300.0), (0.25, 1.4), (3.0, 120.0), (0.4, 3.0), (3.0, 40.0), (300.0, 5000.0),
                  (2.0, 20.0), (8.0, 45.0), (40.0, 220.0), (30.0, 800.0), (2.0, 80.0), 4.0, (2.0, 25.0),
                  (0.0005, 0.003)),
}


@dataclass
class Ctx:
    """What a synthesiser needs to know: sampling rate, regime, the recording site, channel count."""

    fs: float
    regime: Regime
    site: Site
    channels: int


# -- building blocks ---------------------------------------------------------------------------------

def unit_vector(rng: np.random.Generator) -> np.ndarray:
    """A direction uniform on the sphere."""
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


def double_couple(rng: np.random.Generator) -> np.ndarray:
    """A unit double-couple moment tensor of random orientation (fault normal n, slip s: n s' + s n')."""
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    n, s = q[:, 0], q[:, 1]
    return np.outer(n, s) + np.outer(s, n)


def closing_crack(rng: np.random.Generator) -> np.ndarray:
    """Implosive source: a closing tensile crack (stope or pillar closure), -(lambda I + 2 mu n n')."""
    n = unit_vector(rng)
    lam = rng.uniform(0.5, 2.0)
    return -(lam * np.eye(3) + 2.0 * np.outer(n, n)) / (lam + 2.0)


def radiation(moment: np.ndarray, ray: np.ndarray) -> tuple[float, np.ndarray]:
    """Far-field P amplitude (along the ray; > 0 is compression, motion away from the source) and the
    S displacement vector (transverse to the ray) for a moment tensor and a unit ray direction."""
    m_ray = moment @ ray
    a_p = float(ray @ m_ray)
    return a_p, m_ray - a_p * ray


def brune_velocity(f: np.ndarray, fc: float) -> np.ndarray:
    """Spectrum of ground velocity for a Brune (omega-squared) displacement pulse of unit moment:
    displacement t exp(-t/tau)/tau^2, i.e. 1/(1 + i f/fc)^2."""
    return 1j * TWO_PI * f / (1.0 + 1j * f / fc) ** 2


def q_operator(f: np.ndarray, tstar: float, f_ref: float) -> np.ndarray:
    """Causal constant-Q attenuation exp(-pi f t*) with its dispersion (low frequencies arrive later),
    referred to ``f_ref`` (the highest frequency represented)."""
    fl = np.maximum(f, 1e-3)
    return np.exp(-math.pi * f * tstar + 2j * f * tstar * np.log(fl / f_ref))


def corner_frequency(m0: float, beta: float, stress_drop: float) -> float:
    """Brune corner frequency f_c = 0.37 beta (16 dsigma / (7 M0))^(1/3)."""
    return 0.37 * beta * (16.0 * stress_drop / (7.0 * m0)) ** (1.0 / 3.0)


def seismic_moment(mw: float) -> float:
    """M0 in N m from moment magnitude (Hanks and Kanamori)."""
    return 10 ** (1.5 * mw + 9.1)


def moment_magnitude(magnitude: float, local: bool) -> float:
    """Mw from the regime's magnitude; small local magnitudes under-read Mw (ML scale steepens)."""
    return 0.67 * magnitude + 0.6 if local else magnitude


def draw_magnitude(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    """Half uniform (every size represented), half Gutenberg-Richter with b = 1 (small ones dominate)."""
    lo, hi = bounds
    if rng.random() < 0.5:
        return float(rng.uniform(lo, hi))
    u = rng.random()
    return float(lo - math.log10(1.0 - u * (1.0 - 10 ** -(hi - lo))))


@dataclass
class Phase:
    """One wave arrival: time from buffer start, source spectrum, polarisation and its coda."""

    t: float
    spectrum: np.ndarray  # complex, on the buffer's rfft grid (source x path)
    pol: np.ndarray  # (3,) amplitude vector in Z, N, E
    coda_s: float
    coda_ratio: float  # coda energy over direct energy
    coda_isotropy: float  # 0: coda polarised like the direct wave, 1: equal on all components


def propagate(rng: np.random.Generator, fs: float, n: int, phases: list[Phase],
              comb: np.ndarray | None = None, n_fft: int | None = None) -> np.ndarray:
    """Ground velocity (3, n): each phase's direct pulse plus an exponentially decaying scattered
    coda with the same spectrum, optionally repeated by a source-time ``comb`` (rfft grid)."""
    n_fft = n_fft or spectrum_size(n)
    f = rfftfreq(n_fft, 1.0 / fs)
    spec = np.zeros((3, f.size), complex)
    for ph in phases:
        g = ph.pol[:, None] * np.exp(-1j * TWO_PI * f * ph.t)[None, :]
        i0 = int(ph.t * fs)
        m = min(n_fft - i0, int(7 * ph.coda_s * fs) + 1)
        if m > 2 and ph.coda_ratio > 0:
            tt = np.arange(m) / fs
            rise = min(0.2 * ph.coda_s, 0.01 * fs / 1000 + 2 / fs)
            env = np.exp(-tt / ph.coda_s) * (1.0 - np.exp(-tt / rise))
            energy = float(np.sum(env ** 2)) + 1e-30
            norm = float(np.linalg.norm(ph.pol))
            comp = np.sqrt((1 - ph.coda_isotropy) * ph.pol ** 2 + ph.coda_isotropy * norm ** 2 / 3)
            coda = np.zeros((3, n_fft))
            coda[:, i0:i0 + m] = (rng.standard_normal((3, m)) * env * math.sqrt(ph.coda_ratio / energy)
                                  * comp[:, None])
            g = g + rfft(coda, axis=-1)
        spec += g * ph.spectrum[None, :]
    if comb is not None:
        spec *= comb[None, :]
    return irfft(spec, n_fft, axis=-1)[:, :n]


def spectrum_size(n: int, fs: float = 0.0, tail_s: float = 0.0) -> int:
    """FFT length for a buffer of ``n`` samples plus ``tail_s`` seconds for the last pulse to die
    away (so that nothing wraps around to the start)."""
    return next_fast_len(n + 64 + int(tail_s * fs), real=True)


def impulse_comb(fs: float, n: int, times: np.ndarray, amps: np.ndarray, n_fft: int | None = None) -> np.ndarray:
    """Spectrum of a train of impulses at ``times`` (s, those inside ``n`` samples) with ``amps``."""
    n_fft = n_fft or spectrum_size(n)
    x = np.zeros(n_fft)
    pos = np.asarray(times) * fs
    keep = (pos >= 0) & (pos < n - 1)
    pos, amps = pos[keep], np.asarray(amps, float)[keep]
    k = np.floor(pos).astype(int)
    frac = pos - k
    np.add.at(x, k, amps * (1 - frac))
    np.add.at(x, k + 1, amps * frac)
    return rfft(x)


def band_noise(rng: np.random.Generator, fs: float, shape: tuple[int, int], lo: float, hi: float) -> np.ndarray:
    """Gaussian noise band-limited to [lo, hi] Hz (smooth edges), unit RMS."""
    n = shape[-1]
    n_fft = next_fast_len(n, real=True)
    f = rfftfreq(n_fft, 1.0 / fs)
    hi = min(hi, 0.45 * fs)
    lo = min(lo, 0.5 * hi)
    w = 1.0 / (1.0 + (lo / np.maximum(f, 1e-6)) ** 4) / (1.0 + (f / hi) ** 4)
    spec = (rng.standard_normal((shape[0], f.size)) + 1j * rng.standard_normal((shape[0], f.size))) * w
    x = irfft(spec, n_fft, axis=-1)[:, :n]
    return x / (np.std(x) + 1e-30)


def _path(rng: np.random.Generator, reg: Regime, distance: float) -> tuple[float, float, float, float]:
    """P and S travel times and t* for a ray of ``distance`` metres."""
    beta = rng.uniform(*reg.beta)
    vp = beta * rng.uniform(*reg.vp_vs)
    qp = loguniform(rng, *reg.q)
    qs = qp * rng.uniform(0.6, 1.2)
    tp, ts = distance / vp, distance / beta
    kappa = rng.uniform(*reg.kappa)
    return tp, ts, tp / qp + kappa, ts / qs + kappa


# -- microseismic -----------------------------------------------------------------------------------

def _rupture(rng: np.random.Generator, ctx: Ctx, n: int, t0: float, magnitude: float, ray: np.ndarray,
             distance: float, mechanism: str, info: dict | None) -> tuple[list[Phase], float]:
    reg, fs = ctx.regime, ctx.fs
    f = rfftfreq(spectrum_size(n), 1.0 / fs)
    mw = moment_magnitude(magnitude, reg.local_magnitude)
    m0 = seismic_moment(mw)
    beta = rng.uniform(*reg.beta)
    vp = beta * rng.uniform(*reg.vp_vs)
    fc_s = float(np.clip(corner_frequency(m0, beta, loguniform(rng, *reg.stress_drop)), *reg.fc))
    fc_p = fc_s * rng.uniform(1.2, 1.7)  # P corners sit above S corners
    qp = loguniform(rng, *reg.q)
    qs = qp * rng.uniform(0.6, 1.2)
    tp, ts = distance / vp, distance / beta
    kappa = rng.uniform(*reg.kappa)
    if mechanism == "double_couple":
        moment = double_couple(rng)
    elif mechanism == "implosive":
        moment = closing_crack(rng) + rng.uniform(0.0, 0.25) * double_couple(rng)
    else:  # opening tensile crack (hydraulic/volumetric): compressional everywhere
        moment = -closing_crack(rng) + rng.uniform(0.0, 0.3) * double_couple(rng)
    a_p, s_vec = radiation(moment, ray)
    # Far-field amplitudes go as 1/v^3: S is (vp/vs)^3 ~ 5 times P for equal radiation.
    p_pol = a_p * (beta / vp) ** 3 * ray
    scale = m0 / 1e9
    tc = np.interp(magnitude, reg.magnitude, reg.coda_s) * rng.uniform(0.7, 1.4)
    f_ref = fs / 2
    phases = [
        Phase(t0, scale * brune_velocity(f, fc_p) * q_operator(f, tp / qp + kappa, f_ref), p_pol,
              0.6 * tc, rng.uniform(0.2, 0.8), 0.5),
        Phase(t0 + ts - tp, scale * brune_velocity(f, fc_s) * q_operator(f, ts / qs + kappa, f_ref), s_vec,
              tc, rng.uniform(0.5, 2.5), 0.6),
    ]
    if info is not None and "p_index" not in info:
        info.update(p_index=int(round(t0 * fs)), s_index=int(round((t0 + ts - tp) * fs)), mw=mw,
                    fc=fc_s, mechanism=mechanism, p_amplitude=a_p, ray=ray.copy())
    return phases, t0 + ts - tp + 7 * tc + 8.0 / fc_s


def microseismic(rng: np.random.Generator, ctx: Ctx, lead: int, span: int, magnitude: float | None = None,
                 mechanism: str | None = None, info: dict | None = None) -> tuple[np.ndarray, str]:
    """Rock fracture: Brune P and S pulses with a random focal mechanism (double couple, implosive
    closure, or opening crack), Q attenuation, S-P delay and scattered coda; sometimes a second event."""
    reg, fs = ctx.regime, ctx.fs
    if magnitude is None:
        magnitude = draw_magnitude(rng, reg.magnitude)
    if mechanism is None:
        mechanism = str(rng.choice(["double_couple", "implosive", "opening"], p=[0.65, 0.27, 0.08]))
    distance = loguniform(rng, *reg.distance)
    ray = unit_vector(rng)
    beta_max = reg.beta[0]
    # Room for S, its coda and the tail of the lowest-corner pulse (so nothing wraps around).
    natural_s = distance / beta_max + 8 * reg.coda_s[1] + 8.0 / reg.fc[0]
    n = lead + int(min(natural_s * fs, max(span, 1) + (10 * reg.coda_s[1] + 16.0 / reg.fc[0]) * fs))
    phases, _ = _rupture(rng, ctx, n, lead / fs, magnitude, ray, distance, mechanism, info)
    if rng.random() < 0.15:  # a second event of the cluster (aftershock, neighbouring slip)
        dt = rng.uniform(*reg.double_delay)
        if lead + dt * fs < n:
            ray2 = ray + 0.1 * unit_vector(rng)
            second, _ = _rupture(rng, ctx, n, lead / fs + dt, magnitude - rng.uniform(0.0, 1.2),
                                 ray2 / np.linalg.norm(ray2), distance * rng.uniform(0.9, 1.1),
                                 str(rng.choice(["double_couple", "implosive"])), None)
            phases += second
            if info is not None:
                info["second_at"] = lead + int(dt * fs)
    return propagate(rng, fs, n, phases), "ground"


# -- blasts ------------------------------------------------------------------------------------------

def blast(rng: np.random.Generator, ctx: Ctx, lead: int, span: int) -> tuple[np.ndarray, str]:
    """Production or development blast: the same compressional pulse repeated by the delay pattern
    (17-100 ms), charges ramping up, misfires, weak S, and sometimes a late, low air blast."""
    reg, fs = ctx.regime, ctx.fs
    distance = loguniform(rng, *reg.blast_distance)
    ray = unit_vector(rng)
    tp, ts, tsp, tss = _path(rng, reg, distance)
    if reg.name == "high":  # underground round: one charge group per delay number
        interval = float(rng.choice([0.017, 0.025, 0.026, 0.042, 0.050, 0.065, 0.100])) * rng.uniform(0.95, 1.05)
        k = np.arange(int(rng.integers(3, 16)))
        times = k * interval
        weights = rng.integers(1, 4, k.size).astype(float)
    else:  # surface bench: rows and holes with inter-hole and inter-row delays, seconds in all
        rows, holes = int(rng.integers(1, 6)), int(rng.integers(5, 40))
        hole_d, row_d = rng.uniform(0.017, 0.042), rng.uniform(0.042, 0.150)
        r, h = np.meshgrid(np.arange(rows), np.arange(holes), indexing="ij")
        times = np.sort((r * row_d + h * hole_d).ravel())
        times = times[times < 6.0]
        weights = np.ones(times.size)
    scatter = 0.0002 if rng.random() < 0.4 else rng.uniform(0.001, 0.004)  # electronic vs pyrotechnic
    times = times + np.abs(rng.normal(0, scatter, times.size))
    times[0] = 0.0
    live = rng.random(times.size) >= rng.uniform(0.0, 0.15)  # misfires
    live[0] = True
    ramp = 1.0 - np.exp(-(np.arange(times.size) + 1) / rng.uniform(0.7, 3.0))  # confinement builds up
    amps = (weights * ramp * rng.uniform(0.7, 1.3, times.size))[live]
    times = times[live]
    fc = loguniform(rng, *reg.blast_fc)
    tc = rng.uniform(*reg.coda_s) * rng.uniform(1.0, 2.0)
    n = lead + int((times[-1] + ts - tp + 7 * tc + 8 / fc) * fs) + 1
    air = rng.random() < 0.25
    t_air = distance / rng.uniform(330.0, 345.0) - tp
    if air:
        n = max(n, lead + int((times[-1] + t_air + 0.5 * reg.scale) * fs))
    n = min(n, lead + span + int(10 * tc * fs) + int(8 / fc * fs))
    n_fft = spectrum_size(n, fs, ts - tp + 7 * tc + 8 / fc)
    f = rfftfreq(n_fft, 1.0 / fs)
    s_dir = np.cross(ray, unit_vector(rng))
    s_dir /= np.linalg.norm(s_dir) + 1e-12
    phases = [
        Phase(lead / fs, brune_velocity(f, fc) * q_operator(f, tsp, fs / 2), ray * 1.0, 0.7 * tc,
              rng.uniform(0.5, 1.5), 0.5),
        Phase(lead / fs + ts - tp, brune_velocity(f, fc / 1.4) * q_operator(f, tss, fs / 2),
              s_dir * rng.uniform(0.1, 0.6), tc, rng.uniform(0.5, 1.5), 0.7),
    ]
    if air and lead + t_air * fs < n:
        fa = loguniform(rng, *reg.air_hz)
        level = rng.uniform(0.1, 0.6) * fc / fa * math.exp(-math.pi * fc * tsp)
        pol = np.array([1.0, rng.normal(0, 0.3), rng.normal(0, 0.3)])
        phases.append(Phase(lead / fs + t_air, level * brune_velocity(f, fa), pol, 2.0 / fa, 0.3, 0.5))
    comb = impulse_comb(fs, n - lead, times, amps, n_fft)
    return propagate(rng, fs, n, phases, comb, n_fft), "ground"


# -- drilling ----------------------------------------------------------------------------------------

def drilling(rng: np.random.Generator, ctx: Ctx, lead: int, span: int) -> tuple[np.ndarray, str]:
    """Percussive rock drill: tens of blows per second, each a broadband impact ringing at the drill
    steel's resonances, carried through the rock as P and S, for as long as the drill runs."""
    reg, fs = ctx.regime, ctx.fs
    n = lead + span
    rate = rng.uniform(*reg.blow_hz)
    jitter = rng.uniform(0.005, 0.05)
    k = int(span / fs * rate) + 2
    periods = (1.0 / rate) * (1.0 + rng.normal(0, jitter, k))
    times = np.cumsum(periods) - periods[0]
    collar = rng.uniform(0.02, 0.3) * reg.scale  # collaring: the feed pressure builds up
    amps = rng.uniform(0.7, 1.3, k) * (1.0 - np.exp(-(times + 1 / rate) / collar))
    amps[rng.random(k) < 0.02] = 0.0  # missed blows
    if rng.random() < 0.3:  # the operator stops feeding, then resumes
        a, b = sorted(rng.uniform(0.2, 1.0, 2) * span / fs)
        amps[(times > a) & (times < min(b, a + 0.3 * reg.scale))] *= 0.1
    distance = loguniform(rng, *reg.drill_distance)
    tp, ts, tsp, tss = _path(rng, reg, distance)
    tc = rng.uniform(0.3, 1.0) * reg.coda_s[0] * 2
    n_fft = spectrum_size(n, fs, ts - tp + 7 * tc + 0.1 * reg.scale)
    f = rfftfreq(n_fft, 1.0 / fs)
    s = 1j * TWO_PI * f
    ring = np.zeros_like(f, dtype=complex)
    for _ in range(int(rng.integers(1, 3))):
        fr = min(loguniform(rng, *reg.ring_hz), 0.38 * fs)
        wr, zeta = TWO_PI * fr, rng.uniform(0.01, 0.08)
        ring += rng.uniform(0.5, 1.0) * wr * s / (s * s + 2 * zeta * wr * s + wr * wr)
    impact = brune_velocity(f, min(4 * reg.ring_hz[1], 0.45 * fs)) / (0.45 * fs)
    src = impact * (0.3 + ring)
    ray = unit_vector(rng)
    s_vec = np.cross(ray, unit_vector(rng))
    s_vec *= rng.uniform(0.3, 1.5) / (np.linalg.norm(s_vec) + 1e-12)
    phases = [Phase(lead / fs, src * q_operator(f, tsp, fs / 2), ray, tc, rng.uniform(0.3, 1.0), 0.5),
              Phase(lead / fs + ts - tp, src * q_operator(f, tss, fs / 2), s_vec, tc, rng.uniform(0.3, 1.0), 0.6)]
    comb = impulse_comb(fs, n - lead, times, amps, n_fft)
    return propagate(rng, fs, n, phases, comb, n_fft), "ground"


# -- electrical pickup --------------------------------------------------------------------------------

def _common_mode(rng: np.random.Generator, ctx: Ctx, x: np.ndarray) -> np.ndarray:
    """The same waveform on every channel at zero lag, with per-channel gain and sometimes sign."""
    gains = rng.uniform(0.3, 1.5, ctx.channels) * np.where(rng.random(ctx.channels) < 0.25, -1.0, 1.0)
    return gains[:, None] * x[None, :]


def electrical(rng: np.random.Generator, ctx: Ctx, lead: int, span: int) -> tuple[np.ndarray, str]:
    """Electrical interference induced in the cables: mains bursts (clean, clipped or thyristor
    chopped), switching transients (step with exponential decay, LC ringing), pulse trains (square
    or bipolar, drooping through AC coupling). Common-mode, no propagation delay."""
    fs, reg = ctx.fs, ctx.regime
    n = lead + span
    t = np.arange(span) / fs
    x = np.zeros(n)
    kind = str(rng.choice(["mains", "switching", "pulses"], p=[0.4, 0.3, 0.3]))
    if kind == "mains":
        f0 = ctx.site.mains_hz if rng.random() < 0.8 else 150.0 if rng.random() < 0.5 else 3 * ctx.site.mains_hz
        dur = min(span / fs, rng.uniform(0.05, 1.0) * reg.scale)
        theta = TWO_PI * f0 * t + rng.uniform(0, TWO_PI)
        style = str(rng.choice(["clean", "clipped", "chopped"]))
        wave = np.sin(theta) + sum(rng.uniform(0.0, 0.2) / h * np.sin(h * theta + rng.uniform(0, TWO_PI))
                                   for h in (3, 5, 7))
        if style == "clipped":
            c = rng.uniform(0.3, 0.8)
            wave = np.clip(wave, -c, c) / c
        elif style == "chopped":  # phase-angle control: each half-cycle conducts after the firing angle
            alpha = rng.uniform(0.15, 0.85) * math.pi
            wave = np.sin(theta) * ((np.mod(theta, math.pi)) >= alpha)
        ramp = max(2.0 / fs, rng.uniform(0.0005, 0.01))
        env = np.clip(t / ramp, 0, 1) * np.clip((dur - t) / ramp, 0, 1)
        x[lead:] = wave * env
    elif kind == "switching":
        for j in range(int(rng.integers(1, 4))):  # relay or contactor bounce
            t0 = 0.0 if j == 0 else rng.uniform(0.001, 0.05) * reg.scale * j
            tt = t - t0
            on = tt >= 0
            tau = rng.uniform(0.001, 0.05) * reg.scale
            f_lc = rng.uniform(0.03, 0.3) * fs
            tau_lc = rng.uniform(5, 60) / f_lc
            step = rng.uniform(-1, 1) * np.exp(-np.where(on, tt, 0) / tau)
            lc = rng.uniform(0.3, 1.5) * np.exp(-np.where(on, tt, 0) / tau_lc) * np.sin(TWO_PI * f_lc * tt)
            x[lead:] += np.where(on, step + lc, 0.0) * (0.5 ** j)
    else:
        rate = loguniform(rng, 2.0, min(200.0, 0.05 * fs)) / (reg.scale ** 0.5)
        duty = rng.uniform(0.05, 0.4)
        phase = np.mod(t * rate, 1.0)
        if rng.random() < 0.5:
            wave = (phase < duty).astype(float)
        else:
            wave = (phase < duty / 2).astype(float) - ((phase >= 0.5) & (phase < 0.5 + duty / 2))
        dur = span / fs if rng.random() < 0.5 else min(span / fs, rng.uniform(0.1, 0.6) * reg.scale)
        wave *= t < dur
        tau = rng.uniform(0.002, 0.05) * reg.scale  # AC coupling: the flat top droops
        a = tau / (tau + 1.0 / fs)
        x[lead:] = lfilter([a, -a], [1.0, -a], wave)
    return _common_mode(rng, ctx, x), "electronic"


# -- machinery ---------------------------------------------------------------------------------------

def _tone(rng: np.random.Generator, freq: np.ndarray, fs: float, harmonics: int) -> np.ndarray:
    """A machine tone (3, len(freq)) with harmonics following instantaneous frequency ``freq``;
    each component sees its own amplitude and phase (elliptical particle motion)."""
    theta = TWO_PI * np.cumsum(freq) / fs
    out = np.zeros((3, freq.size))
    for h in range(1, harmonics + 1):
        amp = rng.uniform(0.2, 1.0, 3) * (1.0 if h == 1 else rng.uniform(0.1, 0.7))
        ph = rng.uniform(0, TWO_PI, 3)
        out += amp[:, None] * np.sin(h * theta[None, :] + ph[:, None])
    return out


def mechanical(rng: np.random.Generator, ctx: Ctx, lead: int, span: int) -> tuple[np.ndarray, str]:
    """Machinery that changes within the window: start-up (spin-up tone and rumble), a passing
    vehicle, a crusher or conveyor with knocks, or a machine stopping. Emergent, long, tonal."""
    reg, fs = ctx.regime, ctx.fs
    kind = str(rng.choice(["start", "passby", "cyclic", "stop"], p=[0.35, 0.3, 0.2, 0.15]))
    n = lead + span
    t = (np.arange(n) - lead) / fs
    after = np.maximum(t, 0)
    f0 = loguniform(rng, *reg.machine_hz)
    f0 = min(f0, 0.3 * fs / 3)
    slow = 1.0 + rng.uniform(0.0, 0.03) * np.sin(TWO_PI * t / rng.uniform(0.5, 5.0) / reg.scale)
    harmonics = int(rng.integers(1, 5))
    lo, hi = f0 * rng.uniform(0.5, 1.0), f0 * rng.uniform(3.0, 12.0)
    rumble = band_noise(rng, fs, (3, n), lo, hi) * rng.uniform(0.2, 1.5, 3)[:, None]
    tone_level, rumble_level = rng.uniform(0.3, 1.0), rng.uniform(0.2, 1.0)
    if kind == "start":
        tau = rng.uniform(0.1, 0.8) * reg.scale
        spin = 1.0 - np.exp(-after / tau)
        freq = f0 * (0.25 + 0.75 * spin) * slow
        env = np.where(t >= 0, spin, 0.0)
        x = tone_level * _tone(rng, freq, fs, harmonics) * env + rumble_level * rumble * env
    elif kind == "passby":
        t_c = rng.uniform(0.4, 1.2) * span / fs
        tau = rng.uniform(0.15, 0.5) * span / fs
        env = np.where(t >= 0, (1 - np.exp(-after / (0.2 * tau))) / (1 + ((t - t_c) / tau) ** 2), 0.0)
        doppler = 1.0 - rng.uniform(0.01, 0.06) * np.tanh((t - t_c) / (0.3 * tau))
        x = (tone_level * _tone(rng, f0 * doppler * slow, fs, harmonics) + rumble_level * 1.5 * rumble) * env
    elif kind == "cyclic":
        ramp = np.where(t >= 0, 1 - np.exp(-after / (rng.uniform(0.02, 0.3) * reg.scale)), 0.0)
        x = (tone_level * _tone(rng, f0 * slow, fs, harmonics) + rumble_level * rumble) * ramp
        knock_rate = rng.uniform(1.0, 8.0) / reg.scale ** 0.5
        times = np.arange(0, span / fs, 1 / knock_rate) + rng.normal(0, 0.01, int(np.ceil(span / fs * knock_rate)))
        fk = min(f0 * rng.uniform(4, 15), 0.3 * fs)
        n_fft = spectrum_size(n, fs, 10 / fk)
        f = rfftfreq(n_fft, 1.0 / fs)
        comb = impulse_comb(fs, n, lead / fs + np.abs(times), rng.uniform(0.5, 1.5, times.size), n_fft)
        knocks = irfft(comb * brune_velocity(f, fk) / fk, n_fft)[:n]
        x = x + rng.uniform(0.5, 3.0) * knocks[None, :] * rng.uniform(0.3, 1.0, 3)[:, None]
    else:  # stop: running before the onset, a clunk at the onset, then coasting down
        tau = rng.uniform(0.1, 0.6) * reg.scale
        coast = np.where(t >= 0, np.exp(-after / tau), 1.0)
        freq = f0 * (0.3 + 0.7 * coast) * slow
        x = (tone_level * _tone(rng, freq, fs, harmonics) + rumble_level * rumble) * coast
        f = rfftfreq(spectrum_size(n), 1.0 / fs)
        clunk = irfft(impulse_comb(fs, n, np.array([lead / fs]), np.array([1.0])) * brune_velocity(f, 4 * f0)
                      / (4 * f0), spectrum_size(n))[:n]
        x = x + rng.uniform(1.0, 4.0) * clunk[None, :] * rng.uniform(0.3, 1.0, 3)[:, None]
    return x, "ground"


# -- noise: background, plus what a trigger fires on with no event behind it --------------------------

def noise_transient(rng: np.random.Generator, ctx: Ctx, lead: int, span: int) -> tuple[np.ndarray, str]:
    """Nothing of interest: no transient, a short noise burst, a ventilation gust, or ADC spikes."""
    reg, fs = ctx.regime, ctx.fs
    kind = str(rng.choice(["none", "burst", "gust", "spike"], p=[0.3, 0.3, 0.25, 0.15]))
    n = lead + span
    x = np.zeros((3, n))
    if kind == "burst":
        dur = min(span, int(rng.uniform(0.01, 0.12) * reg.scale * fs) + 4)
        lo = loguniform(rng, 0.01 * fs, 0.15 * fs)
        burst = band_noise(rng, fs, (3, dur), lo, lo * rng.uniform(2.0, 6.0)) * np.hanning(dur)[None, :]
        x[:, lead:lead + dur] = burst
        return x, "ground"
    if kind == "gust":  # a swell of airflow noise: low, broadband, slow envelope
        dur = min(span, int(rng.uniform(0.2, 1.0) * reg.scale * fs))
        tt = np.arange(dur) / dur
        env = np.sin(math.pi * tt) ** rng.uniform(1.0, 3.0)
        x[:, lead:lead + dur] = band_noise(rng, fs, (3, dur), 0.002 * fs, rng.uniform(0.02, 0.1) * fs) * env
        return x, "ground"
    if kind == "spike":
        x = np.zeros((ctx.channels, n))
        for _ in range(int(rng.integers(1, 4))):
            at = lead + (0 if _ == 0 else int(rng.integers(0, max(span, 1))))
            x[rng.integers(0, ctx.channels), min(at, n - 1)] += rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0)
        return x, "digital"
    return x, "none"


# -- signals the models never saw ----------------------------------------------------------------------

def rockfall(rng: np.random.Generator, ctx: Ctx, lead: int, span: int) -> tuple[np.ndarray, str]:
    """Rockfall or ore-pass flow: an emergent, irregular cascade of low-frequency impacts and rolling."""
    reg, fs = ctx.regime, ctx.fs
    n = lead + span
    dur = rng.uniform(0.5, 3.0) * reg.scale
    peak_rate = rng.uniform(8.0, 50.0) / reg.scale ** 0.5
    k = rng.poisson(peak_rate * dur) + 3
    times = np.sort(rng.beta(2.0, rng.uniform(2.0, 5.0), k) * dur)
    times[0] = 0.0
    amps = rng.lognormal(0, 0.7, k) * rng.choice([-1.0, 1.0], k) * np.sin(math.pi * np.clip(times / dur, 0.05, 1))
    distance = loguniform(rng, *reg.drill_distance)
    tp, ts, tsp, tss = _path(rng, reg, distance)
    fc = loguniform(rng, *reg.rockfall_fc)
    tc = rng.uniform(*reg.coda_s)
    n_fft = spectrum_size(n, fs, ts - tp + 7 * tc + 8 / fc)
    f = rfftfreq(n_fft, 1.0 / fs)
    ray = unit_vector(rng)
    s_vec = np.cross(ray, unit_vector(rng))
    s_vec *= rng.uniform(0.8, 2.0) / (np.linalg.norm(s_vec) + 1e-12)
    phases = [Phase(lead / fs, brune_velocity(f, fc) * q_operator(f, tsp, fs / 2), ray, tc, 1.0, 0.7),
              Phase(lead / fs + ts - tp, brune_velocity(f, fc / 1.3) * q_operator(f, tss, fs / 2), s_vec, tc, 1.5,
                    0.8)]
    x = propagate(rng, fs, n, phases, impulse_comb(fs, n - lead, times, amps, n_fft), n_fft)
    t = (np.arange(n) - lead) / fs
    env = np.where((t >= 0) & (t < dur), np.sin(math.pi * np.clip(t / dur, 0, 1)) ** 2, 0.0)
    roll = band_noise(rng, fs, (3, n), 0.5 * fc, 2 * fc) * env * rng.uniform(0.1, 0.5) * np.std(x)
    return x + roll, "ground"


def scaling(rng: np.random.Generator, ctx: Ctx, lead: int, span: int) -> tuple[np.ndarray, str]:
    """Mechanical scaling of loose rock: sparse, irregular, short impacts nearby, and falling slabs."""
    reg, fs = ctx.regime, ctx.fs
    n = lead + span
    rate = rng.uniform(1.0, 6.0) / reg.scale ** 0.5
    k = rng.poisson(rate * span / fs) + 1
    times = np.concatenate([[0.0], np.sort(rng.uniform(0, span / fs, k - 1))])
    amps = rng.lognormal(0, 0.6, k)
    distance = loguniform(rng, 5.0, 60.0) * reg.scale
    tp, ts, tsp, tss = _path(rng, reg, distance)
    fc = min(loguniform(rng, 3 * reg.rockfall_fc[0], 10 * reg.rockfall_fc[1]), 0.4 * fs)
    tc = reg.coda_s[0] * rng.uniform(0.5, 2.0)
    n_fft = spectrum_size(n, fs, ts - tp + 7 * tc + 8 / fc)
    f = rfftfreq(n_fft, 1.0 / fs)
    ray = unit_vector(rng)
    s_vec = np.cross(ray, unit_vector(rng))
    s_vec /= np.linalg.norm(s_vec) + 1e-12
    phases = [Phase(lead / fs, brune_velocity(f, fc) * q_operator(f, tsp, fs / 2), ray, tc, 0.8, 0.6),
              Phase(lead / fs + ts - tp, brune_velocity(f, fc / 1.3) * q_operator(f, tss, fs / 2), s_vec, tc, 1.0,
                    0.7)]
    return propagate(rng, fs, n, phases, impulse_comb(fs, n - lead, times, amps, n_fft), n_fft), "ground"


def raise_boring(rng: np.random.Generator, ctx: Ctx, lead: int, span: int) -> tuple[np.ndarray, str]:
    """Raise boring: continuous rolling-cutter grinding, modulated at the cutter-passing rate, with
    motor and gear-mesh tones, starting up at the onset."""
    reg, fs = ctx.regime, ctx.fs
    n = lead + span
    t = (np.arange(n) - lead) / fs
    after = np.maximum(t, 0)
    env = np.where(t >= 0, 1 - np.exp(-after / (rng.uniform(0.1, 0.5) * reg.scale)), 0.0)
    passing = rng.uniform(2.0, 15.0) / reg.scale ** 0.5
    mod = 1.0 + rng.uniform(0.3, 0.9) * np.sin(TWO_PI * passing * t)
    lo = loguniform(rng, 0.01 * fs, 0.05 * fs)
    grind = band_noise(rng, fs, (3, n), lo, lo * rng.uniform(4, 15)) * mod
    gear = min(loguniform(rng, 0.02 * fs, 0.06 * fs), 0.3 * fs)
    tones = _tone(rng, np.full(n, gear), fs, 2) * rng.uniform(0.2, 0.8)
    motor = _tone(rng, np.full(n, min(loguniform(rng, *reg.machine_hz), 0.1 * fs)), fs, 3) * rng.uniform(0.1, 0.5)
    return (grind + tones + motor) * env, "ground"


def test_pulse(rng: np.random.Generator, ctx: Ctx, lead: int, span: int) -> tuple[np.ndarray, str]:
    """Calibration: a rectangular current pulse (sometimes a few, or a short sine) driven through the
    sensor coil of every channel at once; the record is the sensor's own step response."""
    reg, fs = ctx.regime, ctx.fs
    n = lead + span
    t = (np.arange(n) - lead) / fs
    x = np.zeros(n)
    if rng.random() < 0.75:
        width = rng.uniform(0.005, 0.1) * reg.scale ** 0.5
        period = width * rng.uniform(2.5, 6.0)
        for j in range(int(rng.integers(1, 4))):
            x += ((t >= j * period) & (t < j * period + width)).astype(float)
    else:
        f0 = loguniform(rng, 0.005 * fs, 0.1 * fs)
        dur = rng.uniform(0.05, 0.3) * reg.scale
        x = np.sin(TWO_PI * f0 * t) * ((t >= 0) & (t < dur))
    gains = rng.uniform(0.95, 1.05, ctx.channels)  # one calibration current, the channels' own gains
    return gains[:, None] * x[None, :], "coil"


SYNTHS: dict[str, Callable[..., tuple[np.ndarray, str]]] = {
    "microseismic": microseismic, "blast": blast, "drilling": drilling, "electrical": electrical,
    "mechanical": mechanical, "noise": noise_transient,
    "rockfall": rockfall, "scaling": scaling, "raise_boring": raise_boring, "test_pulse": test_pulse,
}
UNSEEN: tuple[str, ...] = ("rockfall", "scaling", "raise_boring", "test_pulse")

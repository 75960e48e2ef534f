"""Butterworth band-pass design and IIR filtering in numpy alone (the gateway imports no scipy.signal).

Importing ``scipy.signal`` costs about 80 MB of resident memory (RSS 28 -> 111 MB on x86_64: it pulls in
scipy's stats, optimize, interpolate, sparse and linalg), so the gateway designs and runs its filters here;
the tests hold every function to scipy's (``butter(..., output="sos")``, ``sosfilt``, ``sosfilt_zi``,
``sosfiltfilt``, ``lfilter``, ``detrend``) within float tolerance.

The trigger filters a 0.1 s block in tens of microseconds only with compiled code, so :func:`sosfilt` runs
scipy's small compiled kernel loaded on its own (without scipy.signal) where it is installed, and otherwise a
numpy block kernel, tested to the same numbers.

The numpy block kernel filters without a per-sample Python loop: a cascade of second-order sections is one
linear state-space system (A, B, C, D) of 2 states per section (transposed direct form II, scipy's state
layout). The input is cut into sub-blocks of ``BLOCK`` samples; inside one, the output is the zero-state
response (a lower-triangular Toeplitz matrix of the impulse response, one matrix product for all sub-blocks)
plus the response to the state at its start (C A^k); the states at the sub-block starts follow
s' = A^m s + G x, which one more matrix product gives for 32 sub-blocks at a time. Every sum is causal and
local, as in the sample recursion, so a loud event never leaks round-off into the quiet samples before it
(an FFT convolution would).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

BLOCK = 32  # samples per sub-block: the zero-state part is a BLOCK x BLOCK matrix product
SUPER = 32  # sub-blocks whose start states one matrix product gives (longer inputs loop every SUPER * BLOCK)


# --------------------------------------------------------------------------- design
def butter_bandpass_sos(order: int, low_hz: float, high_hz: float, fs: float) -> np.ndarray:
    """Digital Butterworth band-pass of ``order`` (2 x order poles) as second-order sections (sections, 6).

    The analogue prototype, frequency pre-warping, low-pass to band-pass transform and bilinear transform of
    ``scipy.signal.butter(order, [low, high], "bandpass", fs=fs, output="sos")``: the same transfer function.
    Each section holds one conjugate pole pair and the zeros at z = 1 and z = -1; the gain sits in the first.
    """
    if not 0 < low_hz < high_hz < fs / 2:
        raise ValueError(f"band {low_hz}-{high_hz} Hz: need 0 < low < high < fs/2 = {fs / 2}")
    m = np.arange(-order + 1, order, 2)
    p = -np.exp(1j * np.pi * m / (2 * order))  # analogue prototype poles, unit cut-off, no zeros, gain 1
    w1, w2 = 4.0 * np.tan(np.pi * np.array([low_hz, high_hz]) / fs)  # pre-warped (normalised fs = 2)
    bw, wo = w2 - w1, np.sqrt(w1 * w2)
    p_lp = p * bw / 2
    root = np.sqrt(p_lp**2 - wo**2)
    p_bp = np.concatenate([p_lp + root, p_lp - root])
    k = bw**order  # order zeros at s = 0
    fs2 = 4.0  # bilinear transform at the normalised rate fs = 2
    z_poles = (fs2 + p_bp) / (fs2 - p_bp)
    k_z = k * np.real(fs2**order / np.prod(fs2 - p_bp))  # the zeros at s = 0 map to z = 1, the rest to z = -1
    # Conjugate pairs give one section each; real poles (a wide band of odd order) are paired among themselves.
    tol = 1e-12
    upper = np.sort_complex(z_poles[z_poles.imag > tol])
    real = np.sort(z_poles[np.abs(z_poles.imag) <= tol].real)
    dens = [(-2.0 * q.real, abs(q) ** 2) for q in upper] + [(-(r1 + r2), r1 * r2) for r1, r2 in real.reshape(-1, 2)]
    sos = np.zeros((order, 6))
    sos[:, 0], sos[:, 2] = 1.0, -1.0  # (1 - z^-1)(1 + z^-1)
    sos[:, 3] = 1.0
    sos[:, 4:] = dens
    sos[0, :3] *= k_z
    return sos


# --------------------------------------------------------------------------- state space of a cascade
@dataclass(frozen=True)
class _Kernel:
    """Precomputed block matrices of one filter (see the module docstring), transposed for row-vector states."""

    toeplitz_t: np.ndarray  # (BLOCK, BLOCK): y_zs = x @ T.T, T[i, j] = h[i - j]
    observe_t: np.ndarray  # (S, BLOCK): y_zi = s0 @ O.T, O[i] = C A^i
    carry_t: np.ndarray  # (BLOCK, S): the state a sub-block's input leaves, row j = (A^(BLOCK-1-j) B)
    a_pow_t: np.ndarray  # (BLOCK + 1, S, S): (A^k).T, for a partial last sub-block
    chain_t: np.ndarray  # (SUPER * S, (SUPER + 1) * S): sub-block drives -> the states at sub-block starts
    start_t: np.ndarray  # (S, (SUPER + 1) * S): the state at a super-block start -> the same
    steady: np.ndarray  # (S,): the state a constant input of 1 holds (scipy's sosfilt_zi, flattened)


def _state_space(sos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(A, B, C, D) of a cascade of transposed-direct-form-II sections; state = [z1_0, z2_0, z1_1, z2_1, ...]."""
    n = sos.shape[0]
    s = 2 * n
    a, b = np.zeros((s, s)), np.zeros(s)
    # Section i's input u_i (the output of the sections before it) is u_x x + u_s . state.
    u_x, u_s = 1.0, np.zeros(s)
    for i, (b0, b1, b2, _, a1, a2) in enumerate(sos):
        j = 2 * i
        # y_i = b0 u_i + z1;  z1' = b1 u_i - a1 y_i + z2;  z2' = b2 u_i - a2 y_i
        y_x, y_s = b0 * u_x, b0 * u_s
        y_s[j] += 1.0
        a[j] = (b1 - a1 * b0) * u_s
        a[j, j] -= a1
        a[j, j + 1] += 1.0
        b[j] = (b1 - a1 * b0) * u_x
        a[j + 1] = (b2 - a2 * b0) * u_s
        a[j + 1, j] -= a2
        b[j + 1] = (b2 - a2 * b0) * u_x
        u_x, u_s = y_x, y_s
    return a, b, u_s, float(u_x)


@lru_cache(maxsize=32)
def _kernel(sos_key: bytes, sections: int) -> _Kernel:
    sos = np.frombuffer(sos_key).reshape(sections, 6)
    a, b, c, d = _state_space(sos)
    s = a.shape[0]
    a_pow = np.empty((BLOCK + 1, s, s))
    a_pow[0] = np.eye(s)
    for k in range(1, BLOCK + 1):
        a_pow[k] = a_pow[k - 1] @ a
    observe = np.einsum("j,kjl->kl", c, a_pow[:BLOCK])  # C A^k
    h = np.concatenate([[d], observe[:BLOCK - 1] @ b])  # impulse response: h_0 = D, h_k = C A^(k-1) B
    i = np.arange(BLOCK)
    lag = i[:, None] - i[None, :]
    toeplitz = np.where(lag >= 0, h[np.clip(lag, 0, None)], 0.0)
    carry = np.einsum("kjl,l->kj", a_pow[:BLOCK][::-1], b)  # row j: A^(BLOCK-1-j) B
    # Over sub-blocks the states follow s_{j+1} = P s_j + d_j with P = A^BLOCK: s_j = P^j s_0 + sum_i<j P^(j-1-i) d_i.
    p_pow = np.empty((SUPER + 1, s, s))
    p_pow[0] = np.eye(s)
    for k in range(1, SUPER + 1):
        p_pow[k] = p_pow[k - 1] @ a_pow[BLOCK]
    chain = np.zeros((SUPER * s, (SUPER + 1) * s))
    for j in range(1, SUPER + 1):
        for i_ in range(j):
            chain[i_ * s:(i_ + 1) * s, j * s:(j + 1) * s] = p_pow[j - 1 - i_].T
    start = np.concatenate([p_pow[j].T for j in range(SUPER + 1)], axis=1)
    steady = np.linalg.solve(np.eye(s) - a, b)
    return _Kernel(np.ascontiguousarray(toeplitz.T), np.ascontiguousarray(observe.T), carry,
                   np.ascontiguousarray(a_pow.transpose(0, 2, 1)), chain, start, steady)


def _kernel_of(sos: np.ndarray) -> _Kernel:
    sos = np.ascontiguousarray(sos, dtype=np.float64)
    if sos.ndim != 2 or sos.shape[1] != 6 or np.any(sos[:, 3] != 1.0):
        raise ValueError(f"sos of shape {sos.shape}: need (sections, 6) with a0 = 1")
    return _kernel(sos.tobytes(), sos.shape[0])


def sosfilt_zi(sos: np.ndarray) -> np.ndarray:
    """Initial state (sections, 2) for the steady state of a unit step (as ``scipy.signal.sosfilt_zi``)."""
    return _kernel_of(sos).steady.reshape(-1, 2).copy()


def _super_block(k: _Kernel, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Filter (rows, n <= SUPER * BLOCK) from states (rows, S): (y, the states after it)."""
    rows, n = x.shape
    s = state.shape[1]
    full, rest = divmod(n, BLOCK)
    nb = full + (rest > 0)
    if rest:
        xb = np.zeros((rows, nb * BLOCK))
        xb[:, :n] = x
    else:
        xb = x
    xb = xb.reshape(rows * nb, BLOCK)
    y = xb @ k.toeplitz_t  # the zero-state part of every sub-block, one product
    drive = (xb.reshape(rows, nb, BLOCK)[:, :full].reshape(rows * full, BLOCK) @ k.carry_t).reshape(rows, full * s)
    # The states at the start of sub-blocks 0..full (the last: after the whole ones), one product each.
    starts = drive @ k.chain_t[:full * s, :(full + 1) * s] + state @ k.start_t[:, :(full + 1) * s]
    starts = starts.reshape(rows, full + 1, s)
    y = (y.reshape(rows, nb, BLOCK) + (starts[:, :nb].reshape(rows * nb, s) @ k.observe_t).reshape(rows, nb, BLOCK))
    y = y.reshape(rows, nb * BLOCK)[:, :n]
    state = starts[:, full]
    if rest:  # after a partial last sub-block: A^rest s + sum_j A^(rest-1-j) B x_j
        state = state @ k.a_pow_t[rest] + x[:, full * BLOCK:] @ k.carry_t[BLOCK - rest:]
    return y, state


def _load_compiled_kernel():
    """scipy's compiled sosfilt kernel (a small Cython extension), loaded from its file on its own.

    Importing it as ``scipy.signal._sosfilt`` would run scipy.signal's __init__ and cost ~80 MB; loaded by
    path it costs ~2 MB (scipy's top-level package and its C-callback helpers). It runs the trigger's filters
    at scipy's speed; None (and the numpy block kernel) when scipy is absent or a release moved the file.
    """
    try:
        spec = importlib.util.find_spec("scipy")  # scipy/__init__ only: its submodules load lazily
        if spec is None or spec.origin is None:
            return None
        where = Path(spec.origin).parent / "signal"
        files = [f for ext in importlib.machinery.EXTENSION_SUFFIXES if (f := where / f"_sosfilt{ext}").is_file()]
        if not files:
            return None
        loader = importlib.machinery.ExtensionFileLoader("scipy.signal._sosfilt", str(files[0]))
        mod_spec = importlib.util.spec_from_file_location("scipy.signal._sosfilt", files[0], loader=loader)
        module = importlib.util.module_from_spec(mod_spec)
        loader.exec_module(module)
        return module._sosfilt
    except (ImportError, OSError, AttributeError):
        return None


_UNLOADED = object()
_COMPILED = _UNLOADED  # loaded at the first filtering, so importing the gateway stays fast (READY comes first)


def _compiled():
    global _COMPILED
    if _COMPILED is _UNLOADED:
        _COMPILED = _load_compiled_kernel()
    return _COMPILED


def kernel_name() -> str:
    """Which sosfilt kernel runs: ``compiled`` (scipy's extension, loaded alone) or ``numpy`` (the block kernel)."""
    return "compiled" if _compiled() is not None else "numpy"


def sosfilt(sos: np.ndarray, x: np.ndarray, zi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Causal filtering of (rows, n) along the last axis from states ``zi`` (rows, sections, 2).

    Returns (y, zf) with ``zf`` the states after the last sample, laid out like ``zi``: the same numbers as
    ``scipy.signal.sosfilt(sos, x, axis=-1, zi=zi.transpose(1, 0, 2))`` within float round-off.
    """
    kernel = _compiled()
    if kernel is not None:
        y = np.array(x, dtype=np.float64, order="C")  # fresh arrays: the kernel filters in place
        zf = np.array(zi, dtype=np.float64, order="C")
        if y.shape[-1]:
            kernel(np.ascontiguousarray(sos, dtype=np.float64), y, zf)
        return y, zf
    return sosfilt_blocks(sos, x, zi)


def sosfilt_blocks(sos: np.ndarray, x: np.ndarray, zi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`sosfilt` by the numpy block kernel (no compiled code; about 5x slower on 0.1 s blocks)."""
    k = _kernel_of(sos)
    x = np.asarray(x, dtype=np.float64)
    state = np.asarray(zi, dtype=np.float64).reshape(x.shape[0], -1)
    step = SUPER * BLOCK
    if x.shape[1] <= step:
        y, state = _super_block(k, x, state)
        return y, state.reshape(zi.shape)
    parts = []
    for start in range(0, x.shape[1], step):
        y, state = _super_block(k, x[:, start:start + step], state)
        parts.append(y)
    return np.concatenate(parts, axis=1), state.reshape(zi.shape)


def sosfiltfilt(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Zero-phase forward-backward filtering of (rows, n) along the last axis (as ``scipy.signal.sosfiltfilt``
    with its defaults: odd extension of 3 x (2 x sections + 1) samples, steady-state initial conditions)."""
    x = np.asarray(x, dtype=np.float64)
    sections = np.asarray(sos).shape[0]
    ntaps = 2 * sections + 1 - min(int(np.sum(sos[:, 2] == 0)), int(np.sum(sos[:, 5] == 0)))
    edge = 3 * ntaps
    if x.shape[-1] <= edge:
        raise ValueError(f"{x.shape[-1]} samples: sosfiltfilt needs more than {edge}")
    ext = np.concatenate([2 * x[:, :1] - x[:, edge:0:-1], x, 2 * x[:, -1:] - x[:, -2:-(edge + 2):-1]], axis=1)
    zi = sosfilt_zi(sos)
    y, _ = sosfilt(sos, ext, zi[None] * ext[:, :1, None])
    y = y[:, ::-1]
    y, _ = sosfilt(sos, y, zi[None] * y[:, :1, None])
    return y[:, ::-1][:, edge:-edge]


def exponential_average(x: np.ndarray, n: int, previous: np.ndarray) -> np.ndarray:
    """y_i = y_{i-1} + (x_i - y_{i-1}) / n along the last axis of (channels, m), from y_{-1} = ``previous``.

    A one-pole filter through the same block kernel (as ``scipy.signal.lfilter([c], [1, c - 1], ...)``).
    """
    c = 1.0 / n
    # One section b = (c, 0, 0), a = (1, c - 1, 0): its z1 after y_{-1} is (1 - c) y_{-1}, z2 stays 0.
    sos = np.array([[c, 0.0, 0.0, 1.0, c - 1.0, 0.0]])
    zi = np.zeros((x.shape[0], 1, 2))
    zi[:, 0, 0] = np.asarray(previous, dtype=np.float64) * (1.0 - c)
    return sosfilt(sos, x, zi)[0]


def detrend_linear(x: np.ndarray) -> np.ndarray:
    """Remove the least-squares straight line along the last axis (as ``scipy.signal.detrend(type="linear")``)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[-1]
    t = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    mean = x.mean(axis=-1, keepdims=True)
    denom = float(t @ t)
    slope = (x @ t)[..., None] / denom if denom > 0 else np.zeros_like(mean)
    return x - mean - slope * t

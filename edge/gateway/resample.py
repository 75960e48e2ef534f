"""Polyphase resampling by a rational factor in numpy alone (the gateway imports no scipy.signal).

The same numbers as ``scipy.signal.resample_poly(x, up, down, axis=-1)`` with its defaults (a Kaiser-windowed
sinc of beta 5.0 and 20 x max(up, down) + 1 taps, zero padding), tested against it: the anti-alias filter is
designed as ``firwin`` does, and each output sample is the dot product of the inputs it covers with one phase
of the filter, so the zeros of the up-sampled signal are never multiplied.
"""

from __future__ import annotations

from functools import lru_cache
from math import gcd

import numpy as np


@lru_cache(maxsize=16)
def _design(up: int, down: int) -> tuple[np.ndarray, int]:
    """(the filter times ``up``, with resample_poly's leading zero padding; the count of outputs it drops)."""
    max_rate = max(up, down)
    half_len = 10 * max_rate
    taps = 2 * half_len + 1
    m = np.arange(taps) - half_len
    h = np.sinc(m / max_rate) / max_rate * np.kaiser(taps, 5.0)  # firwin(taps, 1 / max_rate, ("kaiser", 5.0))
    h = h / h.sum() * up  # unit gain at DC, times up for the inserted zeros
    pre_pad = down - half_len % down
    return np.concatenate([np.zeros(pre_pad), h]), (half_len + pre_pad) // down


def resample_poly(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """Resample along the last axis by ``up / down`` (float64), as ``scipy.signal.resample_poly``."""
    g = gcd(up, down)
    up, down = up // g, down // g
    x = np.asarray(x, dtype=np.float64)
    if up == down == 1:
        return x.copy()
    h, drop = _design(up, down)
    taps = -(-len(h) // up)
    hp = np.zeros(taps * up)
    hp[:len(h)] = h
    n_in = x.shape[-1]
    n_out = -(-n_in * up // down)
    # y[k] = sum_t x[q_k - t] h[r_k + t up] with i = (k + drop) down = q_k up + r_k. Outputs k0, k0 + up, ...
    # share the phase r and step q by `down`: one strided view of the input's windows and one filter each.
    q_last = ((n_out - 1 + drop) * down) // up
    xp = np.zeros(x.shape[:-1] + (max(q_last + taps, taps - 1 + n_in),))
    xp[..., taps - 1:taps - 1 + n_in] = x
    windows = np.lib.stride_tricks.sliding_window_view(xp, taps, axis=-1)  # window j = xp[j:j + taps]
    out = np.empty(x.shape[:-1] + (n_out,))
    for k0 in range(min(up, n_out)):
        q0, r = divmod((k0 + drop) * down, up)
        count = len(range(k0, n_out, up))
        rows = windows[..., q0:q0 + (count - 1) * down + 1:down, :]
        out[..., k0::up] = rows @ hp[r + np.arange(taps - 1, -1, -1) * up]
    return out

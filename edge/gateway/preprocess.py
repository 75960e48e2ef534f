"""Window preprocessing shared by training and the gateway (one implementation).

The model sees exactly what this module produces: windows resampled to the model
rate, cut or padded to the model length, linearly detrended, band-passed with a
zero-phase Butterworth filter (second-order sections) and normalised by the RMS
of the whole window (all channels together, so that the ratio between components
survives), then clipped so that the int8 input scale is fixed by the model card
rather than by the loudest window of the calibration set.

Detrend and band-pass are linear, so training may filter once and apply linear
augmentations (shift, scale, polarity, added background) before ``normalise``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np

from edge.errors import UserError
from edge.gateway import iir
from edge.gateway.resample import resample_poly


@dataclass(frozen=True)
class PreprocessParams:
    """Preprocessing parameters, stored in the model card under ``preprocessing``."""

    fs: float = 4000.0
    samples: int = 4096
    highpass_hz: float = 3.0
    lowpass_hz: float = 1800.0
    order: int = 4
    clip: float = 16.0

    def to_dict(self) -> dict:
        """Plain-JSON form for the model card."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "preprocessing") -> PreprocessParams:
        """Build from a card/config mapping; unknown or bad keys raise a UserError naming them."""
        allowed = set(cls.__dataclass_fields__)
        bad = sorted(set(d) - allowed)
        if bad:
            raise UserError(f"{where}: unknown key(s) {bad}; allowed: {sorted(allowed)}")
        p = cls(**{k: type(getattr(cls(), k))(v) for k, v in d.items()})
        p.check(where)
        return p

    def check(self, where: str = "preprocessing") -> None:
        """Raise a UserError if the parameters cannot describe a valid filter."""
        nyq = self.fs / 2
        if self.fs <= 0 or self.samples < 64:
            raise UserError(f"{where}: fs={self.fs}, samples={self.samples}; need fs > 0 and samples >= 64")
        if not 0 < self.highpass_hz < self.lowpass_hz < nyq:
            raise UserError(f"{where}: highpass_hz={self.highpass_hz}, lowpass_hz={self.lowpass_hz}; "
                            f"need 0 < highpass < lowpass < fs/2 = {nyq}")
        if not 1 <= self.order <= 8 or self.clip <= 0:
            raise UserError(f"{where}: order={self.order}, clip={self.clip}; need order 1..8 and clip > 0")


@lru_cache(maxsize=16)
def bandpass_sos(fs: float, highpass_hz: float, lowpass_hz: float, order: int) -> np.ndarray:
    """Butterworth band-pass as second-order sections (cached: the gateway calls it per window).

    Designed in numpy (:func:`edge.gateway.iir.butter_bandpass_sos`): the transfer function of scipy's
    ``butter(..., output="sos")``, which the models were trained with.
    """
    return iir.butter_bandpass_sos(order, highpass_hz, lowpass_hz, fs)


def resample(waveforms: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Resample along the last axis with a polyphase anti-alias filter (rational ratio)."""
    if abs(fs_in - fs_out) < 1e-9 * fs_out:
        return waveforms
    ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
    return resample_poly(waveforms, ratio.numerator, ratio.denominator).astype(np.float32, copy=False)


def fit_length(waveforms: np.ndarray, samples: int) -> np.ndarray:
    """Centre-crop or zero-pad (symmetrically) the last axis to ``samples``."""
    n = waveforms.shape[-1]
    if n == samples:
        return waveforms
    if n > samples:
        start = (n - samples) // 2
        return waveforms[..., start:start + samples]
    pad = [(0, 0)] * (waveforms.ndim - 1) + [((samples - n) // 2, samples - n - (samples - n) // 2)]
    return np.pad(waveforms, pad)


def filter_windows(waveforms: np.ndarray, params: PreprocessParams) -> np.ndarray:
    """Linear detrend then zero-phase band-pass of every trace, along the last axis (float32)."""
    x = iir.detrend_linear(waveforms)
    sos = bandpass_sos(params.fs, params.highpass_hz, params.lowpass_hz, params.order)
    return iir.sosfiltfilt(sos, x.reshape(-1, x.shape[-1])).reshape(x.shape).astype(np.float32)


def normalise(filtered: np.ndarray, clip: float) -> np.ndarray:
    """Divide each window (n, channels, samples) by its RMS over all channels, then clip to +-clip.

    Silent (all-zero) windows stay zero instead of dividing by zero.
    """
    x = np.asarray(filtered, dtype=np.float32)
    rms = np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=(-2, -1), keepdims=True)).astype(np.float32)
    x = x / np.maximum(rms, np.float32(1e-12))
    return np.clip(x, -clip, clip).astype(np.float32, copy=False)


def adapt_channels(waveforms: np.ndarray, channels: int, policy: str = "strict") -> np.ndarray:
    """Give (n, c, samples) windows the model's channel count, as the model card allows.

    ``policy``: ``strict`` (counts must match), ``first`` (a uniaxial model takes the first,
    vertical, component of triaxial data), ``zero_fill`` (a triaxial model trained with channel
    dropout takes a uniaxial record as Z with silent N/E), ``any`` (both).
    """
    c = waveforms.shape[1]
    if c == channels:
        return waveforms
    if c > channels and policy in ("first", "any"):
        return waveforms[:, :channels]
    if c < channels and policy in ("zero_fill", "any"):
        out = np.zeros((waveforms.shape[0], channels, waveforms.shape[2]), dtype=waveforms.dtype)
        out[:, :c] = waveforms
        return out
    raise UserError(f"windows have {c} channel(s); the model takes {channels} "
                    f"(its card's channel policy '{policy}' does not allow adapting)")


def preprocess(waveforms: np.ndarray, fs: float, params: PreprocessParams) -> np.ndarray:
    """Full preprocessing of raw windows (n, channels, samples) at ``fs`` -> model input (n, channels, samples).

    Resample to the model rate, fit the model length, detrend, band-pass, normalise and clip.
    """
    x = np.asarray(waveforms, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise UserError(f"windows have shape {x.shape}; expected (n, channels, samples)")
    x = fit_length(resample(x, fs, params.fs), params.samples)
    return normalise(filter_windows(x, params), params.clip)

"""How doubtful one classified event is: the order of the review queue (uncertainty sampling).

Labels are scarce, so a reviewer's time goes first to the events the model is least sure of:
the literature's uncertainty sampling (least confidence and entropy), plus two signals of our own,
the classifier's ``unknown`` and a label that disagrees with the event's measured features.

``score`` is a weighted sum in 0..1::

    0.35 * [label is unknown] + 0.25 * (1 - confidence) + 0.25 * entropy + 0.15 * [disagrees with features]

A label disagrees with its features (heuristics on the event's own measurements, docs/surface.md):

- ``noise`` with ``snr_db`` >= 12 dB: a clear signal called background;
- any source class with ``snr_db`` < 2 dB: a class named on a window barely above its background;
- a clipped window: the amplitude, and so the features the model saw, are not to be trusted.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.vocabulary import NOISE, UNKNOWN

W_UNKNOWN, W_CONFIDENCE, W_ENTROPY, W_DISAGREE = 0.35, 0.25, 0.25, 0.15
NOISE_CLEAR_SNR_DB = 12.0
SOURCE_FAINT_SNR_DB = 2.0


@dataclass(frozen=True)
class Doubt:
    """An event's review priority and the reasons behind it."""

    score: float
    reasons: tuple[str, ...]


def disagreements(label: str, features: dict) -> tuple[str, ...]:
    """The reasons ``label`` disagrees with ``features`` (empty when it does not)."""
    out = []
    snr = float(features.get("snr_db", 0.0))
    if label == NOISE and snr >= NOISE_CLEAR_SNR_DB:
        out.append(f"noise at snr {snr:.1f} dB")
    if label not in (NOISE, UNKNOWN) and snr < SOURCE_FAINT_SNR_DB:
        out.append(f"{label} at snr {snr:.1f} dB")
    if features.get("clipped"):
        out.append("clipped")
    return tuple(out)


def doubt(label: str, confidence: float, entropy: float, features: dict) -> Doubt:
    """The review priority of one event (pure: the same inputs give the same score)."""
    reasons: list[str] = []
    score = 0.0
    if label == UNKNOWN:
        score += W_UNKNOWN
        reasons.append("unknown")
    conf = min(max(float(confidence), 0.0), 1.0)
    ent = min(max(float(entropy), 0.0), 1.0)
    score += W_CONFIDENCE * (1.0 - conf) + W_ENTROPY * ent
    if conf < 0.6:
        reasons.append(f"confidence {conf:.2f}")
    if ent > 0.5:
        reasons.append(f"entropy {ent:.2f}")
    disagree = disagreements(label, features)
    if disagree:
        score += W_DISAGREE
        reasons.extend(disagree)
    return Doubt(round(score, 6), tuple(reasons))

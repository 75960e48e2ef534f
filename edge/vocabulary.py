"""The model vocabulary: event classes in model output order, and what the rest of the code derives from it.

A new class is added here (and to the synthetic generator that makes it); the event JSON Schema's label
enum is tested against this list.
"""

CLASSES: tuple[str, ...] = ("microseismic", "blast", "drilling", "electrical", "mechanical", "noise")
UNKNOWN = "unknown"  # the classifier's answer below the model card's confidence threshold
LABELS: tuple[str, ...] = (*CLASSES, UNKNOWN)  # what an event message's ``label`` may say

NOISE = "noise"
# Classes whose queued messages an outbox that is full evicts first (least value to the surface).
EVICT_FIRST: tuple[str, ...] = (NOISE,)

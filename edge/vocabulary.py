"""The model vocabulary (SPEC.md): event classes in model output order."""

CLASSES: tuple[str, ...] = ("microseismic", "blast", "drilling", "electrical", "mechanical", "noise")
UNKNOWN = "unknown"

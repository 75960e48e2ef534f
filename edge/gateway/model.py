"""The gateway's classifier: model card, LiteRT interpreter, calibrated probabilities.

A model is a directory holding ``model.tflite`` (int8) and ``model_card.json``; the
card states the input the model expects (channels, samples, rate, preprocessing,
input quantization), the class order, the softmax temperature fitted on
validation data and when the answer is ``unknown``: an ``open_set`` rule (a novelty
score of the logits and its threshold) or, on cards without one, the calibrated
confidence below ``unknown_threshold``.

TensorFlow is never imported here: the interpreter is ``ai_edge_litert``, then
``tflite_runtime``; ``tensorflow.lite`` is used only if neither is installed and
TensorFlow happens to be (a training machine).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import math
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge.errors import UserError
from edge.formats import read_json
from edge.gateway.preprocess import PreprocessParams, adapt_channels, preprocess
from edge.vocabulary import CLASSES, UNKNOWN

CARD = "model_card.json"
TFLITE = "model.tflite"
CARD_FORMAT = "stopewatch.model_card/1"
_REQUIRED = {
    "name": str, "version": str, "sha256": str, "classes": list, "fs": (int, float), "channels": int,
    "samples": int, "preprocessing": dict, "input_quantization": dict, "temperature": (int, float),
    "unknown_threshold": (int, float),
}


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


def load_interpreter_class():
    """The TFLite interpreter class: ai_edge_litert, else tflite_runtime, else tensorflow.lite if present."""
    try:
        from ai_edge_litert.interpreter import Interpreter
        return Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter
        return Interpreter
    except ImportError:
        pass
    if importlib.util.find_spec("tensorflow") is not None:
        import tensorflow as tf
        return tf.lite.Interpreter
    raise UserError("no TFLite interpreter installed: pip install ai-edge-litert "
                    "(or tflite-runtime on older systems)")


def resolve_model(path: str | Path) -> tuple[Path, Path]:
    """(tflite file, card file) for a model directory or a .tflite file next to its card."""
    path = Path(path)
    if path.is_dir():
        tfl, card = path / TFLITE, path / CARD
    elif path.suffix == ".tflite":
        tfl, card = path, path.with_name(CARD)
    else:
        raise UserError(f"{path}: not a model (expected a directory with {TFLITE} and {CARD}, or a .tflite file)")
    for f in (tfl, card):
        if not f.is_file():
            raise UserError(f"{f}: no such file (a model needs {TFLITE} and {CARD} side by side)")
    return tfl, card


def validate_card(card: dict, where: str) -> dict:
    """Check the card's keys, types and values; raise a UserError naming the bad key."""
    if not isinstance(card, dict):
        raise UserError(f"{where}: expected a JSON object")
    for key, typ in _REQUIRED.items():
        if key not in card:
            raise UserError(f"{where}: missing key '{key}'")
        if not isinstance(card[key], typ) or isinstance(card[key], bool):
            raise UserError(f"{where}: key '{key}' = {card[key]!r} has the wrong type")
    classes = card["classes"]
    if not classes or not all(isinstance(c, str) for c in classes) or len(set(classes)) != len(classes):
        raise UserError(f"{where}: key 'classes' = {classes!r}; expected distinct class names")
    foreign = [c for c in classes if c not in CLASSES]
    if foreign:  # the event schema's label and probabilities allow only the vocabulary's classes
        raise UserError(f"{where}: key 'classes' names {foreign}, not in the vocabulary; allowed: {', '.join(CLASSES)}")
    if card["channels"] not in (1, 3):
        raise UserError(f"{where}: key 'channels' = {card['channels']}; allowed: 1, 3")
    if not card["temperature"] > 0:
        raise UserError(f"{where}: key 'temperature' = {card['temperature']}; must be > 0")
    if not 0 <= card["unknown_threshold"] <= 1:
        raise UserError(f"{where}: key 'unknown_threshold' = {card['unknown_threshold']}; allowed 0..1")
    PreprocessParams.from_dict(card["preprocessing"], f"{where}: key 'preprocessing'")
    q = card["input_quantization"]
    for k in ("scale", "zero_point"):
        if not isinstance(q.get(k), (int, float)):
            raise UserError(f"{where}: key 'input_quantization.{k}' missing or not a number")
    rates = card.get("board_rates_hz")
    if rates is not None and not (isinstance(rates, list) and len(rates) == 2
                                  and all(isinstance(r, int | float) and not isinstance(r, bool) for r in rates)
                                  and 0 < rates[0] <= rates[1]):
        raise UserError(f"{where}: key 'board_rates_hz' = {rates!r}; expected [LOW, HIGH] in Hz with 0 < LOW <= HIGH")
    if "open_set" in card:
        validate_open_set(card["open_set"], len(classes), f"{where}: key 'open_set'")
    bias = card.get("decision_bias")
    if bias is not None and not (isinstance(bias, list) and len(bias) == len(classes)
                                 and all(isinstance(b, int | float) and not isinstance(b, bool) and np.isfinite(b)
                                         for b in bias)):
        raise UserError(f"{where}: key 'decision_bias' = {bias!r}; expected {len(classes)} finite numbers, "
                        "one per class")
    policy = card.get("channel_policy", "strict")
    if policy not in ("strict", "first", "zero_fill", "any"):
        raise UserError(f"{where}: key 'channel_policy' = {policy!r}; allowed: strict, first, zero_fill, any")
    return card


# Board rates a model of each family serves when its card predates ``board_rates_hz``.
HIGH_RATE_FAMILY_HZ = 2000.0  # models at or above this rate are the hard-rock family (1 s windows)
LOW_RATE_FAMILY_MAX_HZ = 1000.0  # the fastest board the low-rate family (8 s windows) serves


def board_rates_hz(card: dict) -> tuple[float, float]:
    """The board rates (Hz) the model serves, ``(low, high)``: the card's ``board_rates_hz``.

    Cards without it are inferred from the model's ``fs``: from fs/2 (half the model's rate: the band
    above the board's Nyquist frequency is empty after upsampling) up to 5 fs for models at >= 2 kHz
    (a 4 kHz model serves 2-20 kHz boards: faster boards are decimated into its 1 s window), and up to
    2 fs below (a 500 Hz model serves 250-1000 Hz boards; faster boards belong to the high-rate family,
    whose band holds what they record).
    """
    rates = card.get("board_rates_hz")
    if rates is not None:
        return float(rates[0]), float(rates[1])
    fs = float(card["fs"])
    return fs / 2, fs * (5.0 if fs >= HIGH_RATE_FAMILY_HZ else 2.0)


def rate_refusal(card: dict, board_fs: float) -> str | None:
    """None when the model serves a board sampling at ``board_fs``, else one line naming the rate, the
    model's range and what to do (which family to install, or to resample a rate between the families)."""
    low, high = board_rates_hz(card)
    if low <= board_fs <= high:
        return None
    source = "card board_rates_hz" if "board_rates_hz" in card else f"inferred from its rate, {float(card['fs']):g} Hz"
    if LOW_RATE_FAMILY_MAX_HZ < board_fs < HIGH_RATE_FAMILY_HZ:
        hint = (f"{board_fs:g} Hz lies between the low-rate (250-1000 Hz) and high-rate (2-20 kHz) families: "
                "set the board to a rate one family serves, after measuring which fits (field guide: "
                "rates between the families)")
    elif board_fs > high >= HIGH_RATE_FAMILY_HZ:  # a high-rate model: the board is faster than it serves
        hint = f"set the board to at most {high:g} Hz"
    elif board_fs > high:
        hint = "install a high-rate model: stopewatch model install models/triaxial (or models/uniaxial)"
    else:
        hint = "install a low-rate model: stopewatch model install models/lowrate_triaxial"
    return (f"the board samples at {board_fs:g} Hz but model '{card.get('name', '?')}' serves boards at "
            f"{low:g}-{high:g} Hz ({source}); {hint}")


def trigger_limits(card: dict, board_fs: float | None = None, board_channels: int | None = None,
                   max_channels: int = 32, board_name: str = "the board") -> tuple[float, float, int, str]:
    """(window_s, slowest_fs, channels, why) a trigger must fit with this model: the model's window, the
    slowest rate and the most channels the board may send (the board's own when known, else what the
    card serves), and one phrase saying where those come from."""
    window_s = float(card["samples"]) / float(card["fs"])
    name = card.get("name", "?")
    if board_fs is not None and board_channels is not None:
        return (window_s, float(board_fs), int(board_channels),
                f"{board_name}: {board_channels} channel(s) at {board_fs:g} Hz")
    low, _ = board_rates_hz(card)
    policy = card.get("channel_policy", "strict")
    channels = int(card["channels"]) if policy in ("strict", "zero_fill") else max_channels
    return window_s, low, channels, (f"model '{name}' serves boards from {low:g} Hz with "
                                     f"{'up to ' if policy != 'strict' else ''}{channels} channel(s)")


def read_card(path: str | Path) -> dict:
    """Read and validate a model card."""
    path = Path(path)
    return validate_card(read_json(path), str(path))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Temperature-scaled softmax over the last axis (numerically stable)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def normalised_entropy(p: np.ndarray) -> np.ndarray:
    """Shannon entropy of each probability row divided by log(K): 0 = certain, 1 = uniform."""
    p = np.asarray(p, dtype=np.float64)
    h = -np.sum(np.where(p > 0, p * np.log(np.maximum(p, 1e-300)), 0.0), axis=-1)
    return h / math.log(p.shape[-1])


MIN_WINDOW_FRACTION = 0.9  # a window this much shorter than the model's is refused, not zero-padded

OPEN_SET_SCORES = ("msp", "energy", "max_logit", "mahalanobis")


def validate_open_set(rule: dict, n_classes: int, where: str) -> dict:
    """Check an ``open_set`` rule: a known score, a finite threshold, and the score's parameters."""
    if not isinstance(rule, dict):
        raise UserError(f"{where}: expected a table like {{\"score\": \"energy\", \"threshold\": ...}}")
    if rule.get("score") not in OPEN_SET_SCORES:
        raise UserError(f"{where}.score = {rule.get('score')!r}; allowed: {', '.join(OPEN_SET_SCORES)}")
    for key in ("threshold", "temperature"):
        v = rule.get(key)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise UserError(f"{where}.{key} = {v!r}; expected a finite number")
    if not rule["temperature"] > 0:
        raise UserError(f"{where}.temperature = {rule['temperature']}; must be > 0")
    if rule["score"] == "mahalanobis":
        means, prec = np.asarray(rule.get("means", []), float), np.asarray(rule.get("precision", []), float)
        if means.shape != (n_classes, n_classes) or prec.shape != (n_classes, n_classes):
            raise UserError(f"{where}: a mahalanobis rule needs 'means' and 'precision', both "
                            f"{n_classes} x {n_classes} (classes x logits)")
    return rule


def novelty(logits: np.ndarray, rule: dict) -> np.ndarray:
    """Open-set novelty of each logit row under ``rule`` (higher = less like the known classes).

    msp: minus the top softmax(logits / T) probability; energy: -T * logsumexp(logits / T);
    max_logit: minus the top logit; mahalanobis: squared distance to the nearest class mean of
    the validation logits (shared covariance, ``precision`` its inverse)."""
    z = np.asarray(logits, dtype=np.float64)
    score, t = rule["score"], float(rule["temperature"])
    if score == "msp":
        return -softmax(z, t).max(axis=-1)
    if score == "energy":
        m = z.max(axis=-1, keepdims=True) / t
        return -t * (m[..., 0] + np.log(np.exp(z / t - m).sum(axis=-1)))
    if score == "max_logit":
        return -z.max(axis=-1)
    d = z[:, None, :] - np.asarray(rule["means"], dtype=np.float64)[None]  # (n, classes, logits)
    return np.einsum("nki,ij,nkj->nk", d, np.asarray(rule["precision"], dtype=np.float64), d).min(axis=-1)


def is_unknown(logits: np.ndarray, temperature: float, unknown_threshold: float,
               open_set: dict | None = None) -> np.ndarray:
    """Which logit rows are answered ``unknown``: novelty above the ``open_set`` rule's threshold, or,
    for cards without a rule, calibrated top probability below ``unknown_threshold``."""
    if open_set is None:
        return softmax(logits, temperature).max(axis=-1) < unknown_threshold
    return novelty(logits, open_set) > float(open_set["threshold"])


def invoke_logits(interpreter, x: np.ndarray, details: tuple[dict, dict] | None = None) -> np.ndarray:
    """Dequantized logits (n, classes) of model inputs (n, samples, channels), one window per invoke.
    ``details`` = (input, output) tensor details, passed by callers that keep them (saves a lookup per call)."""
    inp, out = details or (interpreter.get_input_details()[0], interpreter.get_output_details()[0])
    in_dtype = np.dtype(inp["dtype"])
    result = np.empty((x.shape[0], int(out["shape"][-1])), dtype=np.float32)
    for i in range(x.shape[0]):
        window = np.ascontiguousarray(x[i:i + 1])  # (1, samples, channels)
        if in_dtype == np.int8:
            window = quantize(window, *inp["quantization"])
        interpreter.set_tensor(inp["index"], window.astype(in_dtype, copy=False))
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])[0]
        if np.dtype(out["dtype"]) == np.int8:
            y = dequantize(y, *out["quantization"])
        result[i] = y
    return result


def tflite_logits(model: bytes | str | Path, x: np.ndarray) -> np.ndarray:
    """Logits of model inputs (n, samples, channels) through a fresh one-thread interpreter of a
    .tflite file or its bytes (training's check of a converted model)."""
    kw = {"model_content": model} if isinstance(model, bytes) else {"model_path": str(model)}
    with _native_stderr_silenced():
        it = load_interpreter_class()(num_threads=1, **kw)
        it.allocate_tensors()
    return invoke_logits(it, x)


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype=np.int8) -> np.ndarray:
    """Affine quantization q = round(x / scale) + zero_point, saturated to the integer type."""
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, dtype=np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Inverse of :func:`quantize` (float32)."""
    return (np.asarray(q, dtype=np.float32) - np.float32(zero_point)) * np.float32(scale)


@contextlib.contextmanager
def _native_stderr_silenced():
    """Hide the interpreter's one-off native INFO line ("Created TensorFlow Lite XNNPACK delegate")
    from the field technician's terminal; Python exceptions still carry their messages. Native code
    writes to descriptor 2 whatever Python's ``sys.stderr`` is, so that descriptor is the one muted."""
    fd = 2
    with contextlib.suppress(AttributeError, OSError, ValueError):
        sys.stderr.flush()
    try:
        saved = os.dup(fd)
    except OSError:  # no descriptor 2 (a daemon started with it closed): nothing to mute
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


@dataclass(frozen=True)
class Classification:
    """The classifier's answer for one window: the event message's classification fields."""

    label: str  # a class of the model, or ``unknown`` below the card's threshold
    confidence: float  # calibrated probability of the most likely class
    probabilities: dict[str, float]  # every class, calibrated
    entropy: float  # normalised entropy of the probabilities (0 = certain, 1 = uniform)

    def as_fields(self) -> dict:
        """The message fields (``label``, ``confidence``, ``probabilities``, ``entropy``)."""
        return asdict(self)


class Classifier:
    """A shipped model: preprocess raw windows, run the TFLite interpreter, calibrate, decide ``unknown``.

    ``path`` is a model directory or a .tflite file next to its card (e.g. ``model_float.tflite``,
    checked against the card's ``files`` hashes). The sha256 is always checked: the card's ``sha256`` is
    what every event and status message names as the model, so it must be the file's.
    """

    def __init__(self, path: str | Path, num_threads: int = 1):
        self.tflite_path, self.card_path = resolve_model(path)
        self.card = read_card(self.card_path)
        got = sha256_file(self.tflite_path)
        files = self.card.get("files") if isinstance(self.card.get("files"), dict) else {}
        wants = [("files." + self.tflite_path.name, files.get(self.tflite_path.name))]
        if self.tflite_path.name == TFLITE:
            wants = [("sha256", self.card["sha256"])] + [w for w in wants if w[1] is not None]
        for key, want in wants:
            if got != want:
                raise UserError(f"{self.tflite_path}: sha256 {got[:12]}... does not match its card's {key} "
                                f"({str(want)[:12]}...) in {self.card_path}; the model or card was altered: "
                                "reinstall the model from its release")
        self.classes: list[str] = list(self.card["classes"])
        self.params = PreprocessParams.from_dict(self.card["preprocessing"])
        self.channels = int(self.card["channels"])
        self.samples = int(self.card["samples"])
        self.temperature = float(self.card["temperature"])
        self.threshold = float(self.card["unknown_threshold"])
        self.open_set: dict | None = self.card.get("open_set")
        # fitted on validation to the mine's error costs (a rock fracture missed or filed as a blast costs
        # most); added to the network's logits before everything that reads them
        self.decision_bias = np.asarray(self.card.get("decision_bias") or [0.0] * len(self.classes), np.float32)
        self.channel_policy = self.card.get("channel_policy", "strict")
        interpreter_cls = load_interpreter_class()
        try:
            with _native_stderr_silenced():
                self.interpreter = interpreter_cls(model_path=str(self.tflite_path), num_threads=num_threads)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise UserError(f"{self.tflite_path}: the interpreter cannot load it ({exc})") from None
        self._in = self.interpreter.get_input_details()[0]
        self._out = self.interpreter.get_output_details()[0]
        want_shape = (1, self.samples, self.channels)
        if tuple(self._in["shape"]) != want_shape:
            raise UserError(f"{self.tflite_path}: input shape {tuple(self._in['shape'])} does not match its card "
                            f"{want_shape} (batch, samples, channels)")
        if tuple(self._out["shape"]) != (1, len(self.classes)):
            raise UserError(f"{self.tflite_path}: output shape {tuple(self._out['shape'])} does not match "
                            f"the card's {len(self.classes)} classes")
        self.input_dtype = np.dtype(self._in["dtype"])

    def window_refusal(self, samples: int, fs: float) -> str | None:
        """None when raw windows of ``samples`` at ``fs`` can be classified, else why not: a rate the model
        does not serve, or a window shorter than the model's (padding it with zeros would still give a
        confident answer about a signal that is not there)."""
        refusal = rate_refusal(self.card, fs)
        # Faster windows than the model serves are only decimated to its rate (nothing it looks for is lost),
        # so offline analysis may run a low-rate model on them; slower ones lack the band it looks in.
        if refusal is not None and fs < board_rates_hz(self.card)[0]:
            return refusal.replace("the board samples", "the windows are sampled", 1)
        need_s = self.samples / self.fs
        if samples / fs < MIN_WINDOW_FRACTION * need_s:
            return (f"windows of {samples} samples at {fs:g} Hz last {samples / fs:g} s; model "
                    f"'{self.card['name']}' needs {need_s:g} s ({self.samples} samples at {self.fs:g} Hz)")
        return None

    def analysis_refusal(self, samples: int, fs: float) -> tuple[str | None, str | None]:
        """For offline tools (classify, evaluate): (refusal, warning). A measurement may run a model on windows
        shorter than its own (zero-padded; e.g. a low-rate model on the benchmark's 1 s windows), with a
        warning; below 64 model samples there is nothing to classify, and a rate below the model's range
        lacks the band it looks in: refused."""
        why = self.window_refusal(samples, fs)
        if why is None:
            return None, None
        if fs >= board_rates_hz(self.card)[0] and samples * self.fs / fs >= 64:
            return None, f"{why}; zero-padded to the model's window: the answers are not the model's own"
        return why, None

    @property
    def is_quantized(self) -> bool:
        """True when the interpreter takes int8 input."""
        return self.input_dtype == np.int8

    def prepare(self, waveforms: np.ndarray, fs: float) -> np.ndarray:
        """Raw windows (n, channels, samples) at ``fs`` -> model input (n, channels, samples) float32."""
        x = np.asarray(waveforms, dtype=np.float32)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3:
            raise UserError(f"windows have shape {x.shape}; expected (n, channels, samples)")
        x = adapt_channels(x, self.channels, self.channel_policy)
        return preprocess(x, fs, self.params)

    def logits_prepared(self, x: np.ndarray) -> np.ndarray:
        """Logits (n, classes) of preprocessed windows (n, channels, samples): the interpreter's dequantized
        output plus the card's ``decision_bias``."""
        return invoke_logits(self.interpreter, np.transpose(x, (0, 2, 1)), (self._in, self._out)) + self.decision_bias

    def probabilities(self, waveforms: np.ndarray, fs: float) -> np.ndarray:
        """Calibrated class probabilities (n, classes) of raw windows."""
        return softmax(self.logits_prepared(self.prepare(waveforms, fs)), self.temperature)

    def decide(self, probs: np.ndarray, logits: np.ndarray | None = None) -> list[Classification]:
        """The classification of each probability row: label (or unknown), confidence, probabilities,
        entropy. A card's ``open_set`` rule scores the logits; cards without one need only ``probs``."""
        if self.open_set is not None and logits is None:
            raise ValueError("this model's open-set rule scores logits: pass them to decide()")
        if self.open_set is None:
            unknown = np.asarray(probs).max(axis=-1) < self.threshold
        else:
            unknown = is_unknown(logits, self.temperature, self.threshold, self.open_set)
        ent = normalised_entropy(probs)
        out = []
        for p, h, unk in zip(probs, ent, unknown, strict=True):
            k = int(np.argmax(p))
            conf = float(p[k])
            out.append(Classification(
                label=UNKNOWN if unk else self.classes[k],
                confidence=round(conf, 6),
                probabilities={c: round(float(v), 6) for c, v in zip(self.classes, p, strict=True)},
                entropy=round(float(h), 6),
            ))
        return out

    def classify(self, waveforms: np.ndarray, fs: float) -> list[Classification]:
        """Classify raw windows (n, channels, samples) at ``fs``; one :class:`Classification` per window."""
        logits = self.logits_prepared(self.prepare(waveforms, fs))
        return self.decide(softmax(logits, self.temperature), logits)

    @property
    def fs(self) -> float:
        """The model's sampling rate (windows at other rates are resampled to it)."""
        return self.params.fs

    @property
    def identity(self) -> dict:
        """The event message's ``model`` field: name, version, sha256."""
        return {"name": self.card["name"], "version": self.card["version"], "sha256": self.card["sha256"]}

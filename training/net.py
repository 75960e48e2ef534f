"""The networks: a strided 1D-CNN (the shipped one) and variants of it, logits out.

Sized for the gateway: a strided first convolution brings 4096 samples down
fast, few filters per layer, global average + max pooling, a linear head that
outputs logits (temperature scaling needs logits, not int8 probabilities).
Batch normalisation folds into the convolutions at conversion.

``[model] arch`` chooses the network; every variant keeps the strided convolution stem of
``filters``/``kernels``/``strides`` (4096 samples -> 32 steps with the defaults) and converts to
LiteRT's int8 builtin kernels:

- ``cnn``: the stem, global average + max pooling, a dense head (the shipped model).
- ``wide_cnn``: the same with twice the filters in every layer.
- ``deep_cnn``: a residual block (two 3-tap convolutions and a skip) after every strided layer but
  the first, so the stem is twice as deep at the same resolution.
- ``gru``: a GRU over the stem's feature sequence, its last state beside the pooled features
  (unrolled, so the graph holds only fully connected, logistic and tanh ops instead of a loop).
- ``attention``: one transformer block (4-head self-attention over the feature sequence, a
  position-wise feed-forward layer, residuals and layer normalisation), then the pooling.
- ``ref_cnn``: the stem applied, with the same weights, also to the pre-trigger part of the window
  (its first ``REFERENCE_FRACTION``: 0.192 s of a 4096-sample window at 4 kHz, before the earliest onset
  the trigger leaves there); the head sees the event's pooled features and their difference from the
  background's, so that the site's own noise and recording chain are a reference inside each window.
  The slice is taken in the graph: training and gateway compute the same thing with no extra
  preprocessing.

:func:`ensemble_model` averages the logits of trained models inside one graph (one .tflite).
"""

from __future__ import annotations

from training.tf_env import tensorflow

ARCHS = ("cnn", "wide_cnn", "deep_cnn", "gru", "attention", "ref_cnn")
REFERENCE_FRACTION = 3 / 16  # of the window, before the onset (the gateway keeps 0.256 s before the trigger)
GRU_UNITS = 48
ATTENTION_HEADS = 4


def build_model(channels: int, samples: int, n_classes: int, model_cfg: dict):
    """A tf-keras model: input (samples, channels) float32 -> logits (n_classes); ``model_cfg['arch']``
    (default ``cnn``) picks the variant."""
    arch = model_cfg.get("arch", "cnn")
    if arch not in ARCHS:
        raise ValueError(f"model.arch = {arch!r}; allowed: {', '.join(ARCHS)}")
    _, keras, _ = tensorflow()
    L = keras.layers
    inp = keras.Input(shape=(samples, channels), name="window")
    if arch == "ref_cnn":
        return _reference_model(inp, samples, n_classes, model_cfg)
    width = 2 if arch == "wide_cnn" else 1
    x = inp
    for i, (f, k, s) in enumerate(zip(model_cfg["filters"], model_cfg["kernels"], model_cfg["strides"],
                                      strict=True)):
        x = L.Conv1D(f * width, k, strides=s, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = L.BatchNormalization(name=f"bn{i}")(x)
        x = L.ReLU(name=f"relu{i}")(x)
        if arch == "deep_cnn" and i > 0:
            x = _residual_block(L, x, f, f"res{i}")
    if arch == "attention":
        x = _transformer_block(L, x, model_cfg["filters"][-1])
    pooled = [L.GlobalAveragePooling1D(name="gap")(x), L.GlobalMaxPooling1D(name="gmp")(x)]
    if arch == "gru":
        pooled.append(L.GRU(GRU_UNITS, unroll=True, name="gru")(x))
    x = L.Concatenate(name="pool")(pooled)
    if model_cfg.get("dropout", 0) > 0:
        x = L.Dropout(model_cfg["dropout"], name="dropout")(x)
    out = L.Dense(n_classes, name="logits")(x)
    return keras.Model(inp, out, name="stopewatch_cnn" if arch == "cnn" else f"stopewatch_{arch}")


def _residual_block(L, x, filters: int, name: str):
    """Two 3-tap convolutions at the same resolution with an identity skip."""
    y = L.Conv1D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv_a")(x)
    y = L.BatchNormalization(name=f"{name}_bn_a")(y)
    y = L.ReLU(name=f"{name}_relu_a")(y)
    y = L.Conv1D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv_b")(y)
    y = L.BatchNormalization(name=f"{name}_bn_b")(y)
    return L.ReLU(name=f"{name}_relu")(L.Add(name=f"{name}_add")([x, y]))


def _transformer_block(L, x, dim: int):
    """Post-norm transformer encoder block: self-attention and a feed-forward layer, each with a skip."""
    a = L.MultiHeadAttention(ATTENTION_HEADS, dim // ATTENTION_HEADS, name="mhsa")(x, x)
    x = L.LayerNormalization(name="ln_attention")(L.Add(name="attention_add")([x, a]))
    f = L.Dense(2 * dim, activation="relu", name="ffn_in")(x)
    f = L.Dense(dim, name="ffn_out")(f)
    return L.LayerNormalization(name="ln_ffn")(L.Add(name="ffn_add")([x, f]))


def reference_samples(samples: int) -> int:
    """Length of the pre-trigger reference slice of a ``samples`` window (at least one sample)."""
    return max(1, int(round(samples * REFERENCE_FRACTION)))


def _reference_model(inp, samples: int, n_classes: int, model_cfg: dict):
    """The stem on the window and, with the same layers, on its pre-trigger slice; head on
    [event features, event features - background features]."""
    _, keras, _ = tensorflow()
    L = keras.layers
    layers = []
    for i, (f, k, s) in enumerate(zip(model_cfg["filters"], model_cfg["kernels"], model_cfg["strides"],
                                      strict=True)):
        layers += [L.Conv1D(f, k, strides=s, padding="same", use_bias=False, name=f"conv{i}"),
                   L.BatchNormalization(name=f"bn{i}"), L.ReLU(name=f"relu{i}")]
    gap, gmp = L.GlobalAveragePooling1D(name="gap"), L.GlobalMaxPooling1D(name="gmp")
    pool = L.Concatenate(name="pool")

    def features(x):
        for layer in layers:
            x = layer(x)
        return pool([gap(x), gmp(x)])

    reference = L.Cropping1D((0, samples - reference_samples(samples)), name="pre_trigger")(inp)
    event, background = features(inp), features(reference)
    x = L.Concatenate(name="contrast")([event, L.Subtract(name="minus_background")([event, background])])
    if model_cfg.get("dropout", 0) > 0:
        x = L.Dropout(model_cfg["dropout"], name="dropout")(x)
    out = L.Dense(n_classes, name="logits")(x)
    return keras.Model(inp, out, name="stopewatch_ref_cnn")


def ensemble_model(members: list, name: str = "stopewatch_ensemble"):
    """One model whose logits are the mean of the members' logits (same input shape and classes)."""
    _, keras, _ = tensorflow()
    L = keras.layers
    shape = members[0].input_shape[1:]
    inp = keras.Input(shape=shape, name="window")
    outs = []
    for i, m in enumerate(members):
        if m.input_shape[1:] != shape or m.output_shape != members[0].output_shape:
            raise ValueError(f"ensemble member {i}: input {m.input_shape} / output {m.output_shape} differ "
                             f"from member 0's {members[0].input_shape} / {members[0].output_shape}")
        m._name = f"member{i}_{m.name}"  # nested models need distinct names
        outs.append(m(inp, training=False))
    return keras.Model(inp, L.Average(name="logits")(outs), name=name)


def macs(model) -> int:
    """Multiply-accumulates of one forward pass (convolutions and dense layers; a GRU's gates at every
    step; attention's projections and its two sequence products; nested members of an ensemble)."""
    total = 0
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)  # pruning wrappers
        name = type(inner).__name__
        if name in ("Functional", "Model", "Sequential"):
            total += macs(inner)
        elif name == "Conv1D":
            k = inner.kernel.shape  # (kernel, in, out)
            out_len = layer.output.shape[1]
            total += int(out_len * k[0] * k[1] * k[2])
        elif name == "Dense":
            k = inner.kernel.shape
            steps = layer.output.shape[1] if len(layer.output.shape) == 3 else 1  # position-wise on a sequence
            total += int(steps * k[0] * k[1])
        elif name == "GRU":
            steps = layer.input.shape[1]
            total += int(steps * (inner.cell.kernel.shape.num_elements() + inner.cell.recurrent_kernel.shape
                                  .num_elements()))
        elif name == "MultiHeadAttention":
            steps = layer.output.shape[1]
            projections = sum(w.shape.num_elements() for w in inner.weights if len(w.shape) == 3)
            total += int(steps * projections + 2 * steps * steps * inner._key_dim * inner._num_heads)
    return total

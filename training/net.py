"""The 1D-CNN: strided convolutions, global pooling, logits out.

Sized for the gateway: a strided first convolution brings 4096 samples down
fast, few filters per layer, global average + max pooling, a linear head that
outputs logits (temperature scaling needs logits, not int8 probabilities).
Batch normalisation folds into the convolutions at conversion.
"""

from __future__ import annotations

from training.tf_env import tensorflow


def build_model(channels: int, samples: int, n_classes: int, model_cfg: dict):
    """A tf-keras model: input (samples, channels) float32 -> logits (n_classes)."""
    _, keras, _ = tensorflow()
    L = keras.layers
    inp = keras.Input(shape=(samples, channels), name="window")
    x = inp
    for i, (f, k, s) in enumerate(zip(model_cfg["filters"], model_cfg["kernels"], model_cfg["strides"],
                                      strict=True)):
        x = L.Conv1D(f, k, strides=s, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = L.BatchNormalization(name=f"bn{i}")(x)
        x = L.ReLU(name=f"relu{i}")(x)
    x = L.Concatenate(name="pool")([L.GlobalAveragePooling1D(name="gap")(x), L.GlobalMaxPooling1D(name="gmp")(x)])
    if model_cfg.get("dropout", 0) > 0:
        x = L.Dropout(model_cfg["dropout"], name="dropout")(x)
    out = L.Dense(n_classes, name="logits")(x)
    return keras.Model(inp, out, name="stopewatch_cnn")


def macs(model) -> int:
    """Multiply-accumulates of one forward pass (convolutions and dense layers)."""
    total = 0
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)  # pruning wrappers
        name = type(inner).__name__
        if name == "Conv1D":
            k = inner.kernel.shape  # (kernel, in, out)
            out_len = layer.output.shape[1]
            total += int(out_len * k[0] * k[1] * k[2])
        elif name == "Dense":
            k = inner.kernel.shape
            total += int(k[0] * k[1])
    return total

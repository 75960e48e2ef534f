"""Import TensorFlow with tf-keras (Keras 2), which tensorflow-model-optimization needs.

TF_USE_LEGACY_KERAS must be set before TensorFlow is first imported; importing
TensorFlow anywhere else in training/ goes through :func:`tensorflow`.
"""

from __future__ import annotations

import os
import sys

from edge.errors import UserError


def tensorflow():
    """(tf, tf_keras, tfmot) with Keras 2; quiet logs; error if TF was already loaded with Keras 3."""
    if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise UserError("TensorFlow was imported before TF_USE_LEGACY_KERAS=1 was set; "
                        "import training modules first (tensorflow-model-optimization needs tf-keras)")
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
        import tensorflow_model_optimization as tfmot
        import tf_keras
    except ImportError as exc:
        raise UserError(f"training needs the 'train' extra ({exc.name} is missing): "
                        "pip install -e '.[train]'") from None
    tf.get_logger().setLevel("ERROR")
    return tf, tf_keras, tfmot


def set_seeds(seed: int) -> None:
    """Seed Python, numpy and TensorFlow (and ask for deterministic ops)."""
    import random

    import numpy as np
    tf, _, _ = tensorflow()
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 -- Keras layers draw from the legacy global state
    tf.random.set_seed(seed)

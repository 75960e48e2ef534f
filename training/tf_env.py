"""Import TensorFlow with tf-keras (Keras 2), which tensorflow-model-optimization needs, quietly.

TF_USE_LEGACY_KERAS must be set before TensorFlow is first imported; importing
TensorFlow anywhere else in training/ goes through :func:`tensorflow`. Its start-up
noise (CUDA probing on a machine without a GPU, absl's pre-initialisation notice)
is written by native code straight to file descriptor 2, so the import runs with
that descriptor muted; Python exceptions keep their messages.
"""

from __future__ import annotations

import os
import sys

from edge.errors import UserError
from edge.gateway.model import _native_stderr_silenced


def tensorflow():
    """(tf, tf_keras, tfmot) with Keras 2; quiet logs; error if TF was already loaded with Keras 3."""
    if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise UserError("TensorFlow was imported before TF_USE_LEGACY_KERAS=1 was set; "
                        "import training modules first (tensorflow-model-optimization needs tf-keras)")
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # C++ INFO and WARNING lines
    try:
        with _native_stderr_silenced():
            try:
                import absl.logging
                absl.logging.set_verbosity(absl.logging.ERROR)
            except ImportError:
                pass
            import tensorflow as tf
            import tensorflow_model_optimization as tfmot
            import tf_keras
            tf.config.list_physical_devices("GPU")  # the CUDA probe's error line, once, while muted
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

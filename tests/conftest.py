"""Test-wide fixtures: every test starts from TensorFlow's default global state."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(autouse=True)
def _default_tensorflow_state():
    """Undo what :func:`ich.training.runtime.configure_runtime` sets process-wide (the mixed-precision policy and op
    determinism), so no test depends on the order the tests ran in."""
    yield
    if "keras" in sys.modules:
        import keras
        from tensorflow.python.framework import config  # the only place TF offers the switch back

        keras.mixed_precision.set_global_policy("float32")
        config.disable_op_determinism()

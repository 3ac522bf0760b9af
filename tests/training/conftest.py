"""Fixtures for every training test."""
import pytest


@pytest.fixture(autouse=True)
def _float32_policy():
    """Puts Keras back on the float32 policy after each test: training with another
    mixed precision sets the global policy, and the next test must not build under it."""
    yield
    import tf_keras as keras
    keras.mixed_precision.set_global_policy("float32")

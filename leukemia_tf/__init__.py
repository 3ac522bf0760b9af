"""leukemia_tf: train and evaluate ALL-vs-hem classifiers on the C-NMC 2019 images.

tf_keras (Keras 2) is the Keras used throughout: Keras 3's `model.fit` fails under
MultiWorkerMirroredStrategy (keras-team/keras#20585). TF_USE_LEGACY_KERAS must be set
before TensorFlow is first imported, so the package sets it on import.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"


def quiet_tensorflow_logs() -> None:
    """Entry points: keep TensorFlow's INFO chatter (checkpoint sharding, SavedModel
    assets) out of the console, keep this package's INFO lines (cache decisions,
    strategy) and every warning. An explicit --verbosity flag wins."""
    import logging

    from absl import flags
    from absl import logging as absl_logging
    if "verbosity" in flags.FLAGS and flags.FLAGS["verbosity"].present:
        return
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    logging.getLogger("leukemia_tf").setLevel(logging.INFO)

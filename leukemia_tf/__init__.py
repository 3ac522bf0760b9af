"""leukemia_tf: train and evaluate ALL-vs-hem classifiers on the C-NMC 2019 images.

tf_keras (Keras 2) is the Keras used throughout: Keras 3's `model.fit` fails under
MultiWorkerMirroredStrategy (keras-team/keras#20585). TF_USE_LEGACY_KERAS must be set
before TensorFlow is first imported, so the package sets it on import.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

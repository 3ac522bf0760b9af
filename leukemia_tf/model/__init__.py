"""Models: registry, augmentation, normalisation, export, backbones."""

# The registry's model names (registry.py refuses to import if they differ), here so the
# command lines list and check them without importing TensorFlow.
NAMES = ("seed_cnn", "resnet_small", "efficientnetv2_b0", "resnet50")

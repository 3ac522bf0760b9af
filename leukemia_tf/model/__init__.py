"""Models: registry, augmentation, normalisation, export, backbones."""

"""Scoring a trained model: loading with the trust checks, TTA, ensembles, the scored cells
read back, and the inference options (BN adaptation, temperature, neighbour vote, probe)."""

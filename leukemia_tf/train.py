"""`python -m leukemia_tf.train`: the trainer (flags and docs in leukemia_tf/cli/train.py)."""
from leukemia_tf.cli.train import console_main, main  # noqa: F401

if __name__ == "__main__":
    console_main()

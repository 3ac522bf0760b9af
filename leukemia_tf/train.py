"""`python -m leukemia_tf.train`: the trainer (flags and docs in leukemia_tf/cli/train_cli.py)."""
from leukemia_tf.cli.train_cli import console_main, main  # noqa: F401

if __name__ == "__main__":
    console_main()

"""`python -m leukemia_tf.evaluate`: evaluation (flags, docs: leukemia_tf/cli/evaluate.py)."""
from leukemia_tf.cli.evaluate import console_main, main  # noqa: F401

if __name__ == "__main__":
    console_main()

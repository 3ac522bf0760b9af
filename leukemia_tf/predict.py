"""`python -m leukemia_tf.predict`: prediction (flags, docs: leukemia_tf/cli/predict.py)."""
from leukemia_tf.cli.predict import console_main, main  # noqa: F401

if __name__ == "__main__":
    console_main()

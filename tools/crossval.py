"""Cross-validate and compare models; see leukemia_tf/cli/crossval_cli.py."""
from absl import app

from leukemia_tf.cli.crossval_cli import main

if __name__ == "__main__":
    app.run(main)

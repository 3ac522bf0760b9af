"""Convert a C-NMC_Leukemia tree into sharded TFRecords; see leukemia_tf/cli/convert_cli.py."""
from absl import app

from leukemia_tf.cli.convert_cli import main

if __name__ == "__main__":
    app.run(main)

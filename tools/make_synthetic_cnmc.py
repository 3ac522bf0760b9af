"""Write a synthetic C-NMC-shaped tree; see leukemia_tf/cli/synthetic_cli.py for the flags.

    python tools/make_synthetic_cnmc.py --output_dir=demo_out/data
"""
import os
import sys

try:
    import leukemia_tf  # noqa: F401  (installed, e.g. pip install -e .)
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402

from leukemia_tf.cli.synthetic_cli import main  # noqa: E402

if __name__ == "__main__":
    app.run(main)

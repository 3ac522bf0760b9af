"""Compare pooled real-patient studies (leukemia-crossval --cv=pooled folders).

`python tools/compare_studies.py --help` lists the flags. The entry point is
leukemia_tf/cli/compare.py.
"""
import os
import sys

try:
    import leukemia_tf  # noqa: F401  (installed, e.g. pip install -e .)
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from leukemia_tf.cli.compare import console_main  # noqa: E402

if __name__ == "__main__":
    console_main()

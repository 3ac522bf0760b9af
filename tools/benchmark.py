"""Throughput benchmarks (input, peers, train, convert, all).

`python tools/benchmark.py --help` lists the flags. The entry point is
leukemia_tf/cli/bench.py (also installed as a console script, see setup.cfg).
"""
import os
import sys

try:
    import leukemia_tf  # noqa: F401  (installed, e.g. pip install -e .)
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from leukemia_tf.cli.bench import console_main  # noqa: E402

if __name__ == "__main__":
    console_main()

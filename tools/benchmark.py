"""Throughput benchmarks (input, peers, train, convert, all); see leukemia_tf/cli/bench_cli.py."""
from absl import app

from leukemia_tf.cli.bench_cli import main

if __name__ == "__main__":
    app.run(main)

"""`make demo` regenerates exactly: its train and evaluate commands, at a tiny size, give
the same metrics.json, predictions and history twice."""
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from tests.helpers import REPO

# Settings of the demo that only make it big or slow; everything else is kept.
_SIZE = ("--records_dir", "--model_dir", "--image_size", "--epochs", "--batch_size")


def demo_flags(script: str) -> list:
    """The flags of the `make demo` command that runs the console script `script`."""
    text = open(os.path.join(REPO, "Makefile"), encoding="utf-8").read()
    demo = text[text.index("\ndemo:"):]
    demo = demo[:demo.index("\n\n")].replace("\\\n", " ")
    line = next(row for row in demo.splitlines() if f"/{script} " in row)
    return [arg for arg in line.split() if arg.startswith("--")]


_TWICE = r"""
import json, sys
from absl import flags
from leukemia_tf.cli import train as cli
from leukemia_tf import training
from leukemia_tf.evaluation import evaluate as evaluation
argv, tta, records, root = json.loads(sys.argv[1])
for run in ("a", "b"):
    fv = flags.FlagValues()
    cli.define_flags(fv)
    fv(["train", *argv, f"--records_dir={records}", f"--model_dir={root}/{run}"])
    training.run(cli.config_from_flags(fv))
    evaluation.run(evaluation.EvalConfig(f"{root}/{run}", records, tta=tta))
"""


@pytest.mark.slow
def test_demo_trains_deterministically(records_dir, tmp_path):
    train = demo_flags("leukemia-train")
    assert "--deterministic" in train and "--seed=0" in train
    evaluate = demo_flags("leukemia-evaluate")
    tta = next(a.split("=", 1)[1] for a in evaluate if a.startswith("--tta="))
    argv = [a for a in train if not a.startswith(_SIZE)]
    argv += ["--image_size=48", "--epochs=2", "--batch_size=8"]
    r = subprocess.run([sys.executable, "-c", _TWICE,
                        json.dumps([argv, tta, records_dir, str(tmp_path)])],
                       capture_output=True, text=True, cwd=REPO, timeout=900,
                       env=dict(os.environ, PYTHONPATH=REPO))
    assert r.returncode == 0, r.stderr[-3000:]
    name = "validation" if tta == "none" else f"validation-{tta}"
    runs = [tmp_path / run for run in ("a", "b")]
    metrics = [json.load(open(run / "eval" / name / "metrics.json")) for run in runs]
    # where and when it ran, not what it computed (a .keras file holds its save date, so
    # its sha256 differs between two identical runs)
    for m in metrics:
        for key in ("date", "model", "members", "context", "model_sha256", "member_sha256"):
            m.pop(key)
    assert metrics[0] == metrics[1]
    predictions = [pd.read_csv(run / "eval" / name / "predictions.csv") for run in runs]
    pd.testing.assert_frame_equal(predictions[0], predictions[1])
    history = [pd.read_csv(run / "history.csv").drop(columns="images_per_sec") for run in runs]
    pd.testing.assert_frame_equal(history[0], history[1])
    pictures = [(run / "eval" / name / "roc_pr.png").read_bytes() for run in runs]
    assert pictures[0] == pictures[1]

"""The evaluation wing's modules reach files only through leukemia_tf.io."""
import os
import re

import pytest

import leukemia_tf

PACKAGE = os.path.dirname(leukemia_tf.__file__)
# Every module of the evaluation wing and crossval packages, and the entry points that drive them.
MODULES = sorted(os.path.relpath(os.path.join(d, f), PACKAGE)
                 for pkg in ("metrics", "inference", "reports", "evaluation", "crossval")
                 for d, _, files in os.walk(os.path.join(PACKAGE, pkg))
                 for f in files if f.endswith(".py")) + ["cli/crossval.py", "cli/evaluate.py"]
# Calls that would bypass io.py for a user path (gs://, ram://) or write non-atomically.
FORBIDDEN = [r"(?<![\w.])open\(", r"os\.makedirs", r"os\.path\.(exists|isdir|isfile|getsize)",
             r"os\.listdir", r"\.to_csv\(", r"pd\.read_csv\(", r"\.savefig\(", r"tf\.io\.gfile",
             r"shutil\."]


@pytest.mark.parametrize("module", MODULES)
def test_module_does_file_io_only_through_io_py(module):
    source = open(os.path.join(PACKAGE, module), encoding="utf-8").read()
    hits = [(pattern, line.strip()) for line in source.splitlines()
            for pattern in FORBIDDEN if re.search(pattern, line)]
    assert hits == [], f"{module} bypasses leukemia_tf.io: {hits}"


def test_the_check_can_fail():
    assert re.search(FORBIDDEN[0], "with open(path) as f:")
    assert not re.search(FORBIDDEN[0], "with io.open_file(path) as f:")
    assert re.search(FORBIDDEN[6], "fig.savefig(path)")

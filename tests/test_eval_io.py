"""The evaluation modules reach files only through leukemia_tf.io (issue 9, section 1)."""
import os
import re

import pytest

import leukemia_tf

PACKAGE = os.path.dirname(leukemia_tf.__file__)
MODULES = ["evaluation.py", "report.py", "plots.py", "crossval.py", "crossval_report.py",
           "evaluate.py", "scoring.py", "metrics.py", "split_roles.py", "cli/crossval_cli.py"]
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

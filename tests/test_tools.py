"""Every script in tools/ answers --help (saying what it needs) without its optional
dependencies, and a missing optional dependency is one line saying how to install it."""
import glob
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

TOOLS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO, "tools", "*"))
               if p.endswith((".py", ".sh")))
# Runs a tools/ script with PyTorch unimportable, whether or not it is installed.
_WITHOUT_TORCH = ("import runpy, sys\n"
                  "sys.modules['torch'] = None\n"
                  "sys.argv = sys.argv[1:]\n"
                  "runpy.run_path(sys.argv[0], run_name='__main__')\n")


def _run(args):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=180)


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_answers_help(tool):
    path = os.path.join(REPO, "tools", tool)
    if tool.endswith(".sh"):
        r = _run(["bash", path, "--help"])
    else:
        r = _run([sys.executable, "-c", _WITHOUT_TORCH, path, "--help"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(r.stdout.splitlines()) >= 3 and "Traceback" not in r.stderr, r.stdout


def test_lite_reference_help_says_what_it_needs_and_a_missing_torch_is_one_line():
    path = os.path.join(REPO, "tools", "make_lite_reference.py")
    r = _run([sys.executable, "-c", _WITHOUT_TORCH, path, "--help"])
    assert "pip install torch" in " ".join(r.stdout.split()), r.stdout
    r = _run([sys.executable, "-c", _WITHOUT_TORCH, path])
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: make_lite_reference.py needs torch"), lines
    assert "pip install torch==" in lines[0], lines


def test_study_script_without_its_arguments_is_one_error_line():
    r = _run(["bash", os.path.join(REPO, "tools", "real_patient_study.sh")])
    assert r.returncode == 1 and r.stderr == "error: RECORDS and OUT are required\n", r.stderr


def test_study_script_on_missing_records_is_one_error_line(tmp_path):
    out = tmp_path / "out"
    r = _run(["bash", os.path.join(REPO, "tools", "real_patient_study.sh"),
              str(tmp_path / "no_records"), str(out)])
    assert r.returncode == 1 and r.stdout == "", r.stdout
    assert r.stderr == (f"error: {tmp_path / 'no_records'} holds no converted records (no "
                        "manifest.json; see --help)\n"), r.stderr
    assert not out.exists()

"""What CI runs (``.ci/run``, i.e. ``make test``): the whole suite with oneDNN on, the numeric tests with it off.

TensorFlow turns oneDNN on by itself on some CPUs only, and oneDNN changes the
rounding, so the setting is explicit in both runs: whatever CPU CI gets, both
paths are checked (on x86, oneDNN also runs without AVX512 when asked for).
"""

import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_test_runs_the_numeric_tests_with_onednn_on_and_off():
    result = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    runs = [line.strip() for line in result.stdout.splitlines() if "-m pytest" in line]
    assert len(runs) == 2, runs
    settings = [re.match(r"TF_ENABLE_ONEDNN_OPTS=([01]) ", run) for run in runs]
    assert [match.group(1) if match else None for match in settings] == ["1", "0"], runs
    assert runs[0].endswith("-m pytest") and runs[1].endswith("-m pytest -m numeric"), runs


def test_ci_runs_make_test():
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as stream:
        commands = [line.strip() for line in stream if line.strip() and not line.lstrip().startswith("#")]
    assert commands[-1] == "make test"

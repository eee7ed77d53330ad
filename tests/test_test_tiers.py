"""The test suite's own safety checks (tests/conftest.py), with fake commands: no cluster, no worker."""
import os
import sys

import pytest

from conftest import SUBMIT, starts_the_toolkit

@pytest.mark.parametrize("args, starts", [
    ([sys.executable, SUBMIT, "--cluster", "local"], True),
    (["python3", "submit.py", "status"], True),
    ([sys.executable, "-m", "gen_worker.worker", "--spec", "s.json"], True),
    ([sys.executable, "-u", "-m", "gen_worker", "--help"], True),
    (f"{sys.executable} {SUBMIT} --help", True),
    (["t2i-batch", "--help"], True),
    ([sys.executable, "-m", "gen_worker.tiny_model", "out"], False),
    ([sys.executable, "-m", "evaluation.metrics"], False),
    ([sys.executable, "-c", "print(1)"], False),
    (["podman", "run", "img", "python", "-m", "gen_worker.worker"], False),  # the container tier's business
    (["sbatch", "--wait", "--wrap", "hostname"], False),
])
def test_what_counts_as_starting_the_toolkit(args, starts):
    assert starts_the_toolkit(args) is starts


def test_an_unmarked_test_that_starts_submit_fails(pytester):
    """The autouse check in conftest.py, in a pytest run of its own with a copy of this conftest."""
    pytester.makeconftest(open(os.path.join(os.path.dirname(__file__), "conftest.py")).read())
    # No submit.py there: the marked test's python stops at once (no file), having been let start.
    pytester.makepyfile(test_spawn="""
import subprocess, sys
import pytest

def test_unmarked():
    subprocess.run([sys.executable, "submit.py", "--help"], capture_output=True)

@pytest.mark.e2e
def test_marked():
    assert subprocess.run([sys.executable, "submit.py", "--help"], capture_output=True).returncode == 2

def test_other_processes_are_fine():
    assert subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True).returncode == 0
""")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*test_unmarked starts submit.py or a worker but is not marked e2e*"])

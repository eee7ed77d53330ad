"""The test suite's own safety checks (tests/conftest.py), with fake commands: no cluster, no worker.

The SLURM tests submit only to the project's test cluster (slurm/start_cluster.sh), whatever else answers.
"""
import os
import re
import subprocess
import sys

import pytest

from conftest import ANY_CLUSTER_ENV, REPO, SUBMIT, TEST_CLUSTER_NAME, skip_unless_required, \
    slurm_unavailable_reason, starts_the_toolkit

CONFIG = """Configuration data as of 2026-01-01T00:00:00
AccountingStorageType   = accounting_storage/none
ClusterName             = {name}
MaxArraySize            = 5
"""


def _fake_slurm(cluster="t2i_batch_test", states="idle", config_rc=0):
    calls = []

    def run(argv, **kwargs):
        calls.append(argv[0])
        if argv[0] == "scontrol":
            return subprocess.CompletedProcess(argv, config_rc, CONFIG.format(name=cluster) if cluster else "",
                                               "" if config_rc == 0 else "slurm_load_ctl_conf error: Unable to contact")
        return subprocess.CompletedProcess(argv, 0, states + "\n", "")
    return run, calls


def _reason(cluster="t2i_batch_test", environ=None, **kwargs):
    run, calls = _fake_slurm(cluster, **kwargs)
    reason = slurm_unavailable_reason(run=run, which=lambda name: f"/usr/bin/{name}", environ=environ or {})
    assert "sbatch" not in calls  # asking is all it does
    return reason


def test_the_conftest_knows_the_cluster_name_that_start_cluster_sets():
    script = open(os.path.join(REPO, "slurm", "start_cluster.sh")).read()
    assert re.search(r"^CLUSTER_NAME=(\S+)$", script, re.M).group(1) == TEST_CLUSTER_NAME
    assert "ClusterName=$CLUSTER_NAME" in script


def test_the_projects_test_cluster_is_used():
    assert _reason(TEST_CLUSTER_NAME) is None
    assert _reason(TEST_CLUSTER_NAME, states="mixed\nidle") is None


@pytest.mark.parametrize("cluster", ["t2i", "linux", "cluster", "t2i_batch_test_2", None])
def test_another_cluster_is_refused_with_the_way_out(cluster):
    reason = _reason(cluster)
    assert reason and f"not this project's test cluster '{TEST_CLUSTER_NAME}'" in reason
    assert (f"is '{cluster}'" if cluster else "is '(none)'") in reason
    assert f"{ANY_CLUSTER_ENV}=1" in reason and "slurm/start_cluster.sh" in reason


def test_another_cluster_is_used_only_when_asked_for():
    assert _reason("linux", environ={ANY_CLUSTER_ENV: "1"}) is None
    assert _reason("linux", environ={ANY_CLUSTER_ENV: "0"}) is not None
    assert _reason("linux", environ={ANY_CLUSTER_ENV: "1"}, states="down*") == "no usable SLURM node (sinfo states: down*)"


def test_no_controller_and_no_commands():
    assert "scontrol show config fails: slurm_load_ctl_conf error" in _reason(config_rc=1)
    reason = slurm_unavailable_reason(which=lambda name: None, environ={})
    assert reason.startswith("no SLURM commands on PATH")


def test_a_refused_cluster_skips_or_fails_under_t2i_require_slurm(monkeypatch):
    reason = _reason("linux")
    monkeypatch.delenv("T2I_REQUIRE_SLURM", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not this project's test cluster"):
        skip_unless_required(reason, "T2I_REQUIRE_SLURM")
    monkeypatch.setenv("T2I_REQUIRE_SLURM", "1")
    with pytest.raises(pytest.fail.Exception, match="T2I_REQUIRE_SLURM=1 but the SLURM cluster that answers"):
        skip_unless_required(reason, "T2I_REQUIRE_SLURM")


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

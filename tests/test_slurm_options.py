"""The parts of --cluster slurm that need no cluster: flags, array splitting, GPU binding, time limits."""
import signal

import pytest

from gen_worker.cli import main
from gen_worker.errors import UsageError
from gen_worker.slurm.options import parse_sbatch_options
from gen_worker.slurm.submit import array_chunks, describe_workers
from gen_worker.slurm.commands import parse_time_minutes
from gen_worker.slurm.task import bind_one_gpu


@pytest.mark.parametrize("workers, max_size, cap, expected", [
    (list(range(8)), 1001, None, [(list(range(8)), 8)]),
    (list(range(8)), 5, None, [([0, 1, 2, 3, 4], 5), ([5, 6, 7], 3)]),
    (list(range(8)), 5, 6, [([0, 1, 2, 3, 4], 4), ([5, 6, 7], 2)]),
    (list(range(8)), 5, 1, [([0, 1, 2, 3, 4], 1), ([5, 6, 7], 1)]),  # a cap below the part count: 1 each
    ([1, 4, 9], 2, 100, [([1, 4], 2), ([9], 1)]),
])
def test_array_chunks_respect_max_array_size_and_share_the_cap(workers, max_size, cap, expected):
    chunks = array_chunks(workers, max_size, cap)
    assert chunks == expected
    assert [k for chunk, _ in chunks for k in chunk] == workers
    if cap is not None and cap >= len(chunks):
        assert sum(c for _, c in chunks) == min(cap, len(workers))


def test_sbatch_options_pass_through_but_not_the_managed_ones():
    assert parse_sbatch_options(["mail-type=END", "--requeue", "reservation=r1", "mail_user=a@b"]) == {
        "mail-type": "END", "requeue": True, "reservation": "r1", "mail-user": "a@b"}
    for managed in ("gres=gpu:2", "--array=0-3", "time=10", "ntasks_per_node=2", "output=x"):
        with pytest.raises(UsageError, match="is not passed through"):
            parse_sbatch_options([managed])


def test_bind_one_gpu_uses_slurms_value_and_narrows_only_a_shared_list():
    env = {"CUDA_VISIBLE_DEVICES": "5", "SLURM_LOCALID": "0"}
    assert bind_one_gpu(env) == "5" and env["CUDA_VISIBLE_DEVICES"] == "5"  # node-global index, kept
    env = {"CUDA_VISIBLE_DEVICES": "4,5,6,7", "SLURM_LOCALID": "2"}
    assert bind_one_gpu(env) == "6" and env["CUDA_VISIBLE_DEVICES"] == "6"
    assert bind_one_gpu({}) == ""
    with pytest.raises(RuntimeError):
        bind_one_gpu({"CUDA_VISIBLE_DEVICES": "0,1", "SLURM_LOCALID": "3"})


@pytest.mark.parametrize("text, minutes", [
    ("7-00:00:00", 10080), ("1:30:00", 90), ("45:00", 45), ("90", 90), ("2-12", 3600), ("0:30", 1),
    ("infinite", None), ("UNLIMITED", None),
])
def test_parse_slurm_time_limits(text, minutes):
    assert parse_time_minutes(text) == minutes


def test_describe_workers():
    assert describe_workers([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert describe_workers([3]) == "3"


@pytest.mark.parametrize("argv, message", [
    (["--cluster", "local", "--gpus", "2"], "--gpus is for --cluster slurm"),
    (["--cluster", "slurm", "--gpu_ids", "0"], "--gpu_ids is for --cluster local"),
    (["--cluster", "local", "--partition", "gpu", "--no_wait"], "--partition, --no_wait only applies to --cluster slurm"),
    (["--cluster", "slurm", "--gpus", "0"], "--gpus must be at least 1"),
    (["--cluster", "slurm", "--mem_gb", "0"], "--mem_gb must be more than 0"),
    (["--cluster", "slurm", "--sbatch_option", "gpus-per-node=2"], "--gpus-per-node is not passed through"),
])
def test_flags_of_the_other_mode_are_refused(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # main's SIGTERM handler: not for pytest
    code = main([*argv, "--prompts_csv", str(tmp_path / "p.csv"), "--output_dir", str(tmp_path / "out"),
                 "--model_path", str(tmp_path)])
    assert code == 2
    assert message in capsys.readouterr().err


def test_status_and_cancel_of_a_folder_without_slurm_jobs(tmp_path, capsys):
    assert main(["status", "--output_dir", str(tmp_path)]) == 2
    assert main(["cancel", "--output_dir", str(tmp_path)]) == 2
    assert "no SLURM submission is recorded" in capsys.readouterr().err


def test_help_shows_the_slurm_flags_with_long_default_time():
    from gen_worker.cli import build_parser
    text = " ".join(build_parser().format_help().split())
    for flag in ("--slurm_mode", "--gpus_per_node", "--array_parallelism", "--partition", "--account", "--qos",
                 "--time", "--mem_gb", "--cpus_per_task", "--constraint", "--exclude", "--job_name",
                 "--slurm_setup", "--sbatch_option", "--wait", "--no_wait"):
        assert f"{flag} " in text
    assert "default: 4320 = 3 days" in text and "submit.py status --output_dir D" in text

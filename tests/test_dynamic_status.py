"""The submitter's side of --schedule dynamic without a cluster: joined submissions, success by the folder."""
import pytest

from gen_worker.output.summary import exit_status, final_lines
from gen_worker.schedule import schedule_named
from gen_worker.slurm.record import add_submission, latest_submission


def _submission(tasks, join=False, job="1"):
    return {"join": join, "job_ids": [job], "tasks": [{"worker": k, "slurm_id": f"{job}_{k}", "job_id": job} for k in tasks],
            "schedule": "dynamic"}


def test_a_joined_submission_adds_its_tasks_to_the_run(tmp_path):
    out = str(tmp_path)
    (tmp_path / "logs").mkdir()
    add_submission(out, _submission([0, 1], job="1"))  # an earlier run
    add_submission(out, _submission([0, 1, 2], job="2"))
    add_submission(out, _submission([3], join=True, job="3"))
    run = latest_submission(out)
    assert [t["worker"] for t in run["tasks"]] == [0, 1, 2, 3] and run["job_ids"] == ["2", "3"]


def test_status_counts_the_tasks_of_every_submission_of_the_run(tmp_path, monkeypatch, capsys):
    """A run of 1 task joined by 1 more is 2 of 2 tasks, not "2 of 1"."""
    import gen_worker.slurm.status as status
    out = str(tmp_path)
    (tmp_path / "logs").mkdir()
    common = {"mode": "array", "submitted_at": "2026-12-03 10:00:00", "command": "c", "num_samples": 4,
              "batch_size": 1, "num_workers": 1}
    add_submission(out, {**_submission([0], job="2"), **common})
    add_submission(out, {**_submission([1], join=True, job="3"), **common})
    assert latest_submission(out)["num_workers"] == 2
    monkeypatch.setattr(status, "queue_states", lambda ids: {i: "RUNNING" for i in ids})
    assert status.show_status(out) == 0
    shown = capsys.readouterr().out
    assert f"SLURM run in {out}: 2 of 2 tasks queued" in shown and "other tasks" not in shown


@pytest.mark.parametrize("present, said", [
    (2, "Every image is there: nothing to rerun."),
    (1, "Rerun the submit command to make the 1 image still missing."),
])
def test_cancel_says_to_rerun_only_when_an_image_is_missing(tmp_path, monkeypatch, capsys, present, said):
    import gen_worker.slurm.status as status
    out = str(tmp_path)
    (tmp_path / "logs").mkdir()
    names = ["a_seed1.png", "b_seed2.png"]
    with open(tmp_path / "manifest.csv", "w", encoding="utf-8") as f:
        f.write("index,image_id,seed,file_name,prompt\n" + "".join(f"{i},{n[0]},{i + 1},{n},p\n"
                                                                   for i, n in enumerate(names)))
    for name in names[:present]:
        (tmp_path / name).write_bytes(b"png")
    add_submission(out, {**_submission([0, 1], job="5"), "mode": "array", "num_workers": 2})
    queued = {"5_0": "RUNNING", "5_1": "PENDING"}
    monkeypatch.setattr(status, "queue_states", lambda ids: {i: queued[i] for i in ids if i in queued})
    monkeypatch.setattr(status, "cancel", lambda ids: queued.clear())
    monkeypatch.setattr(status, "kill_wait_seconds", lambda: None)
    assert status.cancel_run(out) == 0
    shown = capsys.readouterr().out.strip().splitlines()
    assert shown[0] == "Cancelled 5 (tasks 0, 1)." and shown[-1] == said, shown


def _summary(schedule, missing, failed=0, interrupted=False):
    return {"output_dir": "/o", "num_samples": 4, "missing": missing, "generated": 4 - missing, "skipped": 0,
            "wall_seconds": 1.0, "images_per_second": 4.0, "failed": failed, "interrupted": interrupted,
            "schedule": schedule, "judged_by_folder": schedule_named(schedule).judged_by_folder,
            "blocks_taken_over": 1, "command": "c",
            "workers": [{"label": "task 1", "worker_index": 1, "exit_code": 1, "message": "SLURM: CANCELLED"}]}


def test_a_stopped_worker_fails_a_static_run_but_not_a_complete_dynamic_one():
    assert exit_status(_summary("static", 0), workers_ok=False) == 1
    assert exit_status(_summary("dynamic", 0), workers_ok=False) == 0
    assert any(line.startswith("warning: task 1 (worker 1) stopped: SLURM: CANCELLED; the other workers made its "
                               "blocks (1 taken over)") for line in final_lines(_summary("dynamic", 0)))
    assert exit_status(_summary("dynamic", 1), workers_ok=False) == 1  # an image is missing
    assert exit_status(_summary("dynamic", 0, failed=1), workers_ok=True) == 1
    assert exit_status(_summary("dynamic", 0, interrupted=True), workers_ok=False) == 1

"""--sweep end to end, as a user runs it: one submission, one folder per configuration, each the same
as a plain run with those settings; a rerun makes nothing; the folders guard themselves."""
import json

import pytest

from conftest import PROMPTS, images_in, run_submit, write_prompts

pytestmark = pytest.mark.e2e
SMALL = ["--device", "cpu", "--dtype", "fp32", "--height", "32", "--width", "32", "--num_inference_steps", "2"]


def test_a_sweep_equals_plain_runs_and_resumes(tmp_path, tiny_sd):
    csv = write_prompts(tmp_path / "p.csv", PROMPTS[:3])
    top = tmp_path / "sweep"
    sweep = ["--prompts_csv", csv, "--output_dir", top, "--model_path", tiny_sd, *SMALL,
             "--sweep", "guidance_scale=1.5,4", "--gpu_ids", "0", "1"]
    first = run_submit(*sweep)
    assert first.returncode == 0, first.stderr
    record = json.loads((top / "sweep.json").read_text())
    folders = [c["folder"] for c in record["configurations"]]
    assert folders == ["guidance_scale-1.5", "guidance_scale-4"]
    for folder in folders:
        summaries = [json.loads((top / folder / f"summary_gpu{k}.json").read_text()) for k in (0, 1)]
        assert sum(s["generated"] for s in summaries) == 3
    # each worker loaded the model at most once, whatever the number of configurations
    later = [json.loads((top / folders[1] / f"summary_gpu{k}.json").read_text()) for k in (0, 1)]
    assert all(s.get("pipeline_reused") in (True, None) for s in later)
    plain = tmp_path / "plain"
    alone = run_submit("--prompts_csv", csv, "--output_dir", plain, "--model_path", tiny_sd, *SMALL,
                       "--guidance_scale", "4", "--gpu_ids", "0")
    assert alone.returncode == 0, alone.stderr
    assert images_in(plain) == images_in(top / "guidance_scale-4") and len(images_in(plain)) == 3
    assert images_in(top / "guidance_scale-1.5") != images_in(plain)

    again = run_submit(*sweep)
    assert again.returncode == 0, again.stderr
    assert "0 generated, 3 already there" in again.stderr
    more = run_submit(*sweep[:-5], "--sweep", "guidance_scale=4,7", "--gpu_ids", "0")
    assert more.returncode == 0, more.stderr
    record = json.loads((top / "sweep.json").read_text())
    assert [c["folder"] for c in record["configurations"]] == ["guidance_scale-1.5", "guidance_scale-4",
                                                                "guidance_scale-7"]
    into_sweep = run_submit("--prompts_csv", csv, "--output_dir", top, "--model_path", tiny_sd, *SMALL)
    assert into_sweep.returncode == 2 and "holds a sweep" in into_sweep.stderr


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_a_sweep_on_slurm_is_one_set_of_tasks_and_equals_the_local_sweep(tmp_path, tiny_sd):
    csv = write_prompts(tmp_path / "p.csv", PROMPTS[:3])
    common = ["--prompts_csv", csv, "--model_path", tiny_sd, *SMALL, "--sweep", "guidance_scale=1.5,4"]
    on_slurm = tmp_path / "slurm"
    queued = run_submit("--cluster", "slurm", "--gpus", "2", "--cpus_per_task", "1", "--mem_gb", "1", "--time", "15",
                        "--wait", "--output_dir", on_slurm, *common, timeout=600)
    assert queued.returncode == 0, queued.stdout + queued.stderr[-3000:]
    assert "Submitted 2 SLURM tasks" in queued.stdout  # one array for the whole sweep, not one per configuration
    assert "== configuration guidance_scale-4 (2 of 2)" in queued.stderr
    local = tmp_path / "local"
    here = run_submit("--output_dir", local, *common, "--gpu_ids", "0")
    assert here.returncode == 0, here.stderr
    for folder in ("guidance_scale-1.5", "guidance_scale-4"):
        assert images_in(on_slurm / folder) == images_in(local / folder) and len(images_in(local / folder)) == 3
    status = run_submit("status", "--output_dir", on_slurm)
    assert status.returncode == 0 and status.stdout.count("Finished. 3/3 images") == 2, status.stdout
    assert f"Logs: {on_slurm}/logs/worker_gpu<task>.log" in status.stdout

"""generate(): submit.py's settings as keyword arguments, the same checks (T2IError, never SystemExit), the
Result read from the output folder; on SLURM, wait=False gives a handle with status(), wait() and cancel()."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, images_in, write_prompts
from gen_worker.errors import T2IError, UsageError

TINY = dict(device="cpu", num_inference_steps=3, height=64, width=64, dtype="fp32")
ROWS = [("a", "a red bus"), ("b", "a cat on a sofa"), ("c", "a bowl of fruit")]


def test_import_gen_worker_and_generate_stay_light():
    code = ("import sys, gen_worker; light = [m for m in ('torch', 'pandas', 'diffusers') if m in sys.modules]; "
            "from gen_worker import generate; "
            "print(light, [m for m in ('torch', 'pandas', 'diffusers') if m in sys.modules], generate.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.split() == ["[]", "[]", "gen_worker.api"]


@pytest.mark.parametrize("settings, message", [
    (dict(guidence_scale=3.0), "guidence_scale is not a setting; did you mean guidance_scale?"),
    (dict(height="tall"), "height = 'tall': expected a whole number, got str"),
    (dict(height=64.0), "height = 64.0: expected a whole number, got float"),
    (dict(compile="yes"), "compile = 'yes': expected true or false, or one of whole, regional, got str"),
    (dict(sweep={"guidance_scale": 3.0}), "sweep.guidance_scale = 3.0: expected a list of values, e.g. [1.5, 3.0]"),
    (dict(sweep={"guidanse_scale": [3.0]}), "sweep: guidanse_scale is not a setting; did you mean guidance_scale?"),
])
def test_bad_keywords_are_refused_in_one_line(settings, message):
    from gen_worker import generate
    with pytest.raises(UsageError) as err:
        generate(prompts_csv="p.csv", output_dir="out", model_path="m", **settings)
    assert str(err.value) == message


def test_the_planners_checks_raise_a_t2ierror_not_systemexit(tmp_path, tiny_sd):
    from gen_worker import generate
    csv = write_prompts(tmp_path / "p.csv", ROWS)
    with pytest.raises(UsageError, match="the following arguments are required: --prompts_csv"):
        generate(output_dir=str(tmp_path / "out"), model_path=tiny_sd)
    with pytest.raises(UsageError, match="invalid choice: 'fp8'"):
        generate(prompts_csv=csv, output_dir=str(tmp_path / "out"), model_path=tiny_sd, dtype="fp8")
    with pytest.raises(T2IError, match="--height must be a multiple of 8"):
        generate(prompts_csv=csv, output_dir=str(tmp_path / "out"), model_path=tiny_sd, height=60)
    with pytest.raises(T2IError, match="--gpus is for --cluster slurm"):
        generate(prompts_csv=csv, output_dir=str(tmp_path / "out"), model_path=tiny_sd, gpus=2)
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.e2e
def test_a_local_run_returns_what_the_folder_says(tmp_path, tiny_sd):
    from gen_worker import generate
    csv = write_prompts(tmp_path / "p.csv", ROWS)
    out = tmp_path / "out"
    result = generate(prompts_csv=csv, output_dir=out, model_path=tiny_sd, images_per_prompt=2, **TINY)
    assert result.ok and result.exit_status == 0
    assert result.folder == str(out)
    on_disk = json.load(open(out / "summary.json"))
    assert result.summary == on_disk
    assert result.counts == {"num_samples": 6, "generated": 6, "skipped": 0, "failed": 0, "missing": 0}
    assert len(images_in(out)) == 6 and result.failures == []
    assert on_disk["command"].startswith("python submit.py --prompts_csv=")  # a rerun hint that works


@pytest.mark.slurm
@pytest.mark.e2e
@pytest.mark.usefixtures("slurm_cluster")
def test_slurm_without_waiting_then_wait(tmp_path, tiny_sd):
    from gen_worker import generate
    from gen_worker.api import SlurmRun
    csv = write_prompts(tmp_path / "p.csv", ROWS)
    out = tmp_path / "out"
    run = generate(prompts_csv=csv, output_dir=out, model_path=tiny_sd, cluster="slurm", gpus=2, cpus_per_task=1,
                   mem_gb=1, time=15, wait=False, **TINY)
    assert isinstance(run, SlurmRun) and run.folder == str(out)
    status = run.status()
    tasks = status["tasks"][str(out)]
    assert sorted(t["worker"] for t in tasks) == [0, 1]
    result = run.wait()
    assert result.ok, result.summary
    assert result.counts["generated"] == 3 and result.counts["missing"] == 0
    assert len(images_in(out)) == 3
    assert run.status()["finished"] is True


def test_whole_numbers_are_text_where_a_flag_takes_text():
    # GPU ids are text on the command line (UUIDs, MIG names) but numbers in Python and TOML
    from gen_worker.cli import build_parser
    from gen_worker.named_settings import settings_argv
    assert settings_argv(build_parser(), {"gpu_ids": [2, 3]}) == ["--gpu_ids", "2", "3"]
    assert settings_argv(build_parser(), {"gpu_ids": ["GPU-1f2e", 0]}) == ["--gpu_ids", "GPU-1f2e", "0"]
    for value, kind in ((True, "bool"), (1.5, "float")):  # a switch or a number's rounding is no id
        with pytest.raises(UsageError, match=f"negative_prompt = {value!r}: expected text, got {kind}"):
            settings_argv(build_parser(), {"negative_prompt": value})

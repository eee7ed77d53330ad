"""Campaign files (submit.py --config FILE.toml, generate(config=...)): flags by name, [sweep] lists, [[run]]
tables, command-line flags over the file, one-line errors for unknown keys and wrong types, the file recorded
in each run's logs/."""
import json
import os
import shutil

import pytest

from conftest import REPO, images_in, run_submit, write_prompts
from gen_worker import cli
from gen_worker.campaign import RECORD_NAME, campaign_runs
from gen_worker.errors import UsageError

EXAMPLE = os.path.join(REPO, "examples", "coco_campaign.toml")
# The tiny model's fast settings (conftest.FAST), as campaign-file lines.
TINY = "device = \"cpu\"\ndtype = \"fp32\"\nnum_inference_steps = 3\nheight = 64\nwidth = 64\n"


def _file(tmp_path, text, name="campaign.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _args(path, overrides=()):
    """Each run's parsed flags, as submit.py --config would run them."""
    return [cli.parse(run.argv, cli.RaisingParser)[1] for run in campaign_runs(path, list(overrides), cli.build_parser)]


def _error(capsys, *argv):
    assert cli.main(list(argv)) == 2
    return capsys.readouterr().err.strip()


TWO_RUNS = '''
prompts_csv = "p.csv"
height = 64
compile = true
container_bind = ["/a", "/b"]
[sweep]
guidance_scale = [1.5, 3.0]
[[run]]
model_path = "m1"
output_dir = "out/one"
[[run]]
model_path = "m2"
output_dir = "out/two"
width = 128
[run.sweep]
num_inference_steps = [2, 4]
'''


def test_runs_take_the_top_level_keys_and_their_own(tmp_path):
    one, two = _args(_file(tmp_path, TWO_RUNS))
    assert (one.model_path, one.output_dir, one.height, one.width, one.compile) == ("m1", "out/one", 64, 832, "whole")
    assert (two.model_path, two.width, two.container_bind) == ("m2", 128, ["/a", "/b"])
    assert one.sweep == ['guidance_scale=["1.5", "3.0"]']
    assert two.sweep == ['guidance_scale=["1.5", "3.0"]', 'num_inference_steps=["2", "4"]']


def test_a_recorded_switch_is_swept_with_true_and_false(tmp_path):
    text = 'output_dir = "o"\nprompts_csv = "p"\nmodel_path = "m"\n[sweep]\nvae_tiling = [true, false]\n'
    [args] = _args(_file(tmp_path, text))
    assert args.sweep == ['vae_tiling=["true", "false"]']
    with pytest.raises(UsageError, match="sweep.vae_tiling = 'yes': expected true or false, got str"):
        _args(_file(tmp_path, 'output_dir = "o"\n[sweep]\nvae_tiling = ["yes"]\n'))


def test_command_line_flags_override_the_file(tmp_path):
    overrides = ["--height", "128", "--container_bind", "/c", "--sweep", "seed_start=1,2"]
    one, two = _args(_file(tmp_path, TWO_RUNS), overrides)
    assert one.height == two.height == 128
    assert one.container_bind == two.container_bind == ["/c"]  # repeatable flags: replaced, not added to
    assert one.sweep == two.sweep == ["seed_start=1,2"]
    assert two.width == 128  # what the command line leaves alone stays the file's


@pytest.mark.parametrize("text, message", [
    ('guidence_scale = 3.0\n', "campaign.toml: guidence_scale is not a setting; did you mean guidance_scale?"),
    ('[[run]]\noutput_dir = "a"\n[[run]]\noutput_dir = "b"\nnum_inference_step = 3\n',
     "campaign.toml [[run]] 2: num_inference_step is not a setting; did you mean num_inference_steps?"),
    ('[sweep]\nguidanse_scale = [1.0]\n', "sweep: guidanse_scale is not a setting; did you mean guidance_scale?"),
    ('output_dir = "o"\nheight = "tall"\n', "campaign.toml: height = 'tall': expected a whole number, got str"),
    ('output_dir = "o"\ncompile = 1\n', "campaign.toml: compile = 1: expected true or false, or one of whole, "
                                         "regional, got int"),
    ('output_dir = "o"\n[sweep]\nheight = 64\n', "campaign.toml: sweep.height = 64: expected a list of values"),
    ('output_dir = "o"\n[sweep]\nheight = [64, "x"]\n', "campaign.toml: sweep.height = 'x': expected a whole number"),
    ('[[run]]\noutput_dir = "a"\n[[run]]\noutput_dir = "a"\n', "campaign.toml [[run]] 2: output_dir "),
    ('[[run]]\nmodel_path = "m"\n', "campaign.toml: no output_dir: give each run its own"),
    ('run = 3\n', "campaign.toml: run must be [[run]] tables, one per run"),
    ('config = "other.toml"\n', "campaign.toml: config is not a setting"),
    ('height = \n', "campaign.toml: not a TOML file: Invalid value (at line 1, column 10)"),
])
def test_bad_files_are_refused_in_one_line(tmp_path, capsys, text, message):
    error = _error(capsys, "--config", _file(tmp_path, text))
    assert error.startswith("error: ") and len(error.splitlines()) == 1
    assert message in error.replace(str(tmp_path) + os.sep, "")


@pytest.mark.parametrize("line, message", [('dtype = "fp8"', "invalid choice: 'fp8'"),
                                           ("height = 60", "--height must be a multiple of 8 (got 60)")])
def test_a_run_the_parser_refuses_is_named_before_any_run_starts(tmp_path, capsys, line, message):
    path = _file(tmp_path, '[[run]]\noutput_dir = "a"\nmodel_path = "m"\nprompts_csv = "p"\n'
                           f'[[run]]\noutput_dir = "b"\nmodel_path = "m"\nprompts_csv = "p"\n{line}\n')
    error = _error(capsys, "--config", path)
    assert f"{path} (run 2 of 2 (" in error and message in error
    assert not os.path.exists(tmp_path / "a")


def test_the_example_campaign_parses():
    one, two = _args(EXAMPLE)
    assert (one.cluster, one.gpus, one.sweep) == ("slurm", 8, ['guidance_scale=["3.0", "5.0", "7.5"]'])
    assert (one.output_dir, two.output_dir) == ("runs/coco/step-10000", "runs/coco/step-20000")


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_the_example_campaign_plans(tmp_path, tiny_sd, monkeypatch):
    """Each run planned by the SLURM target (sbatch --test-only included), with the tiny model and a
    few prompts in place of the checkpoints and COCO: nothing is queued."""
    from gen_worker import plan
    monkeypatch.chdir(tmp_path)
    write_prompts(tmp_path / "coco_prompts.csv", [("1", "a bus"), ("2", "a cat")])
    overrides = ["--model_path", tiny_sd, "--device", "cpu", "--dtype", "fp32", "--height", "64", "--width", "64",
                 "--cpus_per_task", "1", "--mem_gb", "1", "--time", "15"]
    for run in campaign_runs(EXAMPLE, overrides, cli.build_parser):
        parser, args = cli.parse(run.argv, cli.RaisingParser)
        with plan.planned(parser, run.argv, args, "test", plan.SlurmTarget(args)) as planned:
            names = [os.path.basename(r.spec.output_dir) for r in planned.runs]
            assert names == ["guidance_scale-3.0", "guidance_scale-5.0", "guidance_scale-7.5"], names
            assert planned.sweep_dir == str(tmp_path / args.output_dir)


@pytest.mark.e2e
def test_a_campaign_runs_each_run_into_its_folder_and_records_the_file(tmp_path, tiny_sd):
    csv = write_prompts(tmp_path / "p.csv", [("1", "a red bus"), ("2", "a cat")])
    text = f'''# two runs, the second a sweep
prompts_csv = "{csv}"
model_path = "{tiny_sd}"
{TINY}[[run]]
output_dir = "{tmp_path / 'plain'}"
seed_start = 7
[[run]]
output_dir = "{tmp_path / 'swept'}"
[run.sweep]
guidance_scale = [1.0, 5.0]
'''
    path = _file(tmp_path, text)
    result = run_submit("--config", path, "--width", "32")  # the command line wins over the file
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"== {path}: run 1 of 2 ({tmp_path / 'plain'})" in result.stderr
    assert f"== {path}: run 2 of 2 ({tmp_path / 'swept'})" in result.stderr
    assert sorted(images_in(tmp_path / "plain")) == ["000001_seed7.png", "000002_seed8.png"]
    for config in ("guidance_scale-1.0", "guidance_scale-5.0"):
        assert len(images_in(tmp_path / "swept" / config)) == 2
        settings = json.load(open(tmp_path / "swept" / config / "generation_settings.json"))
        assert settings["settings"]["width"] == 32
    for folder in ("plain", "swept"):
        assert (tmp_path / folder / "logs" / RECORD_NAME).read_text(encoding="utf-8") == text
    assert json.load(open(tmp_path / "plain" / "summary.json"))["command"].endswith(f"--config {path} --width 32")


@pytest.mark.e2e
def test_generate_takes_a_campaign_file(tmp_path, tiny_sd):
    from gen_worker import generate
    csv = write_prompts(tmp_path / "p.csv", [("1", "a red bus")])
    path = _file(tmp_path, f'prompts_csv = "{csv}"\nmodel_path = "{tiny_sd}"\noutput_dir = "{tmp_path / "o"}"\n'
                           'device = "cpu"\ndtype = "fp32"\nnum_inference_steps = 3\nheight = 64\nwidth = 64\n')
    with pytest.raises(UsageError, match="guidence_scale is not a setting; did you mean guidance_scale"):
        generate(config=path, guidence_scale=2.0)
    [result] = generate(config=path, seed_start=3)
    assert result.ok and result.counts["generated"] == 1
    assert list(images_in(tmp_path / "o")) == ["000001_seed3.png"]
    assert (tmp_path / "o" / "logs" / RECORD_NAME).exists()
    shutil.rmtree(tmp_path / "o")


@pytest.mark.parametrize("extra, problem", [
    ("", None),
    ('cluster = "local"', "local runs"),
    ('[[run]]\noutput_dir = "c"\ngpus = 4', "their --gpus differ"),
    ('[[run]]\noutput_dir = "c"\nschedule = "static"', "their --schedule differ"),
    ('[[run]]\noutput_dir = "c"\n[run.sweep]\nseed_start = [1, 2]', "a run is a sweep"),
])
def test_which_runs_can_be_one_slurm_submission(tmp_path, extra, problem):
    from gen_worker.plan import shared_submission_problem
    text = 'cluster = "slurm"\nprompts_csv = "p"\nmodel_path = "m"\n'
    if extra.startswith("cluster"):
        text = text.replace('cluster = "slurm"', extra)
        extra = ""
    text += '[[run]]\noutput_dir = "a"\n[[run]]\noutput_dir = "b"\nmodel_path = "m2"\n' + extra
    assert shared_submission_problem(_args(_file(tmp_path, text))) == problem


@pytest.mark.slurm
@pytest.mark.e2e
@pytest.mark.usefixtures("slurm_cluster")
def test_runs_that_share_their_slurm_settings_go_as_one_submission(tmp_path, tiny_sd):
    import glob
    from gen_worker.output import layout
    csv = write_prompts(tmp_path / "p.csv", [("1", "a red bus"), ("2", "a cat"), ("3", "a dog")])
    text = f'''prompts_csv = "{csv}"
model_path = "{tiny_sd}"
{TINY}cluster = "slurm"
gpus = 2
cpus_per_task = 1
mem_gb = 1
time = 15
[[run]]
output_dir = "{tmp_path / 'a'}"
[[run]]
output_dir = "{tmp_path / 'b'}"
seed_start = 100
'''
    path = _file(tmp_path, text)
    result = run_submit("--config", path, "--wait", timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    folders = [str(tmp_path / "a"), str(tmp_path / "b")]
    assert f"== {path}: 2 runs in one SLURM submission, in this order: {', '.join(folders)}" in result.stderr
    assert sorted(images_in(tmp_path / "a")) == ["000001_seed42.png", "000002_seed43.png", "000003_seed44.png"]
    assert sorted(images_in(tmp_path / "b")) == ["000001_seed100.png", "000002_seed101.png", "000003_seed102.png"]
    records = [json.load(open(os.path.join(f, layout.SLURM_JOBS_FILE)))["submissions"] for f in folders]
    assert len(records[0]) == len(records[1]) == 1
    assert records[0][0]["job_ids"] == records[1][0]["job_ids"]  # one set of tasks for both
    assert records[0][0]["together"] == records[1][0]["together"] == folders
    assert len(glob.glob(str(tmp_path / "a" / "logs" / "submitit" / "*" / "*_submission.sh"))) == 1
    assert not os.path.exists(tmp_path / "b" / "logs" / "submitit")
    for folder in folders:
        assert open(os.path.join(folder, "logs", RECORD_NAME), encoding="utf-8").read() == text
        assert json.load(open(os.path.join(folder, "summary.json")))["missing"] == 0
    status = run_submit("status", "--output_dir", folders[1], timeout=100)  # the second run's own view
    assert status.returncode == 0 and "Finished. 3/3 images" in status.stdout, status.stdout + status.stderr
    assert status.stdout.count(" done\n") == 2, status.stdout  # both tasks, done in this folder too
    again = run_submit("--config", path, "--wait", timeout=200)  # a rerun finds everything there
    assert again.returncode == 0 and "Nothing to submit" in again.stdout, again.stdout + again.stderr[-2000:]

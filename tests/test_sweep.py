"""--sweep: parsing, the configurations and their checked specs (no worker started here)."""
import os

import pytest

from gen_worker.cli import build_parser
from gen_worker.plan import build_spec, build_sweep
from gen_worker.errors import UsageError
from gen_worker.sweep import check_not_given, configurations, parse_axes, swept_required_flags


def test_axes_keep_the_order_given_and_the_values_as_written():
    axes = parse_axes(["guidance_scale=1.5,3,5", "--num_inference_steps=2,4"])
    assert axes == {"guidance_scale": ["1.5", "3", "5"], "num_inference_steps": ["2", "4"]}


@pytest.mark.parametrize("text, words", [
    ("guidance_scale", "expected NAME=V1,V2"),
    ("=1,2", "expected NAME=V1,V2"),
    ("cpu_threads=1,2", "not a setting that can be swept"),
    ("compile=1", "not a setting that can be swept"),
    ("no_such=1", "not a setting that can be swept"),
    ("guidance_scale=1,,2", "empty value"),
    ("guidance_scale=", "empty value"),
    ("guidance_scale=1,2,1", "'1' given twice"),
    ("negative_prompt=blurry, low quality", "' low quality' has spaces around it.*JSON list"),
    ("guidance_scale=1.5, 3", "' 3' has spaces around it"),
    ("negative_prompt=ugly ", "'ugly ' has spaces around it"),
    ('negative_prompt=["a", ', "not a JSON list"),
    ("guidance_scale=[1.5, 3] x", "not a JSON list"),
    ("guidance_scale=[]", "empty value"),
    ('negative_prompt=["a", ""]', "empty value"),
    ("guidance_scale=[true]", "strings and numbers"),
    ('negative_prompt=[["a"]]', "strings and numbers"),
    ('negative_prompt=["a, b", "a, b"]', "'a, b' given twice"),
])
def test_bad_axes_are_refused_in_one_line(text, words):
    with pytest.raises(UsageError, match=words) as err:
        parse_axes([text])
    assert "\n" not in str(err.value)


def test_a_json_list_gives_its_values_verbatim():
    # commas and spaces inside a value are kept; numbers keep the text they were written with
    assert parse_axes(['negative_prompt=["blurry, low quality", "ugly"]']) == {
        "negative_prompt": ["blurry, low quality", "ugly"]}
    assert parse_axes(["guidance_scale=[1.5, 3]"]) == {"guidance_scale": ["1.5", "3"]}
    assert parse_axes(['model_path=["/models/a,b", " spaced "]']) == {"model_path": ["/models/a,b", " spaced "]}


def test_a_setting_swept_twice_is_refused():
    with pytest.raises(UsageError, match="names guidance_scale twice"):
        parse_axes(["guidance_scale=1", "guidance_scale=2"])


def test_configurations_are_the_cartesian_product_last_setting_fastest():
    configs = configurations({"guidance_scale": ["1.5", "3"], "num_inference_steps": ["2", "4"]})
    assert [c.overrides for c in configs] == [
        {"guidance_scale": "1.5", "num_inference_steps": "2"}, {"guidance_scale": "1.5", "num_inference_steps": "4"},
        {"guidance_scale": "3", "num_inference_steps": "2"}, {"guidance_scale": "3", "num_inference_steps": "4"}]
    assert len({c.name for c in configs}) == 4
    assert all(c.name == os.path.basename(c.name) and c.name not in ("", ".", "..") for c in configs)


def test_two_values_that_would_share_a_folder_are_refused():
    with pytest.raises(UsageError, match="would share the folder"):
        configurations({"model_path": ["/a/model", "/b/model"]})


def _args(argv):
    parser = build_parser(optional=swept_required_flags(argv))
    return parser, parser.parse_args(argv)


def test_a_swept_setting_given_as_a_flag_too_is_refused(tmp_path):
    argv = ["--prompts_csv", "p.csv", "--output_dir", "o", "--model_path", "m", "--guidance_scale", "3",
            "--sweep", "guidance_scale=1,2"]
    _, args = _args(argv)
    with pytest.raises(UsageError, match="--guidance_scale is given and swept"):
        check_not_given(args, parse_axes(args.sweep))


def test_model_path_may_come_from_the_sweep_alone():
    argv = ["--prompts_csv", "p.csv", "--output_dir", "o", "--sweep", "model_path=a,b"]
    _, args = _args(argv)
    assert args.model_path is None
    check_not_given(args, parse_axes(args.sweep))
    with pytest.raises(SystemExit):  # not swept: still required
        build_parser().parse_args(argv[:4])


def test_each_configuration_is_checked_like_a_plain_run(tmp_path, tiny_sd, prompts_csv):
    argv = ["--prompts_csv", prompts_csv, "--output_dir", str(tmp_path / "sweep"), "--model_path", tiny_sd,
            "--device", "cpu", "--dtype", "fp32", "--sweep", "guidance_scale=1.5,3", "--sweep",
            "num_inference_steps=2,4"]
    parser, args = _args(argv)
    runs = build_sweep(parser, argv, args)
    assert [(s.guidance_scale, s.num_inference_steps) for _, s, _ in runs] == [(1.5, 2), (1.5, 4), (3.0, 2), (3.0, 4)]
    for config, spec, samples in runs:
        assert spec.output_dir == str(tmp_path / "sweep" / config.name)
        # a plain run with those values into that subfolder checks into the same spec
        plain_args = build_parser().parse_args(
            argv[:argv.index("--sweep")] + [f"--{k}={v}" for k, v in config.overrides.items()]
            + ["--output_dir", spec.output_dir])
        assert build_spec(plain_args)[0] == spec
        assert [x.seed for x in samples] == [spec.seed_start + i for i in range(len(samples))]


def test_a_value_that_fails_its_flag_check_names_the_configuration(tmp_path, tiny_sd, prompts_csv):
    argv = ["--prompts_csv", prompts_csv, "--output_dir", str(tmp_path / "sweep"), "--model_path", tiny_sd,
            "--device", "cpu", "--sweep", "num_inference_steps=2,0"]
    parser, args = _args(argv)
    with pytest.raises(UsageError, match="configuration num_inference_steps-0: --num_inference_steps"):
        build_sweep(parser, argv, args)
    assert not (tmp_path / "sweep").exists()  # the first configuration's checks left no folder behind


def _sweep_argv(tmp_path, tiny_sd, prompts_csv, *sweep):
    return ["--prompts_csv", prompts_csv, "--output_dir", str(tmp_path / "sweep"), "--model_path", tiny_sd,
            "--device", "cpu", "--dtype", "fp32", *[a for axis in sweep for a in ("--sweep", axis)]]


def test_json_values_reach_each_configuration_verbatim(tmp_path, tiny_sd, prompts_csv):
    argv = _sweep_argv(tmp_path, tiny_sd, prompts_csv, 'negative_prompt=["blurry, low quality", "ugly"]',
                       "guidance_scale=[1.5, 3]")
    parser, args = _args(argv)
    runs = build_sweep(parser, argv, args)
    assert [(s.negative_prompt, s.guidance_scale) for _, s, _ in runs] == [
        ("blurry, low quality", 1.5), ("blurry, low quality", 3.0), ("ugly", 1.5), ("ugly", 3.0)]
    assert len({c.name for c, _, _ in runs}) == 4


@pytest.mark.parametrize("axis, words", [
    ("guidance_scale=7.5,7.50,7.5e0", "7.5, 7.50 and 7.5e0 are one value to --guidance_scale"),
    ("guidance_scale=[7.5, 7.50]", "7.5 and 7.50 are one value"),
    ("num_inference_steps=4,04", "4 and 04 are one value"),
    ("vae_tiling=true,True", "true and True are one value to --vae_tiling"),
    ("vae_tiling=yes,no", "--sweep vae_tiling: 'yes' is not true or false"),
])
def test_values_equal_once_read_by_their_flag_or_unreadable_are_refused(tmp_path, tiny_sd, prompts_csv, axis, words):
    argv = _sweep_argv(tmp_path, tiny_sd, prompts_csv, axis)
    parser, args = _args(argv)
    with pytest.raises(UsageError, match=words) as err:
        build_sweep(parser, argv, args)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "sweep").exists()  # refused before any folder is made


@pytest.mark.parametrize("axis, words", [
    ('layout=["flat", "grid"]', "invalid choice: 'grid'"),
    ('guidance_scale=["1.5", "much"]', "invalid float value: 'much'"),
])
def test_json_values_go_through_their_flags_type_and_choices(tmp_path, tiny_sd, prompts_csv, capsys, axis, words):
    argv = _sweep_argv(tmp_path, tiny_sd, prompts_csv, axis)
    parser, args = _args(argv)
    with pytest.raises(SystemExit):
        build_sweep(parser, argv, args)
    assert words in capsys.readouterr().err


def test_json_values_go_through_their_flags_checks(tmp_path, tiny_sd, prompts_csv):
    argv = _sweep_argv(tmp_path, tiny_sd, prompts_csv, "num_inference_steps=[2, 0]")
    parser, args = _args(argv)
    with pytest.raises(UsageError, match="configuration num_inference_steps-0: --num_inference_steps must be at"):
        build_sweep(parser, argv, args)


@pytest.mark.parametrize("first, again", [
    ("guidance_scale=1.5,3", "guidance_scale=[1.50, 3.0, 5]"),
    ("guidance_scale=[1.5, 3]", "guidance_scale=1.5,3e0,5"),
])
def test_a_rerun_in_either_form_finds_the_recorded_configurations(tmp_path, tiny_sd, prompts_csv, first, again):
    from gen_worker.output.sweep_record import read_sweep_record
    from gen_worker.sweep import record_sweep
    argv = _sweep_argv(tmp_path, tiny_sd, prompts_csv, first)
    parser, args = _args(argv)
    record_sweep(str(tmp_path / "sweep"), [c for c, _, _ in build_sweep(parser, argv, args)])
    argv = _sweep_argv(tmp_path, tiny_sd, prompts_csv, again)
    parser, args = _args(argv)
    runs = build_sweep(parser, argv, args)
    # the values already recorded keep their folders (and their text), the new one gets its own
    assert [c.name for c, _, _ in runs] == ["guidance_scale-1.5", "guidance_scale-3", "guidance_scale-5"]
    assert [s.output_dir for _, s, _ in runs] == [str(tmp_path / "sweep" / c.name) for c, _, _ in runs]
    record_sweep(str(tmp_path / "sweep"), [c for c, _, _ in runs])
    record = read_sweep_record(str(tmp_path / "sweep"))
    assert record.axes == {"guidance_scale": ["1.5", "3", "5"]}


def test_a_sweep_and_a_plain_run_never_share_a_folder(tmp_path, tiny_sd, prompts_csv):
    top = tmp_path / "top"
    top.mkdir()
    (top / "generation_settings.json").write_text("{}")
    argv = ["--prompts_csv", prompts_csv, "--output_dir", str(top), "--model_path", tiny_sd, "--device", "cpu",
            "--sweep", "guidance_scale=1,2"]
    parser, args = _args(argv)
    with pytest.raises(UsageError, match="holds a plain run"):
        build_sweep(parser, argv, args)
    other = tmp_path / "other"
    other.mkdir()
    (other / "sweep.json").write_text("{}")
    with pytest.raises(UsageError, match="holds a sweep"):
        build_spec(build_parser().parse_args(argv[:6] + ["--output_dir", str(other), "--device", "cpu"]))


def _main(monkeypatch, argv):
    import signal
    from gen_worker.cli import main
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # main's SIGTERM handler: not for pytest
    return main(argv)


def test_a_local_sweep_holds_its_top_folder_and_a_second_one_is_refused(tmp_path, tiny_sd, prompts_csv, capfd,
                                                                        monkeypatch):
    import gen_worker.local
    from gen_worker.output.lock import OutputDirBusy, RunLock
    top = str(tmp_path / "sweep")
    argv = [*_sweep_argv(tmp_path, tiny_sd, prompts_csv, "guidance_scale=1.5,3"), "--gpu_ids", "0"]
    held = []

    def first_sweep_running(runs, *args, **kwargs):
        # while its workers run, a second sweep into the same top folder (other values: other configuration
        # folders, the same logs/) is refused in one line, writing nothing
        second = [*argv[:-4], "--sweep", "guidance_scale=5", "--gpu_ids", "0"]
        held.append(_main(monkeypatch, second))
        with pytest.raises(OutputDirBusy):
            RunLock(top).acquire_exclusive()
        return 0

    monkeypatch.setattr(gen_worker.local, "run_local", first_sweep_running)
    assert _main(monkeypatch, argv) == 0
    err = capfd.readouterr().err.strip().splitlines()
    assert held == [2] and len(err) == 1 and err[0].startswith(f"error: {top} is in use by another run"), err
    assert not os.path.exists(os.path.join(top, "guidance_scale-5"))
    RunLock(top).acquire_exclusive()  # released once the sweep ends


def test_a_slurm_sweep_is_refused_while_an_earlier_sweeps_tasks_run_there(tmp_path, tiny_sd, prompts_csv, capfd,
                                                                          monkeypatch):
    import gen_worker.slurm.record
    import gen_worker.slurm.submit
    from gen_worker.output.lock import OutputDirBusy, RunLock
    from gen_worker.slurm.record import add_submission
    top = str(tmp_path / "sweep")
    argv = ["--cluster", "slurm", "--gpus", "1", *_sweep_argv(tmp_path, tiny_sd, prompts_csv, "guidance_scale=1.5")]
    submitted = []

    def submit(*args, **kwargs):  # the submitter holds the top folder until its tasks are recorded
        with pytest.raises(OutputDirBusy):
            RunLock(top).acquire_exclusive()
        submitted.append(args)
        return 0

    monkeypatch.setattr(gen_worker.slurm.submit, "submit_to_slurm", submit)
    assert _main(monkeypatch, argv) == 0 and len(submitted) == 1
    # what the submission records in the top folder: its tasks outlive the submitter
    add_submission(top, {"tasks": [{"worker": 0, "slurm_id": "12_0", "job_id": "12"}], "job_ids": ["12"]})
    monkeypatch.setattr(gen_worker.slurm.record, "queue_states", lambda ids: {i: "RUNNING" for i in ids})
    other_values = [*argv[:-1], "guidance_scale=5"]
    assert _main(monkeypatch, other_values) == 2 and len(submitted) == 1
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{top} has SLURM jobs still queued or running (job 12)" in err[0], err
    local = [*other_values[4:], "--gpu_ids", "0"]  # a local sweep into it too
    assert _main(monkeypatch, local) == 2
    assert "has SLURM jobs still queued or running" in capfd.readouterr().err
    monkeypatch.setattr(gen_worker.slurm.record, "queue_states", lambda ids: {})
    assert _main(monkeypatch, other_values) == 0 and len(submitted) == 2  # once they have ended


def _spec(tmp_path, name, model, rows, **changes):
    from gen_worker.model_check import identify
    from gen_worker.output.prepare import prepare_output_dir
    from gen_worker.prompts import load_samples
    from gen_worker.spec import JobSpec
    from conftest import write_prompts
    csv = write_prompts(tmp_path / "prompts.csv", rows)
    fields = dict(prompts_csv=csv, output_dir=str(tmp_path / name), model_path=model, num_samples=len(rows),
                  num_inference_steps=3, height=64, width=64, dtype="fp32", device="cpu",
                  model_identity=identify(model), guidance_scale=7.5)
    fields.update(changes)
    spec = JobSpec(**fields)
    prepare_output_dir(spec, load_samples(csv, spec.seed_start)).release()
    return spec


def _pngs(folder):
    return {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder)) if n.endswith(".png")}


def test_one_load_serves_every_configuration_and_each_folder_equals_a_plain_run(tmp_path, tiny_sd):
    from conftest import PROMPTS
    from gen_worker.worker.loop import run_worker
    from gen_worker.worker.pipeline_cache import PipelineCache, in_load_order
    rows = PROMPTS[:3]
    configs = [dict(scheduler="EulerDiscreteScheduler"), dict(guidance_scale=1.5), dict(num_inference_steps=2)]
    specs = [_spec(tmp_path, f"sweep{i}", tiny_sd, rows, **c) for i, c in enumerate(configs)]
    cache = PipelineCache()
    for spec in in_load_order(specs):
        summary = run_worker(spec, 0, 1, pipelines=cache)
        assert summary["generated"] == len(rows)
    assert cache.loads == 1
    for i, c in enumerate(configs):  # the scheduler swapped in by the first is not used by the others
        plain = _spec(tmp_path, f"plain{i}", tiny_sd, rows, **c)
        run_worker(plain, 0, 1)
        assert _pngs(plain.output_dir) == _pngs(specs[i].output_dir)


def test_configurations_are_grouped_by_what_a_load_fixes(tmp_path):
    from gen_worker.worker.pipeline_cache import in_load_order, load_key
    from gen_worker.spec import JobSpec
    base = dict(prompts_csv="p.csv", model_path="m", num_samples=1)
    specs = [JobSpec(output_dir=str(tmp_path / str(i)), **base, **c) for i, c in enumerate(
        [dict(dtype="fp32"), dict(dtype="fp16"), dict(dtype="fp32", guidance_scale=2.0), dict(dtype="fp16")])]
    assert [s.output_dir[-1] for s in in_load_order(specs)] == ["0", "2", "1", "3"]
    assert load_key(specs[0]) == load_key(specs[2]) != load_key(specs[1])


def test_the_sweep_record_lists_every_configuration_a_rerun_added(tmp_path):
    from gen_worker.output.sweep_record import read_sweep_record
    from gen_worker.sweep import record_sweep
    first = parse_axes(["guidance_scale=1.5,3"])
    record_sweep(str(tmp_path), configurations(first))
    more = parse_axes(["guidance_scale=3,5"])
    record_sweep(str(tmp_path), configurations(more))
    record = read_sweep_record(str(tmp_path))
    assert record.axes == {"guidance_scale": ["1.5", "3", "5"]}
    assert [c.folder for c in record.configurations] == ["guidance_scale-1.5", "guidance_scale-3", "guidance_scale-5"]


def test_a_workers_bar_adds_up_its_progress_over_the_configuration_folders(tmp_path):
    from gen_worker.output.progress import WorkerProgress
    from gen_worker.output.progress_bars import ProgressBars
    folders = [str(tmp_path / name) for name in ("a", "b", "c")]
    for folder in folders:
        os.makedirs(os.path.join(folder, "logs"))
    first = WorkerProgress(folders[0], 0, 1)
    first.update(state="done", skipped=2, generated=3, failed=1)
    second = WorkerProgress(folders[1], 0, 1)
    second.update(state="generating", generated=4)
    bars = ProgressBars(folders, ["CPU"], [30], [0])
    bars.refresh()
    assert bars.bars[0].n == 2 + 3 + 1 + 4
    assert "success: 9, failed: 1" in bars.bars[0].postfix
    second.update(state="error", message="boom")
    bars.refresh()
    assert "error" in bars.bars[0].postfix
    # every folder done: the bar's total becomes the workers' own (a dynamic worker's share, known at its end)
    for folder, progress in zip(folders, (first, second, WorkerProgress(folders[2], 0, 1))):
        progress.update(state="done", total=progress["skipped"] + progress["generated"] + progress["failed"])
    bars.refresh()
    assert bars.bars[0].n == bars.bars[0].total == 10
    bars.close()


def test_a_sweeps_last_lines_name_the_log_where_its_workers_wrote(tmp_path):
    from gen_worker.output.summary import final_lines, write_run_summary
    folder = tmp_path / "guidance_scale-2"
    (folder / "logs").mkdir(parents=True)
    workers = [{"label": "GPU 0", "exit_code": 1, "worker_index": 0, "message": "boom"}]
    summary = write_run_summary(str(folder), ["a_seed1.png"], workers, 0.0, "cmd", logs_in=str(tmp_path))
    line = next(x for x in final_lines(summary) if "stopped: boom" in x)
    assert line.endswith(f"log: {tmp_path}/logs/worker_gpu0.log")
    plain = write_run_summary(str(folder), ["a_seed1.png"], workers, 0.0, "cmd")
    assert next(x for x in final_lines(plain) if "boom" in x).endswith(f"log: {folder}/logs/worker_gpu0.log")


def test_a_recorded_switch_is_swept_with_true_and_false(tmp_path, tiny_sd, prompts_csv):
    # vae_tiling changes the pixels at the seams: it is recorded, so a sweep over it must work
    argv = _sweep_argv(tmp_path, tiny_sd, prompts_csv, "vae_tiling=false,true")
    parser, args = _args(argv)
    runs = build_sweep(parser, argv, args)
    assert [(c.name, s.vae_tiling) for c, s, _ in runs] == [("vae_tiling-false", False), ("vae_tiling-true", True)]



def test_configurations_that_resolve_to_one_run_are_refused(tmp_path, tiny_sd, prompts_csv):
    # --dtype auto is fp32 on the CPU: the two would make the same images twice
    argv = [a for a in _sweep_argv(tmp_path, tiny_sd, prompts_csv, "dtype=auto,fp32") if a not in ("--dtype", "fp32")]
    parser, args = _args(argv)
    with pytest.raises(UsageError, match="configurations dtype-auto and dtype-fp32 are one run") as err:
        build_sweep(parser, argv, args)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "sweep").exists()


def test_two_paths_to_one_model_are_one_run(tmp_path, tiny_sd, prompts_csv):
    # the model is judged by its content, as the resume check judges an image: a link to it is the same model
    link = tmp_path / "same_model"
    link.symlink_to(tiny_sd)
    argv = [a for a in _sweep_argv(tmp_path, tiny_sd, prompts_csv, f"model_path={tiny_sd},{link}")
            if a not in ("--model_path", tiny_sd)]
    parser, args = _args(argv)
    with pytest.raises(UsageError, match="are one run"):
        build_sweep(parser, argv, args)
    assert not (tmp_path / "sweep").exists()

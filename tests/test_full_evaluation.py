"""run_full_evaluation.sh end to end on tiny data: COCO JSON -> prompts -> images -> FID/CLIP -> report."""
import csv
import html as html_module
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from _evaluation_helpers import save_tiny_clip, save_tiny_inception, smooth_image
from conftest import REPO

CAPTIONS = ["A bus on a street.", "Two cats, one \"fluffy\".", "Un café à Paris.", "A dog with a frisbee.",
            "A plate of food.", "A kitchen,\nwith a window."]


def _tiny_coco(root):
    images_dir = root / "val2014"
    images_dir.mkdir()
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for n in range(6):
        name = f"COCO_val2014_{n + 1:012d}.jpg"
        smooth_image(rng).save(images_dir / name)
        images.append({"id": n + 1, "file_name": name})
        annotations += [{"id": 10 * n + k, "image_id": n + 1, "caption": f"{CAPTIONS[n]} ({k})"} for k in (2, 1)]
    captions = root / "captions_val2014.json"
    captions.write_text(json.dumps({"images": images, "annotations": annotations}), encoding="utf-8")
    return str(captions), str(images_dir)


def _run(env):
    return subprocess.run(["bash", os.path.join(REPO, "run_full_evaluation.sh")], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=900)


def _env(tmp_path, model, **extra):
    captions, images_dir = _tiny_coco(tmp_path)
    return dict(os.environ, PYTHON=sys.executable, MODEL_PATH=model, OUTPUT_DIR=str(tmp_path / "eval"),
                NUM_SAMPLES="4", COCO_CAPTIONS=captions, COCO_IMAGES=images_dir,
                REFERENCE_STATS=str(tmp_path / "ref_stats.npz"),
                INCEPTION_WEIGHTS=save_tiny_inception(str(tmp_path / "inception.pt")),
                CLIP_MODEL=save_tiny_clip(str(tmp_path / "clip")), DEVICE="cpu", NUM_INFERENCE_STEPS="2",
                HEIGHT="64", WIDTH="64", DTYPE="fp32", METRICS_DEVICE="cpu", METRICS_BATCH_SIZE="4", **extra)


@pytest.mark.e2e
def test_full_evaluation_end_to_end_and_resume(tmp_path, tiny_sd):
    env = _env(tmp_path, tiny_sd, USE_MULTIGPU="true", GPU_IDS="0 1")
    out = tmp_path / "eval"
    result = _run(env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]

    prompts = (out / "prompts.csv").read_text(encoding="utf-8")
    assert prompts.startswith("image_id,prompt") and prompts.count("(1)") == 4  # 4 images, lowest annotation id
    assert len((out / "reference_images.txt").read_text().split()) == 4
    images = sorted(n for n in os.listdir(out / "images") if n.endswith(".png"))
    assert len(images) == 4 and all("_seed" in n for n in images)
    summary = json.loads((out / "images" / "summary.json").read_text())
    assert summary["num_workers"] == 2 and summary["generated"] == 4
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["fid"] > 0 and 0 <= metrics["clip_score"] <= 100 and metrics["kid"] is not None
    assert metrics["protocol"]["fid"]["reference_images"] == 4 and metrics["protocol"]["kid"]["subset_size"] == 4
    assert metrics["protocol"]["clip"]["prompts_over_max_tokens"] == 0
    assert (tmp_path / "ref_stats.npz").exists()
    report = out / "report"
    html = (report / "report.html").read_text(encoding="utf-8")
    shown = [html_module.escape(row["prompt"]) for row in csv.DictReader(io.StringIO(prompts))]
    assert "FID" in html and "CLIP" in html and all(p.split("\n")[0] in html for p in shown)
    assert json.loads((report / "report.json").read_text())["scores"]["fid"] == metrics["fid"]

    # Rerun: nothing is generated again, the saved reference statistics are reused, same scores.
    result = _run(env)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "images" / "summary.json").read_text())
    assert (summary["generated"], summary["skipped"]) == (0, 4)
    again = json.loads((out / "metrics.json").read_text())
    assert again["fid"] == metrics["fid"] and again["clip_score"] == metrics["clip_score"]
    assert again["kid"] == metrics["kid"]  # the saved statistics keep the reference features KID needs


@pytest.mark.e2e
@pytest.mark.slurm
def test_full_evaluation_on_slurm(tmp_path, tiny_sd, slurm_cluster):
    """Generation and scoring both as SLURM tasks (METRICS_CLUSTER=slurm)."""
    env = _env(tmp_path, tiny_sd, CLUSTER="slurm", GPUS="2", SLURM_ARGS="--cpus_per_task 1 --mem_gb 1",
               METRICS_CLUSTER="slurm")
    result = _run(env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    out = tmp_path / "eval"
    summary = json.loads((out / "images" / "summary.json").read_text())
    assert (summary["num_workers"], summary["generated"], summary["missing"]) == (2, 4, 0)
    assert all(w.get("slurm_job_id") for w in summary["workers"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["fid"] > 0 and 0 <= metrics["clip_score"] <= 100
    assert (out / "report" / "report.html").exists()
    # the features were extracted by 2 SLURM tasks (evaluation/slurm_scoring.py's parts), then joined here
    assert len(list((out / "metrics.json.parts").glob("*/*/*-of-00002.npz"))) >= 2


def _stand_in_calls(tmp_path, exit_code, real_submit=False, **extra):
    """Run the script with a stand-in Python that records each command line it gets and exits with exit_code;
    returns (the script's result, [each call's arguments]). The settings helper (gen_worker.env_settings), and
    with real_submit submit.py, run in the real Python instead."""
    log = tmp_path / "calls.txt"
    log.unlink(missing_ok=True)
    fake = tmp_path / "python"
    real = '"-m gen_worker.env_settings"' + ('|*/submit.py\\ *' if real_submit else '')
    fake.write_text(f'#!/bin/bash\ncase "$*" in {real}) exec {sys.executable} "$@";; esac\n'
                    f'printf "%s\\n" "$@" "" >> {log}\nexit {exit_code}\n')
    fake.chmod(0o755)
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("image_id,prompt\n1,a cat\n")
    env = dict(os.environ, PYTHON=str(fake), MODEL_PATH="m", OUTPUT_DIR=str(tmp_path / "eval"), SKIP_FID="true",
               SKIP_CLIP="true", PROMPTS_CSV=str(prompts))
    result = _run({**env, **extra})
    calls = log.read_text() if log.exists() else ""
    return result, [call.splitlines() for call in calls.split("\n\n") if call.strip()]


def _submit_args(tmp_path, **extra):
    """submit.py's command line as the script builds it (the stand-in stops the script there)."""
    result, calls = _stand_in_calls(tmp_path, 2, **extra)
    assert result.returncode == 2 and "generation did not finish" in result.stderr
    return calls[0]


def test_sweep_and_images_per_prompt_reach_submit_py_only_when_set(tmp_path):
    args = _submit_args(tmp_path, SWEEP="guidance_scale=1.5,3,5,7.5 num_inference_steps=20,50",
                        IMAGES_PER_PROMPT="4")
    assert args[0].endswith("submit.py")
    pairs = list(zip(args, args[1:]))
    assert [b for a, b in pairs if a == "--sweep"] == ["guidance_scale=1.5,3,5,7.5", "num_inference_steps=20,50"]
    assert ("--images_per_prompt", "4") in pairs
    plain = _submit_args(tmp_path)
    assert "--sweep" not in plain and "--images_per_prompt" not in plain and "--model_path" in plain



def test_a_swept_json_list_with_spaces_reaches_submit_py_whole(tmp_path):
    args = _submit_args(tmp_path, SWEEP='negative_prompt=["blurry, low quality", "ugly"]  guidance_scale=[1.5, 3]')
    pairs = list(zip(args, args[1:]))
    assert [b for a, b in pairs if a == "--sweep"] == ['negative_prompt=["blurry, low quality", "ugly"]',
                                                      "guidance_scale=[1.5, 3]"]


def test_a_sweep_variable_that_is_not_name_equals_values_stops_the_script_before_any_work(tmp_path):
    result, calls = _stand_in_calls(tmp_path, 0, SWEEP='guidance_scale=[1.5, 3 steps=2')
    assert result.returncode == 2 and calls == []
    assert result.stderr.strip().splitlines()[-1].startswith("error: SWEEP=")

# Every setting variable the script has documented (passed when set), and some it never listed.
SETTINGS = {"DEVICE": "cpu", "SEED_START": "7", "NUM_INFERENCE_STEPS": "2", "GUIDANCE_SCALE": "3.5", "HEIGHT": "64",
            "WIDTH": "64", "DTYPE": "fp32", "CFG_TRUNCATION_STEP": "1", "IMAGES_PER_PROMPT": "2",
            "NEGATIVE_PROMPT": "blurry, low quality", "SCHEDULER": "EulerDiscreteScheduler", "BATCH_SIZE": "2"}


def test_every_setting_reaches_submit_py_by_its_name(tmp_path):
    args = _submit_args(tmp_path, **SETTINGS, ENABLE_HALF_FRAME="true", COMPILE="Yes", VAE_TILING="no",
                        TF32="", PROMPT_COLUMN="caption")
    pairs = list(zip(args, args[1:]))
    assert all((f"--{name.lower()}", value) in pairs for name, value in SETTINGS.items())
    assert "--enable_half_frame" in args and "--compile" in args
    assert "--vae_tiling" not in args and "--tf32" not in args  # off, and empty: unset
    assert "--prompt_column" not in args  # input and output are the script's own
    assert args.count("--model_path") == 1 and ("--model_path", "m") in pairs


def test_a_switch_that_is_neither_on_nor_off_stops_the_script_before_any_work(tmp_path):
    result, calls = _stand_in_calls(tmp_path, 0, COMPILE="maybe")
    assert result.returncode == 2 and calls == []
    assert result.stderr.strip().splitlines() == [
        "error: COMPILE=maybe: give true, 1 or yes to set --compile, false, 0 or no to leave it off, or one of its "
        "values: whole, regional"]


@pytest.mark.e2e
def test_a_setting_the_script_never_named_is_recorded_with_the_images(tmp_path, tiny_sd):
    result, calls = _stand_in_calls(tmp_path, 0, real_submit=True, MODEL_PATH=tiny_sd, GPU_IDS="0",
                                    DEVICE="cpu", NUM_INFERENCE_STEPS="2", HEIGHT="64", WIDTH="64", DTYPE="fp32",
                                    NEGATIVE_PROMPT="blurry, low quality", SCHEDULER="EulerDiscreteScheduler")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [call[:2] for call in calls] == [["-m", "evaluation.metrics"], ["-m", "evaluation.report"]]
    settings = json.loads((tmp_path / "eval" / "images" / "generation_settings.json").read_text())["settings"]
    assert (settings["negative_prompt"], settings["scheduler"]) == ("blurry, low quality", "EulerDiscreteScheduler")


@pytest.mark.parametrize("allow", ["true", "false"])
@pytest.mark.parametrize("variable, flag", [("ALLOW_INCOMPLETE", "--allow_incomplete"),
                                            ("ALLOW_UNVERIFIED", "--allow_unverified")])
def test_allow_incomplete_and_unverified_reach_the_metrics(tmp_path, variable, flag, allow):
    result, calls = _stand_in_calls(tmp_path, 0, **{variable: allow})
    assert result.returncode == 0, result.stderr
    metrics_args = next(call for call in calls if call[:2] == ["-m", "evaluation.metrics"])
    assert (flag in metrics_args) == (allow == "true")


def test_the_evaluation_options_reach_the_metrics_only_when_set(tmp_path):
    result, calls = _stand_in_calls(tmp_path, 0, FID_PROTOCOL="legacy_tensorflow", SKIP_CMMD="true",
                                    PICKSCORE_MODEL="weights/pickscore", HPS_MODEL="weights/hps",
                                    IMAGEREWARD_MODEL="weights/imagereward")
    assert result.returncode == 0, result.stderr
    args = next(call for call in calls if call[:2] == ["-m", "evaluation.metrics"])
    pairs = list(zip(args, args[1:]))
    assert ("--protocol", "legacy_tensorflow") in pairs and ("--pickscore_model", "weights/pickscore") in pairs
    assert ("--hps_model", "weights/hps") in pairs and ("--imagereward_model", "weights/imagereward") in pairs
    assert "--no_cmmd" in args
    _, calls = _stand_in_calls(tmp_path, 0)
    plain = next(call for call in calls if call[:2] == ["-m", "evaluation.metrics"])
    assert not {"--protocol", "--no_cmmd", "--pickscore_model", "--hps_model", "--imagereward_model"} & set(plain)


def test_metrics_cluster_slurm_reaches_the_metrics_with_its_slurm_flags(tmp_path):
    result, calls = _stand_in_calls(tmp_path, 0, METRICS_CLUSTER="slurm", GPUS="3", SLURM_ARGS="--partition gpu")
    assert result.returncode == 0, result.stderr
    args = next(call for call in calls if call[:2] == ["-m", "evaluation.metrics"])
    assert args[-6:] == ["--cluster", "slurm", "--gpus", "3", "--partition", "gpu"]
    _, calls = _stand_in_calls(tmp_path, 0, METRICS_CLUSTER="slurm", SLURM_ARGS="--partition gpu",
                               METRICS_SLURM_ARGS="--time 30")
    args = next(call for call in calls if call[:2] == ["-m", "evaluation.metrics"])
    assert args[-6:] == ["--cluster", "slurm", "--gpus", "8", "--time", "30"]  # its own flags, not SLURM_ARGS
    result, _ = _stand_in_calls(tmp_path, 0, METRICS_CLUSTER="yes")
    assert result.returncode == 2 and "METRICS_CLUSTER must be local or slurm" in result.stderr


def test_missing_settings_are_refused_before_any_work(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, OUTPUT_DIR=str(tmp_path / "eval"))
    result = _run(env)
    assert result.returncode == 2 and "set MODEL_PATH" in result.stderr
    env["MODEL_PATH"] = "x"
    result = _run(env)
    assert result.returncode == 2 and "INCEPTION_WEIGHTS" in result.stderr


@pytest.mark.e2e
def test_full_evaluation_of_a_sweep_with_several_images_per_prompt(tmp_path, tiny_sd):
    env = _env(tmp_path, tiny_sd, SWEEP="guidance_scale=1.5,4", IMAGES_PER_PROMPT="2")
    result = _run(env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    out = tmp_path / "eval"
    metrics = json.loads((out / "metrics.json").read_text())
    configurations = metrics["configurations"]
    assert [c["name"] for c in configurations] == ["guidance_scale-1.5", "guidance_scale-4"]
    assert all(c["fid"] > 0 and c["kid"] is not None and 0 <= c["clip_score"] <= 100 for c in configurations)
    for c in configurations:  # 4 prompts, 2 images each, in every configuration
        assert len([n for n in os.listdir(out / "images" / c["folder"]) if n.endswith(".png")]) == 8
    html = (out / "report" / "report.html").read_text(encoding="utf-8")
    assert "data:image/png;base64" in html and "guidance_scale-4" in html
    assert (out / "report" / "fid_clip.png").exists()


@pytest.mark.e2e
def test_full_evaluation_of_tar_shards(tmp_path, tiny_sd):
    """Images made as shards (--output_format tar): verified and scored in place, thumbnails from the shards."""
    env = _env(tmp_path, tiny_sd, GPU_IDS="0 1", GENERATE_ARGS="--output_format tar --shard_size 2")
    result = _run(env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    images = tmp_path / "eval" / "images"
    assert sorted(os.listdir(images / "shards")) == ["000000.tar", "000001.tar"]
    assert not [n for n in os.listdir(images) if n.endswith(".png")]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["counts"]["generated_images"] == 4 and metrics["fid"] > 0 and metrics["clip_score"] > 0
    assert metrics["verification"]["images"] == 4 and metrics["verification"]["unverified"] == 0
    report = json.loads((tmp_path / "eval" / "report" / "report.json").read_text())
    assert len(report["samples"]) == 4 and all(s["thumbnails"][0] for s in report["samples"])

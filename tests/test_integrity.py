"""Exit 0 means every image is valid and was made by the recorded model, settings and prompt.

Resume checks content (whole PNG + provenance), not names; the model is known by its content;
a model that cannot load completely is refused before any worker starts.
"""
import glob
import json
import logging
import os
import shutil

import pytest
from safetensors.torch import load_file, save_file

from conftest import FAST, PROMPTS, images_in, run_submit, write_prompts
from gen_worker.model_check import ModelCheckError, identify
from gen_worker.output import layout, provenance
from gen_worker.output.prepare import SettingsMismatch, prepare_output_dir
from gen_worker.prompts import load_samples
from gen_worker.spec import JobSpec
from gen_worker.worker.loop import WorkerError, run_worker
from gen_worker.worker.pipeline import PipelineSetupError, load_pipeline

UNET = os.path.join("unet", "diffusion_pytorch_model.safetensors")
TEXT_ENCODER = os.path.join("text_encoder", "model.safetensors")


@pytest.fixture(scope="module")
def sd_pipe(tiny_sd):
    return load_pipeline(tiny_sd, "fp32", "cpu")


def _spec(tmp_path, name, model, rows=PROMPTS, **changes):
    csv = write_prompts(tmp_path / "prompts.csv", rows)
    fields = dict(prompts_csv=csv, output_dir=str(tmp_path / name), model_path=model, num_samples=len(rows),
                  num_inference_steps=3, height=64, width=64, dtype="fp32", device="cpu",
                  model_identity=identify(model))
    fields.update(changes)
    return JobSpec(**fields), load_samples(csv, fields.get("seed_start", 42))


def _run(spec, samples, pipe, **prepare):
    prepare_output_dir(spec, samples, **prepare).release()
    return run_worker(spec, 0, 1, pipe=pipe)


def test_resume_quarantines_damaged_and_foreign_files_and_makes_them_again(tmp_path, sd_pipe, tiny_sd):
    spec, samples = _spec(tmp_path, "out", tiny_sd)
    _run(spec, samples, sd_pipe)
    expected = images_in(spec.output_dir)
    other, other_samples = _spec(tmp_path, "other", tiny_sd, guidance_scale=2.0)
    _run(other, other_samples, sd_pipe)
    names = sorted(expected)
    out = spec.output_dir
    with open(os.path.join(out, names[0]), "wb"):
        pass  # empty
    with open(os.path.join(out, names[1]), "wb") as f:
        f.write(expected[names[1]][:len(expected[names[1]]) // 2])  # cut in half
    with open(os.path.join(out, names[2]), "w") as f:
        f.write("not an image")
    shutil.copy(os.path.join(other.output_dir, names[3]), os.path.join(out, names[3]))  # other settings
    shutil.copy(os.path.join(out, names[5]), os.path.join(out, names[4]))  # another sample's image
    with open(os.path.join(out, "stray.png"), "wb") as f:
        f.write(expected[names[6]])
    summary = _run(spec, samples, sd_pipe)
    assert summary["generated"] == 5 and images_in(out) == expected  # made again, byte for byte
    report = json.load(open(os.path.join(out, layout.RESUME_CHECK_FILE)))
    # Only the files changed since the worker wrote them were read; the other one by its record.
    assert (report["checked"], report["read"]) == (8, 6)
    reasons = {q["file"]: q["reason"] for q in report["quarantined"]}
    assert reasons == {
        names[0]: "not a whole PNG: empty file",
        names[1]: "not a whole PNG: truncated (its IDAT chunk is cut short)",
        names[2]: "not a whole PNG: not a PNG file (no PNG signature)",
        names[3]: "made with other settings (guidance_scale)",
        names[4]: f"made for another sample (index 5, expected 4)",
        "stray.png": "not a sample of this folder's manifest"}
    for q in report["quarantined"]:  # kept, and out of reach of a *.png glob
        assert os.path.isfile(os.path.join(out, q["moved_to"])) and not q["moved_to"].endswith(".png")


def test_images_from_another_model_are_quarantined(tmp_path, sd_pipe, tiny_sd):
    spec, samples = _spec(tmp_path, "out", tiny_sd)
    _run(spec, samples, sd_pipe)
    found, image = provenance.inspect(os.path.join(spec.output_dir, samples[0].file_name))
    found["model"]["fingerprint"] = "0123456789abcdef"
    assert provenance.mismatch(found, image, samples[0], [spec.model_identity["fingerprint"]],
                               [spec.recorded_settings()]) \
        == f"made by another model ({tiny_sd}, fingerprint 0123456789abcdef)"


def test_a_folder_of_images_without_a_record_is_refused_unless_adopted(tmp_path, sd_pipe, tiny_sd):
    spec, samples = _spec(tmp_path, "out", tiny_sd)
    _run(spec, samples, sd_pipe)
    out = spec.output_dir
    os.remove(os.path.join(out, layout.SETTINGS_FILE))  # as the original script left its folders
    with pytest.raises(SettingsMismatch, match=r"holds 7 images but no generation_settings.json .*--adopt_existing"):
        prepare_output_dir(spec, samples)
    # Adopted images carry no provenance (the script did not write any): kept if whole, recorded.
    for name in list(images_in(out))[:2]:
        os.remove(os.path.join(out, name))
    from PIL import Image
    Image.new("RGB", (64, 64)).save(os.path.join(out, samples[0].file_name))
    summary = _run(spec, samples, sd_pipe, adopt_existing=True)
    record = json.load(open(os.path.join(out, layout.SETTINGS_FILE)))
    assert len(record["adopted"]["files"]) == 6 and summary["generated"] == 1
    assert json.load(open(os.path.join(out, layout.RESUME_CHECK_FILE)))["quarantined"] == []
    # The next resume still knows them.
    _run(spec, samples, sd_pipe)
    assert json.load(open(os.path.join(out, layout.RESUME_CHECK_FILE)))["quarantined"] == []


def test_every_image_says_what_made_it(tmp_path, sd_pipe, tiny_sd):
    spec, samples = _spec(tmp_path, "out", tiny_sd, batch_size=3)
    _run(spec, samples, sd_pipe)
    found = provenance.read(os.path.join(spec.output_dir, samples[4].file_name))
    assert (found["index"], found["image_id"], found["seed"], found["prompt"]) == (4, "4", 46, PROMPTS[4][1])
    assert found["model"] == {"path": tiny_sd, "fingerprint": spec.model_identity["fingerprint"]}
    assert found["settings"] == spec.recorded_settings() and found["block"] == [3, 3]
    assert set(found["versions"]) == {"torch", "diffusers", "transformers", "t2i-batch spec"}


def test_reproduce_says_when_the_model_folder_is_gone_or_another(tmp_path, tiny_sd, sd_pipe, capsys):
    from conftest import run_worker_in_process
    from gen_worker.image_tools import main
    model = str(tmp_path / "model")
    shutil.copytree(tiny_sd, model)
    out, _ = run_worker_in_process(tmp_path, "out", sd_pipe, model, rows=PROMPTS[:1])
    image = os.path.join(out, "000001_seed42.png")
    again = ["reproduce", image, "--output_dir", str(tmp_path / "again"), "--device", "cpu"]
    shutil.rmtree(model)
    assert main(again) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{image} was made with the model at {model}, which is not there" in err[0], err
    assert "--model_path" in err[0] and "None" not in err[0]
    assert main([*again, "--model_path", str(tmp_path / "elsewhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --model_path {tmp_path / 'elsewhere'}: model folder not found: {tmp_path / 'elsewhere'}"]
    other = str(tmp_path / "other")
    shutil.copytree(tiny_sd, other)
    with open(os.path.join(other, "model_index.json"), "a") as f:
        f.write(" ")  # other content: another model
    assert main([*again, "--model_path", other]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"the model at {other} is not the one {image} was made with" in err[0], err
    assert not os.path.exists(tmp_path / "again")  # nothing made or written


@pytest.mark.e2e
def test_show_and_reproduce_an_image(tmp_path, tiny_sd):
    csv = write_prompts(tmp_path / "p.csv", PROMPTS[:5])
    out = str(tmp_path / "out")
    made = run_submit("--gpu_ids", "0", "1", "--prompts_csv", csv, "--output_dir", out, "--model_path", tiny_sd,
                      *FAST, "--batch_size", "2")
    assert made.returncode == 0, made.stderr[-2000:]
    image = os.path.join(out, "000003_seed45.png")
    shown = run_submit("show", image)
    assert shown.returncode == 0 and json.loads(shown.stdout)["prompt"] == PROMPTS[3][1]
    again = run_submit("reproduce", image, "--output_dir", str(tmp_path / "again"), "--device", "cpu")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "byte-identical" in again.stdout
    assert open(tmp_path / "again" / "000003_seed45.png", "rb").read() == open(image, "rb").read()
    bad = run_submit("show", csv)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "not a whole PNG" in bad.stderr
    # A damaged image: the rerun says so, moves it aside, makes it again, and exits 0.
    with open(image, "r+b") as f:
        f.truncate(100)
    rerun = run_submit("--gpu_ids", "0", "1", "--prompts_csv", csv, "--output_dir", out, "--model_path", tiny_sd,
                       *FAST, "--batch_size", "2")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "1 files under image names were damaged or not made by this run: moved to" in rerun.stderr
    assert open(image, "rb").read() == open(tmp_path / "again" / "000003_seed45.png", "rb").read()


@pytest.fixture()
def model_copy(tiny_sd, tmp_path):
    path = tmp_path / "model"
    shutil.copytree(tiny_sd, path)
    return str(path)


def _drop_keys(path, prefix):
    tensors = load_file(path)
    save_file({k: v for k, v in tensors.items() if not k.startswith(prefix)}, path, metadata={"format": "pt"})


@pytest.mark.e2e
def test_changed_model_content_is_refused_naming_the_component(tmp_path, model_copy):
    csv = write_prompts(tmp_path / "p.csv", PROMPTS[:2])
    link = tmp_path / "current-model"
    os.symlink(model_copy, link)
    args = ["--gpu_ids", "0", "--prompts_csv", csv, "--output_dir", str(tmp_path / "out"), "--model_path", str(link),
            *FAST]
    assert run_submit(*args).returncode == 0
    moved = tmp_path / "moved-model"  # the same content elsewhere is the same model
    shutil.copytree(model_copy, moved)
    os.remove(link)
    os.symlink(moved, link)
    assert run_submit(*args).returncode == 0
    tensors = load_file(str(moved / UNET))  # other weights, same names and shapes: another model
    save_file({k: v + 1 if k.endswith("bias") else v for k, v in tensors.items()}, str(moved / UNET),
              metadata={"format": "pt"})
    refused = run_submit(*args)
    assert refused.returncode == 2 and "model content: unet changed" in refused.stderr, refused.stderr


def test_incomplete_models_are_refused_before_any_worker(tmp_path, model_copy):
    weights = os.path.join(model_copy, UNET)
    data = open(weights, "rb").read()
    with open(weights, "wb") as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(ModelCheckError, match="unet/diffusion_pytorch_model.safetensors is truncated"):
        identify(model_copy)
    with open(weights, "wb") as f:
        f.write(data)
    index_path = os.path.join(model_copy, "model_index.json")
    index = json.load(open(index_path))
    index["unet"] = ["diffusers", "UNet9000Model"]
    json.dump(index, open(index_path, "w"))
    with pytest.raises(ModelCheckError, match="unet is a UNet9000Model, which the installed diffusers does not have"):
        identify(model_copy)
    index["unet"] = ["my_package", "MyUNet"]
    json.dump(index, open(index_path, "w"))
    with pytest.raises(ModelCheckError, match="unet comes from my_package, which t2i-batch does not load"):
        identify(model_copy)


def test_a_worker_refuses_a_model_that_changed_after_submission(tmp_path, sd_pipe, model_copy):
    spec, samples = _spec(tmp_path, "out", model_copy)
    prepare_output_dir(spec, samples).release()
    _drop_keys(os.path.join(model_copy, TEXT_ENCODER), "final_layer_norm")
    with pytest.raises(WorkerError, match="changed since the run was submitted \\(text_encoder\\)"):
        run_worker(spec, 0, 1, pipe=sd_pipe)


@pytest.mark.parametrize("weights, prefix, message", [
    (UNET, "conv_out", "the unet weights lack conv_out."),
    (TEXT_ENCODER, "final_layer_norm", "the text_encoder weights lack final_layer_norm."),
])
def test_a_partial_checkpoint_is_refused_at_load_not_run_with_random_weights(model_copy, weights, prefix, message):
    _drop_keys(os.path.join(model_copy, weights), prefix)
    with pytest.raises(PipelineSetupError, match=message.replace(".", r"\.")):
        load_pipeline(model_copy, "fp32", "cpu")


def _weights_not_from_files(pipe, folder):
    """{component: [parameter or buffer names]} whose loaded tensor is not the one in the component's
    .safetensors files (a tied weight, stored once under another name, counts as from the files)."""
    import torch
    found = {}
    for name, module in pipe.components.items():
        if not isinstance(module, torch.nn.Module):
            continue
        saved = {}
        for path in glob.glob(os.path.join(folder, name, "*.safetensors")):
            saved.update(load_file(path))
        state = module.state_dict(keep_vars=True)
        from_files = {state[k].data_ptr() for k in saved if k in state}
        wrong = [k for k, v in state.items()
                 if (k in saved and not torch.equal(v.detach(), saved[k])) or (k not in saved and v.data_ptr() not in from_files)]
        if wrong or not state:
            found[name] = wrong or ["(no weights at all)"]
    return found


def test_a_complete_model_loads_without_complaint(tiny_sd, tiny_wan, caplog):
    # diffusers and transformers log through their own handlers (no propagation): listen there too.
    libraries = [logging.getLogger(name) for name in ("diffusers", "transformers")]
    for logger in libraries:
        logger.addHandler(caplog.handler)
    try:
        for model in (tiny_sd, tiny_wan):
            caplog.clear()
            pipe = load_pipeline(model, "fp32", "cpu")
            assert _weights_not_from_files(pipe, model) == {}
            complaints = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
            assert complaints == [], complaints
    finally:
        for logger in libraries:
            logger.removeHandler(caplog.handler)


def test_the_completeness_check_of_the_test_sees_a_weight_not_from_the_files(tiny_sd):
    import torch
    pipe = load_pipeline(tiny_sd, "fp32", "cpu")
    with torch.no_grad():
        pipe.unet.conv_out.bias.add_(1)
    assert _weights_not_from_files(pipe, tiny_sd) == {"unet": ["conv_out.bias"]}

"""The speed levers end to end on the tiny Flux, as a user runs them: each changes the images where it should, a
sweep over them loads the model once per load-time value and never lets a configuration inherit a lever (its
`none` folder is byte for byte a plain run), 1 vs 2 workers give the same bytes with a lever, a rerun resumes,
the folder records the lever (a rerun with another value is refused), `show` names it and `reproduce` makes the
same bytes again; a lever the family cannot use is refused in one line before any worker starts."""
import json
import os
from typing import Any, Dict

import pytest

from conftest import PROMPTS, images_in, pixels_in, run_submit, run_worker_in_process, write_prompts
from gen_worker.output import layout

pytestmark = pytest.mark.e2e
SMALL = ["--device", "cpu", "--dtype", "fp32", "--height", "32", "--width", "32", "--num_inference_steps", "4"]
CACHE = "first_block:0.5"  # a high threshold: most steps reuse the cached residual


def _folders(top: Any) -> Dict[str, str]:
    """{configuration's overrides as 'cache quantize': its folder}"""
    record = json.loads((top / "sweep.json").read_text())
    return {" ".join(c["overrides"][k] for k in ("cache", "quantize")): str(top / c["folder"])
            for c in record["configurations"]}


def test_a_lever_sweep_equals_plain_runs_for_any_number_of_workers_and_resumes(tmp_path: Any,
                                                                              tiny_flux: str) -> None:
    csv = write_prompts(tmp_path / "p.csv", PROMPTS[:4])
    common = ["--prompts_csv", csv, "--model_path", tiny_flux, *SMALL]
    plain, cached = tmp_path / "plain", tmp_path / "cached"
    for out, given in ((plain, []), (cached, ["--cache", CACHE])):
        done = run_submit(*common, "--output_dir", out, *given, "--gpu_ids", "0")
        assert done.returncode == 0, done.stderr[-3000:]
    top = tmp_path / "sweep"
    sweep = [*common, "--output_dir", top, "--sweep", f"cache={CACHE},none", "--sweep", "quantize=none,int8wo",
             "--gpu_ids", "0", "1"]
    first = run_submit(*sweep)
    assert first.returncode == 0, first.stderr[-3000:]
    folders = _folders(top)
    assert images_in(folders["none none"]) == images_in(plain)  # made after the cached one, on the same pipeline
    assert images_in(folders[f"{CACHE} none"]) == images_in(cached)  # 2 workers as 1
    assert len(images_in(plain)) == 4
    pixels = {key: pixels_in(folder) for key, folder in folders.items()}
    assert pixels[f"{CACHE} none"] != pixels["none none"]  # the cache changes the images
    assert pixels["none int8wo"] != pixels["none none"]  # int8 weights too
    assert pixels[f"{CACHE} int8wo"] not in (pixels["none int8wo"], pixels[f"{CACHE} none"])
    # Each worker loads once per --quantize (cached first, grouped by load): the cache is switched on a loaded
    # pipeline, int8 is a new load. A worker loads when it first makes a block of a load (the other worker may
    # have made every block of a configuration: its summary then has no pipeline_reused).
    judged = set()
    for k in (0, 1):
        loaded = set()
        for key in (f"{CACHE} none", "none none", f"{CACHE} int8wo", "none int8wo"):
            summary = json.loads(open(layout.summary_file(folders[key], k)).read())
            if "pipeline_reused" in summary:
                load = key.split()[1]  # --quantize
                assert summary["pipeline_reused"] == (load in loaded), (k, key)
                loaded.add(load)
                judged.add(key)
    assert len(judged) == 4  # every configuration's blocks were made by a worker that says how it loaded

    # A rerun makes only what is missing, the same bytes.
    reference = images_in(folders[f"{CACHE} int8wo"])
    os.remove(os.path.join(folders[f"{CACHE} int8wo"], sorted(reference)[1]))
    again = run_submit(*sweep)
    assert again.returncode == 0, again.stderr[-3000:]
    assert images_in(folders[f"{CACHE} int8wo"]) == reference
    assert "1 generated, 3 already there" in again.stderr

    # The folder records the lever: another value is refused, and each image names it.
    other = run_submit(*common, "--output_dir", cached, "--cache", "first_block:0.2", "--gpu_ids", "0")
    assert other.returncode == 2 and "cache" in other.stderr, other.stderr
    image = os.path.join(folders[f"{CACHE} int8wo"], sorted(reference)[0])
    shown = run_submit("show", image)
    assert shown.returncode == 0, shown.stderr
    settings = json.loads(shown.stdout)["settings"]
    assert (settings["cache"], settings["quantize"], settings["attention_backend"]) == (CACHE, "int8wo", "native")
    made = run_submit("reproduce", image, "--output_dir", tmp_path / "again", "--device", "cpu")
    assert made.returncode == 0 and "byte-identical to" in made.stdout, made.stdout + made.stderr[-2000:]

    # Speed beside quality: per image, the denoiser's share, no GPU memory on a CPU.
    summary = json.loads((plain / layout.RUN_SUMMARY_FILE).read_text())
    assert 0 < summary["denoiser_seconds_per_image"] < summary["seconds_per_image"]
    assert summary["peak_gpu_memory_bytes"] is None and summary["images_per_second"] > 0
    worker = json.loads(open(layout.summary_file(str(plain), 0)).read())
    assert worker["seconds_per_image"] == summary["seconds_per_image"]


@pytest.mark.parametrize("arch", ["flux", "wan"])
def test_the_levers_give_the_same_bytes_for_1_and_2_workers(tmp_path: Any, arch: str, tiny_flux: str,
                                                             tiny_wan: str) -> None:
    """Every lever a CPU runs at once, at batch size 2: blocks split across workers make the same bytes."""
    csv = write_prompts(tmp_path / "p.csv", PROMPTS[:5])
    levers = ["--cache", CACHE, "--quantize", "int8wo", "--attention_backend", "_native_math", "--batch_size", "2"]
    folders = []
    for gpu_ids in (["0"], ["0", "1"]):
        out = tmp_path / f"workers-{len(gpu_ids)}"
        done = run_submit("--prompts_csv", csv, "--model_path", tiny_flux if arch == "flux" else tiny_wan, *SMALL,
                          "--output_dir", out, *levers, "--schedule", "static", "--gpu_ids", *gpu_ids)
        assert done.returncode == 0, done.stderr[-3000:]
        folders.append(images_in(out))
    assert folders[0] == folders[1] and len(folders[0]) == 5


def test_a_lever_the_family_cannot_use_is_refused_before_any_worker(tmp_path: Any, tiny_sd: str) -> None:
    csv = write_prompts(tmp_path / "p.csv", PROMPTS[:2])
    common = ["--prompts_csv", csv, "--model_path", tiny_sd, *SMALL]
    plain = run_submit(*common, "--output_dir", tmp_path / "plain", "--cache", CACHE)
    assert plain.returncode == 2
    assert plain.stderr.strip().splitlines() == [
        "error: --cache first_block is not supported for StableDiffusionPipeline (there: no cache kind; see "
        "docs/families.md)"]
    swept = run_submit(*common, "--output_dir", tmp_path / "sweep", "--sweep", f"cache=none,{CACHE}")
    assert swept.returncode == 2 and "--sweep configuration cache-first_block_0.5" in swept.stderr, swept.stderr
    assert not os.path.exists(tmp_path / "sweep" / "cache-none" / "manifest.csv")  # nothing started
    on_cpu = run_submit(*common, "--output_dir", tmp_path / "cpu", "--offload", "model")
    assert on_cpu.returncode == 2 and "--offload model moves weights" in on_cpu.stderr


@pytest.mark.parametrize("given", [{"cache": CACHE}, {"attention_backend": "_native_math"}, {"quantize": "fp8"}])
def test_no_lever_outlives_its_run_on_a_shared_pipeline(tmp_path: Any, pipes: Any, tiny_flux: str,
                                                        given: Dict[str, str]) -> None:
    """The loaded pipeline a sweep's worker shares: a run with a lever, which changes the images, then one without,
    which equals a run before any lever (fp8 is a load-time lever: its run loads its own pipeline)."""
    pipe = None if "quantize" in given else pipes("flux")
    before, _ = run_worker_in_process(tmp_path, "before", pipes("flux"), tiny_flux, rows=PROMPTS[:2])
    lever, _ = run_worker_in_process(tmp_path, "lever", pipe, tiny_flux, rows=PROMPTS[:2], **given)
    after, _ = run_worker_in_process(tmp_path, "after", pipes("flux"), tiny_flux, rows=PROMPTS[:2])
    assert images_in(after) == images_in(before)
    assert pixels_in(lever) != pixels_in(before)  # measured: each of these changes the tiny Flux's pixels

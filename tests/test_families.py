"""Every model family tiny_model builds, through submit.py --cluster local: the images do not depend on
the number of workers (at batch size 2, blocks split across workers) and a rerun makes only what is missing.

Stable Diffusion 1.x has the same checks, and more, in test_local_e2e.py; it is not repeated here.
"""
import json
import os
from typing import Callable, Dict, List

import pytest
from PIL import Image

from conftest import PROMPTS, images_in, pixels_in, run_submit, write_prompts
from gen_worker.output import layout

pytestmark = pytest.mark.e2e

FAMILIES = ["sdxl", "sd3", "flux", "pixart", "sana", "wan", "wan22"]

# 32x32 and 2 steps: every family accepts it (PixArt and Sana make it at their bin size and resize).
SETTINGS = ["--device", "cpu", "--num_inference_steps", "2", "--height", "32", "--width", "32", "--dtype", "fp32",
            "--batch_size", "2"]


@pytest.fixture(scope="session")
def family_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], str]:
    """arch -> the folder of its tiny pipeline, built once per session."""
    from gen_worker.tiny_model import build
    built: Dict[str, str] = {}

    def get(arch: str) -> str:
        if arch not in built:
            folder = str(tmp_path_factory.mktemp("models") / f"tiny-{arch}")
            build(folder, arch)
            built[arch] = folder
        return built[arch]
    return get


def _run(model: str, csv: str, out: str, gpu_ids: List[str]) -> None:
    result = run_submit("--cluster", "local", "--gpu_ids", *gpu_ids, "--prompts_csv", csv, "--output_dir", out,
                        "--model_path", model, *SETTINGS, "--schedule", "static")  # the blocks named below
    assert result.returncode == 0, result.stderr[-3000:]


def _generated_and_skipped(out: str) -> tuple[int, int]:
    workers = json.load(open(os.path.join(out, layout.RUN_SUMMARY_FILE)))["num_workers"]
    summaries = [json.load(open(layout.summary_file(out, k))) for k in range(workers)]
    return sum(s["generated"] for s in summaries), sum(s["skipped"] for s in summaries)


@pytest.mark.parametrize("arch", FAMILIES)
def test_family_same_images_for_1_and_2_workers_and_resume(arch: str, family_model: Callable[[str], str],
                                                          tmp_path: "os.PathLike[str]") -> None:
    model = family_model(arch)
    csv = write_prompts(os.path.join(tmp_path, "prompts.csv"), PROMPTS)
    one, two = os.path.join(tmp_path, "one"), os.path.join(tmp_path, "two")
    _run(model, csv, one, ["0"])
    _run(model, csv, two, ["0", "1"])  # blocks [0-1] [4-5] on worker 0, [2-3] [6] on worker 1
    reference = images_in(one)
    assert len(reference) == len(PROMPTS)
    assert images_in(two) == reference
    assert {Image.open(os.path.join(one, n)).size for n in reference} == {(32, 32)}
    assert len(set(pixels_in(one).values())) == len(PROMPTS)  # each seed its own picture

    # Sample 3, the second of its block: the block [2-3] is made again whole, only sample 3 is written.
    missing = sorted(reference)[3]
    os.remove(os.path.join(two, missing))
    before = {n: os.stat(os.path.join(two, n)).st_mtime_ns for n in reference if n != missing}
    _run(model, csv, two, ["0", "1"])
    assert images_in(two) == reference
    assert before == {n: os.stat(os.path.join(two, n)).st_mtime_ns for n in before}
    assert _generated_and_skipped(two) == (1, len(PROMPTS) - 1)

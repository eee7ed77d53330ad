"""python -m evaluation.metrics --cluster slurm on the project's test cluster: array tasks extract slices,
the submitting process joins them; the same numbers as one process, and a rerun queues only what is missing."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from _evaluation_helpers import (UNVERIFIED, noisy, save_tiny_clip, save_tiny_inception, smooth_image,
                                 write_generated, write_reference)
from conftest import REPO
from evaluation.coco_prompts import write_prompts_csv
from evaluation.tiny_networks import save_tiny_hps, save_tiny_imagereward

pytestmark = [pytest.mark.slurm, pytest.mark.e2e, pytest.mark.usefixtures("slurm_cluster")]
SLURM = ["--cluster", "slurm", "--gpus", "3", "--cpus_per_task", "1", "--mem_gb", "1", "--time", "15"]


def _metrics(args):
    proc = subprocess.run([sys.executable, "-m", "evaluation.metrics", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_scoring_on_slurm_gives_the_single_process_numbers_and_resumes(tmp_path):
    rng = np.random.default_rng(0)
    ids = [str(i) for i in range(11)]
    gen = str(tmp_path / "gen")
    write_generated(gen, [noisy(smooth_image(rng), 20, rng) for _ in ids], ids, [42 + i for i in range(11)])
    ref = write_reference(str(tmp_path / "ref"), [smooth_image(rng) for _ in range(10)])
    write_prompts_csv([(i, f"a picture, number {i}") for i in ids], str(tmp_path / "prompts.csv"))
    common = [*UNVERIFIED, gen, "--reference_dir", ref, "--prompts_csv", str(tmp_path / "prompts.csv"),
              "--inception_weights", save_tiny_inception(str(tmp_path / "inception.pt")),
              "--clip_model", save_tiny_clip(str(tmp_path / "clip")), "--device", "cpu", "--num_workers", "0",
              "--batch_size", "4", "--seed_start", "42",
              "--hps_model", save_tiny_hps(str(tmp_path / "hps")),
              "--imagereward_model", save_tiny_imagereward(str(tmp_path / "imagereward"))]
    _metrics([*common, "--out", str(tmp_path / "local.json")])
    local_scores = (tmp_path / "gen" / "scores.csv").read_text()
    out = tmp_path / "slurm.json"
    first = _metrics([*common, "--out", str(out), *SLURM])
    assert "3 of 3 slices queued" in first.stderr
    local, on_slurm = (json.loads((tmp_path / n).read_text()) for n in ("local.json", "slurm.json"))
    for key in ("fid", "kid", "kid_std", "clip_score", "cmmd", "hps", "imagereward"):
        assert local[key] is not None, key
        assert on_slurm[key] == pytest.approx(local[key], rel=1e-12, abs=1e-15), key  # same batches: same features
    assert on_slurm["intervals"] == local["intervals"]
    assert on_slurm["counts"] == local["counts"]
    assert (tmp_path / "gen" / "scores.csv").read_text() == local_scores  # the per-image scores, to the last digit
    parts = [os.path.join(dp, f) for dp, _, fs in os.walk(str(out) + ".parts") for f in fs if f.endswith(".npz")]
    assert len(parts) == 2 * 3  # reference and the one configuration, 3 slices each
    again = _metrics([*common, "--out", str(out), *SLURM])
    assert "queued" not in again.stderr  # every slice is there: nothing to queue
    assert json.loads(out.read_text())["fid"] == on_slurm["fid"]
    os.remove(sorted(parts)[-1])
    partial = _metrics([*common, "--out", str(out), *SLURM])
    assert "1 of 3 slices queued" in partial.stderr
    assert json.loads(out.read_text())["cmmd"] == pytest.approx(on_slurm["cmmd"], rel=1e-12)

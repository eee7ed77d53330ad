"""PickScore from a local folder, with the tiny random-weight stand-in: per image as its authors' code scores,
its mean and interval in metrics.json and the report, and a one-line refusal before any image is read."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from _evaluation_helpers import UNVERIFIED, score_preference
from conftest import REPO
from evaluation import images as im
from evaluation import metrics, report
from evaluation.errors import EvaluationError
from evaluation.tiny_networks import save_tiny_pickscore

N = 8


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    return score_preference(tmp_path_factory.mktemp("pickscore"), "--pickscore_model", save_tiny_pickscore, rng_seed=0, seed_start=42,
                            count=N, batch_size=3)


def _authors_pickscore(folder, image_path, prompt):
    """PickScore as its authors' README computes it (one image, one prompt)."""
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    processor = CLIPProcessor.from_pretrained(folder, local_files_only=True)
    model = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
    image_inputs = processor(images=[Image.open(image_path).convert("RGB")], return_tensors="pt")
    text_inputs = processor(text=[prompt], padding=True, truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        image_embs = model.get_image_features(**image_inputs)
        image_embs = getattr(image_embs, "pooler_output", image_embs)
        image_embs = image_embs / torch.norm(image_embs, dim=-1, keepdim=True)
        text_embs = model.get_text_features(**text_inputs)
        text_embs = getattr(text_embs, "pooler_output", text_embs)
        text_embs = text_embs / torch.norm(text_embs, dim=-1, keepdim=True)
        return float(model.logit_scale.exp() * (text_embs @ image_embs.T)[0][0])


def test_pickscore_per_image_mean_and_interval(scored):
    result = scored["result"]
    with open(os.path.join(scored["gen"], "scores.csv"), encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["file", "image_id", "prompt_row", "seed", "pickscore"]
    for row in rows:
        expected = _authors_pickscore(scored["model"], os.path.join(scored["gen"], row["file"]),
                                      scored["prompts"][int(row["prompt_row"])])
        assert float(row["pickscore"]) == pytest.approx(expected, rel=1e-5)
    values = [float(r["pickscore"]) for r in rows]
    assert len(set(np.round(values, 6))) > 1
    assert result["pickscore"] == pytest.approx(np.mean(values), rel=1e-12)
    low, high = result["intervals"]["pickscore"]
    assert low < result["pickscore"] < high
    assert result["fid"] is None and result["clip_score"] is None
    assert result["protocol"]["pickscore"]["score"].startswith("PickScore (Kirstain et al. 2023)")
    assert result["protocol"]["pickscore"]["model_sha256"]


def test_the_report_shows_pickscore_with_its_interval(scored):
    out = scored["dir"] / "report"
    report.write_report(report.build_report(scored["gen"], scored["metrics"], scored["csv"], str(out)), str(out))
    low, high = scored["result"]["intervals"]["pickscore"]
    md = (out / "report.md").read_text(encoding="utf-8")
    assert f"| gen | pickscore | {scored['result']['pickscore']:.3f} | [{low:.3f}, {high:.3f}] |" in md


def test_missing_pickscore_weights_refused_in_one_line_before_any_image_is_read(scored, tmp_path, monkeypatch):
    def no_image_reads(path):
        raise AssertionError(f"an image was read: {path}")

    monkeypatch.setattr(im, "load_rgb", no_image_reads)
    args = [*UNVERIFIED, scored["gen"], "--prompts_csv", scored["csv"], "--pickscore_model", str(tmp_path / "none"),
            "--no_fid", "--no_clip", "--out", str(tmp_path / "m.json"), "--num_workers", "0"]
    with pytest.raises(EvaluationError, match=r"PickScore model folder not found .*yuvalkirstain/PickScore_v1"):
        metrics.main(args)
    proc = subprocess.run([sys.executable, "-m", "evaluation.metrics", *args], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: PickScore model folder not found")
    assert not (tmp_path / "m.json").exists()

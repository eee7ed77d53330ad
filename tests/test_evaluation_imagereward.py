"""ImageReward from a local folder with the tiny random-weight stand-in: the ImageReward.pt -> transformers BLIP
key mapping gives what ImageReward's own BLIP code computes (written out here from the raw state dict), per-image
scores in scores.csv, mean and interval in metrics.json and the report, and a one-line refusal before any image
is read."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _evaluation_helpers import UNVERIFIED, score_preference
from conftest import REPO
from evaluation import images as im
from evaluation import metrics, preference, report
from evaluation.errors import EvaluationError
from evaluation.tiny_networks import save_tiny_imagereward

N = 6


def _ln(x, sd, prefix, eps):
    return F.layer_norm(x, x.shape[-1:], sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], eps=eps)


def _lin(x, sd, prefix):
    return x @ sd[f"{prefix}.weight"].T + sd[f"{prefix}.bias"]


def _attend(q, k, v, heads, mask=None):
    n, lq, width = q.shape
    q, k, v = (t.reshape(n, t.shape[1], heads, width // heads).transpose(1, 2) for t in (q, k, v))
    att = (q @ k.transpose(-1, -2)) / (width // heads) ** 0.5
    if mask is not None:
        att = att + (1.0 - mask[:, None, None, :].float()) * -10000.0  # med.py's extended attention mask
    return (att.softmax(-1) @ v).transpose(1, 2).reshape(n, lq, width)


def imagereward_direct(sd, med, pixels, ids, mask):
    """ImageReward.score's computation with BLIP's vit.py and med.py, from the raw ImageReward.pt state dict."""
    v = "blip.visual_encoder"
    w = sd[f"{v}.patch_embed.proj.weight"]
    x = F.conv2d(pixels, w, sd[f"{v}.patch_embed.proj.bias"], stride=w.shape[-1]).flatten(2).transpose(1, 2)
    x = torch.cat([sd[f"{v}.cls_token"].expand(len(x), -1, -1), x], dim=1) + sd[f"{v}.pos_embed"]
    heads_v = w.shape[0] // 64  # BLIP's ViTs: 64-wide heads (ViT-L: 16, the tiny one: 2)
    i = 0
    while f"{v}.blocks.{i}.norm1.weight" in sd:
        b = f"{v}.blocks.{i}"
        q, k, val = _lin(_ln(x, sd, f"{b}.norm1", 1e-6), sd, f"{b}.attn.qkv").chunk(3, dim=-1)
        x = x + _lin(_attend(q, k, val, heads_v), sd, f"{b}.attn.proj")
        x = x + _lin(F.gelu(_lin(_ln(x, sd, f"{b}.norm2", 1e-6), sd, f"{b}.mlp.fc1")), sd, f"{b}.mlp.fc2")
        i += 1
    image = _ln(x, sd, f"{v}.norm", 1e-6)
    t, eps, heads = "blip.text_encoder", med["layer_norm_eps"], med["num_attention_heads"]
    h = sd[f"{t}.embeddings.word_embeddings.weight"][ids] + sd[f"{t}.embeddings.position_embeddings.weight"][: ids.shape[1]]
    h = _ln(h, sd, f"{t}.embeddings.LayerNorm", eps)
    for layer in range(med["num_hidden_layers"]):
        b = f"{t}.encoder.layer.{layer}"
        for att, kv, m in (("attention", None, mask), ("crossattention", image, None)):
            src = h if kv is None else kv
            out = _attend(_lin(h, sd, f"{b}.{att}.self.query"), _lin(src, sd, f"{b}.{att}.self.key"),
                          _lin(src, sd, f"{b}.{att}.self.value"), heads, m)
            h = _ln(_lin(out, sd, f"{b}.{att}.output.dense") + h, sd, f"{b}.{att}.output.LayerNorm", eps)
        inter = F.gelu(_lin(h, sd, f"{b}.intermediate.dense"))
        h = _ln(_lin(inter, sd, f"{b}.output.dense") + h, sd, f"{b}.output.LayerNorm", eps)
    r = h[:, 0]
    for index in (0, 2, 4, 6, 7):  # the MLP's Linear layers; its ReLUs are commented out in ImageReward.py
        r = _lin(r, sd, f"mlp.layers.{index}")
    return (r[:, 0] - 0.16717362830052426) / 1.0333394966054072


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    return score_preference(tmp_path_factory.mktemp("imagereward"), "--imagereward_model", save_tiny_imagereward, rng_seed=2, seed_start=3,
                            count=N, batch_size=4)


def _raw(folder):
    sd = torch.load(os.path.join(folder, preference.IMAGEREWARD_FILE), weights_only=True)
    with open(os.path.join(folder, preference.IMAGEREWARD_MED_CONFIG)) as f:
        return sd, json.load(f)


def test_key_mapping_gives_blips_own_outputs(scored):
    sd, med = _raw(scored["model"])
    net, tokenizer = preference.load_imagereward_model(scored["model"])
    pixels = torch.randn(3, 3, 32, 32)
    tok = tokenizer(["a red cat", "the blue dog on a field with a square", "x"], padding="max_length",
                    truncation=True, max_length=35, return_tensors="pt")
    expected = imagereward_direct(sd, med, pixels, tok["input_ids"], tok["attention_mask"])
    with torch.no_grad():
        got = net(pixels, tok["input_ids"], tok["attention_mask"])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert len(set(np.round(got.tolist(), 5))) == 3  # the outputs move with the input


def test_a_wrong_checkpoint_is_refused(tmp_path):
    folder = save_tiny_imagereward(str(tmp_path / "ir"))
    sd, _ = _raw(folder)
    del sd["mlp.layers.7.weight"]
    torch.save(sd, os.path.join(folder, preference.IMAGEREWARD_FILE))
    with pytest.raises(EvaluationError, match=r"does not fit the expected architecture: missing \['mlp.layers.7.weight'"):
        preference.load_imagereward_model(folder)


def test_imagereward_per_image_mean_interval_and_report(scored):
    result = scored["result"]
    with open(os.path.join(scored["gen"], "scores.csv"), encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["file", "image_id", "prompt_row", "seed", "imagereward"]
    sd, med = _raw(scored["model"])
    _, tokenizer = preference.load_imagereward_model(scored["model"])
    for row in rows:
        tok = tokenizer([scored["prompts"][int(row["prompt_row"])]], padding="max_length", truncation=True,
                        max_length=35, return_tensors="pt")
        pixels = preference.ImageRewardPreprocess(32)(im.load_rgb(os.path.join(scored["gen"], row["file"])))[None]
        expected = float(imagereward_direct(sd, med, pixels, tok["input_ids"], tok["attention_mask"])[0])
        assert float(row["imagereward"]) == pytest.approx(expected, rel=1e-4, abs=1e-6)
    values = [float(r["imagereward"]) for r in rows]
    assert len(set(np.round(values, 6))) > 1
    assert result["imagereward"] == pytest.approx(np.mean(values), rel=1e-9, abs=1e-12)
    low, high = result["intervals"]["imagereward"]
    assert low < result["imagereward"] < high
    assert result["protocol"]["imagereward"]["score"].startswith("ImageReward v1.0")
    assert result["protocol"]["imagereward"]["model_is"].startswith("another network")  # not the published file
    out = scored["dir"] / "report"
    report.write_report(report.build_report(scored["gen"], scored["metrics"], scored["csv"], str(out)), str(out))
    md = (out / "report.md").read_text(encoding="utf-8")
    assert f"| gen | imagereward | {result['imagereward']:.3f} | [{low:.3f}, {high:.3f}] |" in md
    assert "ImageReward model" in md


def test_preprocess_is_shortest_side_resize_and_centre_crop():
    from PIL import Image

    arr = np.zeros((64, 96, 3), dtype=np.uint8)
    arr[:, 16:80] = 255  # a white centre square of 64x64 between black side bands
    x = preference.ImageRewardPreprocess(32)(Image.fromarray(arr))
    white = ((1 - torch.tensor(preference.CLIP_MEAN)) / torch.tensor(preference.CLIP_STD)).view(3, 1, 1)
    assert x.shape == (3, 32, 32)
    torch.testing.assert_close(x[:, 2:-2, 2:-2], white.expand(3, 28, 28), rtol=1e-3, atol=2e-2)  # bands cropped


def test_missing_imagereward_weights_refused_in_one_line_before_any_image_is_read(scored, tmp_path, monkeypatch):
    def no_image_reads(path):
        raise AssertionError(f"an image was read: {path}")

    monkeypatch.setattr(im, "load_rgb", no_image_reads)
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / preference.IMAGEREWARD_FILE).write_bytes(b"")  # no med_config.json, no tokenizer
    for folder in (str(tmp_path / "none"), str(partial)):
        args = [*UNVERIFIED, scored["gen"], "--prompts_csv", scored["csv"], "--imagereward_model", folder,
                "--no_fid", "--no_clip", "--out", str(tmp_path / "m.json"), "--num_workers", "0"]
        with pytest.raises(EvaluationError, match=r"ImageReward folder not found .*med_config.json"):
            metrics.main(args)
    proc = subprocess.run([sys.executable, "-m", "evaluation.metrics", *args], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ImageReward folder not found")
    assert not (tmp_path / "m.json").exists()

"""HPS v2.1 from a local folder with the tiny random-weight stand-in: the open_clip -> transformers CLIP key
mapping gives what open_clip's own forward computes (written out here from the raw state dict), per-image
scores in scores.csv, mean and interval in metrics.json and the report, hpsv2's resize-and-pad preprocessing,
and a one-line refusal before any image is read."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _evaluation_helpers import UNVERIFIED, score_preference, smooth_image, write_generated
from conftest import REPO
from evaluation import images as im
from evaluation import metrics, preference, report
from evaluation.errors import EvaluationError
from evaluation.tiny_networks import save_tiny_hps

N = 6


def _ln(x, sd, prefix):
    return F.layer_norm(x, x.shape[-1:], sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], eps=1e-5)


def _block(x, sd, prefix, heads, causal):
    """open_clip's ResidualAttentionBlock: nn.MultiheadAttention (fused in_proj) and a GELU MLP, pre-norm."""
    n, length, width = x.shape
    h = _ln(x, sd, f"{prefix}.ln_1")
    q, k, v = (h @ sd[f"{prefix}.attn.in_proj_weight"].T + sd[f"{prefix}.attn.in_proj_bias"]).chunk(3, dim=-1)
    q, k, v = (t.reshape(n, length, heads, width // heads).transpose(1, 2) for t in (q, k, v))
    att = (q @ k.transpose(-1, -2)) / (width // heads) ** 0.5
    if causal:
        att = att.masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), float("-inf"))
    out = (att.softmax(-1) @ v).transpose(1, 2).reshape(n, length, width)
    x = x + out @ sd[f"{prefix}.attn.out_proj.weight"].T + sd[f"{prefix}.attn.out_proj.bias"]
    h = F.gelu(_ln(x, sd, f"{prefix}.ln_2") @ sd[f"{prefix}.mlp.c_fc.weight"].T + sd[f"{prefix}.mlp.c_fc.bias"])
    return x + h @ sd[f"{prefix}.mlp.c_proj.weight"].T + sd[f"{prefix}.mlp.c_proj.bias"]


def open_clip_features(sd, cfg, pixels, ids, eot_id):
    """open_clip CLIP.encode_image / encode_text, normalised. open_clip pools the text at ``ids.argmax()``: the
    end-of-text token, the real tokenizer's highest id; the tiny tokenizer's is not, so its position is taken."""
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    x = F.conv2d(pixels, sd["visual.conv1.weight"], stride=v["patch_size"]).flatten(2).transpose(1, 2)
    cls = sd["visual.class_embedding"].expand(x.shape[0], 1, -1)
    x = _ln(torch.cat([cls, x], dim=1) + sd["visual.positional_embedding"], sd, "visual.ln_pre")
    for i in range(v["layers"]):
        x = _block(x, sd, f"visual.transformer.resblocks.{i}", v["width"] // v["head_width"], causal=False)
    image = _ln(x[:, 0], sd, "visual.ln_post") @ sd["visual.proj"]
    x = sd["token_embedding.weight"][ids] + sd["positional_embedding"][: ids.shape[1]]
    for i in range(t["layers"]):
        x = _block(x, sd, f"transformer.resblocks.{i}", t["heads"], causal=True)
    x = _ln(x, sd, "ln_final")
    text = x[torch.arange(len(ids)), (ids == eot_id).int().argmax(dim=-1)] @ sd["text_projection"]
    return F.normalize(image, dim=-1), F.normalize(text, dim=-1)


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    return score_preference(tmp_path_factory.mktemp("hps"), "--hps_model", save_tiny_hps, rng_seed=1, seed_start=7,
                            count=N, batch_size=4)


def test_key_mapping_gives_open_clips_own_outputs(scored):
    folder = scored["model"]
    sd = torch.load(os.path.join(folder, preference.HPS_FILE), weights_only=True)["state_dict"]
    with open(os.path.join(folder, preference.OPEN_CLIP_CONFIG)) as f:
        cfg = json.load(f)
    model, tokenizer, _ = preference.load_hps_model(folder)
    pixels = torch.randn(3, 3, 32, 32)
    prompts = ["a red cat", "the blue dog on a field", "x"]
    tok = tokenizer(prompts, return_tensors="pt", padding=True)
    # open_clip pads with 0 up to 77 and masks nothing but the future (causal)
    ids = torch.zeros(len(prompts), 77, dtype=torch.long)
    for i, row in enumerate(tokenizer(prompts)["input_ids"]):
        ids[i, : len(row)] = torch.tensor(row)
    image_ref, text_ref = open_clip_features(sd, cfg, pixels, ids, tokenizer.eos_token_id)
    with torch.no_grad():
        image = F.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
        text = F.normalize(model.get_text_features(**tok).pooler_output, dim=-1)
    torch.testing.assert_close(image, image_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(text, text_ref, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(image[0], image[1])  # the outputs move with the input


def test_a_wrong_checkpoint_is_refused(tmp_path):
    folder = save_tiny_hps(str(tmp_path / "hps"))
    sd = torch.load(os.path.join(folder, preference.HPS_FILE), weights_only=True)["state_dict"]
    sd["visual.something_else"] = torch.zeros(1)
    torch.save({"state_dict": sd}, os.path.join(folder, preference.HPS_FILE))
    with pytest.raises(EvaluationError, match="unexpected open_clip key visual.something_else"):
        preference.load_hps_model(folder)


def test_hps_per_image_mean_interval_and_report(scored):
    result = scored["result"]
    with open(os.path.join(scored["gen"], "scores.csv"), encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["file", "image_id", "prompt_row", "seed", "hps"]
    folder = scored["model"]
    sd = torch.load(os.path.join(folder, preference.HPS_FILE), weights_only=True)["state_dict"]
    cfg = json.load(open(os.path.join(folder, preference.OPEN_CLIP_CONFIG)))
    _, tokenizer, _ = preference.load_hps_model(folder)
    prep = preference.HpsPreprocess(32)
    for row in rows:
        prompt = scored["prompts"][int(row["prompt_row"])]
        ids = torch.zeros(1, 77, dtype=torch.long)
        tokens = tokenizer([prompt])["input_ids"][0]
        ids[0, : len(tokens)] = torch.tensor(tokens)
        pixels = prep(im.load_rgb(os.path.join(scored["gen"], row["file"])))[None]
        image, text = open_clip_features(sd, cfg, pixels, ids, tokenizer.eos_token_id)
        assert float(row["hps"]) == pytest.approx(100 * float(image @ text.T), rel=1e-4)
    values = [float(r["hps"]) for r in rows]
    assert len(set(np.round(values, 6))) > 1
    assert result["hps"] == pytest.approx(np.mean(values), rel=1e-12)
    low, high = result["intervals"]["hps"]
    assert low < result["hps"] < high
    assert result["protocol"]["hps"]["score"].startswith("HPS v2.1")
    assert result["protocol"]["hps"]["model_is"].startswith("another network")  # not the published file
    assert result["protocol"]["hps"]["model_sha256"] and result["protocol"]["hps"]["weights_file"] == preference.HPS_FILE
    out = scored["dir"] / "report"
    report.write_report(report.build_report(scored["gen"], scored["metrics"], scored["csv"], str(out)), str(out))
    md = (out / "report.md").read_text(encoding="utf-8")
    assert f"| gen | hps | {result['hps']:.3f} | [{low:.3f}, {high:.3f}] |" in md
    assert "HPS v2.1 model" in md


def test_preprocess_resizes_the_longest_side_and_pads_with_black():
    from PIL import Image

    img = Image.fromarray(np.full((20, 40, 3), 255, dtype=np.uint8))  # 40 wide, 20 high
    x = preference.HpsPreprocess(32)(img)
    assert x.shape == (3, 32, 32)
    black = (-torch.tensor(preference.CLIP_MEAN) / torch.tensor(preference.CLIP_STD)).view(3, 1)
    white = ((1 - torch.tensor(preference.CLIP_MEAN)) / torch.tensor(preference.CLIP_STD)).view(3, 1)
    torch.testing.assert_close(x[:, :8, :].reshape(3, -1), black.expand(3, 8 * 32))  # 16 rows of image, centred
    torch.testing.assert_close(x[:, 24:, :].reshape(3, -1), black.expand(3, 8 * 32))
    torch.testing.assert_close(x[:, 12, :], white.expand(3, 32), rtol=1e-4, atol=1e-4)


def test_missing_hps_weights_refused_in_one_line_before_any_image_is_read(scored, tmp_path, monkeypatch):
    def no_image_reads(path):
        raise AssertionError(f"an image was read: {path}")

    monkeypatch.setattr(im, "load_rgb", no_image_reads)
    args = [*UNVERIFIED, scored["gen"], "--prompts_csv", scored["csv"], "--hps_model", str(tmp_path / "none"),
            "--no_fid", "--no_clip", "--out", str(tmp_path / "m.json"), "--num_workers", "0"]
    with pytest.raises(EvaluationError, match=r"HPS v2.1 folder not found .*HPS_v2.1_compressed.pt"):
        metrics.main(args)
    proc = subprocess.run([sys.executable, "-m", "evaluation.metrics", *args], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: HPS v2.1 folder not found")
    assert not (tmp_path / "m.json").exists()


def test_the_published_file_is_named_so_in_metrics_json(scored, monkeypatch):
    from evaluation import weights

    sha = weights.sha256_file(os.path.join(scored["model"], preference.HPS_FILE))
    assert scored["result"]["protocol"]["hps"]["model_sha256"] == sha
    monkeypatch.setitem(weights.KNOWN_SHA256, "hps", {sha: "the standard HPS v2.1 (here: the tiny one)"})
    record = preference.load("hps", scored["model"]).record
    assert record["model_is"] == "the standard HPS v2.1 (here: the tiny one)"


def test_compare_pairs_the_hps_of_two_configurations(scored, tmp_path):
    from evaluation import compare

    rng = np.random.default_rng(5)
    other = str(tmp_path / "other")
    write_generated(other, [smooth_image(rng) for _ in range(N)], [str(i) for i in range(N)], [7 + i for i in range(N)])
    assert metrics.main([*UNVERIFIED, other, "--prompts_csv", scored["csv"], "--hps_model", scored["model"],
                         "--no_fid", "--no_clip", "--out", str(tmp_path / "m.json"), "--num_workers", "0",
                         "--seed_start", "7"]) == 0
    assert compare.main([scored["gen"], other, "--out", str(tmp_path / "c.json")]) == 0
    hps = json.loads((tmp_path / "c.json").read_text())["per_image"]["hps"]
    b = json.loads((tmp_path / "m.json").read_text())["hps"]
    assert hps["difference"]["mean"] == pytest.approx(b - scored["result"]["hps"], rel=1e-9)
    assert hps["difference"]["pairs"] == N

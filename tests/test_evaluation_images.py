import numpy as np
import pytest
import torch
from PIL import Image

from _evaluation_helpers import save_tiny_clip
from evaluation import images as im
from evaluation.clip_score import tokenize
from evaluation.errors import EvaluationError


def test_center_crop_square():
    img = Image.new("RGB", (80, 50))
    assert im.center_crop_square(img).size == (50, 50)
    assert im.center_crop_square(Image.new("RGB", (40, 40))).size == (40, 40)


def test_inception_input_shape_range_and_constant_image():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8))
    x = im.inception_input(img)
    assert x.shape == (3, 299, 299) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 255.0
    flat = im.inception_input(Image.new("RGB", (64, 64), (10, 200, 30)))
    assert torch.allclose(flat[:, 150, 150], torch.tensor([10.0, 200.0, 30.0]), atol=1e-3)


def _as_uint8(img):
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)


def test_iterate_batches_lists_mixed_sizes_and_reports_broken_files(tmp_path):
    paths = []
    for k, size in enumerate([(32, 32), (32, 32), (20, 40)]):
        paths.append(str(tmp_path / f"{k}.png"))
        Image.new("RGB", size).save(paths[-1])
    batches = list(im.iterate_batches(paths, {"raw": _as_uint8}, batch_size=2))
    assert [idx for idx, _ in batches] == [[0, 1], [2]]
    assert batches[0][1]["raw"].shape == (2, 3, 32, 32)
    (mixed_idx, mixed), = im.iterate_batches(paths, {"raw": _as_uint8}, batch_size=3)
    assert mixed_idx == [0, 1, 2] and [t.shape for t in mixed["raw"]] == [(3, 32, 32), (3, 32, 32), (3, 40, 20)]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(EvaluationError, match="cannot read image .*broken.png"):
        list(im.iterate_batches(paths + [str(tmp_path / "broken.png")], {"raw": _as_uint8}, batch_size=2))


def test_long_prompts_are_truncated_keeping_end_of_text(tmp_path):
    from transformers import AutoTokenizer

    folder = save_tiny_clip(str(tmp_path / "clip"))
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    out = tokenize(tok, ["word " * 200, "short"], max_length=77)
    assert out["input_ids"].shape == (2, 77)
    assert int(out["input_ids"][0, -1]) == tok.eos_token_id

"""python -m evaluation.tiny_networks: the offline stand-ins `make demo-sweep` scores with."""
import os

import torch

from evaluation.tiny_networks import main


def test_the_tiny_networks_load_the_way_the_real_ones_do(tmp_path, capsys):
    assert main([str(tmp_path / "nets")]) == 0
    inception = torch.jit.load(str(tmp_path / "nets" / "inception.pt"))
    features = inception(torch.zeros(2, 3, 64, 64, dtype=torch.uint8), return_features=True)
    assert features.shape == (2, 16)
    from transformers import CLIPModel, CLIPProcessor
    clip = os.path.join(tmp_path, "nets", "clip")
    CLIPModel.from_pretrained(clip)
    tokens = CLIPProcessor.from_pretrained(clip).tokenizer(["un café, 夕暮れ"])["input_ids"][0]
    assert tokens[0] == 0 and tokens[-1] == 1 and len(tokens) > 4
    from evaluation import preference

    for name in ("hps", "imagereward"):  # through the loaders of the real checkpoints
        loaded = preference.load(name, os.path.join(tmp_path, "nets", name))
        assert loaded.scorer.score_images(torch.zeros(1, 3, 32, 32), ["a red square"]).shape == (1,)

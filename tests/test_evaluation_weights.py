"""evaluation/weights.py: which network a weights file is, by its sha256, in metrics.json and the report."""

import hashlib
import json

import numpy as np
import pytest

from _evaluation_helpers import UNVERIFIED, save_tiny_inception, smooth_image, write_generated, write_reference
from evaluation import metrics, report, weights


def test_the_published_inception_hash_is_the_standard_inception():
    standard = "f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4"
    assert weights.identify("fid", standard).startswith("the standard Inception (inception-2015-12-05.pt")
    assert weights.identify("fid", "0" * 64).startswith("another network")
    assert weights.identify("clip", "0" * 64).startswith("not checked")  # ViT-L/14-336 has no listed hash
    assert weights.identify("unknown scorer", "0" * 64).startswith("not checked")


@pytest.mark.parametrize("scorer, sha, what", [
    ("clip", "a2bf730a0c7debf160f7a6b50b3aaf3703e7e88ac73de7a314903141db026dcb", "the standard CLIP ViT-L/14"),
    ("pickscore", "ef31ef6fc5ff4d9bb90dd232df4e145887ba62c5a03aa2841415f8c25f18d52e", "the standard PickScore_v1"),
    ("hps", "c57a38fb4a2f7e7c15bf00da2ea377cdf165448b4dd1052a484c215a998c9837", "the standard HPS v2.1"),
    ("imagereward", "d71dc8d4912bc633c06ab8ef1ef6a81e8199d4369f14b47b29baf1d19de561f6", "the standard ImageReward"),
])
def test_the_published_scorer_files_are_recognised(scorer, sha, what):
    assert weights.identify(scorer, sha).startswith(what)
    other = weights.identify(scorer, "0" * 64)
    assert other.startswith("not checked" if scorer == "clip" else "another network")


def test_a_folders_weights_hash_covers_every_shard(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert weights.folder_weights_sha256(str(tmp_path)) is None
    (tmp_path / "model.safetensors").write_bytes(b"abc")
    assert weights.folder_weights_sha256(str(tmp_path)) == hashlib.sha256(b"abc").hexdigest()
    (tmp_path / "model-00002.safetensors").write_bytes(b"def")
    both = weights.folder_weights_sha256(str(tmp_path))
    (tmp_path / "model-00002.safetensors").write_bytes(b"xyz")
    assert weights.folder_weights_sha256(str(tmp_path)) not in (both, hashlib.sha256(b"abc").hexdigest())


def test_metrics_and_report_say_which_inception(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    ref = write_reference(str(tmp_path / "ref"), [smooth_image(rng) for _ in range(4)])
    gen = str(tmp_path / "gen")
    write_generated(gen, [smooth_image(rng) for _ in range(4)], ["1", "2", "3", "4"], [42, 43, 44, 45])
    inception = save_tiny_inception(str(tmp_path / "inception.pt"))

    def run(name):
        out = tmp_path / name
        assert metrics.main([*UNVERIFIED, gen, "--reference_dir", ref, "--inception_weights", inception,
                             "--no_clip", "--out", str(out), "--num_workers", "0"]) == 0
        return json.loads(out.read_text())

    assert run("other.json")["protocol"]["fid"]["feature_network_is"].startswith("another network")
    tiny_sha = weights.sha256_file(inception)
    monkeypatch.setitem(weights.KNOWN_SHA256, "fid", {tiny_sha: "the standard Inception (here: the tiny one)"})
    assert run("standard.json")["protocol"]["fid"]["feature_network_is"] == "the standard Inception (here: the tiny one)"
    built = report.build_report(gen, str(tmp_path / "standard.json"), None, str(tmp_path / "rep"))
    report.write_report(built, str(tmp_path / "rep"))
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    assert "| FID feature network | the standard Inception (here: the tiny one): " in md

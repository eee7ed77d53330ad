"""--protocol clean|legacy_tensorflow against the PyPI packages themselves (clean-fid mode="clean",
torch-fidelity), with the same tiny offline feature network and the same images, square and not."""

import json
import os

import numpy as np
import pytest
import torch

from _evaluation_helpers import UNVERIFIED, noisy, save_tiny_inception, smooth_image, write_generated, write_reference
from _metric_oracles import import_oracles
from evaluation import metrics
from evaluation.weights import load_inception

N_REF, N_GEN = 24, 20


def _images(rng, n, size):
    return [smooth_image(rng).resize(size) for _ in range(n)]


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    d = tmp_path_factory.mktemp("protocols")
    rng = np.random.default_rng(0)
    out = {"dir": d, "inception": save_tiny_inception(str(d / "inception.pt"))}
    for shape, size in (("square", (64, 64)), ("wide", (80, 48))):
        ref = write_reference(str(d / f"ref_{shape}"), _images(rng, N_REF, size))
        gen_images = [noisy(im, 20, rng) for im in _images(rng, N_GEN, size)]
        gen = str(d / f"gen_{shape}")
        write_generated(gen, gen_images, [str(i) for i in range(N_GEN)], [42 + i for i in range(N_GEN)])
        out[shape] = (ref, gen)
    return out


def _ours(sets, shape, *extra):
    ref, gen = sets[shape]
    out = sets["dir"] / f"m_{shape}_{'_'.join(e.strip('-') for e in extra)}.json"
    assert metrics.main([*UNVERIFIED, gen, "--reference_dir", ref, "--inception_weights", sets["inception"],
                         "--no_clip", "--out", str(out), "--device", "cpu", "--num_workers", "0", *extra]) == 0
    return json.loads(out.read_text())


class _Features(torch.nn.Module):
    """The tiny network as clean-fid's custom_feat_extractor: float [N, 3, 299, 299] in [0, 255] -> features."""

    def __init__(self, path):
        super().__init__()
        self.net = load_inception(path)

    def forward(self, x):
        return self.net(x, return_features=True)


def _clean_fid(sets, shape):
    cleanfid, _ = import_oracles()
    ref, gen = sets[shape]
    model = _Features(sets["inception"])
    kwargs = dict(mode="clean", device=torch.device("cpu"), num_workers=0, batch_size=8, verbose=False)
    fid = cleanfid.compute_fid(gen, ref, custom_feat_extractor=model, **kwargs)
    feats = [cleanfid.get_folder_features(f, model, **kwargs) for f in (ref, gen)]
    np.random.seed(0)
    kid = cleanfid.kernel_distance(*feats)  # its own random subsets (numpy's global seed)
    return fid, kid


def _torch_fidelity(sets, shape):
    _, torch_fidelity = import_oracles()
    from torch_fidelity.datasets import ImagesPathDataset

    inception = sets["inception"]

    class TinyExtractor(torch_fidelity.FeatureExtractorBase):
        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)
            self.net = load_inception(inception)

        @staticmethod
        def get_provided_features_list():
            return ("tiny",)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return "tiny"

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return None

        def forward(self, x):  # uint8 [N, 3, H, W] at the images' own size, as torch-fidelity feeds its Inception
            return (self.net(x.float(), return_features=True),)

    if "tiny-inception" not in torch_fidelity.registry.FEATURE_EXTRACTORS_REGISTRY:
        torch_fidelity.register_feature_extractor("tiny-inception", TinyExtractor)
    # torch-fidelity's own dataset class; only PIL -> uint8 CHW (its torchvision pil_to_tensor) is given here
    to_tensor = lambda img: torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()
    ref, gen = sets[shape]
    files = lambda folder: sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".png"))
    result = torch_fidelity.calculate_metrics(
        input1=ImagesPathDataset(files(gen), transforms=to_tensor), input2=ImagesPathDataset(files(ref), transforms=to_tensor),
        cuda=False, fid=True, kid=True, kid_subset_size=N_GEN, feature_extractor="tiny-inception", batch_size=8,
        save_cpu_ram=True, verbose=False, cache=False)
    return result["frechet_inception_distance"], result["kernel_inception_distance_mean"]


NON_SQUARE = {"clean": "squashed to 299x299", "legacy_tensorflow": "stretched to 299x299 inside the network"}


@pytest.mark.parametrize("shape", ["square", "wide"])
@pytest.mark.parametrize("protocol, oracle", [("clean", _clean_fid), ("legacy_tensorflow", _torch_fidelity)])
def test_each_protocol_equals_its_pypi_package(sets, shape, protocol, oracle):
    """clean = clean-fid mode="clean"; legacy_tensorflow = torch-fidelity: FID to 1e-4, KID within its std."""
    ours = _ours(sets, shape, "--protocol", protocol, "--no_center_crop")
    fid, kid = oracle(sets, shape)
    assert ours["protocol"]["fid"]["protocol"] == protocol
    assert ours["fid"] == pytest.approx(fid, rel=1e-4) and fid > 0.1
    assert abs(ours["kid"] - kid) <= ours["kid_std"] and ours["kid_std"] > 0
    assert ours["protocol"]["fid"]["non_square"].startswith(NON_SQUARE[protocol])
    other = _ours(sets, shape, "--protocol", ({"clean", "legacy_tensorflow"} - {protocol}).pop(), "--no_center_crop")
    assert abs(other["fid"] - ours["fid"]) > 1e-3 * fid  # the two protocols differ on the same images
    cropped = _ours(sets, shape, "--protocol", protocol)  # the default crops a non-square image; the packages do not
    assert cropped["protocol"]["fid"]["non_square"].startswith("centre-cropped to a square")
    if shape == "square":
        assert cropped["fid"] == ours["fid"]
    else:
        assert abs(cropped["fid"] - fid) > 1e-3 * fid


def test_reference_stats_of_another_protocol_are_refused(sets):
    from evaluation.errors import EvaluationError

    stats = str(sets["dir"] / "clean_stats.npz")
    _ours(sets, "square", "--save_reference_stats", stats)
    _, gen = sets["square"]
    with pytest.raises(EvaluationError, match="protocol='clean', this run uses 'legacy_tensorflow'"):
        metrics.main([*UNVERIFIED, gen, "--reference_stats", stats, "--inception_weights", sets["inception"],
                      "--no_clip", "--out", str(sets["dir"] / "x.json"), "--num_workers", "0",
                      "--protocol", "legacy_tensorflow"])

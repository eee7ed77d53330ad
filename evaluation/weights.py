"""Load the feature networks from local files only; nothing is ever downloaded.

* FID: NVIDIA's TorchScript translation of the TensorFlow FID Inception (2015-12-05), file
  ``inception-2015-12-05.pt`` from :data:`INCEPTION_URL` -- the network of StyleGAN2-ADA / StyleGAN3 / EDM
  metrics and of clean-fid. It is loaded with ``torch.jit.load`` (the architecture is inside the file), so
  neither torchvision nor torch-fidelity is needed. Called as ``net(images, return_features=True)`` with
  float images in [0, 255], ``[N, 3, 299, 299]`` -> ``[N, 2048]`` pool3 features.
* CLIP: a local folder of a transformers CLIP model (``CLIPModel`` + tokenizer + image processor), e.g.
  ``openai/clip-vit-large-patch14`` saved with ``save_pretrained`` or downloaded as a Hub snapshot.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from typing import Any

import torch

from evaluation.errors import EvaluationError

INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
CLIP_DEFAULT = "openai/clip-vit-large-patch14"

# The sha256 of the public file each scorer expects, where one is published in a source that can be cited
# (each value's source next to it): a report then says whether the network used is the standard one.
# Scorers without an entry are "not checked", never "another network". Not known (no citable sha256 found,
# so not listed): CLIP ViT-L/14-336 (the CMMD paper's model). A hash covers the file as published: the same
# weights saved again (save_pretrained, another torch version) give another sha256, so get the files
# themselves (hf download) to have them recognised.
KNOWN_SHA256 = {
    "fid": {"f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4":
            f"the standard Inception ({INCEPTION_FILE}, NVIDIA's TorchScript of the TensorFlow FID Inception)"},
    # the git-lfs sha256 shown by the Hub for the copies of openai/clip-vit-large-patch14's model.safetensors
    # (huggingface.co/InvokeAI/clip-vit-large-patch14 commit 1832c15 "Copy from .../openai/clip-vit-large-patch14",
    # huggingface.co/Fluf22/openai-clip-large "Duplicate from openai/clip-vit-large-patch14"; size 1710540580)
    "clip": {"a2bf730a0c7debf160f7a6b50b3aaf3703e7e88ac73de7a314903141db026dcb":
             "the standard CLIP ViT-L/14 (openai/clip-vit-large-patch14 model.safetensors)"},
    # huggingface.co/yuvalkirstain/PickScore_v1: model.safetensors (commit dc2ed37, "Adding `safetensors` variant")
    # and pytorch_model.bin (commit 03e7c78, "Upload model"), git-lfs sha256 on their Hub file pages
    "pickscore": {"ef31ef6fc5ff4d9bb90dd232df4e145887ba62c5a03aa2841415f8c25f18d52e":
                  "the standard PickScore_v1 (yuvalkirstain/PickScore_v1 model.safetensors)",
                  "3f0cf1c6e533f478534404cb3ca6938103becbfe4312c6affc077c274a757972":
                  "the standard PickScore_v1 (yuvalkirstain/PickScore_v1 pytorch_model.bin)"},
    # huggingface.co/xswu/HPSv2 commit 697403c ("Upload 2 files"): git-lfs pointer of HPS_v2.1_compressed.pt,
    # size 1972490005
    "hps": {"c57a38fb4a2f7e7c15bf00da2ea377cdf165448b4dd1052a484c215a998c9837":
            "the standard HPS v2.1 (xswu/HPSv2 HPS_v2.1_compressed.pt)"},
    # huggingface.co/THUDM/ImageReward/blob/main/ImageReward.pt (commit 7a9e21f "Upload ImageReward.pt"), git-lfs sha256
    "imagereward": {"d71dc8d4912bc633c06ab8ef1ef6a81e8199d4369f14b47b29baf1d19de561f6":
                    "the standard ImageReward v1.0 (THUDM/ImageReward ImageReward.pt)"},
}
# Scorers with standard files of which only some are listed: another sha256 is "not checked", not "another network"
UNLISTED = {"clip": "CLIP ViT-L/14-336, the CMMD paper's model"}


def identify(scorer: str, sha256: str | None) -> str:
    """In words, which network a file of this sha256 is for ``scorer`` (fid, clip, pickscore, hps, ...)."""
    known = KNOWN_SHA256.get(scorer)
    if not known:
        return "not checked: no published sha256 for this scorer is listed in evaluation/weights.py"
    if sha256 in known:
        return known[sha256]
    if scorer in UNLISTED:
        return (f"not checked: not a listed published file (no sha256 is listed for {UNLISTED[scorer]}; a copy saved "
                f"again also differs)")
    return ("another network: not the published file (sha256 differs; the same weights saved again differ too), so "
            "scores are not comparable to published ones")


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise EvaluationError("--device cuda was asked for, but torch sees no CUDA device")
    if name not in ("cuda", "cpu") and not name.startswith("cuda:"):
        raise EvaluationError(f"unknown --device {name!r} (use auto, cuda, cuda:N or cpu)")
    return torch.device(name)


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_inception(path: str | None, device: torch.device | str = "cpu") -> torch.jit.ScriptModule:
    """Load the FID Inception TorchScript file; clear one-line errors when it is missing or of the wrong kind."""
    if not path or not os.path.isfile(path):
        raise EvaluationError(
            f"Inception weights not found: {path} -- download {INCEPTION_FILE} (TorchScript, ~100 MB) "
            f"from {INCEPTION_URL} and pass it with --inception_weights"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.10 marks TorchScript deprecated
            net = torch.jit.load(path, map_location=device)
    except Exception as exc:
        raise EvaluationError(
            f"--inception_weights {path} is not a TorchScript file ({type(exc).__name__}); expected NVIDIA's "
            f"{INCEPTION_FILE} from {INCEPTION_URL} (state dicts such as pt_inception-2015-12-05-*.pth do not work)"
        ) from None
    return net.eval()


PICKSCORE_MODEL = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"


def _require_model_folder(model_dir: str | None, what: str, get_it: str, flag: str) -> None:
    if not model_dir or not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise EvaluationError(f"{what} model folder not found (no config.json): {model_dir} -- on a machine with "
                              f"internet run {get_it}, and pass DIR with {flag}")


def check_clip_folder(model_dir: str | None) -> None:
    _require_model_folder(model_dir, "CLIP", f"CLIPModel.from_pretrained('{CLIP_DEFAULT}').save_pretrained(DIR) and "
                          f"CLIPProcessor.from_pretrained('{CLIP_DEFAULT}').save_pretrained(DIR) (or download the Hub "
                          f"repo {CLIP_DEFAULT})", "--clip_model")


def check_pickscore_folder(model_dir: str | None) -> None:
    """PickScore is a CLIP model (PickScore_v1) with the CLIP-ViT-H-14 processor, saved in one folder."""
    _require_model_folder(model_dir, "PickScore", f"CLIPModel.from_pretrained('{PICKSCORE_MODEL}').save_pretrained(DIR) "
                          f"and AutoProcessor.from_pretrained('{PICKSCORE_PROCESSOR}').save_pretrained(DIR)",
                          "--pickscore_model")


def load_clip(model_dir: str | None, device: torch.device | str = "cpu") -> tuple[Any, Any, Any]:
    """``(CLIPModel, tokenizer, image_processor)`` from a local folder, offline (a CLIP model or PickScore).

    The image processor is the PIL one on purpose (``CLIPImageProcessorPil`` in transformers >= 5, the classic
    ``CLIPImageProcessor`` before), so that scores do not depend on whether torchvision is installed.
    """
    check_clip_folder(model_dir)
    assert model_dir is not None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoTokenizer, CLIPModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bars in the CLI output

    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor  # transformers >= 5
    except ImportError:  # transformers 4.x: CLIPImageProcessor is the PIL/numpy implementation
        from transformers import CLIPImageProcessor as ImageProcessor

    try:
        model = CLIPModel.from_pretrained(model_dir, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        image_processor = ImageProcessor.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EvaluationError(f"cannot load the CLIP model from {model_dir}: {first}") from None
    return model.to(device).eval(), tokenizer, image_processor


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def folder_weights_sha256(folder: str) -> str | None:
    """The sha256 of a model folder's weights file (several shards: the sha256 of their "name sha256" lines);
    None when it holds none."""
    names = sorted(n for n in os.listdir(folder) if n.endswith(WEIGHT_SUFFIXES) and "training_args" not in n)
    if not names:
        return None
    shas = [sha256_file(os.path.join(folder, n)) for n in names]
    if len(shas) == 1:
        return shas[0]
    return hashlib.sha256("".join(f"{n} {h}\n" for n, h in zip(names, shas)).encode()).hexdigest()

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

# The sha256 of the public file each scorer expects, where one is published and was checked against
# several independent sources (k-diffusion, clean-fid users' manifests): a report then says whether the
# network used is the standard one. Scorers without an entry are "not checked", never "another network".
# Not known (no sha256 found in a source that can be cited, so none is listed and reports say "not checked"):
# CLIP ViT-L/14 and ViT-L/14-336 model.safetensors, PickScore_v1 model.safetensors, HPS_v2.1_compressed.pt,
# ImageReward.pt. metrics.json still records each file's sha256 (protocol.NAME.model_sha256) for comparison.
KNOWN_SHA256 = {
    "fid": {"f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4":
            f"the standard Inception ({INCEPTION_FILE}, NVIDIA's TorchScript of the TensorFlow FID Inception)"},
}


def identify(scorer: str, sha256: str | None) -> str:
    """In words, which network a file of this sha256 is for ``scorer`` (fid, clip, pickscore, ...)."""
    known = KNOWN_SHA256.get(scorer)
    if not known:
        return "not checked: no published sha256 for this scorer is listed in evaluation/weights.py"
    if sha256 in known:
        return known[sha256]
    return "another network: not the published file (sha256 differs), so scores are not comparable to published ones"


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

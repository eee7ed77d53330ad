"""Check --model_path before any worker starts: a diffusers folder with safetensors, or a hub id."""
import json
import os
import re
from gen_worker.errors import T2IError

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
PICKLED_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt")


class ModelPathError(T2IError):
    pass


def _check_folder(path: str) -> None:
    index_path = os.path.join(path, "model_index.json")
    if not os.path.isfile(index_path):
        raise ModelPathError(f"{path} is not a diffusers pipeline folder (no model_index.json)")
    try:
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
    except ValueError as err:
        raise ModelPathError(f"{index_path} is not valid JSON ({err})") from None
    if not isinstance(index, dict) or "_class_name" not in index:
        raise ModelPathError(f"{index_path} names no pipeline class (_class_name)")
    for component in index:
        folder = os.path.join(path, component)
        if component.startswith("_") or not os.path.isdir(folder):
            continue
        files = os.listdir(folder)
        pickled = sorted(f for f in files if f.endswith(PICKLED_WEIGHTS))
        if pickled and not any(f.endswith(".safetensors") for f in files):
            raise ModelPathError(
                f"{folder} has only pickled weights ({', '.join(pickled[:3])}); t2i-batch loads .safetensors "
                "only (convert the model with save_pretrained(..., safe_serialization=True))")


def _check_hub_cache(repo_id: str) -> None:
    """Offline (HF_HUB_OFFLINE=1), a hub id only works when its files are already cached."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() not in ("1", "true", "yes", "on"):
        return
    from huggingface_hub import try_to_load_from_cache
    if not isinstance(try_to_load_from_cache(repo_id, "model_index.json"), str):
        raise ModelPathError(f"{repo_id} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                             "download it first or give a local folder")


def check_model_path(path: str) -> str:
    """The model path to record: an absolute folder, or the hub id as given."""
    expanded = os.path.expanduser(path)
    if os.path.isdir(expanded):
        _check_folder(expanded)
        return os.path.abspath(expanded)
    if os.path.exists(expanded):
        raise ModelPathError(f"{path} is a file; --model_path takes a diffusers pipeline folder "
                             "(with model_index.json) or a hub id like org/name")
    # "org/name" is a hub id, unless "org" is a local folder: then it is a mistyped path.
    if HUB_ID.fullmatch(path) and not path.startswith(".") and not os.path.isdir(path.split("/")[0]):
        _check_hub_cache(path)
        return path
    raise ModelPathError(f"model folder not found: {path}")

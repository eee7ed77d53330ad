"""What every image says about itself, and the check that an image is one this run would make.

Each PNG carries one text chunk, key "t2i-batch", holding JSON: the sample (index, prompt row, k,
image id, seed, prompt), the model (path and content fingerprint), every recorded setting, and the
library versions. A file under a final image name counts as done only if it is a whole PNG whose
provenance matches this folder's run and that sample (check_image); `submit.py show IMAGE`
prints it and `submit.py reproduce IMAGE` makes the image again from it.
"""
import json
from typing import Any, Dict, List, Optional

from gen_worker.output.png_file import DamagedPng, chunks, texts
from gen_worker.prompts import Sample
from gen_worker.spec import JobSpec, recorded_defaults

PNG_KEY = "t2i-batch"
FORMAT = 1


def for_sample(spec: JobSpec, sample: Sample, versions: Dict[str, str]) -> Dict[str, Any]:
    # The batch the sample was made in (its first index and size): batch composition changes the
    # last bits, so `reproduce` makes the same block again.
    first = sample.index // spec.batch_size * spec.batch_size
    block = [first, min(spec.batch_size, (spec.num_samples or first + spec.batch_size) - first)]
    return {"format": FORMAT, "index": sample.index, "row": sample.row, "k": sample.k, "image_id": sample.image_id,
            "seed": sample.seed, "prompt": sample.prompt, "block": block,
            "model": {"path": spec.model_path, "fingerprint": spec.model_identity.get("fingerprint")},
            "settings": spec.recorded_settings(), "versions": versions}


def png_text(provenance: Dict[str, Any]) -> Dict[str, str]:
    return {PNG_KEY: json.dumps(provenance, ensure_ascii=False, sort_keys=True)}


def read(path: str) -> Optional[Dict[str, Any]]:
    """The provenance of a whole PNG file (None if it has none); DamagedPng if not a whole PNG."""
    with open(path, "rb") as f:
        data = f.read()
    text = texts(chunks(data)).get(PNG_KEY)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise DamagedPng(f"its {PNG_KEY} text is not JSON") from None
    return value if isinstance(value, dict) else None


def mismatch(found: Optional[Dict[str, Any]], sample: Sample, fingerprints: List[Optional[str]],
             accepted_settings: List[Dict[str, Any]]) -> Optional[str]:
    """Why an image's provenance is not that of `sample` in this run (None: it is). fingerprints
    and accepted_settings: this run's first, then those the folder accepted before."""
    if found is None:
        return "no t2i-batch provenance (made by another tool?)"
    for key in ("index", "image_id", "seed", "prompt"):
        if found.get(key) != getattr(sample, key):
            return f"made for another sample ({key} {found.get(key)!r}, expected {getattr(sample, key)!r})"
    model = found.get("model") or {}
    fingerprint = fingerprints[0] if fingerprints else None
    if fingerprint and model.get("fingerprint") not in fingerprints:
        return f"made by another model ({model.get('path')}, fingerprint {model.get('fingerprint')})"
    # A setting added since the image was made (e.g. images_per_prompt) was at its default then.
    settings = {**recorded_defaults(), **(found.get("settings") or {})}
    # The model is known by its content where it has a fingerprint: a moved folder is the same model.
    compared = [k for k in accepted_settings[0] if k != "model_path" or not fingerprint]
    if not any(all(settings.get(k) == accepted.get(k) for k in compared) for accepted in accepted_settings):
        changed = [k for k in compared if settings.get(k) != accepted_settings[0].get(k)]
        return f"made with other settings ({', '.join(changed)})"
    return None

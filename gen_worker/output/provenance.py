"""What every image says about itself, and the check that an image is one this run would make.

Each PNG carries one text chunk, key "t2i-batch", holding JSON: the sample (index, prompt row, k,
image id, seed, prompt), the model (path and content fingerprint), every recorded setting, the
library versions, and (format 2 on) the image it belongs to: its size and a hash of its encoded
pixels (png_file.image_record), so an image edited with its text chunk kept is told apart. A file
under a final image name counts as done only if it is a whole PNG whose provenance matches this
folder's run, that sample and its own pixels (mismatch); `submit.py show IMAGE` prints it and
`submit.py reproduce IMAGE` makes the image again from it.
"""
import hashlib
import json
from typing import Any, Dict, List, Optional, Tuple

from gen_worker.output.png_file import DamagedPng, chunks, image_record_of, texts
from gen_worker.prompts import Sample
from gen_worker.spec import RECORDED_SETTINGS, JobSpec, recorded_defaults

PNG_KEY = "t2i-batch"
FORMAT = 2  # 1: before the image record (pixels not bound; still accepted, counted as such)


def for_sample(spec: JobSpec, sample: Sample, versions: Dict[str, str]) -> Dict[str, Any]:
    # The batch the sample was made in (its first index and size): batch composition changes the
    # last bits, so `reproduce` makes the same block again.
    first = sample.index // spec.batch_size * spec.batch_size
    block = [first, min(spec.batch_size, (spec.num_samples or first + spec.batch_size) - first)]
    return {"format": FORMAT, "index": sample.index, "row": sample.row, "k": sample.k, "image_id": sample.image_id,
            "seed": sample.seed, "prompt": sample.prompt, "block": block,
            "model": {"path": spec.model_path, "fingerprint": spec.model_identity.get("fingerprint")},
            "settings": spec.recorded_settings(), "versions": versions}


def png_text(provenance: Dict[str, Any], image: Dict[str, Any]) -> Dict[str, str]:
    """The text chunk of the image whose image_record is `image`."""
    return {PNG_KEY: json.dumps({**provenance, "image": image}, ensure_ascii=False, sort_keys=True)}


def inspect(path: str) -> Tuple[Optional[Dict[str, Any]], Dict[str, Any]]:
    """(the provenance of a whole PNG file or None if it has none, the file's own image_record);
    DamagedPng if not a whole PNG."""
    with open(path, "rb") as f:
        return inspect_bytes(f.read())


def inspect_bytes(data: bytes) -> Tuple[Optional[Dict[str, Any]], Dict[str, Any]]:
    """inspect() of a PNG held in memory (a shard's member)."""
    found = chunks(data)
    text = texts(found).get(PNG_KEY)
    if text is None:
        return None, image_record_of(found)
    try:
        value = json.loads(text)
    except ValueError:
        raise DamagedPng(f"its {PNG_KEY} text is not JSON") from None
    return (value if isinstance(value, dict) else None), image_record_of(found)


def read(path: str) -> Optional[Dict[str, Any]]:
    """The provenance of a whole PNG file (None if it has none); DamagedPng if not a whole PNG."""
    return inspect(path)[0]


def pixel_mismatch(path: str) -> Optional[str]:
    """Why a whole PNG's pixels are not the ones its provenance was written with (None: they are, or it has
    no image record to tell: no provenance, or format 1)."""
    with open(path, "rb") as f:
        return pixel_mismatch_of(f.read())


def pixel_mismatch_of(data: bytes) -> Optional[str]:
    """pixel_mismatch() of a PNG held in memory (a shard's member)."""
    return _image_mismatch(*inspect_bytes(data))


def _image_mismatch(found: Optional[Dict[str, Any]], image: Dict[str, Any]) -> Optional[str]:
    said = (found or {}).get("image")
    if not isinstance(said, dict):
        return None
    if (said.get("width"), said.get("height")) != (image["width"], image["height"]):
        return f"is {image['width']}x{image['height']}, its provenance says {said.get('width')}x{said.get('height')}"
    if said.get("sha256") != image["sha256"]:
        return "its pixels are not the ones its provenance was written with (edited after it was made?)"
    return None


class NotThisRun(ValueError):
    """An image is not one this folder's run would make; the message says why."""


def made_with(found: Optional[Dict[str, Any]], image: Dict[str, Any], sample: Sample,
              fingerprints: List[Optional[str]], accepted_settings: List[Dict[str, Any]]) -> Tuple[int, Optional[str]]:
    """Which of the accepted settings (an index) and model fingerprints an image (its provenance `found` and its
    own image_record) was made with, as `sample` of this run; NotThisRun if it is not such an image.
    fingerprints and accepted_settings: this run's first, then those the folder accepted before."""
    if found is None:
        raise NotThisRun("no t2i-batch provenance (made by another tool?)")
    edited = _image_mismatch(found, image)
    if edited:
        raise NotThisRun(edited)
    said = {"row": found.get("index"), "k": 0, **found}  # made before --images_per_prompt: row = index, k = 0
    for key in ("index", "row", "k", "image_id", "seed", "prompt"):
        if said.get(key) != getattr(sample, key):
            raise NotThisRun(f"made for another sample ({key} {said.get(key)!r}, expected {getattr(sample, key)!r})")
    model = found.get("model") or {}
    fingerprint = fingerprints[0] if fingerprints else None
    if fingerprint and model.get("fingerprint") not in fingerprints:
        raise NotThisRun(f"made by another model ({model.get('path')}, fingerprint {model.get('fingerprint')})")
    # A setting added since the image was made (e.g. images_per_prompt) was at its default then.
    settings = {**recorded_defaults(), **(found.get("settings") or {})}
    # The model is known by its content where it has a fingerprint: a moved folder is the same model.
    compared = [k for k in accepted_settings[0] if k != "model_path" or not fingerprint]
    for index, accepted in enumerate(accepted_settings):
        if all(settings.get(k) == accepted.get(k) for k in compared):
            return index, model.get("fingerprint") if fingerprint else fingerprint
    changed = [k for k in compared if settings.get(k) != accepted_settings[0].get(k)]
    raise NotThisRun(f"made with other settings ({', '.join(changed)})")


def mismatch(found: Optional[Dict[str, Any]], image: Dict[str, Any], sample: Sample,
             fingerprints: List[Optional[str]], accepted_settings: List[Dict[str, Any]]) -> Optional[str]:
    """Why an image is not that of `sample` in this run (None: it is); see made_with."""
    try:
        made_with(found, image, sample, fingerprints, accepted_settings)
    except NotThisRun as err:
        return str(err)
    return None


_KEY_JSON = json.JSONEncoder(ensure_ascii=False, sort_keys=True)  # one for every key (json.dumps makes one per call)


def _short_hash(value: Any) -> str:
    return hashlib.sha256(_KEY_JSON.encode(value).encode("utf-8")).hexdigest()[:24]


def row_key(manifest_row: Dict[str, Any]) -> str:
    """What a verification vouches for about the sample: its whole manifest row (id, prompt, seed, row, k, the
    prompts file's other columns), as a short hash. Values as text, as the manifest holds them (a row of
    manifest.csv, or record.manifest_row of a Sample: the same key)."""
    row = {k: str(v) for k, v in manifest_row.items() if str(v)}  # an empty cell is an absent column
    row.setdefault("row", row["index"])  # a manifest from before --images_per_prompt
    row.setdefault("k", "0")
    return _short_hash(row)


def settings_key(settings: Dict[str, Any], fingerprint: Optional[str]) -> str:
    """What a verification vouches for about how the image was made: the recorded settings as mismatch()
    compares them (a setting added since at its default; model_path only where the model has no
    fingerprint) and the model's fingerprint, as a short hash."""
    settings = {**recorded_defaults(), **settings}
    return _short_hash([{k: settings.get(k) for k in RECORDED_SETTINGS if k != "model_path" or not fingerprint},
                        fingerprint])

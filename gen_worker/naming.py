"""File names: from an image id to a safe file stem, and from a sample to its image path (per layout).

Ids come from user CSVs, so they may hold path separators, '..', control characters or
anything else. A safe id is used as is; any other id gets a deterministic safe stem (a readable
slug plus a short hash of the original), so no id can ever write outside the output folder.
"""
import hashlib
import re

PAD_DIGITS = 6
# A stem we accept verbatim: ASCII letters, digits and a few separators, not starting with a dot.
_SAFE_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")
# A whole number, as written by hand or as a float column ("12.0"); ASCII digits only ('²'.isdigit()).
_WHOLE_NUMBER = re.compile(r"[0-9]+(\.0+)?", re.ASCII)
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._+-]+")
_IMAGE_NAME = re.compile(r"(?P<stem>.+)_seed(?P<seed>[0-9]+)\.png")
TEMP_SUFFIX = ".tmp"


def file_stem(image_id: str) -> str:
    """The stem used in file names for a CSV image id (raises ValueError for an empty id)."""
    if image_id == "" or image_id.strip() == "":
        raise ValueError("empty image id")
    if _WHOLE_NUMBER.fullmatch(image_id):  # "7", "007", "7.0" (a spreadsheet's float): 000007
        return image_id.split(".")[0].zfill(PAD_DIGITS)
    if _SAFE_STEM.fullmatch(image_id) and ".." not in image_id:
        return image_id
    slug = _UNSAFE_RUN.sub("_", image_id).strip("._-")[:40] or "id"
    digest = hashlib.sha256(image_id.encode("utf-8")).hexdigest()[:10]
    return f"{slug}-{digest}"


def image_name(stem: str, seed: int) -> str:
    return f"{stem}_seed{seed}.png"


def parse_image_name(name: str) -> tuple[str, int] | None:
    """image_name's inverse: '000123_seed42.png' -> ('000123', 42); None for any other name
    (hidden and temporary files included). The last _seed<digits> wins."""
    match = None if name.startswith(".") else _IMAGE_NAME.fullmatch(name)
    return (match.group("stem"), int(match.group("seed"))) if match else None


def temp_name(final_name: str, pid: int) -> str:
    """A hidden name that is not an image, so FID tools globbing *.png never see a partial file."""
    return f".{final_name}.{pid}{TEMP_SUFFIX}"


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


LAYOUTS = ("flat", "geneval")
# GenEval's folder layout: <row:05d>/metadata.jsonl (the prompt's JSON line) and <row:05d>/samples/<k:04d>.png.
GENEVAL_METADATA = "metadata.jsonl"
GENEVAL_SAMPLES = "samples"
_GENEVAL_IMAGE = re.compile(rf"[0-9]{{5,}}/{GENEVAL_SAMPLES}/[0-9]{{4,}}\.png")


def sample_path(layout: str, stem: str, seed: int, row: int, k: int) -> str:
    """Where a sample's image goes, relative to the output folder: the one rule for each layout."""
    if layout == "flat":
        return image_name(stem, seed)
    if layout == "geneval":
        return f"{prompt_folder(row)}/{GENEVAL_SAMPLES}/{k:04d}.png"
    raise ValueError(f"unknown layout {layout!r}")


def prompt_folder(row: int) -> str:
    """GenEval layout: the folder of prompt row `row` (it holds metadata.jsonl and samples/)."""
    return f"{row:05d}"


def is_nested_image_path(relative: str) -> bool:
    """A path (with '/') of an image in the GenEval layout; hidden and temporary files are not."""
    return _GENEVAL_IMAGE.fullmatch(relative) is not None

"""The model's identity and completeness, read from its files before any worker starts.

identify_model() hashes model_index.json, each component's small files (configs, tokenizers) and
the full content of each .safetensors file: a fine-tuned checkpoint copied over the old one has
the same names, shapes and header, so nothing less tells them apart. A weight file's hash is
computed once and kept by (path, size, mtime, inode) in the user's cache
(~/.cache/t2i-batch/weight_hashes.json), so reruns and workers take milliseconds; the first look
at SD 1.5's 4 GB takes seconds (docs/integrity.md, "Model identity"). No torch import. It also refuses what
cannot load: an unknown pipeline or component class, a missing or truncated weight file, a
sharded component missing a shard. The fingerprint goes into the folder's settings record and
into every image: a rerun whose model content differs is refused, naming the component.
"""
import ast
import hashlib
import importlib.util
import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Set

from gen_worker.errors import T2IError

SMALL_FILE_BYTES = 16 * 1024 * 1024  # configs, tokenizers: hashed whole
IGNORED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5", ".onnx", ".md", ".png", ".jpg", ".gitattributes")
LIBRARIES = ("diffusers", "transformers")


class ModelCheckError(T2IError):
    pass


@dataclass
class ModelIdentity:
    fingerprint: str  # over every component below
    components: Dict[str, str] = field(default_factory=dict)  # component -> hash of its files
    revision: Optional[str] = None  # a hub snapshot's commit


def _safetensors_header(path: str) -> bytes:
    """The header bytes of a .safetensors file; ModelCheckError when the file is cut short."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelCheckError(f"{path} is truncated ({size} bytes): not a safetensors file")
        (length,) = struct.unpack("<Q", head)
        header = f.read(length) if length <= size else b""
    try:
        entries = json.loads(header)
        end = max((e["data_offsets"][1] for k, e in entries.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError):
        raise ModelCheckError(f"{path} has no readable safetensors header: damaged or truncated") from None
    if 8 + length + end > size:
        raise ModelCheckError(f"{path} is truncated: {size} bytes, its header needs {8 + length + end}")
    return header


def weight_keys(path: str) -> Set[str]:
    """The tensor names a .safetensors file holds (from its header)."""
    return {k for k in json.loads(_safetensors_header(path)) if k != "__metadata__"}


def _hash_cache_path() -> str:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "t2i-batch", "weight_hashes.json")


class _WeightHashes:
    """sha256 of weight files, remembered by (real path, size, mtime, inode): a file replaced or
    rewritten in place gets another mtime (or inode) and is hashed again."""

    def __init__(self) -> None:
        self.path = _hash_cache_path()
        try:
            with open(self.path, encoding="utf-8") as f:
                self.known: Dict[str, List[Any]] = json.load(f)
        except (OSError, ValueError):
            self.known = {}
        self.changed = False

    def sha256(self, path: str) -> str:
        st = os.stat(path)
        key, stamp = os.path.realpath(path), [st.st_size, st.st_mtime_ns, st.st_ino]
        entry = self.known.get(key)
        if entry and entry[:3] == stamp:
            return str(entry[3])
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(8 << 20), b""):
                digest.update(block)
        self.known[key] = [*stamp, digest.hexdigest()]
        self.changed = True
        return digest.hexdigest()

    def save(self) -> None:
        if not self.changed:
            return
        try:  # a cache: a read-only home only makes the next look slower
            from gen_worker.atomic_files import replace_json
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            replace_json(self.path, self.known)
        except OSError:
            pass


def _component_hash(folder: str, hashes: _WeightHashes) -> str:
    digest = hashlib.sha256()
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(root, name)
            if name.endswith(IGNORED_SUFFIXES) or name.startswith("."):
                continue
            digest.update(os.path.relpath(path, folder).encode() + b"\0")
            if name.endswith(".safetensors"):
                _safetensors_header(path)  # refuses a truncated file
                digest.update(hashes.sha256(path).encode())
            elif os.path.getsize(path) <= SMALL_FILE_BYTES:
                with open(path, "rb") as f:
                    digest.update(f.read())
            else:
                digest.update(str(os.path.getsize(path)).encode())
    return digest.hexdigest()[:16]


def _check_shards(folder: str) -> None:
    for name in os.listdir(folder):
        if name.endswith(".safetensors.index.json"):
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                shards = set(json.load(f).get("weight_map", {}).values())
            missing = sorted(s for s in shards if not os.path.isfile(os.path.join(folder, s)))
            if missing:
                raise ModelCheckError(f"{folder} lacks weight shards listed in {name}: {', '.join(missing[:3])}")


def diffusers_folder() -> Optional[str]:
    """Where the installed diffusers' source is (None: not installed). Importing diffusers imports
    torch (seconds), so the submitter reads its source instead."""
    found = importlib.util.find_spec("diffusers")
    folders = (found.submodule_search_locations or []) if found else []
    return folders[0] if folders else None


def source_strings(path: str) -> Optional[Set[str]]:
    """Every string constant of a Python file (a lazy __init__ lists its exports as strings); None
    when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError):
        return None
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def _init_file(library: str) -> Optional[str]:
    """The __init__.py of a library, or of a diffusers pipeline module named as a library in
    model_index.json (SD 1.5 lists its safety checker as ["stable_diffusion", ...])."""
    if library in LIBRARIES:
        found = importlib.util.find_spec(library)
        return found.origin if found else None
    root = diffusers_folder()
    init = os.path.join(root, "pipelines", library, "__init__.py") if root else ""
    return init if library.isidentifier() and os.path.isfile(init) else None


def _exported_names(library: str) -> Optional[Set[str]]:
    """Class names a library exports, without importing torch (None: cannot tell, let loading decide)."""
    if library == "transformers":
        try:
            import transformers  # lazy: 0.6 s, no torch
            return set(getattr(transformers, "_class_to_module", {})) or None
        except ImportError:
            return None
    init = _init_file(library)
    return source_strings(init) if init else None


def _check_classes(path: str, index: dict) -> None:
    wanted = [("pipeline", "diffusers", index["_class_name"])]
    wanted += [(name, value[0], value[1]) for name, value in index.items()
               if not name.startswith("_") and isinstance(value, list) and len(value) == 2 and value[0]]
    for component, library, cls in wanted:
        if library not in LIBRARIES and _init_file(library) is None:
            raise ModelCheckError(f"{path}: {component} comes from {library}, which t2i-batch does not load "
                                  f"(only {' and '.join(LIBRARIES)}; no code from the model is run)")
        names = _exported_names(library)
        if names is not None and cls not in names:
            raise ModelCheckError(f"{path}: {component} is a {cls}, which the installed {library} does not have "
                                  "(a newer version needed?)")


def identify_model(path: str) -> ModelIdentity:
    """Check a local diffusers folder (already known to have a model_index.json) and fingerprint it."""
    with open(os.path.join(path, "model_index.json"), "rb") as f:
        raw_index = f.read()
    index = json.loads(raw_index)
    _check_classes(path, index)
    components: Dict[str, str] = {"model_index.json": hashlib.sha256(raw_index).hexdigest()[:16]}
    hashes = _WeightHashes()
    for name, value in sorted(index.items()):
        if name.startswith("_") or not (isinstance(value, list) and value and value[0]):
            continue
        folder = os.path.join(path, name)
        if not os.path.isdir(folder):
            raise ModelCheckError(f"{path}: model_index.json names a {name} component, but {folder} is missing")
        _check_shards(folder)
        components[name] = _component_hash(folder, hashes)
    hashes.save()
    total = hashlib.sha256(json.dumps(components, sort_keys=True).encode()).hexdigest()[:16]
    return ModelIdentity(total, components, _snapshot_revision(path))


def _snapshot_revision(path: str) -> Optional[str]:
    """A Hugging Face cache snapshot folder is named by its commit: .../snapshots/<sha>."""
    parent, name = os.path.split(os.path.normpath(path))
    return name if os.path.basename(parent) == "snapshots" and len(name) == 40 else None


def changed_components(old: Dict[str, str], new: Dict[str, str]) -> List[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def local_folder(model_path: str) -> Optional[str]:
    """A checked --model_path's folder: itself, or a hub id's cached snapshot (None: not downloaded yet)."""
    if os.path.isdir(model_path):
        return model_path
    try:
        from huggingface_hub import snapshot_download
        return str(snapshot_download(model_path, local_files_only=True))
    except Exception:  # not in the cache (huggingface_hub raises several types for that)
        return None


def identify(model_path: str) -> Dict[str, Any]:
    """The identity of a checked --model_path (model_source.check_model_path) for the spec:
    {"fingerprint", "components", "revision"}. A hub id is identified by its cached snapshot; one
    not downloaded yet has no identity until a worker downloads it ({})."""
    folder = local_folder(model_path)
    if folder is None:
        return {}
    found = identify_model(folder)
    return {"fingerprint": found.fingerprint, "components": found.components, "revision": found.revision}

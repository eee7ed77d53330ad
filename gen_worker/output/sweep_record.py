"""The record of a sweep: which configurations a sweep folder holds, read and written in one place.

    sweep_top/
      sweep.json                      this record: the swept settings and every configuration
      guidance_scale-1.5/             one complete normal run folder per configuration
        generation_settings.json, manifest.csv, {image_id}_seed{seed}.png, ...
      guidance_scale-3/
      ...

The sweep generator (submit.py --sweep) writes it, evaluation/ reads it. Every configuration folder is a
plain run folder (same prompts and seeds in all of them), so anything that reads one run reads one
configuration.

sweep.json::

    {"format": "t2i-batch-sweep-v1",
     "axes": {"guidance_scale": ["1.5", "3"]},
     "configurations": [{"name": "guidance_scale-1.5", "folder": "guidance_scale-1.5",
                         "overrides": {"guidance_scale": "1.5"}}, ...]}

Values are kept as the user gave them (strings); configurations are in sweep order.
"""
import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from gen_worker.errors import T2IError
from gen_worker.atomic_files import read_json_if_any, replace_json

SWEEP_FILE = "sweep.json"
SWEEP_FORMAT = "t2i-batch-sweep-v1"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_NAME = 200  # below the usual 255-byte limit of a file name


class DamagedSweepRecord(T2IError):
    """sweep.json is not what a sweep wrote (or would not describe folders inside the sweep)."""


@dataclass(frozen=True)
class SweepConfiguration:
    name: str
    folder: str  # relative to the sweep's top folder
    overrides: dict[str, str]  # setting -> value as given on the command line


@dataclass(frozen=True)
class SweepRecord:
    axes: dict[str, list[str]]
    configurations: list[SweepConfiguration]

    def folder(self, top: str, configuration: SweepConfiguration) -> str:
        return os.path.join(top, configuration.folder)


def configuration_name(overrides: Mapping[str, str]) -> str:
    """A stable, readable folder name for one configuration: ``setting-value`` parts joined by ``__``,
    in the order given (``guidance_scale-1.5__num_inference_steps-20``).

    A path (a setting named ``*_path``, e.g. model_path) gives its last component; every character outside
    ``[A-Za-z0-9._-]`` becomes ``_``, and then a short hash of the value follows, so that values that differ
    only there ("blurry, ugly" and "blurry; ugly", or two non-Latin prompts) keep distinct names. A name
    longer than 200 characters is cut and gets a short hash of the full one, so it stays unique.
    """
    if not overrides:
        raise ValueError("a configuration needs at least one setting")
    parts = []
    for setting, value in overrides.items():
        value = str(value)
        if setting.endswith("_path"):
            value = os.path.basename(value.rstrip("/")) or value
        readable = _UNSAFE.sub("_", value)
        if readable != value:
            readable += "-" + _digest(value, 8)
        parts.append(f"{setting}-{readable}")
    name = "__".join(parts)
    if len(name) > _MAX_NAME:
        name = f"{name[:_MAX_NAME - 11]}-{_digest(name, 10)}"
    return name


def _digest(text: str, length: int) -> str:
    # surrogatepass: a value is named before its flag's checks refuse text that is not valid UTF-8
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:length]


def _check_folder(folder: str) -> None:
    parts = folder.replace("\\", "/").split("/")
    if not folder or os.path.isabs(folder) or any(p in ("", ".", "..") for p in parts):
        raise DamagedSweepRecord(f"sweep configuration folder {folder!r} is not a plain relative folder")


def _configuration(entry: Any) -> SweepConfiguration:
    if not isinstance(entry, dict) or not isinstance(entry.get("overrides"), dict):
        raise DamagedSweepRecord(f"sweep configuration {entry!r} lacks its overrides")
    overrides = {str(k): str(v) for k, v in entry["overrides"].items()}
    name = str(entry.get("name") or configuration_name(overrides))
    folder = str(entry.get("folder") or name)
    _check_folder(folder)
    return SweepConfiguration(name=name, folder=folder, overrides=overrides)


def _record(axes: Any, configurations: Any) -> SweepRecord:
    if not isinstance(axes, dict) or not isinstance(configurations, list) or not configurations:
        raise DamagedSweepRecord("a sweep record needs its axes and at least one configuration")
    record = SweepRecord(axes={str(k): [str(v) for v in values] for k, values in axes.items()},
                         configurations=[_configuration(c) for c in configurations])
    for what in ("name", "folder"):
        values = [getattr(c, what) for c in record.configurations]
        if len(set(values)) != len(values):
            raise DamagedSweepRecord(f"two sweep configurations have the same {what}: {values}")
    return record


def write_sweep_record(top: str, axes: Mapping[str, Sequence[str]],
                       configurations: Sequence[Mapping[str, Any]]) -> SweepRecord:
    """Write ``top/sweep.json`` atomically. Each configuration: ``overrides`` (setting -> value as given),
    ``name`` and ``folder`` (relative; both default to configuration_name(overrides)). Returns the record."""
    record = _record({k: list(v) for k, v in axes.items()}, [dict(c) for c in configurations])
    replace_json(os.path.join(top, SWEEP_FILE), {
        "format": SWEEP_FORMAT,
        "axes": record.axes,
        "configurations": [{"name": c.name, "folder": c.folder, "overrides": c.overrides}
                           for c in record.configurations],
    })
    return record


def read_sweep_record(top: str) -> SweepRecord | None:
    """The sweep record of ``top``, or None when ``top`` is no sweep (a plain run folder)."""
    path = os.path.join(top, SWEEP_FILE)
    if not os.path.exists(path):
        return None
    data = read_json_if_any(path)
    if not isinstance(data, dict) or data.get("format") != SWEEP_FORMAT:
        raise DamagedSweepRecord(f"{path} is not a sweep record t2i-batch wrote (format {SWEEP_FORMAT})")
    try:
        return _record(data.get("axes"), data.get("configurations"))
    except DamagedSweepRecord as err:
        raise DamagedSweepRecord(f"{path}: {err}") from None

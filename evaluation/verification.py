"""Verification before scoring: every generated image must be one its folder's run made.

Each image's embedded provenance (gen_worker/output/provenance.py) must match the folder's record: its
manifest sample (index, row, id, seed, prompt), the recorded settings and model (those --allow_settings_change
accepted too) and its own pixels -- the resume check's own test (provenance.made_with), on the PNG file or on
its member of a tar shard. An image that fails is refused in one line naming it, before any network is
loaded, unless ``--allow_unverified``, which metrics.json records (with the count) and the report shows.
A folder without a settings record (another tool's images) cannot be verified: all of its images fail.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from evaluation.generated import GeneratedImage, read_png_bytes
from gen_worker.output import layout, provenance
from gen_worker.output.png_file import DamagedPng
from gen_worker.output.record import DamagedOutputDir, manifest_sample, read_manifest, read_settings_record


def folder_record(folder: str) -> tuple[list[Any], list[dict[str, Any]]] | None:
    """(model fingerprints, accepted settings) of a run folder, this run's first, as prepare.py accepts them
    on resume; None without a settings record."""
    if not os.path.isfile(os.path.join(folder, layout.SETTINGS_FILE)):
        return None
    record = read_settings_record(folder)
    history = record.get("history", [])
    fingerprints = [record.get("model", {}).get("fingerprint")] + [
        h.get("model", {}).get("fingerprint") for h in history]
    return fingerprints, [record.get("settings", {})] + [h["settings"] for h in reversed(history)]


def unverified(folder: str, images: Sequence[GeneratedImage]) -> list[tuple[GeneratedImage, str]]:
    """(image, why) for each image of ``folder`` that is not verified as its run's, in listing order."""
    try:
        record = folder_record(folder)
        rows = {row["file_name"]: row for row in read_manifest(folder).values()}
    except DamagedOutputDir as err:
        return [(g, f"its folder's record cannot be read ({err})") for g in images]
    if record is None:
        return [(g, f"its folder has no {layout.SETTINGS_FILE} (not made by t2i-batch?)") for g in images]
    fingerprints, accepted = record
    failed = []
    for g in images:
        row = rows.get(g.name or os.path.basename(g.path))
        try:
            if row is None:
                raise provenance.NotThisRun(f"not a sample of its folder's {layout.MANIFEST_FILE}")
            found, image = provenance.inspect_bytes(read_png_bytes(g))
            provenance.made_with(found, image, manifest_sample(row), fingerprints, accepted)
        except DamagedPng as err:
            failed.append((g, f"not a whole PNG: {err}"))
        except OSError as err:
            failed.append((g, f"unreadable: {err.strerror}"))
        except provenance.NotThisRun as err:
            failed.append((g, str(err)))
    return failed

"""Which GPUs this machine shows, found without importing torch (the submitter must start fast)."""
import os
import subprocess
from typing import Sequence

from gen_worker.errors import UsageError


def visible_gpus() -> list[str]:
    """GPU ids (or UUIDs) from CUDA_VISIBLE_DEVICES when set, else from nvidia-smi; [] when none."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        ids = [part.strip() for part in listed.split(",") if part.strip()]
        # CUDA stops at the first invalid entry, conventionally -1 ("hide every GPU").
        return ids[:ids.index("-1")] if "-1" in ids else ids
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def select_gpus(ids: Sequence[str], visible: Sequence[str]) -> list[str]:
    """The CUDA_VISIBLE_DEVICES value of each --gpu_ids entry: ids are indices into `visible` (as torch
    counts GPUs), and each worker gets the visible entry at its index, kept as is (an id, UUID or MIG id)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    source = f"CUDA_VISIBLE_DEVICES={listed}" if listed else "nvidia-smi"
    chosen = []
    for gpu in ids:
        if not gpu.isdigit():
            raise UsageError(f"--gpu_ids {gpu}: GPU ids are indices into the visible GPUs "
                             f"(0 to {len(visible) - 1}, {source})")
        if int(gpu) >= len(visible):
            raise UsageError(f"--gpu_ids {gpu}: there are {len(visible)} visible GPUs ({source}): GPU ids are "
                             f"indices 0 to {len(visible) - 1} into them")
        chosen.append(visible[int(gpu)])
    return chosen

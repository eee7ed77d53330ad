"""Which GPUs this machine shows, found without importing torch (the submitter must start fast)."""
import os
import subprocess


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

"""Which GPUs this machine shows, found without importing torch (the submitter must start fast)."""
import os
import subprocess
from typing import Dict, List, Optional, Sequence

from gen_worker.errors import UsageError


def _nvidia_smi(query: str) -> Optional[List[str]]:
    """The lines nvidia-smi answers --query-gpu=<query> with; None when it cannot run or fails."""
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def visible_gpus() -> list[str]:
    """GPU ids (or UUIDs) from CUDA_VISIBLE_DEVICES when set, else from nvidia-smi; [] when none."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        ids = [part.strip() for part in listed.split(",") if part.strip()]
        # CUDA stops at the first invalid entry, conventionally -1 ("hide every GPU").
        return ids[:ids.index("-1")] if "-1" in ids else ids
    return _nvidia_smi("index") or []


def compute_capabilities(gpu_ids: Sequence[str]) -> List[str]:
    """The compute capability ("8.6") of each of these GPUs (nvidia-smi indices or UUIDs) that nvidia-smi
    reports; the ones it does not are left out ([] when it cannot run)."""
    caps: Dict[str, str] = {}
    for line in _nvidia_smi("index,uuid,compute_cap") or []:
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            caps[parts[0]] = caps[parts[1]] = parts[2]
    return [caps[g] for g in gpu_ids if g in caps]


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

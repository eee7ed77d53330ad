"""Scoring on SLURM: ``python -m evaluation.metrics ... --cluster slurm --gpus N`` (submit.py's SLURM flags).

Every group of images (the reference images read from --reference_dir, then each configuration's: PNG files
or the members of its tar shards, in evaluation.generated's listing order) is cut
into N contiguous slices of whole batches; array task k extracts slice k of every group (Inception features,
CLIP embeddings, per-image scores: evaluation.metrics.Extractor) into ``OUT.parts/<fingerprint>/<group>/<k>-of-<N>.npz``.
The submitting process waits, joins the slices in order and computes every score from them as a single
process does (the same features in the same order). A rerun with the same settings and N queues only the
tasks whose slices are missing; other settings (images, networks, protocol, ...) get another fingerprint.
The jobs are queued with gen_worker/slurm/submit.py's own parameters and executor.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from evaluation.errors import EvaluationError

PATH_ARGS = ("generated", "reference_dir", "reference_list", "reference_stats", "prompts_csv", "inception_weights",
             "clip_model", "pickscore_model", "hps_model", "imagereward_model", "out", "save_reference_stats")


@dataclass(frozen=True)
class Slice:
    index: int
    num_tasks: int
    parts_dir: str


def slice_bounds(n: int, k: int, num_tasks: int, batch_size: int) -> tuple[int, int]:
    """Slice k of n images in whole batches: the network sees the very batches one process gives it, so the
    features are the same to the bit on the same hardware (another batch mix changes float32 rounding)."""
    batches = -(-n // batch_size)
    return min(n, batches * k // num_tasks * batch_size), min(n, batches * (k + 1) // num_tasks * batch_size)


def part_file(parts_dir: str, group: str, k: int, num_tasks: int) -> str:
    return os.path.join(parts_dir, group, f"{k:05d}-of-{num_tasks:05d}.npz")


def extract_slice(task: Slice, groups: Sequence[tuple[str, Sequence[Any], list[str] | None, dict[str, Any]]],
                  extractor: Any) -> None:
    """In a SLURM task: slice ``task.index`` of every group, each saved once (a requeued task skips what is saved)."""
    for name, paths, prompts, transforms in groups:
        path = part_file(task.parts_dir, name, task.index, task.num_tasks)
        if os.path.isfile(path):
            continue
        lo, hi = slice_bounds(len(paths), task.index, task.num_tasks, extractor.batch_size)
        arrays = extractor.extract(paths[lo:hi], prompts[lo:hi] if prompts is not None else None, transforms,
                                   f"{name} {task.index}/{task.num_tasks}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"  # not .npz: a half-written slice is never taken for one
        with open(tmp, "wb") as f:
            np.savez(f, images=np.asarray(hi - lo), **arrays)
        os.replace(tmp, path)


class ExtractTask:
    """What each array task runs (pickled by submitit): the metrics' own preparation, then its slice."""

    def __init__(self, args: argparse.Namespace, parts_dir: str, num_tasks: int):
        self.args, self.parts_dir, self.num_tasks = args, parts_dir, num_tasks

    def __call__(self, k: int) -> int:
        from evaluation import metrics

        metrics.run(self.args, task=Slice(k, self.num_tasks, self.parts_dir))
        return k


def _joined(parts_dir: str, group: str, num_tasks: int) -> dict[str, np.ndarray]:
    pieces: dict[str, list[np.ndarray]] = {}
    for k in range(num_tasks):
        with np.load(part_file(parts_dir, group, k, num_tasks)) as data:
            for key in data.files:
                if key != "images":
                    pieces.setdefault(key, []).append(data[key])
    return {key: np.concatenate(v) for key, v in pieces.items()}


def extract_on_slurm(args: argparse.Namespace, argv: Sequence[str] | None,
                     groups: Sequence[tuple[str, Sequence[Any], list[str] | None, dict[str, Any]]],
                     fingerprint: str) -> dict[str, dict[str, np.ndarray]]:
    """Queue the slices that are missing, wait for them, and return every group's arrays joined in order."""
    import submitit

    from gen_worker.errors import T2IError
    from gen_worker.flags import checked_values
    from gen_worker.slurm import submit as slurm_submit
    from gen_worker.slurm.commands import max_array_size
    from gen_worker.slurm.options import SlurmOptions

    opts = SlurmOptions(**checked_values(SlurmOptions, args))
    if opts.slurm_mode != "array":
        raise EvaluationError("--cluster slurm scoring runs as a job array: drop --slurm_mode tasks")
    num_tasks = opts.num_tasks
    parts_dir = os.path.join(os.path.abspath(args.out) + ".parts", fingerprint)
    missing = [k for k in range(num_tasks)
               if any(not os.path.isfile(part_file(parts_dir, name, k, num_tasks)) for name, *_ in groups)]
    if missing:
        task_args = copy.copy(args)  # the tasks start in the checkout, not here: every path made absolute
        for name in PATH_ARGS:
            if getattr(task_args, name, None):
                setattr(task_args, name, os.path.abspath(getattr(task_args, name)))
        try:
            time_min, max_array = slurm_submit._time_limit(opts), max_array_size()
            jobs = []
            for chunk, params in slurm_submit._jobs_plan(opts, missing, max_array, time_min):
                executor = slurm_submit._executor(parts_dir, params)
                with submitit.helpers.clean_env():
                    jobs += executor.map_array(ExtractTask(task_args, parts_dir, num_tasks), chunk)
        except T2IError as err:
            raise EvaluationError(str(err)) from None
        print(f"scoring on SLURM: {len(jobs)} of {num_tasks} slices queued (job "
              f"{', '.join(sorted({j.job_id.split('_')[0] for j in jobs}))}); waiting", file=sys.stderr, flush=True)
        for job in jobs:
            try:
                job.result()
            except Exception as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
                raise EvaluationError(f"SLURM scoring task {job.job_id} failed: {first[:300]} (log: "
                                      f"{job.paths.stderr})") from None
    return {name: _joined(parts_dir, name, num_tasks) for name, *_ in groups}

"""How sure a score is: bootstrap intervals of per-image means, paired differences, spread over seed sets.

* :func:`bootstrap_interval` -- percentile bootstrap 95% interval of a mean over images, with a fixed seed
  (:data:`BOOTSTRAP_SEED`) and :data:`BOOTSTRAP_RESAMPLES` resamples, so a rerun gives the same interval.
* :func:`paired_difference` -- the mean of ``b - a`` over images of the same prompt and seed, and its interval
  (the images are resampled in pairs, so what the two configurations share cancels out).
* :func:`mean_std` -- mean and sample standard deviation (ddof 1) of a set-level score (FID, KID, CMMD) over
  seed sets: the configurations of a sweep that differ only in ``seed_start``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
LEVEL = 0.95


def protocol() -> dict[str, Any]:
    """What metrics.json records about the intervals."""
    return {"method": "percentile bootstrap over images", "level": LEVEL, "resamples": BOOTSTRAP_RESAMPLES,
            "seed": BOOTSTRAP_SEED, "seed_sets": "mean and sample std (ddof 1) over the seed_start values of a sweep"}


def bootstrap_interval(values: Sequence[float] | np.ndarray,
                       statistic: Callable[[np.ndarray], np.ndarray] | None = None) -> list[float] | None:
    """``[low, high]`` of the statistic (default: the mean; it gets a ``[resamples, n]`` array and reduces axis 1)
    over resamples of ``values`` with replacement; None for fewer than 2 values."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) < 2:
        return None
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    stats = []
    for start in range(0, BOOTSTRAP_RESAMPLES, 100):  # 100 resamples at a time: memory stays ~100 x n
        idx = rng.integers(0, len(x), size=(min(100, BOOTSTRAP_RESAMPLES - start), len(x)))
        sample = x[idx]
        stats.append(statistic(sample) if statistic else sample.mean(axis=1))
    alpha = (1.0 - LEVEL) / 2
    low, high = np.quantile(np.concatenate(stats), [alpha, 1.0 - alpha])
    return [float(low), float(high)]


def paired_difference(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Mean of ``b - a`` over pairs (same prompt, same seed) and its bootstrap interval."""
    diff = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    return {"mean": float(diff.mean()) if len(diff) else None, "interval": bootstrap_interval(diff),
            "pairs": int(len(diff))}


def mean_std(values: Sequence[float | None]) -> dict[str, Any] | None:
    """``{"mean", "std", "n"}`` over the seed sets that have the score; None when none has it."""
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if not len(x):
        return None
    return {"mean": float(x.mean()), "std": float(x.std(ddof=1)) if len(x) > 1 else None, "n": int(len(x))}


SEED_AXIS = "seed_start"
SET_SCORES = ("fid", "kid", "cmmd", "clip_score", "pickscore", "hps", "imagereward")  # per configuration: one number each


def seed_sets(configurations: Sequence[dict[str, Any]], axes: dict[str, list[str]]) -> list[dict[str, Any]]:
    """For a sweep over ``seed_start``: the configurations grouped by their other settings (in sweep order),
    each group with the mean and std of every set-level score over its seed sets. [] for other sweeps."""
    if SEED_AXIS not in axes:
        return []
    from gen_worker.output.sweep_record import configuration_name

    groups: dict[str, dict[str, Any]] = {}
    for c in configurations:
        others = {k: v for k, v in c["overrides"].items() if k != SEED_AXIS}
        name = configuration_name(others) if others else "all"
        group = groups.setdefault(name, {"name": name, "overrides": others, "configurations": [], "seed_starts": []})
        group["configurations"].append(c["name"])
        group["seed_starts"].append(c.get("seed_start"))
    by_name = {c["name"]: c for c in configurations}
    for group in groups.values():
        members = [by_name[n] for n in group["configurations"]]
        for key in SET_SCORES:
            group[key] = mean_std([m.get(key) for m in members])
    return list(groups.values())

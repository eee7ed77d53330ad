"""Bootstrap intervals, paired differences, seed-set spread and CMMD, each against a direct computation."""

import numpy as np
import pytest
import torch

from evaluation import cmmd as cmmdlib
from evaluation import uncertainty


def test_bootstrap_interval_is_fixed_and_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, size=50)
    assert uncertainty.bootstrap_interval(x) == uncertainty.bootstrap_interval(x.copy())  # fixed seed
    assert uncertainty.bootstrap_interval([5.0] * 10) == [5.0, 5.0]
    assert uncertainty.bootstrap_interval([1.0]) is None
    hits = 0
    for _ in range(300):
        low, high = uncertainty.bootstrap_interval(rng.normal(3.0, 2.0, size=50))
        hits += low <= 3.0 <= high
    assert 0.88 <= hits / 300 <= 0.99  # percentile bootstrap at n=50 under-covers a little


def test_bootstrap_interval_is_the_percentile_interval_of_resampled_means():
    x = np.random.default_rng(2).exponential(size=40)
    rng = np.random.default_rng(uncertainty.BOOTSTRAP_SEED)
    means = np.concatenate([x[rng.integers(0, 40, size=(100, 40))].mean(axis=1)
                            for _ in range(uncertainty.BOOTSTRAP_RESAMPLES // 100)])
    assert uncertainty.bootstrap_interval(x) == pytest.approx(list(np.quantile(means, [0.025, 0.975])), rel=1e-12)


def test_paired_difference_cancels_what_the_pairs_share():
    rng = np.random.default_rng(3)
    shared = rng.normal(0, 10, size=200)  # the prompt and seed make most of each image's score
    a = shared + rng.normal(0, 0.1, size=200)
    b = shared + 0.2 + rng.normal(0, 0.1, size=200)
    paired = uncertainty.paired_difference(a, b)
    assert paired["pairs"] == 200 and paired["mean"] == pytest.approx(float(np.mean(b - a)))
    low, high = paired["interval"]
    assert 0 < low < 0.2 < high  # the difference is clear when paired ...
    ia, ib = uncertainty.bootstrap_interval(a), uncertainty.bootstrap_interval(b)
    assert ia[1] > ib[0]  # ... and hidden when the two means are looked at apart
    exact = uncertainty.paired_difference([1.0, 2.0, 3.0], [2.0, 3.0, 4.0])
    assert exact["mean"] == 1.0 and exact["interval"] == [1.0, 1.0]


def test_mean_std_over_seed_sets():
    assert uncertainty.mean_std([1.0, 2.0, None, 4.0]) == {"mean": pytest.approx(7 / 3),
                                                          "std": pytest.approx(float(np.std([1, 2, 4], ddof=1))),
                                                          "n": 3}
    assert uncertainty.mean_std([2.0]) == {"mean": 2.0, "std": None, "n": 1}
    assert uncertainty.mean_std([None]) is None


def test_seed_sets_group_configurations_by_their_other_settings():
    configs = [{"name": f"g-{g}__s-{s}", "overrides": {"guidance_scale": g, "seed_start": s}, "seed_start": int(s),
                "fid": fid, "kid": None, "cmmd": None, "clip_score": 20.0}
               for (g, s), fid in zip([("1", "0"), ("1", "100"), ("3", "0"), ("3", "100")], [10.0, 12.0, 5.0, 6.0])]
    groups = uncertainty.seed_sets(configs, {"guidance_scale": ["1", "3"], "seed_start": ["0", "100"]})
    assert [g["name"] for g in groups] == ["guidance_scale-1", "guidance_scale-3"]
    assert groups[0]["configurations"] == ["g-1__s-0", "g-1__s-100"] and groups[0]["seed_starts"] == [0, 100]
    assert groups[0]["fid"] == {"mean": 11.0, "std": pytest.approx(np.sqrt(2)), "n": 2}
    assert groups[1]["fid"]["mean"] == 5.5 and groups[0]["kid"] is None
    assert uncertainty.seed_sets(configs, {"guidance_scale": ["1", "3"]}) == []


def _cmmd_direct(x, y, sigma=10.0, scale=1000.0):
    """The paper's formula written out pair by pair (google-research/cmmd distance.py, in numpy)."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    k = lambda a, b: np.exp(-np.sum((a - b) ** 2) / (2 * sigma ** 2))
    kxx = np.mean([[k(a, b) for b in x] for a in x])
    kyy = np.mean([[k(a, b) for b in y] for a in y])
    kxy = np.mean([[k(a, b) for b in y] for a in x])
    return scale * (kxx + kyy - 2 * kxy)


@pytest.mark.parametrize("block", [4096, 3])
def test_cmmd_is_the_papers_formula_on_fixed_embeddings(monkeypatch, block):
    monkeypatch.setattr(cmmdlib, "_BLOCK", block)  # the blocked sum gives the same as one block
    rng = np.random.default_rng(4)
    x = rng.normal(size=(9, 8))
    y = rng.normal(size=(7, 8)) + 0.5
    assert cmmdlib.SIGMA == 10.0 and cmmdlib.SCALE == 1000.0
    assert cmmdlib.cmmd(x, y) == pytest.approx(_cmmd_direct(x, y), rel=1e-9)
    assert cmmdlib.cmmd(torch.as_tensor(x), torch.as_tensor(x)) == pytest.approx(0.0, abs=1e-9)  # biased: exactly 0
    assert cmmdlib.cmmd(x, 3.0 * x) == pytest.approx(0.0, abs=1e-9)  # normalised: the scale does not count
    assert cmmdlib.cmmd(x, y) > 0

"""FID with torchmetrics' ``FrechetInceptionDistance`` fed by the Inception TorchScript, and reference statistics.

torchmetrics accumulates, per side, the feature sum, the sum of outer products and the count (float64) and
computes ``||mu1-mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2))``. We give it our own feature module
(:class:`InceptionFeatures`), so torch-fidelity (and with it torchvision) is not needed.

Reference statistics are ``.npz`` files with ``mu`` [D], ``sigma`` [D, D] (float64, unbiased covariance, the
pytorch-fid / clean-fid convention), ``num_images`` and what they were computed with (sha256 of the Inception
file, centre crop). Loading them refills torchmetrics' sums exactly, so the FID is the same as from the images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from evaluation.errors import EvaluationError
from evaluation.images import INCEPTION_SIZE

STATS_FORMAT = "t2i-batch-fid-stats-v1"


class InceptionFeatures(torch.nn.Module):
    """``[N, 3, 299, 299]`` float in [0, 255] -> ``[N, D]`` float64 features (``net(x, return_features=True)``)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net
        device = next(iter(net.parameters()), torch.zeros(())).device
        with torch.inference_mode():
            probe = self.forward(torch.zeros(1, 3, INCEPTION_SIZE, INCEPTION_SIZE, device=device))
        self.num_features = int(probe.shape[-1])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.net(images.float(), return_features=True)
        return feats.reshape(images.shape[0], -1).double()


def make_fid_metric(net: torch.nn.Module, device: torch.device | str = "cpu") -> FrechetInceptionDistance:
    metric = FrechetInceptionDistance(feature=InceptionFeatures(net), reset_real_features=False, normalize=False)
    return metric.to(device)


def update_fid(metric: FrechetInceptionDistance, images: torch.Tensor, real: bool) -> None:
    device = metric.real_features_sum.device
    with torch.inference_mode():
        metric.update(images.to(device), real=real)


def compute_fid(metric: FrechetInceptionDistance) -> float:
    n_real, n_fake = int(metric.real_features_num_samples), int(metric.fake_features_num_samples)
    if n_real < 2 or n_fake < 2:
        raise EvaluationError(f"FID needs at least 2 reference and 2 generated images, got {n_real} and {n_fake}")
    with torch.inference_mode():
        value = float(metric.compute())
    return max(value, 0.0)  # FID >= 0; identical sets can come out as -1e-12 from rounding


@dataclass
class FeatureStats:
    mu: np.ndarray
    sigma: np.ndarray
    num_images: int
    meta: dict[str, Any] = field(default_factory=dict)


def reference_stats(metric: FrechetInceptionDistance, meta: dict[str, Any] | None = None) -> FeatureStats:
    """Mean and unbiased covariance of the reference ("real") side, exactly as torchmetrics computes them."""
    n = int(metric.real_features_num_samples)
    if n < 2:
        raise EvaluationError(f"reference statistics need at least 2 images, got {n}")
    total = metric.real_features_sum.detach().double().cpu()
    mu = total / n
    sigma = (metric.real_features_cov_sum.detach().double().cpu() - n * torch.outer(mu, mu)) / (n - 1)
    return FeatureStats(mu=mu.numpy(), sigma=sigma.numpy(), num_images=n, meta=dict(meta or {}))


def set_reference_stats(metric: FrechetInceptionDistance, stats: FeatureStats) -> None:
    """Refill the reference side of ``metric`` so that it yields ``stats``' mean and covariance."""
    dim = int(metric.real_features_sum.shape[0])
    if stats.mu.shape != (dim,) or stats.sigma.shape != (dim, dim):
        raise EvaluationError(
            f"reference statistics have {stats.mu.shape[0]} features, the Inception network gives {dim}"
        )
    device = metric.real_features_sum.device
    n = max(int(stats.num_images), 2)
    mu = torch.as_tensor(stats.mu, dtype=torch.float64)
    sigma = torch.as_tensor(stats.sigma, dtype=torch.float64)
    metric.real_features_sum = (mu * n).to(device)
    metric.real_features_cov_sum = (sigma * (n - 1) + n * torch.outer(mu, mu)).to(device)
    metric.real_features_num_samples = torch.tensor(n, dtype=torch.long, device=device)


def save_stats(path: str, stats: FeatureStats) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    meta = {f"meta_{k}": np.asarray(v) for k, v in stats.meta.items()}
    with open(path, "wb") as f:  # a file object keeps numpy from appending ".npz" to the name
        np.savez(f, format=np.asarray(STATS_FORMAT), mu=stats.mu, sigma=stats.sigma,
                 num_images=np.asarray(stats.num_images), **meta)


def load_stats(path: str) -> FeatureStats:
    """Load our ``.npz`` (or any ``.npz`` with ``mu`` and ``sigma``, e.g. from pytorch-fid or clean-fid)."""
    if not os.path.isfile(path):
        raise EvaluationError(f"reference statistics not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "mu" not in data or "sigma" not in data:
                raise EvaluationError(f"reference statistics {path} lack 'mu' and/or 'sigma'")
            mu, sigma = np.asarray(data["mu"], np.float64), np.asarray(data["sigma"], np.float64)
            n = int(data["num_images"]) if "num_images" in data else 0
            meta = {k[5:]: data[k].item() for k in data.files if k.startswith("meta_")}
    except EvaluationError:
        raise
    except Exception as exc:
        raise EvaluationError(f"cannot read reference statistics {path}: {exc}") from None
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise EvaluationError(f"reference statistics {path}: mu {mu.shape} and sigma {sigma.shape} do not fit")
    return FeatureStats(mu=mu, sigma=sigma, num_images=n, meta=meta)


def check_stats_compatible(stats: FeatureStats, expected: dict[str, Any], path: str) -> list[str]:
    """Raise if ``stats`` were computed with other settings; return warnings for what cannot be checked."""
    warnings: list[str] = []
    for key, value in expected.items():
        if key not in stats.meta:
            warnings.append(f"reference statistics {path} do not record '{key}'; assuming {value!r}")
        elif stats.meta[key] != value:
            raise EvaluationError(
                f"reference statistics {path} were computed with {key}={stats.meta[key]!r}, this run uses {value!r}"
            )
    return warnings

"""FID and KID (torchmetrics) from the Inception TorchScript's features, and reference statistics.

Each image goes through Inception once (:class:`InceptionFeatures`, our own feature module, so torch-fidelity
and with it torchvision are not needed); the features feed both torchmetrics metrics.
``FrechetInceptionDistance`` accumulates, per side, the feature sum, the sum of outer products and the count
(float64) and computes ``||mu1-mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2))``. ``KernelInceptionDistance`` keeps the
features and averages the unbiased MMD^2 with the cubic polynomial kernel ``(x.y / D + 1)^3`` over
:data:`KID_SUBSETS` random subsets of ``min(1000, reference images, generated images)`` images per side,
drawn with a fixed seed; it reports the mean and the standard deviation over the subsets.

Reference statistics are ``.npz`` files with ``mu`` [D], ``sigma`` [D, D] (float64, unbiased covariance, the
pytorch-fid / clean-fid convention), ``num_images``, ``features`` [N, D] (float32, for KID) and what they were
computed with (sha256 of the Inception file, centre crop). Loading them refills torchmetrics' states exactly,
so FID and KID are the same as from the images. A file without ``features`` (e.g. pytorch-fid's) gives FID only.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

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


class _GivenFeatures(torch.nn.Module):
    """Identity "network": the metrics get features already computed, so each image passes Inception once."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


KID_SUBSETS = 100
KID_MAX_SUBSET_SIZE = 1000  # torchmetrics' default; cut to the number of images on the smaller side
KID_SEED = 0  # the subsets are drawn with this seed, so a rerun gives the same KID


class FeatureMetrics:
    """FID and KID (torchmetrics) from one pass of Inception over the images.

    The reference ("real") side is kept across :meth:`reset_generated`, so a sweep computes it once and
    scores each configuration against it.
    """

    def __init__(self, net: torch.nn.Module, device: torch.device | str = "cpu"):
        self.features = InceptionFeatures(net).to(device)
        given = _GivenFeatures(self.features.num_features)
        self.fid = FrechetInceptionDistance(feature=given, reset_real_features=False, normalize=False).to(device)
        with warnings.catch_warnings():  # "will save all extracted features": yes, that is how KID works
            warnings.simplefilter("ignore", UserWarning)
            self.kid = KernelInceptionDistance(feature=given, subsets=KID_SUBSETS, subset_size=KID_MAX_SUBSET_SIZE,
                                               reset_real_features=False, normalize=False).to(device)
        self.device = device

    def network_features(self, images: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """``[N, D]`` float64 features on the CPU; ``images``: a batch, or a list of ``[3, H, W]`` images of
        different sizes (legacy protocol)."""
        with torch.inference_mode():
            if isinstance(images, torch.Tensor):
                return self.features(images.to(self.device)).cpu()
            return torch.cat([self.features(x[None].to(self.device)) for x in images]).cpu()

    def add(self, feats: torch.Tensor, real: bool) -> None:
        """Add features already computed (by this process or by a SLURM task) to one side."""
        with torch.inference_mode():
            feats = torch.as_tensor(feats, dtype=torch.float64).to(self.device)
            self.fid.update(feats, real=real)
            self.kid.update(feats, real=real)

    def update(self, images: torch.Tensor | list[torch.Tensor], real: bool) -> None:
        self.add(self.network_features(images), real)

    def reset_generated(self) -> None:
        self.fid.reset()
        self.kid.reset()

    def compute_fid(self) -> float:
        n_real, n_fake = int(self.fid.real_features_num_samples), int(self.fid.fake_features_num_samples)
        if n_real < 2 or n_fake < 2:
            raise EvaluationError(f"FID needs at least 2 reference and 2 generated images, got {n_real} and {n_fake}")
        with torch.inference_mode():
            value = float(self.fid.compute())
        return max(value, 0.0)  # FID >= 0; identical sets can come out as -1e-12 from rounding

    def kid_subset_size(self) -> int:
        return min(KID_MAX_SUBSET_SIZE, *(sum(len(f) for f in side) for side in
                                          (self.kid.real_features, self.kid.fake_features)))

    def compute_kid(self) -> tuple[float, float, int] | None:
        """(mean, std over the subsets, subset size); None without reference features (plain mu/sigma files)."""
        size = self.kid_subset_size()
        if size < 2:
            return None
        self.kid.subset_size = size
        with torch.inference_mode(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(KID_SEED)
            mean, std = self.kid.compute()
        return float(mean), float(std), size


@dataclass
class FeatureStats:
    mu: np.ndarray
    sigma: np.ndarray
    num_images: int
    meta: dict[str, Any] = field(default_factory=dict)
    features: np.ndarray | None = None  # [N, D] float32 reference features, for KID (None: FID only)
    clip_embeddings: np.ndarray | None = None  # [N, E] float32 CLIP image embeddings, for CMMD (None: no CMMD)


def reference_stats(metrics: FeatureMetrics, meta: dict[str, Any] | None = None) -> FeatureStats:
    """Mean and unbiased covariance of the reference ("real") side, exactly as torchmetrics computes them,
    and the features themselves (KID needs them; float32 loses nothing, the network computes in float32)."""
    fid = metrics.fid
    n = int(fid.real_features_num_samples)
    if n < 2:
        raise EvaluationError(f"reference statistics need at least 2 images, got {n}")
    total = fid.real_features_sum.detach().double().cpu()
    mu = total / n
    sigma = (fid.real_features_cov_sum.detach().double().cpu() - n * torch.outer(mu, mu)) / (n - 1)
    features = torch.cat(list(metrics.kid.real_features)).float().cpu().numpy()
    return FeatureStats(mu=mu.numpy(), sigma=sigma.numpy(), num_images=n, meta=dict(meta or {}), features=features)


def set_reference_stats(metrics: FeatureMetrics, stats: FeatureStats) -> None:
    """Refill the reference side so that FID yields ``stats``' mean and covariance (and KID its features)."""
    fid = metrics.fid
    dim = int(fid.real_features_sum.shape[0])
    if stats.mu.shape != (dim,) or stats.sigma.shape != (dim, dim):
        raise EvaluationError(
            f"reference statistics have {stats.mu.shape[0]} features, the Inception network gives {dim}"
        )
    device = fid.real_features_sum.device
    n = max(int(stats.num_images), 2)
    mu = torch.as_tensor(stats.mu, dtype=torch.float64)
    sigma = torch.as_tensor(stats.sigma, dtype=torch.float64)
    fid.real_features_sum = (mu * n).to(device)
    fid.real_features_cov_sum = (sigma * (n - 1) + n * torch.outer(mu, mu)).to(device)
    fid.real_features_num_samples = torch.tensor(n, dtype=torch.long, device=device)
    if stats.features is not None:
        metrics.kid.real_features = [torch.as_tensor(stats.features, dtype=torch.float64).to(device)]


def save_stats(path: str, stats: FeatureStats) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    meta = {f"meta_{k}": np.asarray(v) for k, v in stats.meta.items()}
    extra = {} if stats.features is None else {"features": stats.features}
    if stats.clip_embeddings is not None:
        extra["clip_embeddings"] = stats.clip_embeddings
    with open(path, "wb") as f:  # a file object keeps numpy from appending ".npz" to the name
        np.savez(f, format=np.asarray(STATS_FORMAT), mu=stats.mu, sigma=stats.sigma,
                 num_images=np.asarray(stats.num_images), **meta, **extra)


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
            features = np.asarray(data["features"], np.float32) if "features" in data else None
            clip = np.asarray(data["clip_embeddings"], np.float32) if "clip_embeddings" in data else None
    except EvaluationError:
        raise
    except Exception as exc:
        raise EvaluationError(f"cannot read reference statistics {path}: {exc}") from None
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise EvaluationError(f"reference statistics {path}: mu {mu.shape} and sigma {sigma.shape} do not fit")
    if features is not None and features.shape != (n, mu.shape[0]):
        raise EvaluationError(f"reference statistics {path}: features {features.shape} do not fit {n} images")
    if clip is not None and (clip.ndim != 2 or clip.shape[0] != n):
        raise EvaluationError(f"reference statistics {path}: clip_embeddings {clip.shape} do not fit {n} images")
    return FeatureStats(mu=mu, sigma=sigma, num_images=n, meta=meta, features=features, clip_embeddings=clip)


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

"""CMMD (Jayasumana et al. 2024, "Rethinking FID: Towards a Better Evaluation Metric for Image Generation").

The squared maximum mean discrepancy between the CLIP image embeddings of the reference and the generated
images, with the paper's constants (as google-research/cmmd's ``distance.py``): embeddings L2-normalised,
Gaussian RBF kernel ``k(x, y) = exp(-|x - y|^2 / (2 sigma^2))`` with sigma = 10, the *biased* estimator
(every pair, the diagonals included), times 1000. The paper uses CLIP ViT-L/14 at 336 px; here the CLIP
model of ``--clip_model`` (recorded), the embeddings of the same pass as the CLIP score.
"""

from __future__ import annotations

import numpy as np
import torch

SIGMA = 10.0
SCALE = 1000.0
DESCRIPTION = ("CMMD: MMD^2 of L2-normalised CLIP image embeddings, Gaussian RBF kernel sigma 10, biased "
               "estimator (all pairs), x1000 (Jayasumana et al. 2024)")
_BLOCK = 4096  # rows of the kernel at a time: 30k x 30k never sits in memory


def normalise(embeddings: torch.Tensor) -> torch.Tensor:
    e = embeddings.double()
    return e / e.norm(dim=-1, keepdim=True)


def _mean_kernel(x: torch.Tensor, y: torch.Tensor) -> float:
    gamma = 1.0 / (2.0 * SIGMA ** 2)
    y_sq = (y * y).sum(dim=1)
    total = 0.0
    for start in range(0, len(x), _BLOCK):
        xb = x[start:start + _BLOCK]
        d2 = (xb * xb).sum(dim=1)[:, None] + y_sq[None, :] - 2.0 * xb @ y.T
        total += float(torch.exp(-gamma * d2).sum())
    return total / (len(x) * len(y))


def cmmd(reference: torch.Tensor | np.ndarray, generated: torch.Tensor | np.ndarray) -> float:
    """CMMD of two ``[N, D]`` sets of CLIP image embeddings (normalised here), float64."""
    x = normalise(torch.as_tensor(reference))
    y = normalise(torch.as_tensor(generated))
    return SCALE * (_mean_kernel(x, x) + _mean_kernel(y, y) - 2.0 * _mean_kernel(x, y))

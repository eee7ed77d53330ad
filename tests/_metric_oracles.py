"""clean-fid and torch-fidelity, the PyPI packages, imported as test oracles.

They live outside site-packages, in ``.venv/metric-oracles`` (``make install``: pip --no-deps --target):
torchmetrics imports torch-fidelity whenever it is installed, and torch-fidelity needs torchvision, so an
installed torch-fidelity breaks torchmetrics' FID. Here torchmetrics' image metrics are imported first, then
the folder is on ``sys.path`` for the oracles' import only.

Both import torchvision at their top for parts these tests never use (their own Inception and CLIP
extractors, dataset downloads, resize transforms). PyPI's torchvision wheel does not load next to the
project's CPU torch wheel (``operator torchvision::nms does not exist``) and PyPI has no CPU build, so where
torchvision is not installed a stand-in is put in ``sys.modules`` for their import only: every name in it raises
when used, except ``transforms.ToTensor``, which clean-fid's dataset calls on each resized float image; it
is torchvision's ``to_tensor`` for numpy arrays (HWC -> CHW; uint8 divided by 255, floats as they are).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types

import numpy as np
import pytest
import torch


ORACLES = os.path.join(sys.prefix, "metric-oracles")


class _UnavailableMeta(type):
    """A class that stands for any torchvision name: its attributes are more of them, calling it raises, and the
    oracles may subclass it (clean-fid defines classes on torchvision's Inception blocks at import)."""

    def __getattr__(cls, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _unavailable(f"{cls.__name__}.{attr}")

    def __call__(cls, *args, **kwargs):
        raise RuntimeError(f"{cls.__name__}: torchvision is not installed (test stand-in)")


def _unavailable(name: str) -> type:
    return _UnavailableMeta(name, (), {})


class _StandIn(types.ModuleType):
    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _unavailable(f"{self.__name__}.{attr}")


class _ToTensor:
    def __call__(self, pic: np.ndarray) -> torch.Tensor:
        img = torch.from_numpy(np.ascontiguousarray(pic.transpose((2, 0, 1)))).contiguous()
        return img.to(torch.get_default_dtype()).div(255) if img.dtype == torch.uint8 else img


def _install_torchvision_stand_in() -> list[str]:
    names = ["torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.datasets",
             "torchvision.models", "torchvision.models.utils"]
    modules = {n: _StandIn(n) for n in names}
    modules["torchvision"].__version__ = "0.0-stand-in"
    modules["torchvision.transforms"].ToTensor = _ToTensor
    for name, module in modules.items():
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(modules[parent], child, module)
        sys.modules[name] = module
    return names


def import_oracles() -> tuple[types.ModuleType, types.ModuleType]:
    """``(cleanfid.fid, torch_fidelity)``; skips the test when they are not installed."""
    if importlib.util.find_spec("scipy") is None or not os.path.isdir(os.path.join(ORACLES, "torch_fidelity")):
        pytest.skip(f"clean-fid and torch-fidelity are not in {ORACLES}, or scipy is missing (make install)")
    import torchmetrics.image.fid  # noqa: F401 (decides now, without torch-fidelity, which Inception it uses)
    import torchmetrics.image.kid  # noqa: F401

    stand_in = []
    if "cleanfid.fid" not in sys.modules and importlib.util.find_spec("torchvision") is None:
        stand_in = _install_torchvision_stand_in()
    sys.path.append(ORACLES)
    try:
        import cleanfid.fid
        import torch_fidelity
    finally:
        sys.path.remove(ORACLES)
        for name in stand_in:  # the oracles keep their reference; nothing else may take it for torchvision
            del sys.modules[name]
    return cleanfid.fid, torch_fidelity

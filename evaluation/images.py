"""Image loading and the preprocessing the feature networks need, plus batched iteration.

FID input (:func:`inception_input`): RGB, optional square centre crop, then clean-fid's "clean" resize to
299x299 -- PIL bicubic on each channel as 32-bit float, clipped to [0, 255] (this is what
``cleanfid.fid.compute_fid(mode="clean")`` feeds the same Inception network). The network gets float 0..255.

CLIP input: the model folder's image processor (see :class:`evaluation.clip_score.ClipImagePreprocess`).
"""

from __future__ import annotations

import io
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from evaluation.errors import EvaluationError
from evaluation.generated import GeneratedImage, read_png_bytes

INCEPTION_SIZE = 299
INCEPTION_RESIZE = ("clean-fid 'clean' resize to 299x299: PIL bicubic on each channel in float32, "
                    "clipped to [0, 255]")


def load_rgb(source: str | GeneratedImage) -> Image.Image:
    """An image file (a path), or a generated image: its PNG file or its member of a tar shard."""
    try:
        if isinstance(source, GeneratedImage) and source.member is not None:
            with Image.open(io.BytesIO(read_png_bytes(source))) as im:
                return im.convert("RGB")
        with Image.open(source if isinstance(source, str) else source.path) as im:
            return im.convert("RGB")
    except Exception as exc:  # PIL raises many types for broken or partial files
        raise EvaluationError(f"cannot read image {source}: {exc}") from None


def center_crop_square(img: Image.Image) -> Image.Image:
    w, h = img.size
    if w == h:
        return img
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return img.crop((left, top, left + s, top + s))


def clean_resize(img: Image.Image, size: int = INCEPTION_SIZE) -> np.ndarray:
    """clean-fid's "clean" resize: per-channel float32 PIL bicubic, clipped to [0, 255]; ``[size, size, 3]``."""
    arr = np.asarray(img, dtype=np.float32)
    channels = [
        np.asarray(Image.fromarray(arr[:, :, c]).resize((size, size), resample=Image.Resampling.BICUBIC))
        for c in range(3)
    ]
    return np.clip(np.stack(channels, axis=2), 0.0, 255.0)


def inception_input(img: Image.Image, center_crop: bool = True) -> torch.Tensor:
    """``[3, 299, 299]`` float32 in [0, 255] (the "clean" protocol)."""
    if center_crop:
        img = center_crop_square(img)
    return torch.from_numpy(clean_resize(img)).permute(2, 0, 1).contiguous()


def legacy_inception_input(img: Image.Image, center_crop: bool = True) -> torch.Tensor:
    """``[3, H, W]`` float32 of the 8-bit pixels at the image's own size (the "legacy_tensorflow" protocol):
    the network resizes it to 299x299 inside, as torch-fidelity and the TensorFlow FID code feed it."""
    if center_crop:
        img = center_crop_square(img)
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).astype(np.float32)).permute(2, 0, 1).contiguous()


# --protocol NAME -> (transform, what it does to an image, what happens to a non-square one without the crop)
PROTOCOLS = {
    "clean": (inception_input, INCEPTION_RESIZE,
              "squashed to 299x299 (aspect not kept), as clean-fid does"),
    "legacy_tensorflow": (legacy_inception_input,
                          "8-bit pixels at the image's own size into the network, which resizes to 299x299 inside "
                          "(NVIDIA's inception-2015-12-05.pt: bilinear, as torch-fidelity's TF-compatible resize)",
                          "stretched to 299x299 inside the network (aspect not kept), as torch-fidelity does"),
}


Transform = Callable[[Image.Image], torch.Tensor]


class ImageDataset(torch.utils.data.Dataset):
    """Loads ``paths[i]`` (a file, or a GeneratedImage: load_rgb) and applies each named transform; errors
    travel as text (no worker tracebacks)."""

    def __init__(self, paths: Sequence[str | GeneratedImage], transforms: Mapping[str, Transform]):
        self.paths = list(paths)
        self.transforms = dict(transforms)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            img = load_rgb(self.paths[i])
            return i, None, {name: t(img) for name, t in self.transforms.items()}
        except EvaluationError as exc:
            return i, str(exc), {}


def _collate(items):
    for _, err, _ in items:
        if err is not None:
            return None, err, {}
    indices = [i for i, _, _ in items]
    out = {}
    for name in items[0][2]:
        tensors = [d[name] for _, _, d in items]
        same = all(t.shape == tensors[0].shape for t in tensors)
        out[name] = torch.stack(tensors) if same else tensors
    return indices, None, out


def iterate_batches(
    paths: Sequence[str | GeneratedImage],
    transforms: Mapping[str, Transform],
    batch_size: int = 64,
    num_workers: int = 0,
    desc: str | None = None,
) -> Iterator[tuple[list[int], dict]]:
    """Yield ``(indices, {name: batch})``; a batch is a stacked tensor, or a list when the shapes differ."""
    loader = torch.utils.data.DataLoader(
        ImageDataset(paths, transforms),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
    )
    try:
        from tqdm import tqdm

        loader_iter = tqdm(loader, desc=desc, disable=None, leave=False)
    except ImportError:  # pragma: no cover - tqdm is a project dependency
        loader_iter = loader
    for indices, err, batch in loader_iter:
        if err is not None:
            raise EvaluationError(err)
        yield indices, batch

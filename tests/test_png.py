"""PNG encoding in the writer threads: exact pixels, Pillow-sized files, diffusers' rounding."""
import io

import numpy as np
import pytest
from PIL import Image

from gen_worker.worker.png import encode_png, to_uint8


def _decode(data):
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_pixels_survive_the_round_trip(channels):
    pixels = np.random.default_rng(channels).integers(0, 256, (37, 23, channels), dtype=np.uint8)
    decoded = _decode(encode_png(pixels))
    assert np.array_equal(decoded.reshape(pixels.shape), pixels)


def test_files_are_about_as_small_as_pillows():
    y, x = np.mgrid[0:256, 0:256]
    smooth = np.stack([x, y, (x + y) // 2], -1).astype(np.uint8)
    smooth = smooth + np.random.default_rng(0).integers(0, 6, smooth.shape, dtype=np.uint8)
    ours = encode_png(smooth)
    pillow = io.BytesIO()
    Image.fromarray(smooth).save(pillow, format="PNG")
    assert np.array_equal(_decode(ours), smooth)
    assert len(ours) < 1.05 * len(pillow.getvalue())


def test_rounding_is_that_of_diffusers_pil_output():
    from diffusers.image_processor import VaeImageProcessor
    images = np.random.default_rng(0).random((2, 16, 16, 3), dtype=np.float32)
    images[0, 0, :3] = [0.0, 1.0, 0.5 / 255]  # the ends, and a value that rounds half to even
    expected = [np.asarray(im) for im in VaeImageProcessor.numpy_to_pil(images)]
    assert all(np.array_equal(to_uint8(image), e) for image, e in zip(images, expected))

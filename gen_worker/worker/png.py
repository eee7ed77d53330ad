"""PNG encoding that lets go of the GIL: numpy for the row filter, zlib for the compression.

The images are written by background threads while the generation loop launches GPU work.
Pillow's PNG writer holds the GIL while it compresses, in slices of up to ~25 ms for a 512x512
image, which would stall that loop; numpy and zlib release it for the heavy part. Same pixels,
and files as small as Pillow's (the Up filter with zlib's Z_FILTERED strategy, as libpng uses).
"""
import struct
import zlib
from typing import Callable, Dict, Optional

import numpy as np

from gen_worker.atomic_files import create_once
from gen_worker.output.png_file import SIGNATURE, chunk, image_record, text_chunk

# The text chunks of an image, given its image_record (size and pixel hash): provenance binds the pixels.
TextFor = Callable[[Dict[str, object]], Dict[str, str]]

COLOR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> grey, RGB, RGBA
UP_FILTER = 2


def to_uint8(image: np.ndarray) -> np.ndarray:
    """An HxWxC float image in [0, 1] (output_type "np") as 8-bit pixels, rounded as diffusers'
    "pil" output is (VaeImageProcessor.numpy_to_pil), so the pixels are the same."""
    return (image * 255).round().astype(np.uint8)


def encode_png(pixels: np.ndarray, level: int = 6, text_for: Optional[TextFor] = None) -> bytes:
    """HxWxC uint8 pixels (C = 1, 3 or 4) as the bytes of an 8-bit PNG file, with text_for(image_record)
    ({key: text}) in text chunks before the image data (readable without reading the pixels)."""
    height, width, channels = pixels.shape
    rows = np.ascontiguousarray(pixels, dtype=np.uint8).reshape(height, width * channels)
    filtered = np.empty((height, width * channels + 1), dtype=np.uint8)
    filtered[:, 0] = UP_FILTER
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # modulo 256, as PNG wants
    compressor = zlib.compressobj(level, zlib.DEFLATED, zlib.MAX_WBITS, 9, zlib.Z_FILTERED)
    data = compressor.compress(filtered.data) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, COLOR_TYPES[channels], 0, 0, 0)
    text = text_for(image_record(header, [data])) if text_for else {}
    notes = b"".join(text_chunk(key, value) for key, value in text.items())
    return SIGNATURE + chunk(b"IHDR", header) + notes + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def save_png_once(pixels: np.ndarray, path: str, text_for: Optional[TextFor] = None) -> bool:
    """HxWxC uint8 pixels as a PNG file (with text_for's chunks), created once (atomic_files.create_once;
    encoded first: the file is open only to write). False when the file already existed."""
    data = encode_png(pixels, text_for=text_for)
    return create_once(path, lambda f: f.write(data))

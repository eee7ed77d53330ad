"""The PNG file format's container: chunks, text chunks, and the check that a file is whole.

One definition of the chunk layout for the writer (worker/png.py) and for the readers (resume's
check, `submit.py show`). Checking a file needs no decode: the signature, every chunk's CRC, an
IHDR first and an IEND that ends the file, so a truncated, empty or foreign file is told apart
from a finished image in microseconds per kilobyte. What the pixels are is told by a hash of the
IHDR and IDAT chunks (image_record): the encoded image, without its text chunks.
"""
import hashlib
import struct
import zlib
from typing import Dict, List, Sequence, Tuple

SIGNATURE = b"\x89PNG\r\n\x1a\n"


class DamagedPng(ValueError):
    """Not a complete PNG file; the message says what is wrong."""


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def text_chunk(key: str, text: str) -> bytes:
    """An uncompressed international text chunk (iTXt: UTF-8, any length)."""
    return chunk(b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + text.encode("utf-8"))


def chunks(data: bytes) -> List[Tuple[bytes, bytes]]:
    """[(type, data), ...] of a whole PNG file; DamagedPng when it is not one."""
    if not data:
        raise DamagedPng("empty file")
    if not data.startswith(SIGNATURE):
        raise DamagedPng("not a PNG file (no PNG signature)")
    out, pos = [], len(SIGNATURE)
    while pos < len(data):
        if pos + 8 > len(data):
            raise DamagedPng("truncated (cut inside a chunk header)")
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 8 + length + 4
        if end > len(data):
            raise DamagedPng(f"truncated (its {kind.decode('latin-1')} chunk is cut short)")
        body = data[pos + 8:pos + 8 + length]
        if struct.unpack(">I", data[end - 4:end])[0] != zlib.crc32(body, zlib.crc32(kind)):
            raise DamagedPng(f"damaged (bad CRC in its {kind.decode('latin-1')} chunk)")
        out.append((kind, body))
        pos = end
        if kind == b"IEND":
            break
    if not out or out[0][0] != b"IHDR":
        raise DamagedPng("no IHDR chunk first")
    if out[-1][0] != b"IEND":
        raise DamagedPng("truncated (no IEND chunk)")
    if pos != len(data):
        raise DamagedPng("has data after its IEND chunk")
    if not any(kind == b"IDAT" for kind, _ in out):
        raise DamagedPng("no image data (no IDAT chunk)")
    return out


def texts(found: List[Tuple[bytes, bytes]]) -> Dict[str, str]:
    """{key: text} of the iTXt (uncompressed) and tEXt chunks."""
    out = {}
    for kind, body in found:
        if kind == b"tEXt":
            key, _, value = body.partition(b"\0")
            out[key.decode("latin-1")] = value.decode("latin-1")
        elif kind == b"iTXt":
            key, _, rest = body.partition(b"\0")
            if rest[:1] == b"\0":  # not compressed
                _, _, rest = rest[2:].partition(b"\0")  # language tag
                _, _, value = rest.partition(b"\0")  # translated keyword
                out[key.decode("latin-1")] = value.decode("utf-8", errors="replace")
    return out


def image_record(header: bytes, image_data: Sequence[bytes]) -> Dict[str, object]:
    """The size and a hash of an image's pixels as encoded: its IHDR data (size, bit depth, colour type) and
    its IDAT data, in order. Any edit of the pixels changes it; the text chunks do not enter it."""
    width, height = struct.unpack(">II", header[:8])
    digest = hashlib.sha256(header)
    for data in image_data:
        digest.update(data)
    return {"width": width, "height": height, "sha256": digest.hexdigest()}


def image_record_of(found: List[Tuple[bytes, bytes]]) -> Dict[str, object]:
    """image_record of a whole PNG file's chunks (as chunks() returns them)."""
    return image_record(found[0][1], [body for kind, body in found if kind == b"IDAT"])

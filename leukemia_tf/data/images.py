"""Decode, check, canvas and encode single images with numpy and Pillow (no TensorFlow).

The converter's worker processes use this module, so it stays free of TensorFlow: a
forked worker never touches TensorFlow state, and a worker costs megabytes, not a
TensorFlow runtime.

Turning a decoded image into model input (canvas rule, resize) is not done here: it has
one implementation, in TensorFlow, in `leukemia_tf.data.preprocess`.
"""
from __future__ import annotations

import io
import struct
from typing import Optional

import numpy as np

from leukemia_tf import io as fileio  # `io` is the standard library's here
from leukemia_tf.errors import UserError

ENCODINGS = ("png", "raw", "bmp", "jpeg")
# Largest compressed image (PNG, JPEG) decoded, in pixels, checked from the header before
# any pixel is decoded: C-NMC cells are 450x450 or 600x600, and a 12000x12000 16-bit PNG
# of a few MB took 3.2 GB to decode. (A BMP holds its pixels uncompressed: its size on
# disk already bounds the memory it takes.)
MAX_PIXELS = 25_000_000
_DIB_SIZES = {12, 40, 52, 56, 108, 124}  # core, info, v2, v3, v4, v5 headers
# The extra 84 bytes of the real validation files' BITMAPV5HEADER after the 40 bytes all
# BMP info headers share: RGBA masks, 'BGRs' (sRGB), endpoints/gamma as written, intent 4.
_V5_TAIL = bytes.fromhex(
    "0000ff0000ff0000ff000000000000ff42475273000000000000000054b81efc00000000000000006666"
    "66fc0000000000000000c4f528ff0000000000000000000000000400000000000000000000000000"
    "0000")
_PIXELS_PER_METRE = 3779  # 96 dpi, as in the real C-NMC headers


class ImageError(ValueError, UserError):
    """The bytes are not a usable image; the message says why."""


def sniff_format(data: bytes) -> str:
    """Format from the magic bytes: bmp, png, jpeg; raises ImageError otherwise."""
    if len(data) == 0:
        raise ImageError("empty file (0 bytes)")
    if data[:2] == b"BM":
        return "bmp"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    raise ImageError("not an image (unrecognised content)")


def decode_bmp(data: bytes) -> np.ndarray:
    """Strictly decode an uncompressed 24/32-bit BMP (any DIB header) to HxWx3 RGB uint8.

    Truncated files, wrong size fields and unsupported variants raise ImageError instead
    of decoding to garbage.
    """
    if len(data) < 26 or data[:2] != b"BM":
        raise ImageError("corrupt BMP: header too short or missing 'BM'")
    file_size, offset, dib = struct.unpack_from("<I4xII", data, 2)
    if dib not in _DIB_SIZES or 14 + dib > len(data):
        raise ImageError(f"corrupt BMP: unknown or truncated DIB header (size {dib})")
    if dib == 12:
        width, height, planes, bpp = struct.unpack_from("<hhHH", data, 18)
        compression = 0
    else:
        width, height, planes, bpp, compression = struct.unpack_from("<iiHHI", data, 18)
    if width <= 0 or height == 0 or planes != 1:
        raise ImageError(f"corrupt BMP: width {width}, height {height}, planes {planes}")
    if bpp not in (24, 32) or compression not in (0, 3):
        raise ImageError(f"unsupported BMP: {bpp} bits per pixel, compression {compression} "
                         "(24/32-bit uncompressed expected)")
    rows = abs(height)
    stride = ((width * bpp + 31) // 32) * 4
    need = offset + stride * rows
    if offset < 14 + dib or len(data) < need:
        raise ImageError(f"truncated BMP: {len(data)} bytes, pixel data needs {need}")
    if file_size not in (0, len(data)) and file_size > len(data):
        raise ImageError(f"truncated BMP: header says {file_size} bytes, file has {len(data)}")
    pixels = np.frombuffer(data, np.uint8, count=stride * rows, offset=offset)
    pixels = pixels.reshape(rows, stride)[:, :width * (bpp // 8)]
    pixels = pixels.reshape(rows, width, bpp // 8)[:, :, 2::-1]  # BGR(A) -> RGB
    if height > 0:  # bottom-up rows
        pixels = pixels[::-1]
    return np.ascontiguousarray(pixels)


def encode_bmp(image: np.ndarray, v5: bool = False) -> bytes:
    """24-bit BMP bytes as the C-NMC files are: bottom-up BGR rows padded to 4 bytes.

    The headers equal the real files' byte for byte (`decode_bmp` of a real file, encoded
    again with the same `v5`, gives the file back).

    Args:
      image: uint8 array [height, width, 3], any size.
      v5: write the 124-byte BITMAPV5HEADER of the validation files instead of the classic
        40-byte BITMAPINFOHEADER (54-byte total header) of the training files.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"need uint8 [h, w, 3], got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    stride = (width * 3 + 3) & ~3
    rows = np.zeros((height, stride), np.uint8)
    rows[:, :width * 3] = image[::-1, :, ::-1].reshape(height, width * 3)
    info_size = 124 if v5 else 40
    offset = 14 + info_size
    file_header = struct.pack("<2sIHHI", b"BM", offset + rows.size, 0, 0, offset)
    info = struct.pack("<IiiHHIIiiII", info_size, width, height, 1, 24, 0, rows.size,
                       _PIXELS_PER_METRE, _PIXELS_PER_METRE, 0, 0)
    return file_header + info + (_V5_TAIL if v5 else b"") + rows.tobytes()


def write_bmp(path: str, image: np.ndarray, v5: bool = False) -> None:
    """Writes `encode_bmp(image, v5)` to `path`."""
    fileio.write_bytes(path, encode_bmp(image, v5))


def read_bmp(path: str) -> np.ndarray:
    """`decode_bmp` of the file at `path`; ImageError messages name the file."""
    data = fileio.read_bytes(path)
    try:
        return decode_bmp(data)
    except ImageError as e:
        raise ImageError(f"{path}: {e}") from None


def decode(data: bytes) -> np.ndarray:
    """Any supported image bytes (BMP, PNG, JPEG) -> HxWx3 RGB uint8."""
    fmt = sniff_format(data)
    if fmt == "bmp":
        return decode_bmp(data)
    from PIL import Image
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size  # from the header: nothing decoded yet
            if width * height > MAX_PIXELS:
                raise ImageError(f"{fmt.upper()} of {width}x{height} pixels is above the "
                                 f"{MAX_PIXELS:,}-pixel limit (cells are about 450x450)")
            im.load()
            if im.mode in _WIDE_MODES:
                return _to_uint8_rgb(im, fmt)
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except ImageError:
        raise
    except Exception as e:  # Pillow raises many types for broken files
        raise ImageError(f"corrupt {fmt.upper()}: {e}") from None


# Pillow modes whose samples are wider than 8 bits. `Image.convert("RGB")` clips them at
# 255 instead of scaling, which turns a 16-bit grey image into a near-binary one.
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _to_uint8_rgb(im, fmt: str) -> np.ndarray:
    """16-bit grey -> 8 bits by v * 255 / 65535 (rounded), as three equal channels.

    32-bit integer or float samples have no agreed full scale: refused, not guessed.
    """
    if im.mode == "F" or (im.mode == "I" and fmt != "png"):
        raise ImageError(f"unsupported {fmt.upper()}: {im.mode!r} pixels (32-bit integer or "
                         "float samples; 8- or 16-bit images expected)")
    wide = np.asarray(im).astype(np.int64)
    if wide.min() < 0 or wide.max() > 65535:
        raise ImageError(f"unsupported {fmt.upper()}: samples outside 0..65535 in mode "
                         f"{im.mode!r}")
    grey = ((wide * 255 + 32767) // 65535).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))


def encode(image: np.ndarray, encoding: str, jpeg_quality: int = 95,
           png_compression: int = 1, original: Optional[bytes] = None) -> bytes:
    """Encode an HxWx3 uint8 image for storage.

    Args:
      encoding: png (lossless), raw (uint8 bytes), bmp (24-bit; the original file's
        bytes when given and already the right size), jpeg (lossy, `jpeg_quality`).
      png_compression: zlib level 0-9; 1 is measured nearly as small as 6 and 5x faster.
    """
    if encoding == "raw":
        return image.tobytes()
    if encoding == "bmp":
        if original is not None:
            return original
        return encode_bmp(image)
    from PIL import Image
    buf = io.BytesIO()
    if encoding == "png":
        Image.fromarray(image).save(buf, format="PNG", compress_level=png_compression)
    elif encoding == "jpeg":
        Image.fromarray(image).save(buf, format="JPEG", quality=jpeg_quality, subsampling=0)
    else:
        raise ValueError(f"unknown encoding {encoding!r}; choose from {ENCODINGS}")
    return buf.getvalue()

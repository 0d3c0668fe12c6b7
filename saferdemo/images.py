"""Open a user's image safely: one RGB frame, bounded size, a clear error for anything else."""

from __future__ import annotations

import io
import re
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_IMAGE_PIXELS = 40_000_000  # decoded pixels we accept (a 20000x20000 upload is 400 M: refused, not decoded)
MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_ASPECT_RATIO = 200  # Qwen2.5-VL's processors refuse more elongated images


class InputError(ValueError):
    """The user's input cannot be used; the message says why and what to do."""


def load_image(path: str | Path) -> Image.Image:
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as error:
        raise InputError(f"{path.name}: the file cannot be read ({error.strerror}).") from error
    return _open(path, path.name, size)


def load_image_bytes(data: bytes, name: str = "the image") -> Image.Image:
    """The same checks as `load_image`, for an image that arrived as bytes (a data URL, an upload)."""
    return _open(io.BytesIO(data), name, len(data))


def _open(source, name: str, size: int) -> Image.Image:
    if size > MAX_FILE_BYTES:
        raise InputError(f"{name} is {size / 2**20:.1f} MB; the limit is {MAX_FILE_BYTES // 2**20} MB.")
    try:
        with Image.open(source) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise InputError(f"{name} is {width}x{height} pixels ({width * height / 1e6:.0f} megapixels); "
                                 f"the limit is {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels.")
            if max(width, height) > MAX_ASPECT_RATIO * max(1, min(width, height)):
                raise InputError(f"{name} is {width}x{height} pixels; images must be less elongated than "
                                 f"{MAX_ASPECT_RATIO}:1. Crop it and try again.")
            image.seek(0)  # animated images: the first frame
            image.load()
            return to_rgb(image)
    except InputError:
        raise
    except Image.DecompressionBombError as error:  # Pillow refuses to even open it
        pixels = re.search(r"\((\d+) pixels\)", str(error))
        size_text = f"{int(pixels.group(1)) / 1e6:.0f} megapixels" if pixels else "too many pixels"
        raise InputError(f"{name} has {size_text}; the limit is {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels.") from error
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise InputError(f"{name} is not a readable image ({type(error).__name__}). Upload a PNG, JPEG, GIF or WebP.") from error


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB for any mode: transparency goes onto white, 16-bit greyscale is scaled, EXIF rotation applied."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.point(lambda v: v / 256).convert("L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def fit(image: Image.Image, max_pixels: int) -> Image.Image:
    """The image shrunk (aspect kept) to at most `max_pixels`: what a conversation keeps of an upload."""
    pixels = image.width * image.height
    if pixels <= max_pixels:
        return image
    scale = (max_pixels / pixels) ** 0.5
    return image.resize((max(1, int(image.width * scale)), max(1, int(image.height * scale))), Image.Resampling.LANCZOS)

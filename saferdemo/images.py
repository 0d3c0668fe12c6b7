"""Open a user's image safely: one RGB frame, bounded size, a clear error for anything else."""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_IMAGE_PIXELS = 40_000_000  # decoded pixels we accept (a 20000x20000 upload is 400 M: refused, not decoded)
MAX_FILE_BYTES = 20 * 1024 * 1024


class InputError(ValueError):
    """The user's input cannot be used; the message says why and what to do."""


def load_image(path: str | Path) -> Image.Image:
    path = Path(path)
    name = path.name
    try:
        size = path.stat().st_size
    except OSError as error:
        raise InputError(f"{name}: the file cannot be read ({error.strerror}).") from error
    if size > MAX_FILE_BYTES:
        raise InputError(f"{name} is {size / 2**20:.1f} MB; the limit is {MAX_FILE_BYTES // 2**20} MB.")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise InputError(f"{name} is {width}x{height} pixels ({width * height / 1e6:.0f} megapixels); "
                                 f"the limit is {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels.")
            image.seek(0)  # animated images: the first frame
            image.load()
            return to_rgb(image)
    except InputError:
        raise
    except Image.DecompressionBombError as error:  # Pillow refuses to even open it
        pixels = re.search(r"\((\d+) pixels\)", str(error))
        size = f"{int(pixels.group(1)) / 1e6:.0f} megapixels" if pixels else "too many pixels"
        raise InputError(f"{name} has {size}; the limit is {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels.") from error
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
